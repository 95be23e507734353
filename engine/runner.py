"""The detached runner: runs a plan outside Odoo's worker and reports through a status file.

Odoo's cron writes the plan (JSON, no secrets), starts
``python3 -m engine run --plan P --status S`` in its own session and returns;
the runner rewrites the status file atomically as it goes (state, progress,
heartbeat, a log excerpt) and finally stores the result or the error. A short
cron reads it back; a runner whose process is gone while the status is not
final has died.
"""

import collections
import json
import os
import socket
import threading
import time
import traceback

from .backup import run_backup
from .config import BackupPlan
from .errors import BackupError

FINAL_STATES = ("done", "failed")
HEARTBEAT_SECONDS = 15


class StatusFile:
    def __init__(self, path, log_lines=60):
        self.path = path
        self.lock = threading.Lock()
        self.log = collections.deque(maxlen=log_lines)
        self.data = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "state": "running",
            "progress": 0.0,
            "message": "",
            "started_at": time.time(),
            "heartbeat": time.time(),
            "result": None,
            "error": None,
            "log": [],
        }
        self._last_write = 0.0

    def update(self, force=False, **values):
        with self.lock:
            message = values.get("message")
            if message and message != self.data.get("message"):
                self.log.append("%s %s" % (time.strftime("%H:%M:%S"), message))
            self.data.update(values)
            now = time.time()
            self.data["heartbeat"] = now
            if not force and now - self._last_write < 1.0:
                return
            self._last_write = now
            self.data["log"] = list(self.log)
            write_json_atomic(self.path, self.data)


def write_json_atomic(path, data):
    tmp = "%s.%d.tmp" % (path, os.getpid())
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(data, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def read_status(path):
    """The status a runner wrote, or None if there is none (yet)."""
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return None


def pid_alive(pid):
    if not pid:
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open("/proc/%d/stat" % int(pid), encoding="ascii") as handle:
            return handle.read().split(") ")[-1][:1] != "Z"
    except OSError:
        return True


def run_plan_file(plan_path, status_path):
    """Entry point of ``engine run``: 0 done, 1 done with warnings, 2 failed.

    The plan's ``action`` is ``backup`` (the default: a BackupPlan), ``restore``
    or ``drill`` (see ``restore_from_plan`` and ``drill_from_plan``).
    """
    status = StatusFile(status_path)
    status.update(force=True, message="Runner started (pid %d)" % os.getpid())
    stop = threading.Event()

    def beat():
        while not stop.wait(HEARTBEAT_SECONDS):
            status.update(force=True)

    def progress(fraction, message):
        status.update(progress=round(fraction, 4), message=message)

    threading.Thread(target=beat, daemon=True).start()
    try:
        with open(plan_path, encoding="utf-8") as handle:
            data = json.load(handle)
        action = data.pop("action", "backup")
        if action == "backup":
            outcome = _backup(BackupPlan.from_dict(data), status, progress)
        elif action == "restore":
            outcome = _restore(data, progress)
        elif action == "drill":
            outcome = _drill(data, progress)
        else:
            raise BackupError("Unknown runner action %r." % action)
    except BackupError as exc:
        stop.set()
        status.update(force=True, state="failed", error=str(exc), message="Failed: %s" % exc, finished_at=time.time())
        return exc.exit_code
    except Exception as exc:  # reported in words; the traceback goes to the runner's stderr log only
        stop.set()
        traceback.print_exc()
        error = "Unexpected error (%s): %s" % (type(exc).__name__, exc)
        status.update(force=True, state="failed", error=error, message="Failed: %s" % error, finished_at=time.time())
        return 2
    stop.set()
    result, error, warnings = outcome
    if error:
        status.update(
            force=True,
            state="failed",
            result=result,
            error=error,
            message="Failed: %s" % error,
            finished_at=time.time(),
        )
        return 2
    status.update(force=True, state="done", progress=1.0, result=result, message="Done", finished_at=time.time())
    return 1 if warnings else 0


def _backup(plan, status, progress):
    result = run_backup(plan, progress=progress)
    prunes = apply_retention(plan, result, status)
    data = result.to_dict()
    data["retention"] = prunes
    error = None
    if result.failed_copies:
        error = "The backup was stored, but %d of %d copies failed: %s" % (
            len(result.failed_copies),
            len(result.copies),
            "; ".join("%s: %s" % (c["destination"], c["error"]) for c in result.failed_copies),
        )
    return data, error, result.warnings


def _source_ref(data, settings):
    """The BackupRef a restore or drill plan names: a destination, a database and a backup id."""
    from .catalog import BackupRef, latest
    from .config import DestinationConfig
    from .storage import open_storage

    source = data["source"]
    storage = open_storage(DestinationConfig(**source["destination"]), settings)
    if source.get("backup_id") in (None, "", "latest"):
        return latest(storage, source["db_name"])
    return BackupRef(storage, source["db_name"], source["backup_id"])


def _plan_context(data):
    from .config import PgConfig, Settings
    from .crypto import load_identities

    settings = Settings.from_config(data.get("odoo_conf"))
    pg = PgConfig(**(data.get("pg") or {}))
    if pg.password is None and settings.pg.password:
        pg.password = settings.pg.password
    identity_file = settings.get("identity_file")
    identities = load_identities(identity_file) if identity_file else []
    return settings, pg, identities


def _restore(data, progress):
    from .restore import RestoreOptions, restore

    settings, pg, identities = _plan_context(data)
    ref = _source_ref(data, settings)
    options = RestoreOptions(pg=pg, identities=identities, **data["options"])
    result = restore(ref, options, progress=progress)
    return result.to_dict(), None, result.warnings


def _drill(data, progress):
    from .drill import run_drill

    settings, pg, identities = _plan_context(data)
    ref = _source_ref(data, settings)
    result = run_drill(
        ref,
        pg,
        data.get("data_dir"),
        identities=identities,
        public_key=data.get("public_key"),
        neutralize_sql=data.get("neutralize_sql") or [],
        jobs=int(data.get("jobs") or 1),
        progress=progress,
    )
    error = None
    if not result.ok:
        failed = [check.name for check in result.checks if not check.ok]
        error = "The restore drill failed: %s" % (result.error or ", ".join(failed) or "see the checks")
    return result.to_dict(), error, []


def apply_retention(plan, result, status):
    """Prune each destination that holds the new backup, as the plan's rules say."""
    if not plan.retention:
        return []
    from .config import Settings
    from .prune import prune
    from .storage import open_storage

    settings = Settings.from_config(plan.odoo_conf) if plan.odoo_conf else Settings.from_config(None)
    verified = set(plan.verified_ids or []) | {result.backup_id}
    reports = []
    for config, copy in zip(plan.destinations, result.copies, strict=True):
        if not copy["ok"]:
            continue
        status.update(message="Applying retention at %s" % copy["destination"])
        try:
            report = prune(
                open_storage(config, settings), plan.db_name, plan.retention, verified, protect={result.backup_id}
            )
        except Exception as exc:  # pruning never turns a good backup into a failed one
            reports.append({"destination": copy["destination"], "errors": ["retention failed: %s" % exc]})
            continue
        reports.append(report.to_dict())
    return reports
