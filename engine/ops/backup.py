"""One backup, end to end (DESIGN.md "One backup, end to end").

1. Pre-flight: destinations writable with room, pg_dump recent enough, the
   database present, keys readable, the policy's advisory lock free.
2. A REPEATABLE READ transaction exports a snapshot; the manifest's queries
   (modules, row counts, referenced attachments) and pg_dump all read it.
3. The filestore is streamed after the snapshot exists; attachment files the
   snapshot references but the archive lacks are recorded as missing.
4. Each artifact flows source -> zstd -> age -> SHA-256 -> every destination.
   A destination that fails is dropped and reported; the others go on.
5. The manifest (and its signature) is written last; without it a set is
   never restorable.
"""

import contextlib
import datetime
import json
import os
import platform
import socket
import sqlite3
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field

from .. import ENGINE_VERSION, MANIFEST_FORMAT
from ..core import manifest as mf
from ..core.config import Settings, sanitize_options
from ..core.errors import BackupError, PreflightError
from ..core.human import count, human_bytes, human_duration
from ..db import pg
from ..formats import filestore, packstore
from ..formats.catalog import BackupRef, list_backups
from ..io import crypto
from ..io.storage import open_storage
from ..io.stream import ArtifactWriter, FanOut
from . import leftovers

MAX_LISTED_MISSING = 10000
# Multipart uploads of this database older than this are orphans of a run
# whose network failed; the next run aborts them.
STALE_UPLOAD = datetime.timedelta(hours=6)


@dataclass
class BackupResult:
    backup_id: str
    db_name: str
    locations: list
    artifacts: dict
    manifest: dict
    started_at: str
    finished_at: str
    duration: float
    warnings: list = field(default_factory=list)
    copies: list = field(default_factory=list)
    # The filestore's evidence by name (missing, vanished, ...): in the manifest, or sealed in its names artifact.
    names: dict = field(default_factory=dict)

    @property
    def failed_copies(self):
        return [copy for copy in self.copies if not copy["ok"]]

    def to_dict(self):
        data = asdict(self)
        data["summary"] = mf.summary(self.manifest, self.names)
        data.pop("manifest")
        data.pop("names")
        return data


def _noop(*args):
    pass


def artifact_line(art):
    """'(artifact database.dump.zst.age, sha256 ab12cd34ef56…)': which file an artifact step wrote."""
    return "(artifact %s, sha256 %s\u2026)" % (art["file"], (art.get("sha256") or "")[:12])


def odoo_version_keys(given, base_version):
    """Odoo's own manifest keys (version, version_info, major_version)."""
    if given:
        return {
            "version": given.get("version"),
            "version_info": list(given.get("version_info") or []),
            "major_version": given.get("major_version"),
        }
    if not base_version:
        return {"version": None, "version_info": [], "major_version": None}
    parts = base_version.split(".")
    major = ".".join(parts[:2])
    info = [int(p) if p.isdigit() else p for p in parts[:2]] + [0, "final", 0, ""]
    return {"version": major, "version_info": info, "major_version": major}


@dataclass
class Destination:
    """One configured destination during a run (``label``: how the log names it)."""

    name: str
    storage: object
    error: str | None = None
    label: str = ""
    # What killed backups had left there (leftovers.LeftoverReport), removed before this run wrote anything.
    leftovers: object = None


def preflight(plan, destinations, conn):
    """Checks before anything is written; raises PreflightError with the reason."""
    dump_major, dump_text = pg.tool_version(plan.pg, "pg_dump")
    server_major, server_text = pg.server_version(conn)
    pg.check_dump_compatible(dump_major, dump_text, server_major, server_text)
    newest = ""
    for dest in destinations:
        # Copies are independent: a destination that fails its checks is left out (and named in the result),
        # the others are written.
        try:
            newest = max(newest, _check_destination(plan, dest, conn))
        except (BackupError, OSError) as exc:
            dest.error = "%s" % (exc if isinstance(exc, BackupError) else "cannot use it: %s" % exc)
    failed = [dest for dest in destinations if dest.error is not None]
    if len(failed) == len(destinations):
        raise PreflightError(
            "No destination can be written: %s" % "; ".join("%s: %s" % (d.name, d.error) for d in failed)
        )
    if plan.include_filestore and not plan.data_dir:
        raise PreflightError(
            "The Odoo data directory is not known, so the filestore cannot be backed up: set data_dir in odoo.conf "
            "or pass --data-dir (or leave the filestore out of this policy)."
        )
    return {"pg_dump": dump_text, "postgresql": server_text, "server_major": server_major, "newest_id": newest}


def _check_destination(plan, dest, conn):
    """Probe one destination, remove what killed backups left there, check its free space; the newest backup id
    it holds."""
    storage = dest.storage
    storage.probe()
    if hasattr(storage, "abort_uploads"):
        storage.abort_uploads(plan.db_name + "/", older_than=STALE_UPLOAD)
    try:
        dest.leftovers = leftovers.remove_leftovers(storage, plan.db_name, conn)
    except Exception as exc:  # a clean-up that fails never stops the backup
        dest.leftovers = leftovers.LeftoverReport(errors=["the leftovers of killed backups: %s" % exc])
    entries = list_backups(storage, plan.db_name)
    previous = [e for e in entries if e.restorable]
    need = max(plan.min_free_bytes or 0, previous[-1].size if previous else 0)
    free = storage.free_bytes()
    if free is not None and free < need:
        raise PreflightError(
            "Not enough free space at %s: %s free, at least %s needed (%s). Free some space or prune old backups."
            % (
                storage.describe(),
                human_bytes(free),
                human_bytes(need),
                "the size of the previous backup"
                if previous and need == previous[-1].size
                else "the configured minimum",
            )
        )
    return max([""] + [e.backup_id for e in entries])


# A set whose id is dated further ahead than this is not waited for: it was not made by this clock.
FUTURE_ID_SLACK = 5.0


def next_backup_id(newest_existing):
    """A new id that sorts after every existing one (ids carry whole seconds).

    Only an id of this very second is waited out: a set dated in the future (a wrong clock elsewhere, or a
    planted folder) would otherwise stall every backup of the database until its date.
    """
    deadline = time.monotonic() + FUTURE_ID_SLACK
    while True:
        backup_id = mf.new_backup_id()
        if backup_id[:16] > (newest_existing or "")[:16] or time.monotonic() > deadline:
            return backup_id
        time.sleep(0.2)


def collect_database_facts(snapshot, plan):
    """Facts read inside the snapshot, so they describe exactly what is dumped."""
    facts = {"modules": {}, "row_counts": {}, "base_version": None, "attachments_bytes": 0}
    with snapshot.cursor() as cr:
        cr.execute(
            "SELECT pg_encoding_to_char(encoding), datcollate, datctype, pg_database_size(oid) "
            "FROM pg_database WHERE datname = current_database()"
        )
        facts["encoding"], facts["collate"], facts["ctype"], facts["size_bytes"] = cr.fetchone()
        if pg.table_exists(cr, "ir_module_module"):
            cr.execute("SELECT name, latest_version FROM ir_module_module WHERE state = 'installed' ORDER BY name")
            facts["modules"] = {name: version for name, version in cr.fetchall()}
            facts["base_version"] = facts["modules"].get("base")
        # Every table of the database (each installed model's, OpenSPP's g2p_*/spp_* included, and the
        # many2many tables), counted exactly inside the snapshot: a drill compares each of them.
        facts["row_counts"] = pg.row_counts(cr, plan.main_tables)
        facts["has_attachments"] = pg.table_exists(cr, "ir_attachment")
        if facts["has_attachments"]:
            cr.execute("SELECT coalesce(sum(file_size), 0) FROM ir_attachment WHERE store_fname IS NOT NULL")
            facts["attachments_bytes"] = int(cr.fetchone()[0] or 0)
    return facts


class FileLedger:
    """Referenced and archived filestore names, in a temporary SQLite file.

    Memory stays bounded for millions of attachments; what the snapshot
    references but the archive lacks is computed once archiving is over.
    """

    def __init__(self):
        self._dir = tempfile.TemporaryDirectory(prefix="spp_backup_ledger_")
        self.db = sqlite3.connect(os.path.join(self._dir.name, "ledger.sqlite"))
        self.db.execute("PRAGMA journal_mode = OFF")
        self.db.execute("PRAGMA synchronous = OFF")
        self.db.execute("CREATE TABLE referenced (name TEXT PRIMARY KEY) WITHOUT ROWID")
        self.db.execute("CREATE TABLE archived (name TEXT PRIMARY KEY) WITHOUT ROWID")
        self._pending = []
        self.referenced = 0

    def load_referenced(self, snapshot):
        with snapshot.cursor(name="spp_backup_store_fnames") as cr:
            cr.itersize = 10000
            cr.execute(
                "SELECT DISTINCT store_fname FROM ir_attachment WHERE store_fname IS NOT NULL AND store_fname <> ''"
            )
            while True:
                rows = cr.fetchmany(10000)
                if not rows:
                    break
                self.db.executemany("INSERT OR IGNORE INTO referenced VALUES (?)", rows)
                self.referenced += len(rows)

    def archived(self, name):
        self._pending.append((name,))
        if len(self._pending) >= 10000:
            self._flush()

    def _flush(self):
        self.db.executemany("INSERT OR IGNORE INTO archived VALUES (?)", self._pending)
        self._pending = []

    def missing(self, limit=MAX_LISTED_MISSING):
        """(count, first ``limit`` names) referenced but not archived."""
        self._flush()
        query = "SELECT name FROM referenced EXCEPT SELECT name FROM archived"
        count = self.db.execute("SELECT count(*) FROM (%s)" % query).fetchone()[0]
        names = [row[0] for row in self.db.execute(query + " ORDER BY name LIMIT ?", (limit,))]
        return count, names

    def close(self):
        self.db.close()
        self._dir.cleanup()


class _Artifacts:
    """Writes the artifacts of one backup set to every destination still standing."""

    def __init__(self, plan, destinations, prefix, recipients):
        self.plan = plan
        self.destinations = destinations
        self.prefix = prefix
        self.recipients = recipients
        self.results = {}

    def alive(self):
        return [dest for dest in self.destinations if dest.error is None]

    @contextlib.contextmanager
    def open(self, kind, compression, encrypt=True):
        encrypted = bool(self.recipients) and encrypt
        file = mf.artifact_file(kind, compression, encrypted)
        key = "%s/%s" % (self.prefix, file)
        alive = self.alive()
        if not alive:
            raise BackupError("No destination is left to write to.")
        writers, names = [], []
        for dest in alive:
            try:
                writers.append(dest.storage.open_writer(key))
                names.append(dest.name)
            except Exception as exc:
                dest.error = "cannot write %s: %s" % (file, exc)
        fanout = FanOut(writers, names)
        sink = ArtifactWriter(
            fanout, compression, self.plan.compression_level, self.plan.threads, self.recipients if encrypted else None
        )
        started = time.monotonic()
        try:
            yield sink
            sink.close()
            fanout.commit()
        except BaseException:
            sink.abort()
            fanout.abort()
            for dest in alive:
                if dest.name in fanout.failures and dest.error is None:
                    dest.error = fanout.failures[dest.name]
            raise
        for dest in alive:
            if dest.name in fanout.failures and dest.error is None:
                dest.error = fanout.failures[dest.name]
        encryption = None
        if encrypted:
            encryption = {
                "format": "age",
                "recipients": [crypto.recipient_fingerprint(r) for r in self.recipients],
            }
        self.results[kind] = {
            "file": file,
            "size": sink.size,
            "sha256": sink.sha256,
            "raw_size": sink.raw_size,
            "compression": compression,
            "encryption": encryption,
            "seconds": round(time.monotonic() - started, 3),
        }


def run_backup(plan, progress=None, after=None, log=None):
    """Make one backup set in every destination of ``plan``; returns a BackupResult.

    ``after(result)`` runs once the set is complete everywhere it could be, still under the policy's lock
    (retention: no other run of the policy writes or prunes meanwhile).

    ``progress(fraction, message)`` is told where the run is, often (a byte counter); ``log(message)`` once
    per step done: destinations checked, each artifact written (whatever its size), the manifest, each copy.

    Raises BackupError when nothing usable was written. When some
    destinations failed and others succeeded, the result lists every copy
    with its outcome (``result.failed_copies``).
    """
    progress = progress or _noop
    log = log or _noop
    started_wall, started = time.time(), time.monotonic()
    pg.check_db_name(plan.db_name)
    if not plan.destinations:
        raise PreflightError("The policy has no destination: add at least one.")
    if not (plan.include_database or plan.include_filestore or plan.include_application):
        raise PreflightError(
            "The policy includes nothing: choose the database, the filestore or the application snapshot."
        )
    settings = Settings.from_config(plan.odoo_conf) if plan.odoo_conf else Settings.from_config(None)
    destinations = []
    for index, config in enumerate(plan.destinations, 1):
        storage = open_storage(config, settings)
        destinations.append(
            Destination(name="%d: %s" % (index, storage.describe()), storage=storage, label=config.describe())
        )
    recipients = crypto.parse_recipients(plan.recipients)
    signing_key = crypto.load_signing_key(plan.signing_key_file) if plan.signing_key_file else None
    progress(0.0, "Connecting to %s on %s" % (plan.db_name, plan.pg.describe()))
    lock_conn = pg.connect(plan.pg, plan.db_name)
    try:
        if plan.lock_key is not None:
            pg.try_advisory_lock(lock_conn, plan.lock_key)
        tools = preflight(plan, destinations, lock_conn)
        log(_checked_line(destinations))
        log("Using %s" % pg.client_tools(plan.pg).describe())
        for dest in destinations:
            text = dest.leftovers.summary() if dest.leftovers is not None else None
            if text:
                log("At '%s': %s" % (dest.label, text))
        backup_id = next_backup_id(tools["newest_id"])
        prefix = "%s/%s" % (plan.db_name, backup_id)
        # Held until the run ends: while it is, no other backup takes this set for a killed one's leftovers.
        writer = leftovers.hold_set_lock(lock_conn, plan.db_name, backup_id)
        try:
            result = _make_set(
                plan,
                destinations,
                prefix,
                backup_id,
                tools,
                (progress, log),
                started_wall,
                recipients,
                signing_key,
                lock_conn,
                writer,
            )
        except BaseException:
            for dest in destinations:
                with contextlib.suppress(Exception):
                    dest.storage.remove_tree(prefix)
            raise
        for dest in destinations:
            if dest.error is not None:
                with contextlib.suppress(Exception):
                    dest.storage.remove_tree(prefix)
        if after is not None:
            after(result)
    finally:
        lock_conn.close()
    result.duration = round(time.monotonic() - started, 3)
    for warning in result.warnings:
        log("Warning: %s" % warning)
    if result.failed_copies:
        done = "Backup %s done in %s, but %d of %d copies failed" % (
            result.backup_id,
            human_duration(result.duration),
            len(result.failed_copies),
            len(result.copies),
        )
    else:
        done = "Backup %s done in %s" % (result.backup_id, human_duration(result.duration))
    log(done)
    progress(1.0, done)
    return result


def _checked_line(destinations):
    """'Checked 2 destinations', naming those left out and why."""
    line = "Checked %s" % count(len(destinations), "destination")
    failed = [dest for dest in destinations if dest.error is not None]
    if failed:
        line += "; left out %s" % "; ".join("'%s': %s" % (dest.label, dest.error) for dest in failed)
    return line


def _make_set(
    plan,
    destinations,
    prefix,
    backup_id,
    tools,
    report,
    started_wall,
    recipients,
    signing_key,
    lock_conn=None,
    writer=None,
):
    progress, log = report
    if plan.owner or writer:
        # First in the set: whose it is (retention), and the lock its writer holds while it lives (leftovers).
        owner = mf.dumps({"backup_id": backup_id, "owner": plan.owner, "writer": writer})
        for dest in destinations:
            if dest.error is None:
                try:
                    with dest.storage.open_writer("%s/%s" % (prefix, mf.OWNER_NAME)) as writer:
                        writer.write(owner)
                except Exception as exc:
                    dest.error = "cannot write to it: %s" % exc
    artifacts = _Artifacts(plan, destinations, prefix, recipients)
    warnings = []
    root = plan.filestore_dir()
    ledger = FileLedger()
    try:
        snapshot = pg.Snapshot(pg.connect(plan.pg, plan.db_name, autocommit=False))
    except BaseException:
        ledger.close()
        raise
    try:
        progress(0.01, "Reading the database facts inside snapshot %s" % snapshot.snapshot_id)
        facts = collect_database_facts(snapshot, plan)
        if plan.include_filestore and facts["has_attachments"]:
            ledger.load_referenced(snapshot)
        estimate = max(1, (facts["size_bytes"] if plan.include_database else 0) + facts["attachments_bytes"])
        dumped = 0
        if plan.include_database:

            def on_dump(done):
                progress(min(0.95, 0.02 + done / estimate), "Dumping the database: %s" % human_bytes(done))

            with artifacts.open("database", plan.compression) as sink:
                pg.run_dump(
                    plan.pg,
                    plan.db_name,
                    snapshot.snapshot_id,
                    sink,
                    compress_inside=plan.compression == "none",
                    on_bytes=on_dump,
                )
            dumped = artifacts.results["database"]["raw_size"]
            art = artifacts.results["database"]
            log(
                "Database dumped: %s in %s, stored as %s %s"
                % (human_bytes(dumped), human_duration(art["seconds"]), human_bytes(art["size"]), artifact_line(art))
            )
    except BaseException:
        ledger.close()
        raise
    finally:
        snapshot.close()
        snapshot.conn.close()

    try:
        fs_stats = filestore.FilestoreStats()
        store_info = None
        missing_count, missing = 0, []
        if plan.include_filestore:
            if not os.path.isdir(root):
                warnings.append("The filestore folder %s does not exist; the filestore archive is empty" % root)

            def on_file(stats):
                if stats.files % 200 == 0:
                    progress(
                        min(0.97, 0.02 + (dumped + stats.bytes) / estimate),
                        "Archiving the filestore: %d files" % stats.files,
                    )

            progress(min(0.97, 0.02 + dumped / estimate), "Archiving the filestore")
            if plan.incremental_filestore:
                fs_stats, store_info = _filestore_to_stores(
                    plan, artifacts, root, recipients, backup_id, prefix, on_file, ledger.archived, log, lock_conn
                )
            else:
                with artifacts.open("filestore", plan.compression) as sink:
                    fs_stats = filestore.write_tar(root, sink, on_file=on_file, on_archived=ledger.archived)
                art = artifacts.results["filestore"]
                log(
                    "Filestore archived: %s, %s in %s, stored as %s %s"
                    % (
                        count(fs_stats.files, "file"),
                        human_bytes(fs_stats.bytes),
                        human_duration(art["seconds"]),
                        human_bytes(art["size"]),
                        artifact_line(art),
                    )
                )
            missing_count, missing = ledger.missing()
            if missing_count:
                warnings.append(
                    "%d attachment file(s) referenced by the database are missing from the filestore" % missing_count
                )
            if fs_stats.vanished:
                warnings.append("%d file(s) vanished from the filestore while it was archived" % len(fs_stats.vanished))
            if fs_stats.unreadable:
                warnings.append("%d filestore file(s) or folder(s) could not be read" % len(fs_stats.unreadable))
            if fs_stats.misnamed:
                warnings.append(
                    "%d filestore file(s) do not have the content their name (its SHA-1) says, damaged on disk: "
                    "backed up as found; a drill of this backup names them" % len(fs_stats.misnamed)
                )
        referenced = ledger.referenced
    finally:
        ledger.close()

    version = odoo_version_keys(plan.odoo_version, facts["base_version"])
    if plan.include_application:
        progress(0.98, "Writing the application snapshot")
        snapshot_doc = application_snapshot(plan, version, facts, tools)
        with artifacts.open("application", "none") as sink:
            sink.write(mf.dumps(snapshot_doc))
        art = artifacts.results["application"]
        log("Application snapshot written: %s %s" % (human_bytes(art["size"]), artifact_line(art)))
    names = {
        "missing": missing,
        "vanished": fs_stats.vanished,
        "unreadable": fs_stats.unreadable,
        "skipped_links": fs_stats.skipped,
    }
    sealed = bool(recipients)
    if sealed and any(names.values()):
        with artifacts.open("names", "none") as sink:
            sink.write(mf.dumps(names))

    finished_wall = time.time()
    manifest = {
        "format": MANIFEST_FORMAT,
        "engine": ENGINE_VERSION,
        "backup_id": backup_id,
        "label": plan.label,
        "owner": plan.owner,
        "db_name": plan.db_name,
        "created_at": mf.utc_iso(started_wall),
        "finished_at": mf.utc_iso(finished_wall),
        "duration_seconds": round(finished_wall - started_wall, 3),
        "odoo_dump": "1",
        "version": version["version"],
        "version_info": version["version_info"],
        "major_version": version["major_version"],
        "pg_version": "%d.0" % tools["server_major"],
        "modules": facts["modules"],
        "source": {"server": plan.pg.describe(), "postgresql": tools["postgresql"], "pg_dump": tools["pg_dump"]},
        "database": {
            "included": plan.include_database,
            "encoding": facts["encoding"],
            "collate": facts["collate"],
            "ctype": facts["ctype"],
            "size_bytes": facts["size_bytes"],
            "row_counts": facts["row_counts"],
        },
        "filestore": {
            "included": plan.include_filestore,
            # Kept in the destination's content-addressed store (engine.formats.packstore), listed by the filelist
            # artifact; absent: a tar archive (the filestore artifact).
            "store": store_info,
            "files": fs_stats.files,
            "bytes": fs_stats.bytes,
            "referenced": referenced,
            # Names are SHA-1s of attachments: an encrypted set keeps them in its names artifact.
            **mf.filestore_names(names, sealed),
            "missing_count": missing_count,
            "misnamed_count": len(fs_stats.misnamed),
        },
        "encryption": {
            "format": "age",
            "recipients": [crypto.recipient_fingerprint(r) for r in recipients],
        }
        if recipients
        else None,
        "signed": signing_key is not None,
        "artifacts": {
            name: {k: v for k, v in art.items() if k != "seconds"} for name, art in artifacts.results.items()
        },
        "warnings": warnings,
    }
    data = mf.dumps(manifest)
    signature = crypto.sign(data, signing_key) if signing_key is not None else None
    if signature is not None:
        log("Signed manifest (Ed25519, %s)" % crypto.SIGNATURE_NAME)
    copies = []
    for dest in destinations:
        if dest.error is None:
            try:
                if signature is not None:
                    with dest.storage.open_writer("%s/%s" % (prefix, crypto.SIGNATURE_NAME)) as writer:
                        writer.write(signature)
                with dest.storage.open_writer("%s/%s" % (prefix, mf.MANIFEST_NAME)) as writer:
                    writer.write(data)
            except Exception as exc:
                dest.error = "cannot write the manifest: %s" % exc
        location = BackupRef(dest.storage, plan.db_name, backup_id).location()
        copies.append({"destination": dest.name, "location": location, "ok": dest.error is None, "error": dest.error})
        if dest.error is None:
            log("Copy to '%s' stored at %s (%s written last)" % (dest.label, location, mf.MANIFEST_NAME))
        else:
            log("Copy to '%s' failed: %s" % (dest.label, dest.error))
    if not any(copy["ok"] for copy in copies):
        raise BackupError(
            "The backup could not be stored anywhere: %s"
            % "; ".join("%s: %s" % (c["destination"], c["error"]) for c in copies)
        )
    for copy in copies:
        if not copy["ok"]:
            warnings.append("the copy to %s failed: %s" % (copy["destination"], copy["error"]))
    return BackupResult(
        backup_id=backup_id,
        db_name=plan.db_name,
        locations=[copy["location"] for copy in copies if copy["ok"]],
        artifacts=artifacts.results,
        manifest=manifest,
        started_at=manifest["created_at"],
        finished_at=manifest["finished_at"],
        duration=0.0,
        warnings=warnings,
        copies=copies,
        names=names,
    )


def _filestore_to_stores(
    plan, artifacts, root, recipients, backup_id, prefix, on_file, on_archived, log, lock_conn=None
):
    """The filestore into each destination's store, only what it lacks; the file list as an artifact.

    Each destination keeps its own store (same keyed names everywhere, since the key is the server's); a
    destination whose store fails is left out like any failed copy. Each set records the packs it uses in
    its own store.json. Returns (FilestoreStats, the manifest's store entry).
    """
    key = packstore.load_store_key(plan.store_key_file, create=True)
    fingerprints = sorted(crypto.recipient_fingerprint(r) for r in recipients)
    sid = packstore.store_id(key, (plan.owner or {}).get("database_uuid") or plan.db_name, fingerprints)
    # Held shared from before the store's index is read until this set's store.json names the packs it uses:
    # the collector (exclusive) never removes a pack this backup counts on.
    if lock_conn is not None:
        pg.advisory(lock_conn, "pg_advisory_lock_shared", packstore.lock_key(sid))
    writers, stores = {}, []
    for dest in artifacts.alive():
        try:
            store = packstore.PackStore(dest.storage, plan.db_name, sid, recipients)
            store.ensure_config(fingerprints)
            store.index()
        except Exception as exc:
            dest.error = "cannot use its filestore store: %s" % exc
            continue
        stores.append(store)
        writers[dest.name] = packstore.StoreWriter(store, key, recipients, level=plan.compression_level)
    started = time.monotonic()
    try:
        with artifacts.open("filelist", plan.compression) as sink:
            stats, failed = filestore.write_store(
                root, writers, sink, packstore.file_list_line, on_file=on_file, on_archived=on_archived
            )
        for dest in artifacts.alive():
            if dest.name in failed:
                dest.error = failed[dest.name]
        for dest in artifacts.destinations:
            writer = writers.get(dest.name)
            if writer is None:
                continue
            if dest.error is not None:
                writer.abort()
                continue
            try:
                info = writer.finish(backup_id)
                with dest.storage.open_writer("%s/%s" % (prefix, packstore.STORE_SET_NAME)) as out:
                    out.write(json.dumps(info, indent=1, sort_keys=True).encode() + b"\n")
            except Exception as exc:
                dest.error = "cannot complete its filestore store: %s" % exc
                continue
            log(
                "Filestore at '%s': %s, %s; %s new in the store (%s stored), %s already there"
                % (
                    dest.label,
                    count(stats.files, "file"),
                    human_bytes(stats.bytes),
                    count(info["new_files"], "file"),
                    human_bytes(info["new_bytes"]),
                    count(stats.files - info["new_files"], "file"),
                )
            )
    except BaseException:
        for writer in writers.values():
            writer.abort()
        raise
    finally:
        for store in stores:
            store.close()
        if lock_conn is not None:
            pg.advisory(lock_conn, "pg_advisory_unlock_shared", packstore.lock_key(sid))
    art = artifacts.results["filelist"]
    log(
        "File list written in %s: %s %s"
        % (human_duration(time.monotonic() - started), human_bytes(art["size"]), artifact_line(art))
    )
    return stats, {"id": sid, "format": packstore.STORE_FORMAT, "encrypted": bool(recipients)}


def application_snapshot(plan, version, facts, tools):
    """Modules and versions, sanitized odoo.conf, and the versions of the tools."""
    options = None
    if plan.odoo_conf:
        try:
            options = sanitize_options(Settings.from_config(plan.odoo_conf).options)
        except BackupError as exc:
            options = {"error": str(exc)}
    return {
        "odoo": version,
        "modules": facts["modules"],
        "odoo_conf": options,
        "postgresql": tools["postgresql"],
        "pg_dump": tools["pg_dump"],
        "python": sys.version,
        "platform": platform.platform(),
        "hostname": socket.gethostname(),
        "engine": ENGINE_VERSION,
    }
