"""PostgreSQL: connections, versions, exported snapshots, pg_dump and pg_restore."""

import contextlib
import dataclasses
import glob
import os
import re
import shutil
import subprocess
import tempfile

import psycopg2
import psycopg2.extensions
from psycopg2 import sql

from ..core.errors import BackupError, LockBusy, PreflightError, RestoreError
from ..core.scope import is_database_name

VERSION_RE = re.compile(r"\(PostgreSQL\)\s+(\d+)(?:\.(\d+))?")


def check_db_name(name, error=PreflightError):
    """Odoo's rule for database names; also keeps names safe as folder names."""
    if not is_database_name(name):
        raise error(
            "%r is not a usable database name: use letters, digits, '_', '-' or '.', starting with a letter or "
            "digit, at most 63 characters." % (name,)
        )


def conninfo_dbname(name):
    """``--dbname`` for libpq tools that never reads a database name as a connection string."""
    return "dbname='%s'" % name.replace("\\", "\\\\").replace("'", "\\'")


def version_number(version_text):
    """``15.18`` of ``pg_dump (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)``, or ''."""
    match = re.search(r"\(PostgreSQL\)\s+([0-9][0-9.]*[0-9])", version_text or "")
    return match.group(1) if match else ""


def major_of(version_text):
    """The major version in a ``pg_dump --version`` style text, or None."""
    match = VERSION_RE.search(version_text or "")
    return int(match.group(1)) if match else None


def connect(pg, dbname, autocommit=True):
    """A psycopg2 connection, with errors turned into sentences."""
    try:
        conn = psycopg2.connect(connect_timeout=15, application_name="spp_backup", **pg.dsn_kwargs(dbname))
    except psycopg2.OperationalError as exc:
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
        if "does not exist" in text and "database" in text:
            raise PreflightError(
                "The database %r does not exist on the PostgreSQL server at %s." % (dbname, pg.describe())
            ) from exc
        raise PreflightError("Cannot connect to PostgreSQL at %s: %s" % (pg.describe(), text)) from exc
    conn.autocommit = autocommit
    return conn


@contextlib.contextmanager
def cursor(pg, dbname):
    """A cursor on its own autocommit connection to ``dbname``, closed afterwards."""
    conn = connect(pg, dbname)
    try:
        with conn.cursor() as cr:
            yield cr
    finally:
        conn.close()


@contextlib.contextmanager
def maintenance(pg):
    conn = connect(pg, pg.maintenance_db)
    try:
        yield conn
    finally:
        conn.close()


def database_exists(pg, dbname):
    with maintenance(pg) as conn, conn.cursor() as cr:
        cr.execute("SELECT 1 FROM pg_database WHERE datname = %s", (dbname,))
        return cr.fetchone() is not None


# Where Debian (and its apt.postgresql.org packages) install each major version's client tools.
TOOL_DIRS = "/usr/lib/postgresql/*/bin"
_chosen = {}  # (host, port, user, bin_dir) -> ClientTools
_dir_major = {}  # folder -> (major, version text) of its pg_dump


@dataclasses.dataclass(frozen=True)
class ClientTools:
    """The client tools the engine runs against one server: their folder (None: the PATH) and version."""

    folder: str | None
    major: int
    text: str
    server_major: int

    def describe(self):
        return "PostgreSQL client tools %s (%s) for a PostgreSQL %d server" % (
            version_number(self.text) or self.major,
            self.folder or "on the PATH",
            self.server_major,
        )


def _folder_version(folder):
    if folder not in _dir_major:
        path = os.path.join(folder, "pg_dump") if folder else "pg_dump"
        found = None
        if shutil.which(path):
            with contextlib.suppress(OSError, subprocess.SubprocessError):
                out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=30).stdout
                major = major_of(out)
                if major:
                    found = (major, out.strip())
        _dir_major[folder] = found
    return _dir_major[folder]


def candidate_folders(pg_config):
    """Where client tools may be: pg_bin_dir alone when it is set; else Debian's per-version folders, then the
    PATH (None)."""
    if pg_config.bin_dir:
        return [pg_config.bin_dir]
    return sorted(glob.glob(TOOL_DIRS)) + [None]


def choose_tools(found, server_major):
    """Of ``found`` ([(folder, major, text)]), the tools to use with a ``server_major`` server: the same major
    version if there is one, else the oldest newer one; None if none is at least the server's (pure)."""
    fitting = [entry for entry in found if entry[1] >= server_major]
    if not fitting:
        return None
    return min(fitting, key=lambda entry: (entry[1] != server_major, entry[1]))


def client_tools(pg):
    """The ClientTools for the server ``pg`` reaches (asked once per server and process), or a PreflightError
    that says what to install."""
    key = (pg.host, pg.port, pg.user, pg.bin_dir)
    if key not in _chosen:
        conn = connect(pg, pg.maintenance_db)
        try:
            server_major, server_text = server_version(conn)
        finally:
            conn.close()
        found = []
        for folder in candidate_folders(pg):
            version = _folder_version(folder)
            if version:
                found.append((folder, version[0], version[1]))
        chosen = choose_tools(found, server_major)
        if not found:
            raise PreflightError(
                "pg_dump was not found (in %s). Install the PostgreSQL %d client tools (Debian: apt-get install "
                "postgresql-client-%d) or set pg_bin_dir in odoo.conf's [spp_backup] section to their folder. "
                "Nothing was changed."
                % (", ".join(folder or "the PATH" for folder in candidate_folders(pg)), server_major, server_major)
            )
        if chosen is None:
            have = ", ".join("%s (%s)" % (version_number(text), folder or "the PATH") for folder, _m, text in found)
            raise PreflightError(
                "The PostgreSQL server at %s runs version %s, and pg_dump, pg_restore and psql must be at least its "
                "major version; the client tools found here are: %s. Install the PostgreSQL %d client tools "
                "(Debian: apt-get install postgresql-client-%d) or set pg_bin_dir in odoo.conf's [spp_backup] "
                "section to their folder. Nothing was changed."
                % (pg.describe(), server_text, have, server_major, server_major)
            )
        _chosen[key] = ClientTools(chosen[0], chosen[1], chosen[2], server_major)
    return _chosen[key]


def tool(pg, name):
    """The path of client tool ``name`` to run against the server ``pg`` reaches (see client_tools)."""
    folder = client_tools(pg).folder
    return os.path.join(folder, name) if folder else name


def tool_version(pg, tool_name):
    """(major, text) of a PostgreSQL client tool, or a PreflightError if absent."""
    path = tool(pg, tool_name)
    if shutil.which(path) is None:
        raise PreflightError(
            "%s was not found%s. Install the PostgreSQL client tools (Debian: postgresql-client) "
            "or set pg_bin_dir in the [spp_backup] section of odoo.conf."
            % (tool_name, " at %s" % path if os.path.dirname(path) else " on the PATH")
        )
    try:
        out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=30, check=True).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        raise PreflightError("%s could not be run: %s" % (path, exc)) from exc
    match = VERSION_RE.search(out)
    if not match:
        raise PreflightError("Cannot tell the version of %s from %r." % (path, out.strip()))
    return int(match.group(1)), out.strip()


def server_version(conn):
    """(major, text) of the connected server."""
    num = conn.server_version
    major = num // 10000
    with conn.cursor() as cr:
        cr.execute("SHOW server_version")
        text = cr.fetchone()[0]
    return major, text


def check_dump_compatible(dump_major, dump_text, server_major, server_text):
    """pg_dump must be at least the server's major version (pure check)."""
    if dump_major < server_major:
        raise PreflightError(
            "pg_dump is version %s but the database server is PostgreSQL %s: pg_dump's major version must be "
            "at least the server's (%d < %d). Install the PostgreSQL %d client tools, or point pg_bin_dir in "
            "odoo.conf's [spp_backup] section at them."
            % (dump_text, server_text, dump_major, server_major, server_major)
        )


def try_advisory_lock(conn, key):
    with conn.cursor() as cr:
        cr.execute("SELECT pg_try_advisory_lock(%s)", (key,))
        if not cr.fetchone()[0]:
            raise LockBusy(
                "Another backup of this policy is still running (advisory lock %d is held); this run was skipped." % key
            )


def advisory(conn, function, key):
    """Run one advisory lock function (``pg_advisory_lock_shared``, ``pg_try_advisory_lock``...) on ``key``."""
    if function not in (
        "pg_advisory_lock_shared",
        "pg_advisory_unlock_shared",
        "pg_try_advisory_lock",
        "pg_advisory_unlock",
    ):
        raise ValueError(function)
    with conn.cursor() as cr:
        cr.execute("SELECT %s(%%s)" % function, (key,))
        return cr.fetchone()[0]


class Snapshot:
    """A REPEATABLE READ transaction with an exported snapshot id."""

    def __init__(self, conn):
        self.conn = conn
        try:
            self.conn.autocommit = False
            self.conn.set_session(isolation_level=psycopg2.extensions.ISOLATION_LEVEL_REPEATABLE_READ, readonly=True)
            with conn.cursor() as cr:
                cr.execute("SELECT pg_export_snapshot()")
                self.snapshot_id = cr.fetchone()[0]
        except BaseException:
            conn.close()
            raise

    def cursor(self, name=None):
        return self.conn.cursor(name=name) if name else self.conn.cursor()

    def close(self):
        with contextlib.suppress(psycopg2.Error):
            self.conn.rollback()


def table_exists(cr, table):
    cr.execute("SELECT to_regclass(%s) IS NOT NULL", ("public.%s" % table,))
    return cr.fetchone()[0]


def run_dump(pg, dbname, snapshot_id, sink, compress_inside=False, on_bytes=None, chunk=1 << 20):
    """Run pg_dump (custom format) from the snapshot; stream its stdout into ``sink``."""
    args = [
        tool(pg, "pg_dump"),
        "--format=custom",
        "--no-password",
        "--dbname=%s" % conninfo_dbname(dbname),
    ]
    if snapshot_id:
        args.append("--snapshot=%s" % snapshot_id)
    if not compress_inside:
        args.append("--compress=0")
    with (
        tempfile.TemporaryFile() as errfile,
        subprocess.Popen(args, stdout=subprocess.PIPE, stderr=errfile, env=pg.env()) as proc,
    ):
        total = 0
        try:
            while True:
                data = proc.stdout.read(chunk)
                if not data:
                    break
                sink.write(data)
                total += len(data)
                if on_bytes is not None:
                    on_bytes(total)
        except BaseException:
            proc.kill()
            raise
        code = proc.wait()
        err = read_tail(errfile)
    if code != 0:
        raise BackupError("pg_dump failed (exit %d): %s" % (code, last_lines(err)))
    return total


def read_tail(handle, limit=65536):
    """The last ``limit`` bytes written to a temporary file, as text."""
    handle.seek(0, 2)
    size = handle.tell()
    handle.seek(max(0, size - limit))
    return handle.read().decode("utf-8", "replace")


def last_lines(text, count=5):
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return " | ".join(lines[-count:]) if lines else "no error output"


def create_database(pg, dbname, encoding="UTF8", collate=None, ctype=None, owner=None):
    """CREATE DATABASE from template0; the source's locale when this server has it."""
    base = sql.SQL("CREATE DATABASE {}{} TEMPLATE template0 ENCODING {}").format(
        sql.Identifier(dbname),
        sql.SQL(" OWNER {}").format(sql.Identifier(owner)) if owner else sql.SQL(""),
        sql.Literal(encoding),
    )
    attempts = [base]
    if collate and ctype:
        attempts.insert(
            0, base + sql.SQL(" LC_COLLATE {} LC_CTYPE {}").format(sql.Literal(collate), sql.Literal(ctype))
        )
    with maintenance(pg) as conn, conn.cursor() as cr:
        for index, query in enumerate(attempts):
            try:
                cr.execute(query)
                return
            except psycopg2.Error as exc:
                if index == len(attempts) - 1:
                    raise RestoreError("Cannot create database %r: %s" % (dbname, str(exc).strip())) from exc


def template_databases(pg):
    """Names of the databases this server flags as templates (template0, template1, any other)."""
    with maintenance(pg) as conn, conn.cursor() as cr:
        cr.execute("SELECT datname FROM pg_database WHERE datistemplate")
        return {row[0] for row in cr.fetchall()}


def odoo_connections(pg, dbname):
    """How many sessions of an Odoo server (application_name odoo-<pid>) use ``dbname`` now."""
    with maintenance(pg) as conn, conn.cursor() as cr:
        cr.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND application_name LIKE 'odoo-%%'", (dbname,)
        )
        return cr.fetchone()[0]


def row_counts(cr, tables=None):
    """{table: exact row count} of ``tables`` that exist (None: every table of the public schema)."""
    listed = tables is not None
    if not listed:
        cr.execute(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') AND NOT c.relispartition ORDER BY 1"
        )
        tables = [row[0] for row in cr.fetchall()]
    counts = {}
    for table in tables:
        if not listed or table_exists(cr, table):
            cr.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier("public", table)))
            counts[table] = cr.fetchone()[0]
    return counts


def terminate_connections(cr, dbname):
    cr.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
        (dbname,),
    )


def rename_database(pg, old, new):
    with maintenance(pg) as conn, conn.cursor() as cr:
        terminate_connections(cr, old)
        try:
            cr.execute(sql.SQL("ALTER DATABASE {} RENAME TO {}").format(sql.Identifier(old), sql.Identifier(new)))
        except psycopg2.Error as exc:
            raise RestoreError("Cannot rename database %r to %r: %s" % (old, new, str(exc).strip())) from exc


def drop_database(pg, dbname):
    with maintenance(pg) as conn, conn.cursor() as cr:
        terminate_connections(cr, dbname)
        force = sql.SQL(" WITH (FORCE)") if conn.server_version >= 130000 else sql.SQL("")
        cr.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(dbname)) + force)


def set_allow_connections(pg, dbname, allow):
    """Open or close a database to new connections (an aside copy must not run Odoo's crons)."""
    with maintenance(pg) as conn, conn.cursor() as cr:
        cr.execute(
            sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS {}").format(
                sql.Identifier(dbname), sql.SQL("true" if allow else "false")
            )
        )
        if not allow:
            terminate_connections(cr, dbname)


def databases_like(pg, pattern):
    with maintenance(pg) as conn, conn.cursor() as cr:
        cr.execute("SELECT datname FROM pg_database WHERE datname LIKE %s ORDER BY datname", (pattern,))
        return [row[0] for row in cr.fetchall()]


def feed_process(args, source, env, what, chunk=1 << 20, on_bytes=None):
    """Run ``args`` with ``source`` streamed to its stdin; raise BackupError naming ``what`` on failure.

    Returns the tail of its stderr. stderr goes to a temporary file, so a
    chatty process can never block on a full pipe.
    """
    with (
        tempfile.TemporaryFile() as errfile,
        subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=errfile, env=env) as proc,
    ):
        total = 0
        try:
            while True:
                data = source.read(chunk)
                if not data:
                    break
                proc.stdin.write(data)
                total += len(data)
                if on_bytes is not None:
                    on_bytes(total)
            proc.stdin.close()
        except BrokenPipeError:
            pass
        except BaseException:
            proc.kill()
            raise
        code = proc.wait()
        err = read_tail(errfile)
    if code != 0:
        raise RestoreError("%s failed (exit %d): %s" % (what, code, last_lines(err)))
    return err


def run_restore(pg, dbname, source=None, path=None, jobs=1, on_bytes=None):
    """pg_restore into an existing empty database, from a stream or a file."""
    args = [tool(pg, "pg_restore"), "--no-owner", "--no-password", "--dbname=%s" % conninfo_dbname(dbname)]
    if path:
        if jobs and jobs > 1:
            args.append("--jobs=%d" % jobs)
        args.append(path)
        proc = subprocess.run(args, capture_output=True, env=pg.env())
        if proc.returncode != 0:
            raise RestoreError(
                "pg_restore failed (exit %d): %s"
                % (proc.returncode, last_lines(proc.stderr.decode("utf-8", "replace")))
            )
        return proc.stderr.decode("utf-8", "replace")
    return feed_process(args, source, pg.env(), "pg_restore", on_bytes=on_bytes)
