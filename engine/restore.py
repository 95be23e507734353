"""Restore a backup set into a database and filestore, with Odoo running or not.

Everything is verified before anything is touched (signature when a public
key is known, every artifact's size and SHA-256, versions, free space). The
database is restored under a scratch name and the filestore into a staging
folder; only when both are complete are they swapped in with two renames.
An existing target is replaced only when asked, and is then renamed aside
(``<db>_replaced_<time>``, closed to new connections so that its crons do
not run), never dropped. A failed or interrupted restore removes what it
created and puts back what it renamed, and says so when it could not.
"""

import contextlib
import datetime
import os
import secrets
import shutil
import tempfile
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field

from . import filestore, pg
from .backup import human_bytes
from .config import PgConfig
from .errors import BackupError, RestoreError
from .stream import CHUNK, ArtifactReader
from .verify import verify


@dataclass
class RestoreOptions:
    target_db: str
    pg: PgConfig = field(default_factory=PgConfig)
    data_dir: str | None = None
    replace: bool = False
    include_database: bool = True
    include_filestore: bool = True
    new_uuid: bool = False
    jobs: int = 1
    tmp_dir: str | None = None
    identities: list = field(default_factory=list)
    public_key: str | None = None
    require_signature: bool = False
    expected_major_version: str | None = None


@dataclass
class RestoreResult:
    backup_id: str
    source: str
    target_db: str
    filestore_path: str | None
    database_restored: bool
    filestore_files: int
    renamed_aside: dict
    seconds: dict
    duration: float
    signature: str = "not checked"
    warnings: list = field(default_factory=list)

    def to_dict(self):
        return asdict(self)


def _noop(fraction, message):
    pass


def check_target_name(name):
    pg.check_db_name(name, error=RestoreError)


def aside_name(target, now=None):
    """``<target>_replaced_<UTC time>``, the target part shortened to keep 63 characters."""
    now = now or datetime.datetime.now(datetime.timezone.utc)
    suffix = "_replaced_%s" % now.strftime("%Y%m%d_%H%M%S")
    return target[: 63 - len(suffix)] + suffix


def scratch_name(target):
    suffix = "__restoring_%s" % secrets.token_hex(3)
    return target[: 63 - len(suffix)] + suffix


def restore(ref, options, progress=None):
    """Restore ``ref`` (a BackupRef) as described by ``options``; returns a RestoreResult."""
    progress = progress or _noop
    started = time.monotonic()
    seconds = {}
    target = options.target_db
    check_target_name(target)
    manifest = ref.read_manifest()
    artifacts = manifest["artifacts"]
    do_db = options.include_database and "database" in artifacts
    do_fs = options.include_filestore and "filestore" in artifacts
    if options.include_database and "database" not in artifacts:
        raise RestoreError("This backup holds no database dump (the policy left it out).")
    if do_fs and not options.data_dir:
        raise RestoreError("The Odoo data directory is not known: pass --data-dir (or --no-filestore).")
    if any(art.get("encryption") for art in artifacts.values()) and not options.identities:
        raise RestoreError(
            "This backup is encrypted: give the age identity file (--identity, or identity_file in the "
            "[spp_backup] section of odoo.conf, or SPP_BACKUP_IDENTITY_FILE)."
        )
    _check_versions(options, manifest, do_db)

    fs_root = os.path.join(options.data_dir, "filestore") if options.data_dir else None
    fs_target = os.path.join(fs_root, target) if do_fs else None
    db_exists = pg.database_exists(options.pg, target) if do_db else False
    fs_exists = bool(fs_target) and os.path.lexists(fs_target)
    if (db_exists or fs_exists) and not options.replace:
        what = " and ".join(
            w for w, e in (("database %r" % target, db_exists), ("filestore folder %s" % fs_target, fs_exists)) if e
        )
        raise RestoreError(
            "The %s already exist%s. Restore into a new name, or replace it explicitly "
            "(the current one is then renamed aside, not dropped)." % (what, "" if db_exists and fs_exists else "s")
        )
    _check_space(options, artifacts, fs_root, do_db, do_fs)
    warnings = list(manifest.get("warnings") or [])
    leftovers = pg.databases_like(options.pg, "%\\_\\_restoring\\_%") if do_db else []
    if leftovers:
        warnings.append("databases left by interrupted restores (drop them when sure): %s" % ", ".join(leftovers))

    progress(0.01, "Verifying backup %s" % ref.backup_id)
    report = verify(ref, public_key=options.public_key)
    seconds["verify"] = report.seconds
    if options.require_signature and not options.public_key:
        report.ok = False
        report.problems.append("a signature check was required but no public key was given")
    if not report.ok:
        raise RestoreError(
            "The backup at %s failed verification, nothing was changed: %s" % (ref.location(), report.failure_text())
        )
    warnings += report.warnings

    scratch = scratch_name(target) if do_db else None
    staging = os.path.join(fs_root, ".%s.restoring-%s" % (target, secrets.token_hex(4))) if do_fs else None
    undo = []  # (description, callable) to run in reverse order on failure
    created = {"scratch": False}
    renamed = {}
    files = 0
    try:
        # The filestore is extracted in a second thread while pg_restore runs:
        # the two are independent and together keep both cores busy.
        fs_job = _FilestoreJob(ref, artifacts["filestore"], options, fs_root, staging, seconds) if do_fs else None
        if fs_job:
            progress(0.1, "Restoring the filestore into %s" % staging)
            fs_job.start()
        try:
            if do_db:
                t0 = time.monotonic()
                progress(0.1, "Restoring the database into %s" % scratch)
                _restore_database(ref, artifacts["database"], options, manifest, scratch, created)
                if options.new_uuid:
                    new_database_identity(options.pg, scratch)
                seconds["database"] = round(time.monotonic() - t0, 3)
        except BaseException:
            if fs_job:
                fs_job.cancel.set()
                fs_job.join()
            raise
        if fs_job:
            files = fs_job.wait()

        progress(0.95, "Swapping the restored copy in as %s" % target)
        if db_exists:
            aside = aside_name(target)
            pg.rename_database(options.pg, target, aside)
            renamed["database"] = aside
            undo.append(
                (
                    "rename database %s back to %s" % (aside, target),
                    lambda a=aside: pg.rename_database(options.pg, a, target),
                )
            )
            pg.set_allow_connections(options.pg, aside, False)
            undo.append(("reopen database %s" % aside, lambda a=aside: pg.set_allow_connections(options.pg, a, True)))
        if do_db:
            pg.rename_database(options.pg, scratch, target)
            undo.append(
                (
                    "rename database %s back to %s" % (target, scratch),
                    lambda: pg.rename_database(options.pg, target, scratch),
                )
            )
        if fs_exists:
            aside_fs = os.path.join(fs_root, aside_name(target))
            os.rename(fs_target, aside_fs)
            renamed["filestore"] = aside_fs
            undo.append(
                ("move filestore %s back to %s" % (aside_fs, fs_target), lambda a=aside_fs: os.rename(a, fs_target))
            )
        if do_fs:
            os.rename(staging, fs_target)
            undo.append(("move filestore %s back to staging" % fs_target, lambda: os.rename(fs_target, staging)))
            pg_fsync_dir(fs_root)
    except BaseException as exc:
        failures = _roll_back(options, undo, created, scratch, staging)
        note = (" ROLLBACK INCOMPLETE, fix by hand: %s." % "; ".join(failures)) if failures else ""
        if isinstance(exc, BackupError):
            raise RestoreError("%s%s" % (exc, note) if note else str(exc)) from exc
        if isinstance(exc, Exception):
            raise RestoreError("The restore failed and was rolled back: %s%s" % (exc, note)) from exc
        if note:
            raise RestoreError("The restore was interrupted.%s" % note) from exc
        raise
    duration = round(time.monotonic() - started, 3)
    progress(1.0, "Restored %s into %s in %.1f s" % (ref.backup_id, target, duration))
    if renamed.get("database"):
        warnings.append(
            "the previous database is kept as %s and closed to new connections "
            "(ALTER DATABASE ... WITH ALLOW_CONNECTIONS true to open it)" % renamed["database"]
        )
    return RestoreResult(
        backup_id=ref.backup_id,
        source=ref.location(),
        target_db=target,
        filestore_path=fs_target,
        database_restored=do_db,
        filestore_files=files,
        renamed_aside=renamed,
        seconds=seconds,
        duration=duration,
        signature=report.signature,
        warnings=warnings,
    )


def pg_fsync_dir(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _check_versions(options, manifest, do_db):
    if do_db:
        restore_major, restore_text = pg.tool_version(options.pg, "pg_restore")
        dump_major = pg.major_of((manifest.get("source") or {}).get("pg_dump"))
        if dump_major and restore_major < dump_major:
            raise RestoreError(
                "pg_restore is %s but the dump was made by PostgreSQL %d's pg_dump: install the PostgreSQL %d "
                "client tools (or newer), or set pg_bin_dir in odoo.conf's [spp_backup] section."
                % (restore_text, dump_major, dump_major)
            )
    expected = options.expected_major_version
    found = manifest.get("major_version")
    if expected and found and expected != found:
        raise RestoreError(
            "This backup was made with Odoo %s and this server runs Odoo %s: restore it on an Odoo %s server."
            % (found, expected, found)
        )


def _free_at(path):
    while path and not os.path.exists(path):
        path = os.path.dirname(path)
    usage = shutil.disk_usage(path or "/")
    return path, usage.free, os.stat(path or "/").st_dev


def _check_space(options, artifacts, fs_root, do_db, do_fs):
    needs = []
    if do_fs:
        needs.append((fs_root, artifacts["filestore"].get("raw_size", artifacts["filestore"]["size"])))
    if do_db and options.jobs > 1:
        needs.append(
            (
                options.tmp_dir or tempfile.gettempdir(),
                artifacts["database"].get("raw_size", artifacts["database"]["size"]),
            )
        )
    per_device = {}
    for path, need in needs:
        where, free, device = _free_at(path)
        entry = per_device.setdefault(device, [where, free, 0])
        entry[2] += need
    for where, free, need in per_device.values():
        if free < need:
            raise RestoreError(
                "Not enough free disk space at %s: %s free, %s needed for the restore. Nothing was changed."
                % (where, human_bytes(free), human_bytes(need))
            )


def _restore_database(ref, art, options, manifest, scratch, created):
    database = manifest.get("database") or {}
    pg.create_database(
        options.pg, scratch, database.get("encoding") or "UTF8", database.get("collate"), database.get("ctype")
    )
    created["scratch"] = True
    with ArtifactReader(ref.storage, ref.key(art["file"]), art, options.identities) as reader:
        if options.jobs > 1:
            # Parallel pg_restore needs a seekable file: decompress to a temporary file first.
            with tempfile.NamedTemporaryFile(prefix="spp_backup_", suffix=".dump", dir=options.tmp_dir) as tmp:
                shutil.copyfileobj(reader, tmp, CHUNK)
                tmp.flush()
                reader.finish()
                pg.run_restore(options.pg, scratch, path=tmp.name, jobs=options.jobs)
        else:
            pg.run_restore(options.pg, scratch, source=reader)
            reader.finish()


class _FilestoreJob(threading.Thread):
    """Extracts the filestore archive into the staging folder, in its own thread."""

    def __init__(self, ref, art, options, fs_root, staging, seconds):
        super().__init__(name="spp_backup-filestore", daemon=True)
        self.args_ = (ref, art, options, fs_root, staging)
        self.seconds = seconds
        self.cancel = threading.Event()
        self.files = 0
        self.error = None

    def run(self):
        ref, art, options, fs_root, staging = self.args_
        started = time.monotonic()
        try:
            os.makedirs(fs_root, exist_ok=True)
            with ArtifactReader(ref.storage, ref.key(art["file"]), art, options.identities) as reader:
                self.files = filestore.extract_tar(reader, staging, cancel=self.cancel).files
                reader.finish()
            os.sync()  # the restored files are on disk before they are swapped in
        except BaseException as exc:
            self.error = exc
        self.seconds["filestore"] = round(time.monotonic() - started, 3)

    def wait(self):
        self.join()
        if self.error is not None:
            raise self.error
        return self.files


def new_database_identity(pg_config, dbname):
    """A copy gets its own database.uuid and database.secret, as Odoo's manager does."""
    conn = pg.connect(pg_config, dbname)
    try:
        with conn.cursor() as cr:
            if not pg.table_exists(cr, "ir_config_parameter"):
                return
            for key, value in (("database.uuid", str(uuid.uuid1())), ("database.secret", str(uuid.uuid4()))):
                cr.execute("UPDATE ir_config_parameter SET value = %s WHERE key = %s", (value, key))
    finally:
        conn.close()


def _roll_back(options, undo, created, scratch, staging):
    """Undo a failed restore; returns what could not be undone, in words."""
    failures = []
    for description, action in reversed(undo):
        try:
            action()
        except Exception as exc:
            failures.append("could not %s (%s)" % (description, exc))
    if created.get("scratch"):
        try:
            pg.drop_database(options.pg, scratch)
        except Exception as exc:
            failures.append("could not drop the partial database %s (%s)" % (scratch, exc))
    if staging and os.path.exists(staging):
        with contextlib.suppress(Exception):
            shutil.rmtree(staging)
    return failures
