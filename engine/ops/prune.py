"""Retention applied: a decision (core/retention.py) carried out on a destination, and after a backup on each of
its destinations, then the filestore packs no set uses any more collected."""

import contextlib
import datetime
import json
from dataclasses import asdict, dataclass, field

from ..core.config import Settings
from ..core.human import count, human_bytes
from ..core.manifest import MANIFEST_NAME, OWNER_NAME, backup_time
from ..core.retention import RetainedBackup, RetentionRules, select
from ..db import pg
from ..formats import packstore
from ..formats.catalog import BackupRef, list_backups
from ..io.storage import open_storage

# An unfinished set (no manifest) older than this is left over from a killed run.
STALE_INCOMPLETE = datetime.timedelta(days=1)


@dataclass
class PruneReport:
    destination: str
    keep: list = field(default_factory=list)
    delete: list = field(default_factory=list)
    deleted: list = field(default_factory=list)
    locked: list = field(default_factory=list)
    incomplete_removed: list = field(default_factory=list)
    # Sets of other policies (or of nobody) at the same place, left alone.
    others: list = field(default_factory=list)
    reasons: dict = field(default_factory=dict)
    errors: list = field(default_factory=list)
    held: str | None = None
    dry_run: bool = False

    def to_dict(self):
        return asdict(self)

    def summary(self):
        """One line: 'kept 5, deleted 2', with what was locked, cleaned up or failed."""
        if self.dry_run:
            parts = ["would keep %d" % len(self.keep), "would delete %d" % len(self.delete)]
        else:
            parts = ["kept %d" % len(self.keep), "deleted %d" % len(self.deleted)]
        if self.locked:
            parts.append("%d locked" % len(self.locked))
        if self.incomplete_removed:
            parts.append("%d unfinished removed" % len(self.incomplete_removed))
        if self.held:
            parts.append("held: %s" % self.held)
        if self.errors:
            parts.append("%d error(s): %s" % (len(self.errors), "; ".join(self.errors)))
        return ", ".join(parts)

    def text(self):
        lines = [
            "%s: keep %d, %s %d"
            % (
                self.destination,
                len(self.keep),
                "would delete" if self.dry_run else "deleted",
                len(self.delete if self.dry_run else self.deleted),
            )
        ]
        for backup_id in self.keep:
            lines.append("  keep    %s  (%s)" % (backup_id, ", ".join(self.reasons.get(backup_id, []))))
        for backup_id in self.delete:
            lines.append(
                "  %s  %s" % ("delete " if self.dry_run or backup_id in self.deleted else "FAILED ", backup_id)
            )
        for backup_id in self.locked:
            lines.append("  locked  %s  (%s)" % (backup_id, ", ".join(self.reasons.get(backup_id, []))))
        lines += ["  removed unfinished set %s" % backup_id for backup_id in self.incomplete_removed]
        if self.others:
            lines.append("  %d set(s) of other policies left alone" % len(self.others))
        if self.held:
            lines.append("  held: %s" % self.held)
        lines += ["  error: %s" % error for error in self.errors]
        return "\n".join(lines)


def owned_by(ref, owner, owned_ids, complete=True):
    """True when the set ``ref`` belongs to ``owner``: its manifest (``complete``) or its owner.json says so,
    or it predates recorded owners and its id is one of ``owned_ids``."""
    name = MANIFEST_NAME if complete else OWNER_NAME
    try:
        recorded = (
            json.loads(ref.storage.read_bytes(ref.key(name))).get("owner")
            if ref.storage.exists(ref.key(name))
            else None
        )
    except Exception:  # an unreadable record is nobody's: left alone, verify reports it
        return False
    if recorded:
        return recorded == owner
    return ref.backup_id in owned_ids


def prune(
    storage,
    db_name,
    rules,
    verified_ids=(),
    now=None,
    newest_run_failed=False,
    dry_run=False,
    protect=(),
    owner=None,
    owned_ids=(),
):
    """Decide with ``select`` and delete what it says; never raises for one set's failure.

    With ``owner`` (a policy), only that owner's sets are considered, kept or deleted, and only its
    unfinished sets are cleaned up: two policies on one database and destination never prune each other.
    """
    owned_ids = set(owned_ids or ())
    now = now or datetime.datetime.now(datetime.timezone.utc)
    if isinstance(rules, dict):
        rules = RetentionRules(**rules)
    report = PruneReport(destination=storage.describe(), dry_run=dry_run)
    entries = list_backups(storage, db_name)
    backups = []
    for entry in entries:
        ref = BackupRef(storage, db_name, entry.backup_id)
        if not entry.restorable:
            age = now - backup_time(entry.backup_id)
            mine = owner is None or owned_by(ref, owner, owned_ids, complete=False)
            if age > STALE_INCOMPLETE and entry.backup_id not in protect and mine:
                if not dry_run:
                    try:
                        storage.remove_tree(ref.prefix)
                    except Exception as exc:
                        report.errors.append("cannot remove unfinished set %s: %s" % (entry.backup_id, exc))
                        continue
                report.incomplete_removed.append(entry.backup_id)
            continue
        if owner is not None and not owned_by(ref, owner, owned_ids):
            report.others.append(entry.backup_id)
            continue
        locked_until = None
        if hasattr(storage, "locked_until"):
            locked_until = storage.locked_until(ref.key(MANIFEST_NAME))
        backups.append(
            RetainedBackup.from_id(
                entry.backup_id, verified=entry.backup_id in set(verified_ids), locked_until=locked_until
            )
        )
    decision = select(backups, rules, now, newest_run_failed=newest_run_failed)
    report.keep, report.delete, report.locked = decision.keep, decision.delete, decision.locked
    report.reasons, report.held = decision.reasons, decision.held
    if dry_run:
        return report
    for backup_id in decision.delete:
        try:
            storage.remove_tree(BackupRef(storage, db_name, backup_id).prefix)
            report.deleted.append(backup_id)
        except Exception as exc:
            report.errors.append("cannot delete %s: %s" % (backup_id, exc))
    return report


def apply_retention(plan, result, progress, log=None):
    """Prune each destination that holds the new backup, as the plan's rules say; one log line per destination."""
    log = log or (lambda message: None)
    if not plan.retention:
        return []
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
