"""Restore a backup set into a database and filestore, with Odoo running or not.

The default target is a new database; an existing one is replaced only when
asked, and then it is renamed aside (``<db>_replaced_<time>``), never dropped.
Everything is verified before anything is touched.
"""

import contextlib
import datetime
import os
import re
import secrets
import shutil
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass, field

from . import filestore, pg
from .backup import human_bytes
from .config import PgConfig
from .errors import BackupError, RestoreError
from .stream import CHUNK, HashingReader, decompressing_reader
from .verify import verify

DB_NAME_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*$")


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
    warnings: list = field(default_factory=list)

    def to_dict(self):
        return asdict(self)


def _noop(fraction, message):
    pass


def check_target_name(name):
    if not name or not DB_NAME_RE.match(name) or len(name) > 63:
        raise RestoreError(
            "%r is not a usable database name: use letters, digits, '_', '-' or '.', starting with a letter or digit, "
            "at most 63 characters." % name
        )


def aside_name(target, now=None):
    now = now or datetime.datetime.now(datetime.timezone.utc)
    return ("%s_replaced_%s" % (target, now.strftime("%Y%m%d_%H%M%S")))[:63]


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

    fs_root = os.path.join(options.data_dir, "filestore") if options.data_dir else None
    fs_target = os.path.join(fs_root, target) if do_fs else None
    if do_db:
        pg.tool_version(options.pg, "pg_restore")
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
    progress(0.01, "Verifying backup %s" % ref.backup_id)
    report = verify(ref)
    seconds["verify"] = report.seconds
    if not report.ok:
        detail = report.problems + ["%s: %s" % (c.name, c.message) for c in report.checks if not c.ok]
        raise RestoreError(
            "The backup at %s failed verification, nothing was restored: %s" % (ref.location(), "; ".join(detail))
        )

    renamed, created = {}, set()
    try:
        if db_exists:
            renamed["database"] = aside_name(target)
            progress(0.05, "Renaming the existing database %s to %s" % (target, renamed["database"]))
            pg.rename_database(options.pg, target, renamed["database"])
        if fs_exists:
            renamed["filestore"] = os.path.join(fs_root, aside_name(target))
            os.rename(fs_target, renamed["filestore"])
        files = 0
        if do_db:
            t0 = time.monotonic()
            progress(0.1, "Restoring the database into %s" % target)
            _restore_database(ref, artifacts["database"], options, manifest, created)
            seconds["database"] = round(time.monotonic() - t0, 3)
        if do_fs:
            t0 = time.monotonic()
            progress(0.7, "Restoring the filestore into %s" % fs_target)
            files = _restore_filestore(ref, artifacts["filestore"], fs_root, fs_target)
            created.add("filestore")
            seconds["filestore"] = round(time.monotonic() - t0, 3)
        if do_db and options.new_uuid:
            new_database_identity(options.pg, target)
    except BaseException as exc:
        _roll_back(options, target, fs_target, renamed, created)
        if isinstance(exc, BackupError):
            raise
        if isinstance(exc, Exception):
            raise RestoreError("The restore failed and was rolled back: %s" % exc) from exc
        raise
    duration = round(time.monotonic() - started, 3)
    progress(1.0, "Restored %s into %s in %.1f s" % (ref.backup_id, target, duration))
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
        warnings=list(manifest.get("warnings") or []),
    )


def _check_space(options, artifacts, fs_root, do_db, do_fs):
    need = 0
    if do_fs:
        need += artifacts["filestore"].get("raw_size", artifacts["filestore"]["size"])
    if do_db and options.jobs > 1:
        need += artifacts["database"].get("raw_size", artifacts["database"]["size"])
    if not need:
        return
    probe = fs_root or options.tmp_dir or tempfile.gettempdir()
    while probe and not os.path.exists(probe):
        probe = os.path.dirname(probe)
    free = shutil.disk_usage(probe).free
    if free < need:
        raise RestoreError(
            "Not enough free disk space at %s: %s free, %s needed for the restore. Nothing was changed."
            % (probe, human_bytes(free), human_bytes(need))
        )


def _open_checked(ref, art):
    """A raw (decompressed) reader over an artifact, hashing the stored bytes as it goes."""
    stored = HashingReader(ref.storage.open_reader(ref.key(art["file"])))
    return stored, decompressing_reader(stored, art["compression"])


def _finish_checked(stored, art):
    while stored.read(CHUNK):
        pass
    if stored.size != art["size"] or stored.sha256.hexdigest() != art["sha256"]:
        raise RestoreError("%s changed while it was being restored (SHA-256 mismatch)." % art["file"])


def _restore_database(ref, art, options, manifest, created):
    database = manifest.get("database") or {}
    pg.create_database(
        options.pg,
        options.target_db,
        database.get("encoding") or "UTF8",
        database.get("collate"),
        database.get("ctype"),
    )
    created.add("database")
    stored, raw = _open_checked(ref, art)
    with contextlib.closing(stored):
        if options.jobs > 1:
            # Parallel pg_restore needs a seekable file: decompress next to the target first.
            with tempfile.NamedTemporaryFile(prefix="spp_backup_", suffix=".dump", dir=options.tmp_dir) as tmp:
                shutil.copyfileobj(raw, tmp, CHUNK)
                tmp.flush()
                _finish_checked(stored, art)
                pg.run_restore(options.pg, options.target_db, path=tmp.name, jobs=options.jobs)
        else:
            pg.run_restore(options.pg, options.target_db, source=raw)
            _finish_checked(stored, art)


def _restore_filestore(ref, art, fs_root, fs_target):
    os.makedirs(fs_root, exist_ok=True)
    staging = os.path.join(fs_root, ".%s.restoring-%s" % (os.path.basename(fs_target), secrets.token_hex(4)))
    stored, raw = _open_checked(ref, art)
    try:
        with contextlib.closing(stored):
            stats = filestore.extract_tar(raw, staging)
            _finish_checked(stored, art)
        os.rename(staging, fs_target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return stats.files


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


def _roll_back(options, target, fs_target, renamed, created):
    """Undo a failed restore: drop only what this restore created, put renamed things back."""
    if "database" in created:
        with contextlib.suppress(Exception):
            pg.drop_database(options.pg, target)
    if "database" in renamed:
        with contextlib.suppress(Exception):
            pg.rename_database(options.pg, renamed["database"], target)
    if "filestore" in created and fs_target and os.path.isdir(fs_target):
        shutil.rmtree(fs_target, ignore_errors=True)
    if "filestore" in renamed:
        with contextlib.suppress(Exception):
            os.rename(renamed["filestore"], fs_target)
