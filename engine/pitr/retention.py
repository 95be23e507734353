"""What a server's archive keeps: whatever is needed to reach any second of the configured window.

``plan_prune`` (pure) keeps the newest base backup consistent before the window starts (it reaches the window's
first second) and every later one, with the backups their incremental chains start from; the WAL from the
oldest kept backup's first segment on; history files always (they are tiny and a restore asks for them).
Everything older goes. ``prune`` applies a plan at a destination.
"""

import datetime
from dataclasses import dataclass, field

from ..core.manifest import is_backup_id
from . import archive, walnames

# A base backup folder without base.json (a killed backup) older than this is removed.
STALE_BASE = datetime.timedelta(hours=12)


@dataclass
class PrunePlan:
    keep_bases: list
    drop_bases: list
    drop_wal: list
    # The first second the kept archive reaches (None: nothing reaches yet).
    covers_from: datetime.datetime | None
    notes: list = field(default_factory=list)


def _time(text):
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))


def plan_prune(bases, wal_names, window, now, incomplete=()):
    """``bases``: verified base.json documents; ``wal_names``: the WAL file names stored; ``window`` a timedelta;
    ``incomplete``: ids of base backup folders without a verified base.json. Pure."""
    ordered = sorted(bases, key=lambda doc: doc["consistent_at"])
    if not ordered:
        return PrunePlan([], [], [], None, ["no base backup yet: nothing is removed"])
    cutoff = now - window
    before = [doc for doc in ordered if _time(doc["consistent_at"]) <= cutoff]
    anchor = before[-1] if before else ordered[0]
    keep = {doc["backup_id"] for doc in ordered if doc["consistent_at"] >= anchor["consistent_at"]}
    by_id = {doc["backup_id"]: doc for doc in ordered}
    for backup_id in list(keep):
        parent = by_id[backup_id].get("parent")
        while parent and parent in by_id:
            keep.add(parent)
            parent = by_id[parent].get("parent")
    kept = [doc for doc in ordered if doc["backup_id"] in keep]
    drop = [doc["backup_id"] for doc in ordered if doc["backup_id"] not in keep]
    stale = [b for b in incomplete if is_backup_id(b) and now - _backup_time(b) > STALE_BASE]
    # A restore replays from the start of the backup it uses (an incremental one's own start): the WAL before
    # the anchor's start is never read again, whatever its chain starts from.
    doc = anchor
    timeline, segno = walnames.parse_segment(doc["start_wal"], doc.get("segment_size") or walnames.DEFAULT_SEGMENT_SIZE)
    size = doc.get("segment_size") or walnames.DEFAULT_SEGMENT_SIZE
    drop_wal = []
    for name in wal_names:
        if not walnames.SEGMENT_RE.fullmatch(name):
            continue
        tli, number = walnames.parse_segment(name, size)
        if tli <= timeline and number < segno:
            drop_wal.append(name)
    covers = max(_time(anchor["consistent_at"]), cutoff) if before else _time(anchor["consistent_at"])
    notes = []
    if not before:
        notes.append(
            "the archive reaches back to %s only: its oldest base backup is newer than the window's start"
            % anchor["consistent_at"]
        )
    return PrunePlan([d["backup_id"] for d in kept], drop + stale, sorted(drop_wal), covers, notes)


def _backup_time(backup_id):
    return datetime.datetime.strptime(backup_id[:16], "%Y%m%dT%H%M%SZ").replace(tzinfo=datetime.timezone.utc)


def prune(arch, public_keys, window, now=None, log=None):
    """Apply the plan at one destination (an archive.Archive): a dict of what was removed and what could not be
    (an Object Lock keeps what it protects until its date)."""
    log = log or (lambda message: None)
    now = now or datetime.datetime.now(datetime.timezone.utc)
    found = arch.bases(public_keys)
    bases = [doc for _id, doc, _problem in found if doc is not None]
    # Only a folder without base.json is a killed backup; one whose base.json does not verify with the keys
    # given (signed with a key no longer listed, or changed) is left alone and named.
    incomplete, unverified = [], []
    for backup_id, doc, problem in found:
        if doc is None:
            key = "%s/base.json" % archive.base_prefix(arch.system_id, backup_id)
            (unverified if arch.storage.exists(key) else incomplete).append((backup_id, problem))
    incomplete = [backup_id for backup_id, _problem in incomplete]
    names = arch.wal_names()
    plan = plan_prune(bases, names, window, now, incomplete)
    failed = []
    for backup_id in plan.drop_bases:
        try:
            arch.storage.remove_tree(archive.base_prefix(arch.system_id, backup_id))
        except Exception as exc:
            failed.append("base backup %s: %s" % (backup_id, exc))
    prefix = archive.wal_prefix(arch.system_id)
    dropped = set(plan.drop_wal)
    stored = arch.storage.list_dir(prefix) if dropped else []
    # The entries first: a segment without its entry is never used, an entry without its segment is a gap.
    for file in sorted(stored, key=lambda f: (not f.endswith(archive.ENTRY_SUFFIX), f)):
        if file[:24] in dropped and file[24:25] == ".":
            try:
                arch.storage.delete("%s/%s" % (prefix, file))
            except Exception as exc:
                failed.append("WAL %s: %s" % (file, exc))
    if plan.drop_bases or plan.drop_wal:
        log(
            "Archive at %s: removed %d base backup(s) and %d WAL file(s) older than the window"
            % (arch.describe(), len(plan.drop_bases), len(plan.drop_wal))
        )
    return {
        "kept_bases": plan.keep_bases,
        "removed_bases": plan.drop_bases,
        "removed_wal": len(plan.drop_wal),
        "covers_from": plan.covers_from.strftime("%Y-%m-%d %H:%M:%S UTC") if plan.covers_from else None,
        "notes": plan.notes
        + ["base backup %s is kept: %s" % (backup_id, problem) for backup_id, problem in unverified],
        "failed": failed,
    }
