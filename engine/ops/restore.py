"""Restore a backup set into a database and filestore, with Odoo running or not.

Before anything is loaded: the signature when a public key is known, the
versions, the free space, every artifact's size, and the SHA-256 of every
artifact but the filestore's. The database is restored under a scratch name
and the filestore is unpacked into a staging folder, its SHA-256 checked as
it streams (it is not read twice); only when both are complete and every
checksum matched are they swapped in with two renames.
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

from ..core.config import PgConfig
from ..core.errors import BackupError, RestoreError
from ..core.human import count, human_bytes, human_duration
from ..core.manifest import filestore_artifact, filestore_bytes
from ..core.scope import SYSTEM_DATABASES
from ..db import pg, sqlguard, sqlimport
from ..formats import filestore, packstore
from ..io.storage.local import fsync_dir
from ..io.stream import CHUNK, ArtifactReader
from . import inflight
from .verify import verify

# Odoo's own neutralization for the modules that matter most (crons, outgoing
# and incoming mail), plus the marker Odoo sets; callers inside Odoo may add
# the statements of every installed module (odoo.modules.neutralize).
GENERIC_NEUTRALIZE = (
    ("ir_cron", "UPDATE ir_cron SET active = false"),
    ("ir_mail_server", "UPDATE ir_mail_server SET active = false"),
    ("fetchmail_server", "UPDATE fetchmail_server SET active = false"),
    (
        "ir_config_parameter",
        "INSERT INTO ir_config_parameter (key, value) VALUES ('database.is_neutralized', 'true') "
        "ON CONFLICT (key) DO UPDATE SET value = 'true'",
    ),
)


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
    public_key: str | list | None = None  # one trusted key or several (any one verifies)
    require_signature: bool = False
    expected_major_version: str | None = None
    neutralize: bool = False
    neutralize_sql: list = field(default_factory=list)
    # The target's name typed again: needed to replace a database an Odoo server is using.
    confirm_name: str | None = None
    allow_unsigned: bool = False
    # odoo.conf's [spp_backup] settings (import_role): a set whose signature is not checked loads as that role.
    settings: object = None
    # Called with the scratch database's name, and the PgConfig to reach it with, once it is loaded, before the
    # copy is neutralized or given a new identity (a drill counts the rows there, as they came out of the backup).
    on_loaded: object = None
    # Digests of code objects a person accepted after reading a refusal (--accept-code; never from Odoo).
    accepted_code: frozenset = frozenset()


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
    checks: list = field(default_factory=list)
    # {kind: rows} the restore closed as in flight when the backup was taken (engine.ops.inflight).
    in_flight_closed: dict = field(default_factory=dict)

    def to_dict(self):
        return asdict(self)


def _noop(*args):
    pass


def check_target_name(name):
    pg.check_db_name(name, error=RestoreError)
    if name in SYSTEM_DATABASES:
        raise RestoreError(
            "%r is a system database of PostgreSQL: it is never a restore target. Nothing was changed." % name
        )


def aside_name(target, now=None):
    """``<target>_replaced_<UTC time>``, the target part shortened to keep 63 characters."""
    now = now or datetime.datetime.now(datetime.timezone.utc)
    suffix = "_replaced_%s" % now.strftime("%Y%m%d_%H%M%S")
    return target[: 63 - len(suffix)] + suffix


def scratch_name(target):
    suffix = "__restoring_%s" % secrets.token_hex(3)
    return target[: 63 - len(suffix)] + suffix


class Target:
    """The database and filestore folder a restore ends in.

    New content is loaded into a scratch database and a staging folder, then
    swapped in by renames; ``run`` undoes everything on failure and says what
    it could not undo.
    """

    def __init__(self, options, do_db, do_fs):
        self.options = options
        self.name = options.target_db
        check_target_name(self.name)
        self.do_db, self.do_fs = do_db, do_fs
        if do_fs and not options.data_dir:
            raise RestoreError("The Odoo data directory is not known: pass --data-dir (or --no-filestore).")
        self.fs_root = os.path.join(options.data_dir, "filestore") if options.data_dir else None
        self.fs_target = os.path.join(self.fs_root, self.name) if do_fs else None
        if self.name in pg.template_databases(options.pg):
            raise RestoreError(
                "%r is a template database (every new database is made from a template): it is never a restore "
                "target. Nothing was changed." % self.name
            )
        self.db_exists = pg.database_exists(options.pg, self.name) if do_db else False
        self.served = bool(self.db_exists and options.replace and pg.odoo_connections(options.pg, self.name))
        if self.served and options.confirm_name != self.name:
            raise RestoreError(
                "An Odoo server is using database %r now. To replace it anyway, type its name again "
                "(--confirm %s); Odoo must be restarted afterwards. Nothing was changed." % (self.name, self.name)
            )
        self.fs_exists = bool(self.fs_target) and os.path.lexists(self.fs_target)
        if (self.db_exists or self.fs_exists) and not options.replace:
            what = " and ".join(
                w
                for w, e in (
                    ("database %r" % self.name, self.db_exists),
                    ("filestore folder %s" % self.fs_target, self.fs_exists),
                )
                if e
            )
            raise RestoreError(
                "The %s already exist%s. Restore into a new name, or replace it explicitly (the current one is "
                "then renamed aside, not dropped)." % (what, "" if self.db_exists and self.fs_exists else "s")
            )
        self.scratch = scratch_name(self.name) if do_db else None
        self.staging = (
            os.path.join(self.fs_root, ".%s.restoring-%s" % (self.name, secrets.token_hex(4))) if do_fs else None
        )
        self.undo = []
        self.scratch_created = False
        self.renamed = {}
        # How the engine's own statements reach the scratch database: as the import role while code from outside
        # has not been handed over (sqlimport.load_into_scratch), as the engine's user otherwise.
        self.db_pg = options.pg
        self.accepted = []
        self.in_flight_closed = {}

    def leftovers(self):
        """Scratch databases an interrupted restore of this same target left behind."""
        if not self.do_db:
            return []
        prefix = self.scratch[: self.scratch.rindex("__restoring_")]
        escaped = prefix.replace("\\", "\\\\").replace("_", "\\_").replace("%", "\\%")
        return [
            name for name in pg.databases_like(self.options.pg, escaped + "\\_\\_restoring\\_%") if name != self.scratch
        ]

    def prepare_copy(self, log=_noop):
        """The loaded scratch database made ready: what was in flight closed; what the options ask (a new
        identity, neutralization)."""
        self.in_flight_closed = inflight.close_in_flight(self.db_pg, self.scratch)
        if self.in_flight_closed:
            log("In the restored database: %s" % inflight.closed_text(self.in_flight_closed))
        if self.options.new_uuid:
            new_database_identity(self.db_pg, self.scratch)
            log("Gave the copy its own database.uuid and database.secret")
        if self.options.neutralize:
            neutralize(self.db_pg, self.scratch, self.options.neutralize_sql)
            log("Neutralized the copy: scheduled actions and outgoing mail switched off")

    def create_scratch(self, encoding="UTF8", collate=None, ctype=None, owner=None):
        pg.create_database(self.options.pg, self.scratch, encoding or "UTF8", collate, ctype, owner=owner)
        self.scratch_created = True

    def run(self, fill, progress, log=_noop):
        """``fill(self)`` loads the scratch database and staging folder; then swap them in."""
        try:
            fill(self)
            progress(0.95, "Swapping the restored copy in as %s" % self.name)
            self._swap()
            log(
                "Swapped the restored copy in as %s%s"
                % (
                    self.name,
                    "; the previous one is kept as %s" % ", ".join(self.renamed.values()) if self.renamed else "",
                )
            )
        except BaseException as exc:
            failures = self._roll_back()
            note = (" ROLLBACK INCOMPLETE, fix by hand: %s." % "; ".join(failures)) if failures else ""
            if isinstance(exc, BackupError):
                raise RestoreError("%s%s" % (exc, note) if note else str(exc)) from exc
            if isinstance(exc, Exception):
                raise RestoreError("The restore failed and was rolled back: %s%s" % (exc, note)) from exc
            if note:
                raise RestoreError("The restore was interrupted.%s" % note) from exc
            raise

    def _swap(self):
        options, target = self.options, self.name
        if self.db_exists:
            aside = aside_name(target)
            pg.rename_database(options.pg, target, aside)
            self.renamed["database"] = aside
            self.undo.append(
                (
                    "rename database %s back to %s" % (aside, target),
                    lambda: pg.rename_database(options.pg, aside, target),
                )
            )
            pg.set_allow_connections(options.pg, aside, False)
            self.undo.append(("reopen database %s" % aside, lambda: pg.set_allow_connections(options.pg, aside, True)))
        if self.do_db:
            pg.rename_database(options.pg, self.scratch, target)
            self.undo.append(
                (
                    "rename database %s back to %s" % (target, self.scratch),
                    lambda: pg.rename_database(options.pg, target, self.scratch),
                )
            )
        if self.fs_exists:
            aside_fs = os.path.join(self.fs_root, aside_name(target))
            os.rename(self.fs_target, aside_fs)
            self.renamed["filestore"] = aside_fs
            self.undo.append(
                (
                    "move filestore %s back to %s" % (aside_fs, self.fs_target),
                    lambda: os.rename(aside_fs, self.fs_target),
                )
            )
        if self.do_fs:
            os.rename(self.staging, self.fs_target)
            self.undo.append(
                ("move filestore %s back to staging" % self.fs_target, lambda: os.rename(self.fs_target, self.staging))
            )
            fsync_dir(self.fs_root)

    def _roll_back(self):
        """Undo a failed restore; returns what could not be undone, in words."""
        failures = []
        for description, action in reversed(self.undo):
            try:
                action()
            except Exception as exc:
                failures.append("could not %s (%s)" % (description, exc))
        if self.scratch_created:
            try:
                pg.drop_database(self.options.pg, self.scratch)
            except Exception as exc:
                failures.append("could not drop the partial database %s (%s)" % (self.scratch, exc))
        if self.staging and os.path.exists(self.staging):
            with contextlib.suppress(Exception):
                shutil.rmtree(self.staging)
        return failures

    def replaced_warning(self):
        if not self.renamed.get("database"):
            return []
        warnings = [
            "the previous database is kept as %s and closed to new connections "
            "(ALTER DATABASE ... WITH ALLOW_CONNECTIONS true to open it)" % self.renamed["database"]
        ]
        if self.served:
            warnings.append(
                "an Odoo server was using %s: restart it now, its workers still hold the replaced database's "
                "registry and caches" % self.name
            )
        return warnings


def restore(ref, options, progress=None, verified=None, log=None):
    """Restore ``ref`` (a BackupRef) as described by ``options``; returns a RestoreResult.

    ``verified`` is a VerifyReport the caller has just made with the same
    public key (a drill does): the verification pass is then not repeated.
    Every artifact's SHA-256 is still checked again while it streams.
    ``progress(fraction, message)`` follows the work; ``log(message)`` gets one line per step done.
    """
    progress = progress or _noop
    log = log or _noop
    started = time.monotonic()
    seconds = {}
    manifest = ref.read_manifest()
    artifacts = manifest["artifacts"]
    do_db = options.include_database and "database" in artifacts
    fs_kind, _fs_art = filestore_artifact(artifacts)
    do_fs = bool(options.include_filestore and fs_kind)
    if options.include_database and "database" not in artifacts:
        raise RestoreError("This backup holds no database dump (the policy left it out).")
    if any(art.get("encryption") for art in artifacts.values()) and not options.identities:
        raise RestoreError(
            "This backup is encrypted: give the age identity file (--identity, or identity_file in the "
            "[spp_backup] section of odoo.conf, or SPP_BACKUP_IDENTITY_FILE)."
        )
    _check_versions(options, manifest, do_db)
    if do_db:
        log("Using %s" % pg.client_tools(options.pg).describe())
    target = Target(options, do_db, do_fs)
    warnings = list(manifest.get("warnings") or [])
    leftovers = target.leftovers()
    if leftovers:
        warnings.append("databases left by interrupted restores (drop them when sure): %s" % ", ".join(leftovers))

    progress(0.01, "Verifying backup %s" % ref.backup_id)
    report = (
        verified
        if verified is not None
        else verify(
            ref,
            public_key=options.public_key,
            allow_unsigned=options.allow_unsigned,
            # The filestore's bytes are checked while they are unpacked into the staging folder, which is swapped
            # in only once they match; the dump is read and checked first, since pg_restore runs what it holds.
            streamed=(fs_kind,) if do_fs else (),
        )
    )
    seconds["verify"] = report.seconds
    if options.require_signature and not options.public_key:
        report.ok = False
        report.problems.append("a signature check was required but no public key was given")
    if not report.ok:
        raise RestoreError(
            "The backup at %s failed verification, nothing was changed: %s" % (ref.location(), report.failure_text())
        )
    if verified is None:
        log("Verified backup %s: %s" % (ref.backup_id, report.summary()))
    warnings += report.warnings
    # Only a valid signature proves the dump is this server's own; anything else is loaded like a dump from
    # outside (sqlimport): as a role that owns the scratch database and nothing else, through the SQL guard.
    untrusted = do_db and not report.signature.startswith("valid")
    if untrusted:
        warnings.append(UNTRUSTED_NOTE)
    _check_space(options, artifacts, target.fs_root, do_db, do_fs, filestore_bytes(manifest), untrusted)
    files = {"count": 0}

    def fill(target):
        # The filestore is extracted in a second thread while pg_restore runs:
        # the two are independent and together keep both cores busy.
        fs_job = None
        if do_fs:
            fs_job = _FilestoreJob(ref, manifest, fs_kind, options, target.fs_root, target.staging, seconds)
            progress(0.1, "Restoring the filestore into %s" % target.staging)
            fs_job.start()
        try:
            if do_db:
                t0 = time.monotonic()
                progress(0.1, "Restoring the database into %s" % target.scratch)
                if role is not None:
                    _load_untrusted_database(ref, artifacts["database"], options, manifest, target, role, log)
                else:
                    _restore_database(ref, artifacts["database"], options, manifest, target)
                log(
                    "Database restored in %s (%s of dump)"
                    % (
                        human_duration(time.monotonic() - t0),
                        human_bytes(artifacts["database"].get("raw_size") or artifacts["database"]["size"]),
                    )
                )
                if options.on_loaded is not None:
                    options.on_loaded(target.scratch, target.db_pg)
                target.prepare_copy(log)
                if role is not None:
                    sqlimport.hand_over(role, target, log)
                seconds["database"] = round(time.monotonic() - t0, 3)
        except BaseException:
            if fs_job:
                fs_job.cancel.set()
                fs_job.join()
            raise
        if fs_job:
            stats = fs_job.wait()
            files["count"] = stats.files
            log(
                "Filestore restored: %s, %s in %s"
                % (count(stats.files, "file"), human_bytes(stats.bytes), human_duration(seconds.get("filestore")))
            )

    # The import role outlives the rollback, which drops the scratch database it owns before the role goes.
    with contextlib.ExitStack() as stack:
        role = None
        if untrusted:
            sqlimport.check_psql(options.pg)
            role = stack.enter_context(sqlimport.ImportRole(options.pg, options.settings))
        target.run(fill, progress, log)
    duration = round(time.monotonic() - started, 3)
    done = "Restored %s into %s in %s" % (ref.backup_id, target.name, human_duration(duration))
    log(done)
    progress(1.0, done)
    return RestoreResult(
        backup_id=ref.backup_id,
        source=ref.location(),
        target_db=target.name,
        filestore_path=target.fs_target,
        database_restored=do_db,
        filestore_files=files["count"],
        renamed_aside=target.renamed,
        seconds=seconds,
        duration=duration,
        signature=report.signature,
        warnings=warnings + target.replaced_warning() + accepted_warnings(target.accepted),
        in_flight_closed=target.in_flight_closed,
    )


def accepted_warnings(objects):
    """The code a person accepted, said in the result (and so in the job's log)."""
    if not objects:
        return []
    return [
        "loaded code accepted with --accept-code (%d object%s): %s"
        % (len(objects), "" if len(objects) == 1 else "s", "; ".join(o.line() for o in objects))
    ]


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


def _check_space(options, artifacts, fs_root, do_db, do_fs, fs_bytes=0, untrusted=False):
    needs = []
    if do_fs:
        needs.append((fs_root, fs_bytes))
    if do_db and (options.jobs > 1 or untrusted):
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


UNTRUSTED_NOTE = (
    "the signature was not verified, so the dump was loaded as a role that owns only the new database and "
    "through the SQL guard, like a dump from outside (one job, slower than pg_restore)"
)


def _restore_database(ref, art, options, manifest, target):
    database = manifest.get("database") or {}
    target.create_scratch(database.get("encoding"), database.get("collate"), database.get("ctype"))
    scratch = target.scratch
    with ArtifactReader(ref.storage, ref.key(art["file"]), art, options.identities) as reader:
        if options.jobs > 1:
            # Parallel pg_restore needs a seekable file: decompress to a temporary file first.
            with tempfile.NamedTemporaryFile(prefix="spp_backup_", suffix=".dump", dir=options.tmp_dir) as tmp:
                _spool(reader, tmp)
                pg.run_restore(options.pg, scratch, path=tmp.name, jobs=options.jobs)
        else:
            pg.run_restore(options.pg, scratch, source=reader)
            reader.finish()


def _spool(reader, tmp):
    """The artifact's bytes, checked to their end, into the empty temporary file ``tmp`` (written past the
    page cache where the filesystem allows: see filestore.NewFile)."""
    with filestore.NewFile(os.dup(tmp.fileno())) as out:
        shutil.copyfileobj(reader, out, CHUNK)
    reader.finish()


def _load_untrusted_database(ref, art, options, manifest, target, role, log=_noop):
    """Load a dump nothing proves is this server's own: decrypted and checked into a temporary file, read
    through the SQL guard, loaded by psql as a role that owns the scratch database and nothing else, and only
    then handed over to the engine's user (sqlimport). What it holds cannot run as this server's user."""
    database = manifest.get("database") or {}
    with tempfile.NamedTemporaryFile(prefix="spp_backup_", suffix=".dump", dir=options.tmp_dir) as tmp:
        with ArtifactReader(ref.storage, ref.key(art["file"]), art, options.identities) as reader:
            _spool(reader, tmp)
        try:
            with sqlimport.ScriptOfDump(options.pg, tmp.name) as lines:
                first = sqlguard.scan(lines)
        except BackupError as exc:
            raise RestoreError("Refused the dump of %s, nothing was changed: %s" % (ref.backup_id, exc)) from exc
        log("The dump's signature was not verified: loading it as role %s through the SQL guard" % role.name)
        try:
            target.accepted = sqlimport.load_into_scratch(
                options.pg,
                role,
                target,
                lambda: sqlimport.ScriptOfDump(options.pg, tmp.name),
                first,
                database.get("encoding"),
                database.get("collate"),
                database.get("ctype"),
                accepted=options.accepted_code,
            )
        except sqlguard.SqlRefused as exc:
            raise RestoreError("Refused the dump of %s, nothing was changed: %s" % (ref.backup_id, exc)) from exc


class _FilestoreJob(threading.Thread):
    """Extracts the filestore archive into the staging folder, in its own thread."""

    def __init__(self, ref, manifest, kind, options, fs_root, staging, seconds):
        super().__init__(name="spp_backup-filestore", daemon=True)
        self.args_ = (ref, manifest, kind, options, fs_root, staging)
        self.seconds = seconds
        self.cancel = threading.Event()
        self.stats = filestore.FilestoreStats()
        self.error = None

    def run(self):
        ref, manifest, kind, options, fs_root, staging = self.args_
        art = manifest["artifacts"][kind]
        started = time.monotonic()
        try:
            with ArtifactReader(ref.storage, ref.key(art["file"]), art, options.identities) as reader:
                if kind == "filelist":
                    store = packstore.store_of(ref, manifest)
                    try:
                        self.stats = packstore.extract_store(
                            reader,
                            store,
                            options.identities,
                            staging,
                            packstore.read_set_info(ref)["packs"],
                            cancel=self.cancel,
                        )
                    finally:
                        store.close()
                else:
                    self.stats = filestore.extract_tar(reader, staging, cancel=self.cancel)
                reader.finish()
            os.sync()  # the restored files are on disk before they are swapped in
        except BaseException as exc:
            self.error = exc
        self.seconds["filestore"] = round(time.monotonic() - started, 3)

    def wait(self):
        """The extraction's FilestoreStats, once it is over (its error, raised)."""
        self.join()
        if self.error is not None:
            raise self.error
        return self.stats


def neutralize(pg_config, dbname, extra_sql=()):
    """Switch off crons and mail in a restored copy (what Odoo's neutralize does)."""
    conn = pg.connect(pg_config, dbname)
    try:
        with conn.cursor() as cr:
            for table, statement in GENERIC_NEUTRALIZE:
                if pg.table_exists(cr, table):
                    cr.execute(statement)
            for statement in extra_sql or ():
                cr.execute(statement)
    finally:
        conn.close()


# The modules Odoo's own neutralization counts as installed.
NEUTRALIZE_STATES = ("installed", "to upgrade", "to remove")


def neutralization_for(pg_config, dbname, by_module):
    """The statements of ``by_module`` ({module: [SQL]}) of the modules installed in database ``dbname``, in the
    order they were installed: a copy whose modules no manifest lists (a database as it was at some second)."""
    conn = pg.connect(pg_config, dbname)
    try:
        with conn.cursor() as cr:
            if not pg.table_exists(cr, "ir_module_module"):
                return []
            cr.execute("SELECT name FROM ir_module_module WHERE state IN %s ORDER BY id", (NEUTRALIZE_STATES,))
            names = [row[0] for row in cr.fetchall()]
    finally:
        conn.close()
    return [statement for name in names for statement in by_module.get(name) or ()]


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
