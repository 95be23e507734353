"""Running one plan outside Odoo: ``engine run --plan FILE`` and the retention step of a backup.

Odoo's runs are executed by the worker (engine/worker.py), which reads them
from PostgreSQL; ``run`` executes a plan file by hand, with the settings of
the odoo.conf given, and prints the result as JSON.
"""

import json
import sys


def run_plan_file(plan_path, conf_path=None, database=None, data_dir=None):
    """Entry point of ``engine run``: 0 done, 1 done with warnings, 2 failed."""
    from .errors import BackupError
    from .worker import WorkerContext, execute

    with open(plan_path, encoding="utf-8") as handle:
        data = json.load(handle)
    action = data.pop("action", "backup")
    ctx = WorkerContext.from_config(conf_path, data_dir=data_dir)
    serving = database or data.get("db_name") or (data.get("source") or {}).get("db_name")

    def progress(fraction, message):
        print("%3d%% %s" % (round(fraction * 100), message), file=sys.stderr)

    def log(message):
        print("     %s" % message, file=sys.stderr)

    try:
        result, error, warnings = execute(action, data, ctx, serving, progress, log)
    except BackupError as exc:
        print(json.dumps({"ok": False, "error": str(exc)}))
        return exc.exit_code
    print(json.dumps({"ok": not error, "error": error, "result": result}, default=str))
    if error:
        return 2
    return 1 if warnings else 0


def apply_retention(plan, result, progress, log=None):
    """Prune each destination that holds the new backup, as the plan's rules say; one log line per destination."""
    log = log or (lambda message: None)
    if not plan.retention:
        return []
    from .config import Settings
    from .prune import prune
    from .storage import open_storage

    settings = Settings.from_config(plan.odoo_conf) if plan.odoo_conf else Settings.from_config(None)
    # "Newest verified" means verified: the set just made is protected from deletion, not counted as verified.
    verified = set(plan.verified_ids or [])
    reports = []
    for config, copy in zip(plan.destinations, result.copies, strict=True):
        if not copy["ok"]:
            continue
        progress(1.0, "Applying retention at %s" % copy["destination"])
        try:
            report = prune(
                open_storage(config, settings),
                plan.db_name,
                plan.retention,
                verified,
                protect={result.backup_id},
                owner=plan.owner,
                owned_ids=set(plan.owned_ids or []) | {result.backup_id},
            )
        except Exception as exc:  # pruning never turns a good backup into a failed one
            reports.append({"destination": copy["destination"], "errors": ["retention failed: %s" % exc]})
            log("Retention at '%s' failed: %s" % (config.describe(), exc))
            continue
        data = report.to_dict()
        if not report.dry_run:
            data["stores"] = collect_stores(plan, open_storage(config, settings), config.describe(), log)
        reports.append(data)
        log("Retention at '%s': %s" % (config.describe(), report.summary()))
    return reports


def collect_stores(plan, storage, where, log):
    """After pruning: the packs of the destination's filestore stores that no set references any more."""
    import contextlib

    from . import packstore, pg
    from .human import count, human_bytes

    try:
        if not any(packstore.STORE_DIR.match(name) for name in storage.list_dir(plan.db_name)):
            return []
        conn = pg.connect(plan.pg, plan.db_name)
    except Exception as exc:
        log("Store collection at '%s' failed: %s" % (where, exc))
        return [{"error": str(exc)}]

    @contextlib.contextmanager
    def try_lock(sid):
        key = packstore.lock_key(sid)
        held = pg.advisory(conn, "pg_try_advisory_lock", key)
        try:
            yield held
        finally:
            if held:
                pg.advisory(conn, "pg_advisory_unlock", key)

    try:
        reports = packstore.collect_destination(storage, plan.db_name, try_lock)
    except Exception as exc:  # collection never turns a good backup into a failed one
        log("Store collection at '%s' failed: %s" % (where, exc))
        return [{"error": str(exc)}]
    finally:
        conn.close()
    for report in reports:
        if report.get("skipped"):
            log("Store %s at '%s': not collected now (%s)" % (report["store"], where, report["skipped"]))
        else:
            log(
                "Store %s at '%s': %s no set uses removed (%s freed)%s"
                % (
                    report["store"],
                    where,
                    count(len(report["deleted"]), "pack"),
                    human_bytes(report["freed_bytes"]),
                    ", %s kept under Object Lock" % count(len(report["kept_locked"]), "pack")
                    if report["kept_locked"]
                    else "",
                )
            )
    return reports
