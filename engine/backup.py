"""One backup, end to end (DESIGN.md "One backup, end to end").

1. Pre-flight: destinations writable with room, pg_dump recent enough, the
   database present, the policy's advisory lock free.
2. A REPEATABLE READ transaction exports a snapshot; the manifest's queries
   (modules, row counts, referenced attachments) and pg_dump all read it.
3. The filestore is streamed after the snapshot exists.
4. Each artifact flows source -> zstd -> SHA-256 -> destination writers.
5. The manifest is written last; without it a set is never restorable.
"""

import contextlib
import os
import platform
import socket
import sys
import time
from dataclasses import asdict, dataclass, field

from . import ENGINE_VERSION, MANIFEST_FORMAT, filestore, pg
from . import manifest as mf
from .catalog import BackupRef, list_backups
from .config import Settings, sanitize_options
from .errors import BackupError, PreflightError
from .storage import open_storage
from .stream import ArtifactWriter


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

    def to_dict(self):
        data = asdict(self)
        data["summary"] = mf.summary(self.manifest)
        data.pop("manifest")
        return data


def _noop(fraction, message):
    pass


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


def preflight(plan, storages, conn):
    """Checks before anything is written; raises PreflightError with the reason."""
    dump_major, dump_text = pg.tool_version(plan.pg, "pg_dump")
    server_major, server_text = pg.server_version(conn)
    pg.check_dump_compatible(dump_major, dump_text, server_major, server_text)
    for storage in storages:
        storage.probe()
        previous = [e for e in list_backups(storage, plan.db_name) if e.restorable]
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
    if plan.include_filestore and not plan.data_dir:
        raise PreflightError(
            "The Odoo data directory is not known, so the filestore cannot be backed up: set data_dir in odoo.conf "
            "or pass --data-dir (or leave the filestore out of this policy)."
        )
    return {"pg_dump": dump_text, "postgresql": server_text, "server_major": server_major}


def human_bytes(value):
    value = float(value)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return "%.1f %s" % (value, unit) if unit != "B" else "%d B" % value
        value /= 1024
    return str(value)


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
        for table in plan.main_tables:
            if pg.table_exists(cr, table):
                cr.execute('SELECT count(*) FROM "%s"' % table.replace('"', ""))
                facts["row_counts"][table] = cr.fetchone()[0]
        facts["has_attachments"] = pg.table_exists(cr, "ir_attachment")
        if facts["has_attachments"]:
            cr.execute("SELECT coalesce(sum(file_size), 0) FROM ir_attachment WHERE store_fname IS NOT NULL")
            facts["attachments_bytes"] = int(cr.fetchone()[0] or 0)
    return facts


def check_referenced_files(snapshot, root):
    """Count attachment files the snapshot references; list those not on disk."""
    referenced, missing = 0, []
    with snapshot.cursor(name="spp_backup_store_fnames") as cr:
        cr.itersize = 10000
        cr.execute("SELECT DISTINCT store_fname FROM ir_attachment WHERE store_fname IS NOT NULL AND store_fname <> ''")
        for (store_fname,) in cr:
            referenced += 1
            parts = store_fname.split("/")
            if store_fname.startswith("/") or ".." in parts or not os.path.isfile(os.path.join(root, *parts)):
                missing.append(store_fname)
    return referenced, missing


class _Artifacts:
    """Writes artifacts of one backup set to every destination at once."""

    def __init__(self, plan, storages, prefix):
        self.plan = plan
        self.storages = storages
        self.prefix = prefix
        self.results = {}

    @contextlib.contextmanager
    def open(self, kind, compression):
        file = mf.artifact_file(kind, compression)
        writers = []
        try:
            for storage in self.storages:
                writers.append(storage.open_writer("%s/%s" % (self.prefix, file)))
            sink = ArtifactWriter(writers, compression, self.plan.compression_level, self.plan.threads)
            started = time.monotonic()
            yield sink
            sink.close()
            for writer in writers:
                writer.commit()
        except BaseException:
            for writer in writers:
                writer.abort()
            raise
        self.results[kind] = {
            "file": file,
            "size": sink.size,
            "sha256": sink.sha256,
            "raw_size": sink.raw_size,
            "compression": compression,
            "encryption": None,
            "seconds": round(time.monotonic() - started, 3),
        }


def run_backup(plan, progress=None):
    """Make one backup set in every destination of ``plan``; returns a BackupResult."""
    progress = progress or _noop
    started_wall, started = time.time(), time.monotonic()
    if not plan.destinations:
        raise PreflightError("The policy has no destination: add at least one.")
    if not (plan.include_database or plan.include_filestore or plan.include_application):
        raise PreflightError(
            "The policy includes nothing: choose the database, the filestore or the application snapshot."
        )
    storages = [open_storage(dest) for dest in plan.destinations]
    progress(0.0, "Connecting to %s on %s" % (plan.db_name, plan.pg.describe()))
    lock_conn = pg.connect(plan.pg, plan.db_name)
    try:
        if plan.lock_key is not None:
            pg.try_advisory_lock(lock_conn, plan.lock_key)
        tools = preflight(plan, storages, lock_conn)
        backup_id = mf.new_backup_id()
        prefix = "%s/%s" % (plan.db_name, backup_id)
        try:
            result = _make_set(plan, storages, prefix, backup_id, tools, progress, started_wall)
        except BaseException:
            for storage in storages:
                with contextlib.suppress(Exception):
                    storage.remove_tree(prefix)
            raise
    finally:
        lock_conn.close()
    result.duration = round(time.monotonic() - started, 3)
    progress(1.0, "Backup %s done in %.1f s" % (result.backup_id, result.duration))
    return result


def _make_set(plan, storages, prefix, backup_id, tools, progress, started_wall):
    artifacts = _Artifacts(plan, storages, prefix)
    warnings = []
    root = plan.filestore_dir()
    snapshot = pg.Snapshot(pg.connect(plan.pg, plan.db_name, autocommit=False))
    try:
        progress(0.01, "Reading the database facts inside snapshot %s" % snapshot.snapshot_id)
        facts = collect_database_facts(snapshot, plan)
        referenced, missing = 0, []
        if plan.include_filestore and facts["has_attachments"]:
            referenced, missing = check_referenced_files(snapshot, root)
            if missing:
                warnings.append(
                    "%d attachment file(s) referenced by the database are missing from %s" % (len(missing), root)
                )
        estimate = max(1, (facts["size_bytes"] if plan.include_database else 0) + facts["attachments_bytes"])

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
        else:
            dumped = 0
    finally:
        snapshot.close()
        snapshot.conn.close()

    fs_stats = filestore.FilestoreStats()
    if plan.include_filestore:
        if not os.path.isdir(root):
            warnings.append("The filestore folder %s does not exist; the filestore archive is empty" % root)

        def on_file(stats):
            if stats.files % 200 == 0:
                progress(
                    min(0.97, 0.02 + (dumped + stats.bytes) / estimate),
                    "Archiving the filestore: %d files" % stats.files,
                )

        with artifacts.open("filestore", plan.compression) as sink:
            fs_stats = filestore.write_tar(root, sink, on_file=on_file)
        if fs_stats.vanished:
            warnings.append("%d file(s) vanished from the filestore while it was archived" % len(fs_stats.vanished))

    version = odoo_version_keys(plan.odoo_version, facts["base_version"])
    pg_version = "%d.0" % tools["server_major"]
    if plan.include_application:
        progress(0.98, "Writing the application snapshot")
        snapshot_doc = application_snapshot(plan, version, facts, tools)
        with artifacts.open("application", "none") as sink:
            sink.write(mf.dumps(snapshot_doc))

    finished_wall = time.time()
    manifest = {
        "format": MANIFEST_FORMAT,
        "engine": ENGINE_VERSION,
        "backup_id": backup_id,
        "label": plan.label,
        "db_name": plan.db_name,
        "created_at": mf.utc_iso(started_wall),
        "finished_at": mf.utc_iso(finished_wall),
        "duration_seconds": round(finished_wall - started_wall, 3),
        "odoo_dump": "1",
        "version": version["version"],
        "version_info": version["version_info"],
        "major_version": version["major_version"],
        "pg_version": pg_version,
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
            "files": fs_stats.files,
            "bytes": fs_stats.bytes,
            "referenced": referenced,
            "missing": missing,
            "vanished": fs_stats.vanished,
            "skipped_links": fs_stats.skipped,
        },
        "artifacts": {
            name: {k: v for k, v in art.items() if k != "seconds"} for name, art in artifacts.results.items()
        },
        "warnings": warnings,
    }
    data = mf.dumps(manifest)
    for storage in storages:
        with storage.open_writer("%s/%s" % (prefix, mf.MANIFEST_NAME)) as writer:
            writer.write(data)
    locations = [BackupRef(storage, plan.db_name, backup_id).location() for storage in storages]
    return BackupResult(
        backup_id=backup_id,
        db_name=plan.db_name,
        locations=locations,
        artifacts=artifacts.results,
        manifest=manifest,
        started_at=manifest["created_at"],
        finished_at=manifest["finished_at"],
        duration=0.0,
        warnings=warnings,
    )


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
