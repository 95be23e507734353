"""Loading plain SQL from outside as a role that owns the scratch database and nothing else.

The second layer under :mod:`engine.db.sqlguard`: psql logs in as an import
role that is not a superuser, may not create databases or roles, is in none
of ``pg_execute_server_program``, ``pg_read_server_files``,
``pg_write_server_files``, ``pg_read_all_data``, ``pg_write_all_data``, and
owns the scratch database the dump is loaded into. psql itself runs under a
``\\restrict`` key of the engine's own, so it refuses every backslash command
the guard might have missed. After the load, the engine (its own
connection) refuses functions that run with their owner's rights, takes the
loaded objects over (``REASSIGN OWNED``) and drops the role.

The role is made for each import when the engine's PostgreSQL user has
``CREATEROLE`` (or is a superuser); otherwise an administrator makes one once
and names it in odoo.conf's ``[spp_backup]`` section (``import_role``,
``import_role_password``), granted to the engine's user.
"""

import contextlib
import dataclasses
import re
import secrets
import subprocess
import tempfile
import time

import psycopg2
import psycopg2.errors
import psycopg2.extensions
from psycopg2 import sql

from ..core.errors import PreflightError, RestoreError
from . import codecheck, pg
from .allowed_code import EXTENSIONS
from .sqlguard import DumpTruncated, SqlGuard, SqlRefused

ROLE_PREFIX = "spp_import_"
ROLE_COMMENT = "spp_backup: temporary role of one plain-SQL import; dropped when it ends"
FORBIDDEN_MEMBERSHIPS = (
    "pg_execute_server_program",
    "pg_read_server_files",
    "pg_write_server_files",
    "pg_read_all_data",
    "pg_write_all_data",
    "pg_signal_backend",
)
ROLE_FLAGS = ("SUPERUSER", "CREATEDB", "CREATEROLE", "REPLICATION", "BYPASSRLS")
# psql releases that know \restrict (the fix for CVE-2025-8714).
RESTRICT_SINCE = {13: 22, 14: 19, 15: 14, 16: 10, 17: 6}

GRANT_HELP = (
    "A plain-SQL import runs as a role that owns only the database it loads, and PostgreSQL user %s may not "
    "make one. Either let it (as a superuser: ALTER ROLE %s CREATEROLE), or make one role once: "
    "CREATE ROLE spp_import LOGIN PASSWORD '<a password>'; GRANT spp_import TO %s; and name it in the "
    "[spp_backup] section of odoo.conf: import_role = spp_import, import_role_password = <the password>. "
    "Nothing was changed."
)


def psql_knows_restrict(version_text):
    match = re.search(r"\(PostgreSQL\)\s+(\d+)\.(\d+)", version_text or "")
    if not match:
        return False
    major, minor = int(match.group(1)), int(match.group(2))
    return major >= 18 or minor >= RESTRICT_SINCE.get(major, 1 << 30)


def check_psql(pg_config):
    """The psql to load with; it must know ``\\restrict``."""
    _major, text = pg.tool_version(pg_config, "psql")
    if not psql_knows_restrict(text):
        raise PreflightError(
            "%s does not know \\restrict, so it could run commands hidden in a dump: install a PostgreSQL client "
            "of 13.22, 14.19, 15.14, 16.10, 17.6 or later (or set pg_bin_dir in odoo.conf's [spp_backup] "
            "section). Nothing was changed." % text.strip()
        )
    return text


class ImportRole:
    """The role psql loads a dump as; a context manager that makes (and drops) it, or checks a configured one."""

    def __init__(self, pg_config, settings=None):
        self.pg = pg_config
        self.configured = (settings.get("import_role") if settings else None) or None
        self.password = (settings.get("import_role_password") if settings else None) or None
        self.name = self.configured
        self.temporary = False

    def __enter__(self):
        with pg.maintenance(self.pg) as conn, conn.cursor() as cr:
            cr.execute("SELECT current_user, rolsuper, rolcreaterole FROM pg_roles WHERE rolname = current_user")
            self.engine_user, is_super, can_create = cr.fetchone()
            if self.configured:
                if self.configured == self.engine_user:
                    raise PreflightError(
                        "import_role in odoo.conf names the engine's own user %s: name a role that owns nothing."
                        % self.engine_user
                    )
                cr.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (self.configured,))
                if not cr.fetchone():
                    raise PreflightError(
                        "The import role %s named in odoo.conf does not exist on the PostgreSQL server."
                        % self.configured
                    )
            elif is_super or can_create:
                self._create(cr, conn, is_super)
            else:
                raise PreflightError(GRANT_HELP % ((self.engine_user,) * 3))
            self.problems(cr)
        return self

    def _create(self, cr, conn, is_super):
        self.name = ROLE_PREFIX + secrets.token_hex(6)
        self.password = secrets.token_urlsafe(24)
        # Only the SCRAM verifier crosses the wire, so no server log can show the password.
        verifier = psycopg2.extensions.encrypt_password(self.password, self.name, conn)
        cr.execute(
            sql.SQL(
                "CREATE ROLE {} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS INHERIT "
                "CONNECTION LIMIT 4 PASSWORD {}"
            ).format(sql.Identifier(self.name), sql.Literal(verifier))
        )
        self.temporary = True
        cr.execute(
            sql.SQL("COMMENT ON ROLE {} IS {}").format(
                sql.Identifier(self.name), sql.Literal("%s (made at %d)" % (ROLE_COMMENT, time.time()))
            )
        )
        drop_stale_roles(cr)
        if not is_super:
            cr.execute(sql.SQL("GRANT {} TO CURRENT_USER").format(sql.Identifier(self.name)))

    def problems(self, cr):
        """Refuse a role that could act outside its database."""
        cr.execute(
            "SELECT rolsuper, rolcreatedb, rolcreaterole, rolreplication, rolbypassrls FROM pg_roles "
            "WHERE rolname = %s",
            (self.name,),
        )
        flags = cr.fetchone()
        found = [
            label
            for label, on in zip(
                ("SUPERUSER", "CREATEDB", "CREATEROLE", "REPLICATION", "BYPASSRLS"), flags, strict=True
            )
            if on
        ]
        for member in FORBIDDEN_MEMBERSHIPS:
            cr.execute(
                "SELECT to_regrole(%s) IS NOT NULL AND pg_has_role(%s, %s, 'MEMBER')", (member, self.name, member)
            )
            if cr.fetchone()[0]:
                found.append("member of %s" % member)
        if found:
            raise PreflightError(
                "The import role %s may do more than own one database (%s): a dump from outside is never loaded "
                "as such a role. Nothing was changed." % (self.name, ", ".join(found))
            )

    def env(self, pg_config):
        env = pg_config.env()
        env.update(
            PGUSER=self.name,
            PGCLIENTENCODING="UTF8",
            PGOPTIONS="-c standard_conforming_strings=on",
            PGAPPNAME="spp_backup import",
        )
        for var in ("PGSERVICE", "PGSERVICEFILE", "PGPASSFILE"):
            env.pop(var, None)
        if self.password:
            env["PGPASSWORD"] = self.password
        else:
            env.pop("PGPASSWORD", None)
        return env

    def _connect(self, dbname):
        kwargs = self.pg.dsn_kwargs(dbname)
        kwargs.update(user=self.name)
        kwargs.pop("password", None)
        if self.password:
            kwargs["password"] = self.password
        conn = psycopg2.connect(connect_timeout=15, application_name="spp_backup import", **kwargs)
        conn.autocommit = True
        return conn

    def _check_views(self, views, dbname):
        """A view reads with its owner's rights: once the engine's user owns it, one over a table the import role
        could not read (pg_authid, say) would show that table to anyone allowed to read the view. Each view is
        opened (LIMIT 0) as the role, which checks exactly those rights; a materialized view's query is planned
        as the role (EXPLAIN checks the same rights without running it, and works on one made WITH NO DATA)."""
        if not views:
            return
        conn = self._connect(dbname)
        refused = []
        try:
            with conn.cursor() as cr:
                for view, kind, definition in views:
                    if kind == "m":
                        statement = sql.SQL("EXPLAIN {}").format(sql.SQL(definition.strip().rstrip(";")))
                    else:
                        statement = sql.SQL("SELECT 1 FROM {} LIMIT 0").format(sql.SQL(view))
                    try:
                        cr.execute(statement)
                    except psycopg2.errors.InsufficientPrivilege:
                        refused.append(view)
        finally:
            conn.close()
        if refused:
            raise SqlRefused(
                "the dump defines views over tables it could not read itself (%s): they would show them once "
                "restored" % ", ".join(refused[:5])
            )

    def check_login(self, dbname):
        """Log in as the role, as psql will, and read its rights from its own session."""
        try:
            conn = self._connect(dbname)
        except psycopg2.OperationalError as exc:
            raise PreflightError(
                "The import role %s cannot log in to PostgreSQL at %s (%s): allow password logins for it in "
                "pg_hba.conf (for example host all %s 127.0.0.1/32 scram-sha-256). Nothing was changed."
                % (self.name, self.pg.describe(), str(exc).strip().splitlines()[0], self.name)
            ) from exc
        try:
            with conn.cursor() as cr:
                cr.execute("SELECT current_user, usesuper FROM pg_user WHERE usename = current_user")
                who, is_super = cr.fetchone()
                if who != self.name or is_super:
                    raise PreflightError("The import session is not the import role: nothing was loaded.")
        finally:
            conn.close()

    def pg_config(self, pg_config):
        """How the engine reaches the scratch database as this role (its checks, neutralize, the new uuid)."""
        return dataclasses.replace(pg_config, user=self.name, password=self.password)

    def _inventory_cursor(self, dbname):
        conn = self._connect(dbname)
        conn.autocommit = False
        conn.set_session(readonly=True)
        return conn

    def snapshot(self, dbname):
        """The code objects the scratch database holds before the load: the engine's own extensions'."""
        conn = self._inventory_cursor(dbname)
        try:
            with conn.cursor() as cr:
                return codecheck.Snapshot(cr)
        finally:
            conn.close()

    def check_code(self, dbname, before, accepted=()):
        """Read the loaded database's catalog as this role: every object that runs code must be allowed or
        accepted (codecheck); returns the accepted ones."""
        conn = self._inventory_cursor(dbname)
        try:
            with conn.cursor() as cr:
                return codecheck.check(cr, before, accepted)
        finally:
            conn.close()

    def hand_over(self, dbname):
        """After the load: refuse owner's-rights functions, then the engine's user takes everything over."""
        conn = pg.connect(self.pg, dbname)
        try:
            with conn.cursor() as cr:
                cr.execute(
                    "SELECT p.oid::regprocedure::text FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
                    "WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND NOT EXISTS (SELECT 1 "
                    "FROM pg_depend d WHERE d.classid = 'pg_proc'::regclass AND d.objid = p.oid AND d.deptype = 'e') "
                    "AND (p.prosecdef OR EXISTS ("
                    "SELECT 1 FROM unnest(p.proconfig) c WHERE c ~* '^(role|session_authorization)=')) LIMIT 5"
                )
                definers = [row[0] for row in cr.fetchall()]
                if definers:
                    raise SqlRefused(
                        "the dump defines functions that run with their owner's rights or switch roles (%s): they "
                        "would run as this server's user once restored" % ", ".join(definers)
                    )
                cr.execute(
                    "SELECT c.oid::regclass::text, c.relkind, CASE c.relkind WHEN 'm' THEN pg_get_viewdef(c.oid) END "
                    "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind IN ('v', 'm') "
                    "AND n.nspname NOT IN ('pg_catalog', 'information_schema')"
                )
                self._check_views(cr.fetchall(), dbname)
                cr.execute(sql.SQL("REASSIGN OWNED BY {} TO CURRENT_USER").format(sql.Identifier(self.name)))
                cr.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(self.name)))
                return revoke_foreign_grants(cr)
        finally:
            conn.close()

    def __exit__(self, *exc):
        if not self.temporary:
            return False
        with contextlib.suppress(Exception), pg.maintenance(self.pg) as conn, conn.cursor() as cr:
            cr.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s", (self.name,))
            cr.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(self.name)))
        return False


def _grantee(oid_name):
    return sql.SQL("PUBLIC") if oid_name is None else sql.Identifier(oid_name)


def revoke_foreign_grants(cr):
    """What the dump granted to anyone but the owner is taken back, and row-level security it switched on is
    switched off: a GRANT ... TO PUBLIC or to another role of the cluster would outlive the import (reading
    res_users' password hashes, or CREATE on schema public to plant functions that win over the built-ins).
    Extensions' own objects keep theirs; functions and types keep PUBLIC's default EXECUTE / USAGE and schema
    public keeps PUBLIC's USAGE (PostgreSQL's defaults). Returns what was taken back, as text."""
    taken = []
    system = "('pg_catalog', 'information_schema', 'pg_toast')"
    not_member = (
        "NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = %s::regclass AND d.objid = {oid} AND d.deptype = 'e')"
    )
    cr.execute(
        "SELECT c.oid::regclass::text, c.relkind = 'S', r.rolname FROM pg_class c "
        "JOIN pg_namespace n ON n.oid = c.relnamespace, aclexplode(c.relacl) a LEFT JOIN pg_roles r "
        "ON r.oid = a.grantee WHERE n.nspname NOT IN %s AND a.grantee <> c.relowner AND %s "
        "GROUP BY 1, 2, 3" % (system, not_member.format(oid="c.oid")),
        ("pg_class",),
    )
    for name, sequence, grantee in cr.fetchall():
        cr.execute(
            sql.SQL("REVOKE ALL ON {} {} FROM {} CASCADE").format(
                sql.SQL("SEQUENCE" if sequence else "TABLE"), sql.SQL(name), _grantee(grantee)
            )
        )
        taken.append("%s on %s" % (grantee or "PUBLIC", name))
    cr.execute(
        "SELECT c.oid::regclass::text, quote_ident(t.attname), r.rolname FROM pg_attribute t "
        "JOIN pg_class c ON c.oid = t.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace, "
        "aclexplode(t.attacl) a LEFT JOIN pg_roles r ON r.oid = a.grantee WHERE n.nspname NOT IN %s "
        "AND t.attnum > 0 AND a.grantee <> c.relowner AND %s GROUP BY 1, 2, 3"
        % (system, not_member.format(oid="c.oid")),
        ("pg_class",),
    )
    for name, column, grantee in cr.fetchall():
        cr.execute(
            sql.SQL("REVOKE ALL ({}) ON TABLE {} FROM {} CASCADE").format(
                sql.SQL(column), sql.SQL(name), _grantee(grantee)
            )
        )
        taken.append("%s on %s.%s" % (grantee or "PUBLIC", name, column))
    cr.execute(
        "SELECT quote_ident(n.nspname), r.rolname, a.privilege_type FROM pg_namespace n, aclexplode(n.nspacl) a "
        "LEFT JOIN pg_roles r ON r.oid = a.grantee WHERE n.nspname NOT IN %s AND n.nspname !~ '^pg_' "
        "AND a.grantee <> n.nspowner AND %s" % (system, not_member.format(oid="n.oid")),
        ("pg_namespace",),
    )
    for schema, grantee, privilege in cr.fetchall():
        if schema == "public" and grantee is None and privilege == "USAGE":
            continue
        cr.execute(
            sql.SQL("REVOKE {} ON SCHEMA {} FROM {} CASCADE").format(
                sql.SQL(privilege), sql.SQL(schema), _grantee(grantee)
            )
        )
        taken.append("%s %s on schema %s" % (grantee or "PUBLIC", privilege, schema))
    for catalog, column, owner, kind in (
        ("pg_proc", "proacl", "proowner", "ROUTINE"),
        ("pg_type", "typacl", "typowner", "TYPE"),
    ):
        # Named roles only: PUBLIC's EXECUTE on a routine and USAGE on a type are PostgreSQL's defaults.
        cr.execute(
            "SELECT o.oid::%s::text, r.rolname FROM %s o, aclexplode(o.%s) a JOIN pg_roles r ON r.oid = a.grantee "
            "WHERE o.oid >= 16384 AND a.grantee <> o.%s AND %s GROUP BY 1, 2"
            % (
                "regprocedure" if kind == "FUNCTION" else "regtype",
                catalog,
                column,
                owner,
                not_member.format(oid="o.oid"),
            ),
            (catalog,),
        )
        for name, grantee in cr.fetchall():
            cr.execute(
                sql.SQL("REVOKE ALL ON {} {} FROM {} CASCADE").format(sql.SQL(kind), sql.SQL(name), _grantee(grantee))
            )
            taken.append("%s on %s %s" % (grantee, kind.lower(), name))
    cr.execute(
        "SELECT c.oid::regclass::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname NOT IN %s AND (c.relrowsecurity OR c.relforcerowsecurity)" % system
    )
    for (name,) in cr.fetchall():
        cr.execute(sql.SQL("ALTER TABLE {} NO FORCE ROW LEVEL SECURITY").format(sql.SQL(name)))
        cr.execute(sql.SQL("ALTER TABLE {} DISABLE ROW LEVEL SECURITY").format(sql.SQL(name)))
        taken.append("row-level security on %s" % name)
    return taken


def drop_stale_roles(cr, older_than=3600):
    """Import roles that an import killed outright (power cut, SIGKILL) left behind: owning nothing, unused."""
    cr.execute(
        "SELECT r.rolname, d.description FROM pg_roles r JOIN pg_shdescription d ON d.objoid = r.oid "
        "AND d.classoid = 'pg_authid'::regclass WHERE r.rolname LIKE %s AND d.description LIKE %s "
        "AND NOT EXISTS (SELECT 1 FROM pg_stat_activity a WHERE a.usename = r.rolname) "
        "AND NOT EXISTS (SELECT 1 FROM pg_database db WHERE db.datdba = r.oid)",
        (ROLE_PREFIX.replace("_", "\\_") + "%", ROLE_COMMENT + " (made at %"),
    )
    for name, description in cr.fetchall():
        made = re.search(r"made at (\d+)", description)
        if made and time.time() - int(made.group(1)) > older_than:
            with contextlib.suppress(psycopg2.Error):
                cr.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(name)))


def load_into_scratch(pg_config, role, target, script, scanned, encoding=None, collate=None, ctype=None, accepted=()):
    """After ``scanned`` (the guard that read ``script()`` whole): make the scratch database owned by ``role``,
    the extensions it asked for, load ``script()`` again as the role, and read what the load made from the
    catalog (codecheck). Until :func:`hand_over`, whatever the engine does in the scratch database it does as the
    role: ``target.db_pg`` says how. Returns the code objects a person accepted (``accepted``: their digests)."""
    target.create_scratch(encoding, collate, ctype, owner=role.name)
    create_extensions(pg_config, target.scratch, scanned.extensions, role.name)
    role.check_login(target.scratch)
    before = role.snapshot(target.scratch)
    with script() as lines:
        load_sql(pg_config, role, target.scratch, lines)
    taken = role.check_code(target.scratch, before, accepted)
    target.db_pg = role.pg_config(pg_config)
    return taken


def hand_over(role, target, log=None):
    """The checks passed and the engine's own statements ran as the role: the engine's user takes the scratch
    database over, and takes back what the dump granted to others."""
    taken = role.hand_over(target.scratch) or []
    target.db_pg = target.options.pg
    if taken and log is not None:
        log(
            "Not kept from the dump: %d grant%s to other roles and row-level security switches (%s)"
            % (len(taken), "" if len(taken) == 1 else "s", "; ".join(taken[:20]) + ("; ..." if len(taken) > 20 else ""))
        )
    return taken


def create_extensions(pg_config, dbname, names, role_name=None):
    """The allowed extensions a dump asks for, made by the engine's own connection before the load, each in its
    own schema; the role may fill their configuration tables (pg_dump writes the rows a database added, such as
    PostGIS topologies), as pg_dump expects of the dump's owner."""
    if not names:
        return
    with pg.cursor(pg_config, dbname) as cr:
        for name in sorted(names, key=lambda n: (n.startswith("postgis_"), n)):  # after postgis, which they need
            schema = EXTENSIONS[name].schema
            try:
                if schema in ("public", "pg_catalog"):
                    cr.execute(
                        sql.SQL("CREATE EXTENSION IF NOT EXISTS {} WITH SCHEMA {}").format(
                            sql.Identifier(name), sql.Identifier("public" if name != "plpgsql" else schema)
                        )
                    )
                else:
                    cr.execute(sql.SQL("CREATE EXTENSION IF NOT EXISTS {}").format(sql.Identifier(name)))
                if name == "unaccent":
                    # As Odoo does when it makes the extension (odoo/service/db.py): its indexes need it immutable.
                    cr.execute("ALTER FUNCTION public.unaccent(text) IMMUTABLE")
            except psycopg2.Error as exc:
                raise RestoreError(
                    "The dump needs the PostgreSQL extension %s, which this server cannot create (%s)."
                    % (name, str(exc).strip().splitlines()[0])
                ) from exc
        if not role_name:
            return
        role = sql.Identifier(role_name)
        cr.execute(
            "SELECT e.extnamespace::regnamespace::text, c.oid::regclass::text, c.relkind FROM pg_extension e "
            "LEFT JOIN pg_class c ON c.oid = ANY(e.extconfig) WHERE e.extname = ANY(%s)",
            (sorted(names),),
        )
        for schema, relation, relkind in cr.fetchall():
            cr.execute(sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(sql.Identifier(schema), role))
            if relation is None:
                continue
            rights = "USAGE, SELECT, UPDATE" if relkind == "S" else "SELECT, INSERT, UPDATE"
            cr.execute(
                sql.SQL("GRANT {} ON {} TO {}").format(sql.SQL(rights), sql.SQL(relation), role)  # regclass text
            )


def load_sql(pg_config, role, dbname, lines, guard=None):
    """Feed the guarded script to psql as ``role`` under the engine's own \\restrict key; returns the guard.

    ``guard`` is a :class:`SqlGuard` (the default); the tests pass one that lets everything through, to show
    what the role and psql's own restriction refuse without it.
    """
    if guard is None:
        install_checkpoint(pg_config, dbname, role.name)
        guard = SqlGuard(keep=True, checkpoint=CHECKPOINT_LINE)
    args = [
        pg.tool(pg_config, "psql"),
        "--no-psqlrc",
        "--quiet",
        "--no-password",
        "--single-transaction",
        "-v",
        "ON_ERROR_STOP=1",
        "--dbname=%s" % pg.conninfo_dbname(dbname),
        "-f",
        "-",
    ]
    # A refusal raised while psql reads makes feed_process kill it: psql would otherwise run the statement
    # left in its buffer at the end of its input.
    pg.feed_process(args, GuardedScript(lines, guard), role.env(pg_config), "psql (loading the dump)")
    if getattr(guard, "checkpoint", None):
        remove_checkpoint(pg_config, dbname)
    return guard


# After every statement and every COPY's data psql runs this: a statement that switched the session's encoding
# or string rules (a function can, at run time) stops the load before psql reads one more line the new way.
CHECKPOINT_SCHEMA = "spp_import_guard"
CHECKPOINT_LINE = b"SELECT spp_import_guard.check();\n"


def install_checkpoint(pg_config, dbname, role_name):
    """The checkpoint function, owned by the engine's user in a schema the import role may only use."""
    with pg.cursor(pg_config, dbname) as cr:
        cr.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(CHECKPOINT_SCHEMA)))
        cr.execute(
            sql.SQL(
                "CREATE FUNCTION {}.check() RETURNS void LANGUAGE plpgsql SET search_path = pg_catalog AS $f$ "
                "BEGIN IF pg_catalog.current_setting('client_encoding') <> 'UTF8' "
                "OR pg_catalog.current_setting('standard_conforming_strings') <> 'on' THEN "
                "RAISE EXCEPTION 'the dump changed client_encoding or standard_conforming_strings while it was "
                "loading: refused'; END IF; END $f$"
            ).format(sql.Identifier(CHECKPOINT_SCHEMA))
        )
        cr.execute(
            sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(
                sql.Identifier(CHECKPOINT_SCHEMA), sql.Identifier(role_name)
            )
        )


def remove_checkpoint(pg_config, dbname):
    with pg.cursor(pg_config, dbname) as cr:
        try:
            cr.execute(sql.SQL("DROP FUNCTION {}.check() RESTRICT").format(sql.Identifier(CHECKPOINT_SCHEMA)))
            cr.execute(sql.SQL("DROP SCHEMA {} RESTRICT").format(sql.Identifier(CHECKPOINT_SCHEMA)))
        except psycopg2.errors.DependentObjectsStillExist as exc:
            raise SqlRefused("the dump's objects use the engine's own checkpoint schema") from exc


class GuardedScript:
    """What psql reads: the engine's \\restrict line, the lines the guard passes, the matching \\unrestrict."""

    def __init__(self, lines, guard):
        key = secrets.token_hex(24).encode()
        self.lines, self.guard = iter(lines), guard
        self.buffer = bytearray(b"\\restrict %s\n" % key)
        self.end = b"\\unrestrict %s\n" % key
        self.done = False

    def read(self, size):
        while len(self.buffer) < size and not self.done:
            line = next(self.lines, None)
            if line is None:
                self.done = True
                for out in self.guard.finish():
                    self.buffer += out
                self.buffer += self.end
                break
            for out in self.guard.feed(line):
                self.buffer += out
        data = bytes(self.buffer[:size])
        del self.buffer[:size]
        return data


class ScriptOfDump:
    """The plain SQL ``pg_restore -f -`` makes of a custom-format dump, line by line; checks how it ended."""

    def __init__(self, pg_config, path):
        self.pg, self.path = pg_config, path

    def __enter__(self):
        self.errfile = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(
            [pg.tool(self.pg, "pg_restore"), "--no-owner", "--file=-", self.path],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self.errfile,
            env=self.pg.env(),
        )
        return self

    def __iter__(self):
        yield from self.proc.stdout
        self.check()

    def check(self):
        code = self.proc.wait()
        if code != 0:
            err = pg.last_lines(pg.read_tail(self.errfile))
            if re.search(r"end of file|unexpected EOF|could not read|truncated", err, re.I):
                raise DumpTruncated("the dump is truncated: pg_restore stopped reading it (%s)." % err)
            raise RestoreError("pg_restore cannot read this dump (exit %d): %s" % (code, err))

    def __exit__(self, *exc):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.proc.stdout.close()
        self.errfile.close()
        return False
