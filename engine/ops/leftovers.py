"""What killed backups leave at a destination, told apart from what a live backup is writing, and removed.

A backup holds, from before it writes the first object of its set until its connection closes, an advisory
lock of its own set on the PostgreSQL server of the database it backs up (the worker's proof of life for runs,
the filestore store's lock for the store's collector: a lock is held exactly as long as its session lives, on
any node, so no clock is compared). Its ``owner.json``, written first, names that lock and the server it lives
on. A set without a manifest whose lock nobody holds on that same server was left by a backup that died: it
can never be finished, and the next backup of the database removes it, whatever the retention. A set whose
writer cannot be asked (written through another PostgreSQL server, before a restart of this one, or by an
engine that recorded no lock) is removed only once it is older than retention's limit for unfinished sets.

``.partial`` files (local destinations) and unfinished multipart uploads (S3) of a filestore store are
removed while the store's lock is held exclusively: no backup is adding to the store then.
"""

import contextlib
import datetime
import hashlib
import json
import os
import socket
from dataclasses import dataclass, field

import psycopg2

from ..core.errors import LockBusy
from ..core.human import count
from ..core.manifest import OWNER_NAME, backup_time
from ..db import pg
from ..formats import packstore
from ..formats.catalog import BackupRef, list_backups
from .prune import STALE_INCOMPLETE

# pg_advisory_lock(SET_LOCK_CLASS, <set>) while a backup writes its set (the worker's runs use 0x5350).
SET_LOCK_CLASS = 0x5352


def set_lock(db_name, backup_id):
    """The second half of the advisory lock of set ``backup_id`` of ``db_name`` (31 bits of a SHA-256)."""
    digest = hashlib.sha256(("%s/%s" % (db_name, backup_id)).encode("utf-8")).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


def server_identity(conn):
    """What tells this PostgreSQL server apart, as long as it runs: its system identifier (when this role may
    read it) and when its postmaster started (a lock never outlives a restart)."""
    with conn.cursor() as cr:
        cr.execute("SELECT pg_postmaster_start_time()::text")
        started = cr.fetchone()[0]
        system = None
        with contextlib.suppress(psycopg2.Error):
            cr.execute("SELECT system_identifier::text FROM pg_control_system()")
            system = cr.fetchone()[0]
    return {"system_identifier": system, "started": started}


def hold_set_lock(conn, db_name, backup_id):
    """Take the set's lock for the life of ``conn`` (the backup's own session); the writer record for owner.json."""
    key = set_lock(db_name, backup_id)
    with conn.cursor() as cr:
        cr.execute("SELECT pg_try_advisory_lock(%s, %s)", (SET_LOCK_CLASS, key))
        if not cr.fetchone()[0]:
            raise LockBusy("Another backup holds the lock of set %s of %s." % (backup_id, db_name))
    return {
        "lock": [SET_LOCK_CLASS, key],
        "server": server_identity(conn),
        "host": socket.gethostname(),
        "pid": os.getpid(),
    }


def _lock_held(conn, lock):
    """True when a session of this server (any database) holds the two-key advisory lock ``lock``."""
    with conn.cursor() as cr:
        cr.execute(
            "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted AND classid = %s "
            "AND objid = %s AND objsubid = 2)",
            (int(lock[0]), int(lock[1])),
        )
        return cr.fetchone()[0]


def verdict(writer, here, held, age):
    """(remove?, why) for an unfinished set: ``writer`` from its owner.json (None when it names none), ``here``
    this server's identity, ``held`` whether the lock it names is held here now, ``age`` since its id's time."""
    stale = age > STALE_INCOMPLETE
    if not isinstance(writer, dict) or not isinstance(writer.get("server"), dict):
        if stale:
            return True, "unfinished for more than a day, by a backup that recorded no lock"
        return False, "no lock recorded: left for a day"
    server = writer["server"]
    systems = (server.get("system_identifier"), here.get("system_identifier"))
    if all(systems) and systems[0] != systems[1]:
        return False, "written through another PostgreSQL server"
    if server.get("started") != here.get("started"):
        if stale:
            return True, "unfinished for more than a day, its backup ran before PostgreSQL restarted"
        return False, "written before PostgreSQL restarted: left for a day"
    if held:
        return False, "a live backup is writing it"
    who = "pid %s on %s" % (writer.get("pid"), writer.get("host"))
    return True, "its backup (%s) ended without finishing it and holds no lock" % who


@dataclass
class LeftoverReport:
    """What one destination held of killed backups, and what was done with it."""

    removed: dict = field(default_factory=dict)  # backup id: why
    kept: dict = field(default_factory=dict)  # backup id: why (being written, or not provably dead)
    partial_files: int = 0
    errors: list = field(default_factory=list)

    def summary(self):
        """One sentence for the backup's log, or None when there was nothing to remove or to say."""
        parts = []
        if self.removed:
            parts.append("removed %s left by killed backups: %s" % _sets(self.removed))
        if self.partial_files:
            parts.append(
                "removed %s of the filestore store no backup is writing" % count(self.partial_files, "partial file")
            )
        if self.kept:
            parts.append("left %s: %s" % _sets(self.kept))
        parts += ["could not remove %s" % error for error in self.errors]
        return "; ".join(parts) if parts else None


def _sets(reasons):
    """('2 unfinished sets', 'id (why); id (why)') of {backup id: why}."""
    return count(len(reasons), "unfinished set"), "; ".join("%s (%s)" % item for item in sorted(reasons.items()))


def _writer_of(ref):
    """The writer record of an unfinished set's owner.json, or None (absent, unreadable, written by an engine
    that recorded none)."""
    try:
        if not ref.storage.exists(ref.key(OWNER_NAME)):
            return None
        return json.loads(ref.storage.read_bytes(ref.key(OWNER_NAME))).get("writer")
    except Exception:
        return None


def remove_leftovers(storage, db_name, conn, now=None):
    """Remove what killed backups of ``db_name`` left at ``storage``; ``conn`` is a session on the database's
    server (the backup's own). Never raises for one set: errors are in the report."""
    now = now or datetime.datetime.now(datetime.timezone.utc)
    report = LeftoverReport()
    here = server_identity(conn)
    for entry in list_backups(storage, db_name):
        if entry.restorable:
            continue
        ref = BackupRef(storage, db_name, entry.backup_id)
        writer = _writer_of(ref)
        lock = writer.get("lock") if isinstance(writer, dict) else None
        held = bool(lock) and _lock_held(conn, lock)
        remove, why = verdict(writer, here, held, now - backup_time(entry.backup_id))
        if not remove:
            report.kept[entry.backup_id] = why
            continue
        try:
            storage.remove_tree(ref.prefix)
        except Exception as exc:
            report.errors.append("unfinished set %s: %s" % (entry.backup_id, exc))
            continue
        report.removed[entry.backup_id] = why
    for name in storage.list_dir(db_name):
        if packstore.STORE_DIR.match(name):
            _clean_store(storage, db_name, name, conn, report)
    return report


def _clean_store(storage, db_name, name, conn, report):
    """The partial writes of a store, removed under its exclusive lock (no backup adds to it meanwhile)."""
    key = packstore.lock_key(name[len(".store-") :])
    if not pg.advisory(conn, "pg_try_advisory_lock", key):
        return  # a backup is writing to it: what is partial there may be its own
    try:
        report.partial_files += storage.remove_partials("%s/%s" % (db_name, name))
    except Exception as exc:
        report.errors.append("partial files of store %s: %s" % (name, exc))
    finally:
        pg.advisory(conn, "pg_advisory_unlock", key)
