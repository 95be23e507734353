"""A backup from outside is hostile: imports cannot run commands, touch other databases or pass truncated.

Every attack runs twice: through the import (the guard refuses it before
psql starts, nothing is made) and straight into psql as the import role with
the guard bypassed (PostgreSQL or psql's own \\restrict refuses it). Real
PostgreSQL, real psql.
"""

import contextlib
import json
import os
import subprocess
import sys
import time
import zipfile

import psycopg2
import pytest
from conftest import ROOT, conn_kwargs, query, table_contents, tree_digest

from engine.core.errors import BackupError, RestoreError
from engine.db import sqlguard, sqlimport
from engine.formats import catalog
from engine.ops.odoozip import import_file
from engine.ops.restore import RestoreOptions

MARKER = b"-- PostgreSQL database dump complete"


def with_payload(dump, payload):
    """The dump with ``payload`` (SQL or psql lines) inserted after its SET lines, before any table."""
    at = dump.index(b"SET default_table_access_method")
    at = dump.index(b"\n", at) + 1
    return dump[:at] + b"\n" + payload + b"\n" + dump[at:]


def make_zip(path, dump, sample=None, skip=()):
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("dump.sql", dump)
        if sample:
            for folder, _dirs, files in sorted(os.walk(sample["filestore"])):
                for name in sorted(files):
                    full = os.path.join(folder, name)
                    rel = os.path.relpath(full, sample["filestore"])
                    if rel not in skip:
                        archive.write(full, "filestore/" + rel)
        archive.writestr(
            "manifest.json",
            json.dumps({"odoo_dump": "1", "db_name": "x", "major_version": "17.0", "modules": {}}),
        )
    return str(path)


def leftovers(target, data_dir):
    """What an import of ``target`` left: databases, roles, filestore folders (final and staging)."""
    dbs = query("postgres", "SELECT datname FROM pg_database WHERE datname LIKE %s", (target + "%",))
    roles = query("postgres", "SELECT rolname FROM pg_roles WHERE rolname LIKE 'spp\\_import\\_%%'")
    fs_root = os.path.join(data_dir, "filestore")
    folders = [n for n in os.listdir(fs_root) if target in n] if os.path.isdir(fs_root) else []
    return dbs + roles + folders


def execute(dbname, *statements):
    """Run statements in ``dbname`` as the test's (superuser) connection, outside any transaction."""
    conn = psycopg2.connect(dbname=dbname, **conn_kwargs())
    conn.autocommit = True
    try:
        with conn.cursor() as cr:
            for statement in statements:
                cr.execute(statement)
    finally:
        conn.close()


@pytest.fixture
def victim(dbs):
    """Another database on the server, with a table an attack would drop or write into."""
    name = dbs.name("victim")
    execute("postgres", 'CREATE DATABASE "%s"' % name)
    execute(name, "CREATE TABLE precious (id int)", "INSERT INTO precious VALUES (1), (2)")
    return name


def victim_intact(name):
    return query(name, "SELECT count(*) FROM precious") == [(2,)] and query(
        name, "SELECT count(*) FROM pg_tables WHERE tablename = 'intruder'"
    ) == [(0,)]


def attacks(tmp_path, victim):
    flag = tmp_path / "pwned"
    return {
        "shell": (b"\\! touch " + str(flag).encode(), "psql command \\!"),
        "connect": (
            b"\\connect " + victim.encode() + b"\nCREATE TABLE intruder (id int);",
            "psql command \\connect",
        ),
        "drop database": (b'DROP DATABASE "' + victim.encode() + b'";', "may only change the database"),
        "copy to program": (
            b"COPY (SELECT 1) TO PROGRAM 'touch " + str(flag).encode() + b"';",
            "COPY is allowed only as FROM stdin",
        ),
        "superuser": (b"ALTER ROLE CURRENT_USER SUPERUSER;", "may only change the database"),
    }


ATTACKS = ["shell", "connect", "drop database", "copy to program", "superuser"]


@pytest.mark.parametrize("attack", ATTACKS)
def test_attack_is_refused_before_psql_starts(attack, dump, sample, dbs, victim, tmp_path, pgconf, monkeypatch):
    """The guard reads the whole zip first: it names the line, and no role, database or psql is ever made."""
    payload, expected = attacks(tmp_path, victim)[attack]
    path = make_zip(tmp_path / "evil.zip", with_payload(dump, payload), sample)
    started = []
    monkeypatch.setattr(sqlimport, "load_sql", lambda *a, **k: started.append("psql"))
    monkeypatch.setattr(sqlimport.ImportRole, "__enter__", lambda self: started.append("role"))
    target = dbs.name("evil")
    data_dir = str(tmp_path / "data")
    with pytest.raises(RestoreError) as caught:
        import_file(path, RestoreOptions(target_db=target, pg=pgconf, data_dir=data_dir))
    message = str(caught.value)
    assert expected in message and "nothing was changed" in message and "line " in message, message
    assert started == []
    assert leftovers(target, data_dir) == []
    assert not (tmp_path / "pwned").exists() and victim_intact(victim)


class PassThrough:
    """A guard that lets every line through: what is left is the role and psql's \\restrict."""

    def feed(self, line):
        # Only the dump's own \restrict pair is left out (psql refuses a second \restrict): everything else goes.
        return [] if line.startswith((b"\\restrict ", b"\\unrestrict ")) else [line]

    def finish(self):
        return []


# What stops each attack once the guard is out of the way: psql's \restrict, or PostgreSQL refusing the role.
BYPASSED = {
    "shell": ("backslash commands are restricted", None),
    "connect": ("backslash commands are restricted", None),
    "drop database": ("cannot run inside a transaction block", "must be owner of database"),
    "copy to program": ("pg_execute_server_program", "pg_execute_server_program"),
    "superuser": ("must be superuser", "must be superuser"),
}


@pytest.mark.parametrize("attack", ATTACKS)
def test_attack_fails_as_the_import_role_without_the_guard(attack, dump, dbs, victim, tmp_path, pgconf):
    """With the guard bypassed, psql (as the import role, under the engine's \\restrict) does not do it either;
    the SQL ones, sent by the role straight to PostgreSQL outside any transaction, are refused for its rights."""
    payload, _expected = attacks(tmp_path, victim)[attack]
    in_psql, direct = BYPASSED[attack]
    scratch = dbs.name("bypass")
    with sqlimport.ImportRole(pgconf) as role:
        execute("postgres", 'CREATE DATABASE "%s" OWNER "%s"' % (scratch, role.name))
        lines = with_payload(dump, payload).splitlines(keepends=True)
        try:
            with pytest.raises(RestoreError, match="psql \\(loading the dump\\) failed.*%s" % in_psql):
                sqlimport.load_sql(pgconf, role, scratch, lines, guard=PassThrough())
            if direct:
                conn = psycopg2.connect(dbname=scratch, **dict(conn_kwargs(), user=role.name, password=role.password))
                conn.autocommit = True
                try:
                    with pytest.raises(psycopg2.Error, match=direct), conn.cursor() as cr:
                        cr.execute(payload.decode())
                finally:
                    conn.close()
        finally:
            execute("postgres", 'DROP DATABASE IF EXISTS "%s" WITH (FORCE)' % scratch)
    assert not (tmp_path / "pwned").exists() and victim_intact(victim)
    assert query("postgres", "SELECT count(*) FROM pg_roles WHERE rolname = %s", (role.name,)) == [(0,)]


def test_import_role_owns_nothing_and_is_gone_afterwards(dump, sample, dbs, tmp_path, pgconf):
    """A good zip imports; its objects end up owned by the engine's user and the temporary role is dropped."""
    target = dbs.name("good")
    data_dir = str(tmp_path / "data")
    out = import_file(
        make_zip(tmp_path / "good.zip", dump, sample), RestoreOptions(target, pg=pgconf, data_dir=data_dir)
    )
    assert table_contents(target) == table_contents(sample["db"])
    assert tree_digest(os.path.join(data_dir, "filestore", target)) == tree_digest(sample["filestore"])
    owners = query(target, "SELECT DISTINCT tableowner FROM pg_tables WHERE schemaname = 'public'")
    assert owners == [(query("postgres", "SELECT current_user")[0][0],)]
    assert query("postgres", "SELECT count(*) FROM pg_roles WHERE rolname LIKE 'spp\\_import\\_%%'") == [(0,)]
    assert {c["name"]: c["ok"] for c in out.checks}["attachments"] is True


def test_security_definer_function_is_refused(dump, sample, dbs, tmp_path, pgconf):
    """A function running with its owner's rights would run as the engine's user once taken over: refused."""
    payload = b"CREATE FUNCTION public.f() RETURNS int LANGUAGE sql SECURITY DEFINER AS $$ SELECT 1 $$;"
    target = dbs.name("definer")
    data_dir = str(tmp_path / "data")
    with pytest.raises(RestoreError, match="owner's rights"):
        import_file(
            make_zip(tmp_path / "d.zip", with_payload(dump, payload), sample),
            RestoreOptions(target, pg=pgconf, data_dir=data_dir),
        )
    assert leftovers(target, data_dir) == []


def truncations(dump):
    copy = dump.index(b"FROM stdin;\n") + len(b"FROM stdin;\n")
    statement = dump.index(b";\n", dump.index(b"CREATE TABLE")) + 2
    return {
        "at a statement boundary": dump[:statement],
        "in COPY data": dump[: copy + 40],
        "in the middle of a line": dump[: dump.index(b"CREATE TABLE") + 20],
        "just before the end marker": dump[: dump.index(MARKER)],
    }


@pytest.mark.parametrize("where", ["at a statement boundary", "in COPY data", "in the middle of a line"])
def test_truncated_dump_is_refused_and_nothing_is_left(where, dump, sample, dbs, tmp_path, pgconf):
    """A cut dump says 'the dump is truncated' and that nothing was changed; no database, folder or role remains."""
    path = make_zip(tmp_path / "cut.zip", truncations(dump)[where], sample)
    target = dbs.name("cut")
    data_dir = str(tmp_path / "data")
    with pytest.raises(RestoreError) as caught:
        import_file(path, RestoreOptions(target, pg=pgconf, data_dir=data_dir))
    assert "the dump is truncated" in str(caught.value) and "nothing was changed" in str(caught.value)
    assert leftovers(target, data_dir) == []


def test_guard_reads_the_ends_of_a_dump(dump):
    """Every cut is seen, also just before pg_dump's end marker; the whole dump passes and keeps every line."""
    for where, cut in truncations(dump).items():
        with pytest.raises(sqlguard.DumpTruncated):
            sqlguard.scan(cut.splitlines(keepends=True))
        assert where
    guard = sqlguard.SqlGuard()
    out = []
    for line in dump.splitlines(keepends=True):
        out += guard.feed(line)
    out += guard.finish()
    restrict = [line for line in dump.splitlines(keepends=True) if line.startswith((b"\\restrict", b"\\unrestrict"))]
    assert b"".join(out) == b"".join(line for line in dump.splitlines(keepends=True) if line not in restrict)


@pytest.mark.parametrize(
    "sql, expected",
    [
        (b"SET lock_timeout = 0; \\! id", "psql command \\!"),
        (b"SELECT 'a\\' \\gexec", "ends in a backslash"),
        (b"\\o /tmp/out", "psql command \\o"),
        (b"\\copy t from '/etc/passwd'", "psql command \\copy"),
        (b"\\set ON_ERROR_STOP 0", "psql command \\set"),
        (b"\\i /etc/passwd", "psql command \\i"),
        (b"\\restrict abc", "does not match"),
        (b"SET client_encoding = 'SJIS';", "UTF8"),
        (b"SET standard_conforming_strings = off;", "must stay on"),
        (b"SET ROLE postgres;", "role or session"),
        (b"SET SESSION AUTHORIZATION postgres;", "role or session"),
        (b"CREATE TABLESPACE t LOCATION '/tmp';", "may only change the database"),
        (b"ALTER SYSTEM SET archive_command = 'id';", "ALTER SYSTEM"),
        (b"CREATE EXTENSION tablefunc;", "not among those"),
        (b"CREATE EXTENSION dblink;", "server file"),
        (b"CREATE EXTENSION pg_trgm SCHEMA evil;", "created in schema public only"),
        (b"COPY t FROM '/etc/passwd';", "FROM stdin"),
        (b"GRANT pg_execute_server_program TO PUBLIC;", "granting roles"),
        (b"DO $$ BEGIN PERFORM 1; END $$;", "no DO statement"),
        (b"SELECT pg_read_file('/etc/passwd');", "server file"),
        (b"SELECT lo_import('/etc/passwd');", "server file"),
        (b"LOAD 'evil';", "no LOAD statement"),
        (b"SELECT 1$x$;", "number runs into"),
        (b"COPY t FROM stdin; SELECT 1;", "must end its line"),
        (b"SET lock_timeout = 0; DROP DATABASE postgres;", "two statements end on one line"),
        # Found by a hostile review: each made psql run a backslash command the first version let through.
        (b"--\r\\! id", "carriage return"),
        (b"\x00'\n\\! id\n--';", "NUL byte"),
        (b"(;\nCOPY x FROM stdin;\n\\! id\n\\.", "inside parentheses"),
        (b"CREATE FUNCTION public.f(begin int) RETURNS int LANGUAGE sql RETURN begin;", "SQL-standard"),
        (b":e'\\' \\! id\n--';", "psql variables"),
        (b"1.e'\\' \\! id\n--';", "a number runs into"),
        (b":a$b$'$b$ \\! id\n--';", "psql variables"),
        (b"UPDATE pg_settings SET setting = 'SJIS' WHERE name = 'client_encoding';", "no UPDATE statement"),
        (b"VALUES (\"set_config\"('client_encoding', 'SJIS', false));", "no VALUES statement"),
        (b"CREATE TABLE public.l AS VALUES (\"pg_read_file\"('/etc/hostname'));", "server file"),
        (b"SELECT pg_catalog.setval('public.s', 1, true), now();", "no SELECT other"),
        (b"COMMIT AND CHAIN;", "no COMMIT statement"),
        (b"SECURITY LABEL FOR x ON DATABASE postgres IS 'y';", "no SECURITY statement"),
        (b"CREATE FUNCTION public.g() RETURNS int LANGUAGE sql SET role = postgres AS 'SELECT 1';", "change the role"),
        (b'CREATE TABLE public.u (a int DEFAULT U&"\\0070g_sleep"(1));', "Unicode-escaped"),
        # Found by a second review.
        (b"CREATE 1 FUNCTION BEGIN;\nCOPY x FROM stdin;\n\\! id\n\\.", "SQL-standard"),
        (b"CREATE $$$$$$'$$ \\! id\n--';", "psql command \\!"),
        (b"CREATE 1e--\\! id\n;", "a number runs into '--'"),
        (
            b"CREATE FUNCTION public.e() RETURNS text LANGUAGE sql AS "
            b"$$SELECT pg_catalog.set_config('client_encoding', 'SJIS', false)$$;",
            "setting",
        ),
        (
            b"CREATE FUNCTION public.c(t text) RETURNS boolean LANGUAGE plpgsql AS "
            b"$$BEGIN EXECUTE 'SET client_' || 'encoding = SJIS'; RETURN true; END$$;",
            "EXECUTE",
        ),
        (
            b"CREATE FUNCTION public.r() RETURNS text LANGUAGE sql AS $$SELECT pg_read_file('/x')$$;",
            "a function may not",
        ),
        (b"COMMENT ON SCHEMA public IS E'\x81\\'; COMMIT; CREATE DATABASE x; BEGIN; --';", "non-ASCII byte"),
        # Found by a third review.
        (b"CREATE :::e'\\' \\! id\n--';", "psql variables"),
        (b"CREATE :::a$$'$$ \\! id\n--';", "psql variables"),
        (b"CREATE U&'' FUNCTION BEGIN;\nCOPY x FROM stdin;\n\\! id\n\\.", "Unicode-escaped names"),
        (b"CREATE :x FUNCTION BEGIN;\nCOPY x FROM stdin;\n\\! id\n\\.", "SQL-standard"),
        (
            b"CREATE FUNCTION public.g() RETURNS text LANGUAGE sql AS "
            b"$$SET U&\"client\\005fencoding\" TO 'SJIS'; SELECT 'x'::text$$;",
            "Unicode-escaped names",
        ),
        (b"SET lock_timeout = 0; SET statement_timeout = 0;", "two statements end on one line"),
        (
            b"CREATE FUNCTION public.h() RETURNS int LANGUAGE sql AS $$COPY (SELECT 1) TO PROGRAM 'id'; SELECT 1$$;",
            "a function may not copy files or programs",
        ),
        (b"CREATE FUNCTION public.k() RETURNS int LANGUAGE sql AS $$CREATE ROLE x; SELECT 1$$;", "act on roles"),
    ],
)
def test_guard_refusals_name_the_line(sql, expected, dump):
    dump = with_payload(dump, sql)
    line = dump[: dump.index(sql)].count(b"\n") + 1
    with pytest.raises(sqlguard.SqlRefused) as caught:
        sqlguard.scan(dump.splitlines(keepends=True))
    assert expected in str(caught.value) and ("line %d of the dump" % line) in str(caught.value), str(caught.value)


@pytest.mark.parametrize(
    "sql",
    [
        b"CREATE TABLE public.t1 (a text DEFAULT 'x;\\y', b text DEFAULT E'it''s \\' ok;');",
        b"CREATE FUNCTION public.g() RETURNS text LANGUAGE plpgsql AS $body$ BEGIN RETURN '\\!'; END $body$;",
        b'CREATE TABLE public."we\\ird" (id int); -- a comment with \\! in it is not read',
        b"CREATE TABLE public.t2 (a int); /* nested /* comment */ \\! still a comment */",
        b'CREATE TABLE public.t3 ("b;c" int, "valid to use" int);\n'
        b'COPY public.t3 ("b;c", "valid to use") FROM stdin;\n1\t2\n\\.',
        b"SELECT pg_catalog.setval('public.\"odd;name_seq\"', 42, true);",
        b"CREATE TABLE public.t4 (a int CHECK (a::text ~ '^\\d+$'), b int[] DEFAULT '{1,2}'::int[]);",
        # False positives a review found, now read as pg_dump means them.
        b"CREATE VIEW public.v AS SELECT (ARRAY[1, 2, 3])[1:2] AS a, (ARRAY[1, 2])[:1] AS b;",
        b"CREATE TABLE public.t5 (program text);\nCOPY public.t5 (program) FROM stdin;\nx\n\\.",
        b"CREATE POLICY p ON public.t5 USING (program = current_setting('app.program'));",
        b"CREATE FUNCTION public.f(begin integer) RETURNS integer LANGUAGE sql AS $$ SELECT 1 $$;",
        b"SELECT pg_catalog.setval('public.\"o''dd_seq\"', 1, false);",
        b"ALTER DEFAULT PRIVILEGES FOR ROLE odoo IN SCHEMA public GRANT SELECT ON TABLES TO PUBLIC;",
        b"DROP EXTENSION IF EXISTS pg_trgm;",
        b"BEGIN;\nSELECT pg_catalog.lo_create('16400');\nCOMMIT;",
    ],
)
def test_backslashes_inside_literals_and_comments_pass(sql, dump):
    """Backslashes in strings, dollar quotes, identifiers and comments are data, as psql reads them."""
    guard = sqlguard.scan(with_payload(dump, sql).splitlines(keepends=True))
    assert guard.statements > 0


def test_allowed_extension_is_made_by_the_engine(dump, sample, dbs, tmp_path, pgconf):
    """CREATE EXTENSION of an allowed one is left out of the script; the engine makes it before the load."""
    payload = b"CREATE EXTENSION IF NOT EXISTS pg_trgm WITH SCHEMA public;\nCOMMENT ON EXTENSION pg_trgm IS 'x';"
    target = dbs.name("ext")
    import_file(
        make_zip(tmp_path / "e.zip", with_payload(dump, payload), sample),
        RestoreOptions(target, pg=pgconf, data_dir=str(tmp_path / "data")),
    )
    assert query(target, "SELECT extname FROM pg_extension WHERE extname = 'pg_trgm'") == [("pg_trgm",)]


def test_missing_attachment_is_named_and_strict_refuses(dump, sample, dbs, tmp_path, pgconf):
    """A zip whose database references a file it lacks names the file; --strict rolls the import back."""
    store_fname = query(sample["db"], "SELECT store_fname FROM ir_attachment ORDER BY id LIMIT 1")[0][0]
    path = make_zip(tmp_path / "m.zip", dump, sample, skip={store_fname})
    target = dbs.name("miss")
    data_dir = str(tmp_path / "data")
    with pytest.raises(RestoreError) as caught:
        import_file(path, RestoreOptions(target, pg=pgconf, data_dir=data_dir), strict=True)
    assert store_fname in str(caught.value) and "--strict" in str(caught.value)
    assert "nothing was changed" in str(caught.value)
    assert leftovers(target, data_dir) == []
    out = import_file(path, RestoreOptions(target, pg=pgconf, data_dir=data_dir))
    assert any(store_fname in warning for warning in out.warnings), out.warnings
    proc = cli("import", path, "--target", dbs.name("misscli"), "--data-dir", data_dir, "--strict")
    assert proc.returncode == 2 and store_fname in proc.stderr


def test_custom_format_dump_imports_database_only(sample, dbs, tmp_path, pgconf):
    """Odoo's "pg_dump custom format" backup imports (database only, said so); cut short, it is refused."""
    path = tmp_path / "odoo.dump"
    subprocess.run(["pg_dump", "-Fc", "--no-owner", "-f", str(path), sample["db"]], check=True)
    target = dbs.name("custom")
    out = import_file(str(path), RestoreOptions(target, pg=pgconf, data_dir=str(tmp_path / "data")))
    assert table_contents(target) == table_contents(sample["db"])
    assert any("database only" in w for w in out.warnings)
    data = path.read_bytes()
    cut = tmp_path / "cut.dump"
    cut.write_bytes(data[: len(data) * 2 // 3])
    target = dbs.name("customcut")
    with pytest.raises(RestoreError, match="the dump is truncated"):
        import_file(str(cut), RestoreOptions(target, pg=pgconf, data_dir=str(tmp_path / "data")))
    assert leftovers(target, str(tmp_path / "data")) == []


def test_plain_sql_file_imports(dump, sample, dbs, tmp_path, pgconf):
    path = tmp_path / "plain.sql"
    path.write_bytes(dump)
    target = dbs.name("plain")
    proc = cli("import", str(path), "--target", target, "--data-dir", str(tmp_path / "data"))
    assert proc.returncode == 1 and "database only" in proc.stdout, proc.stdout + proc.stderr
    assert table_contents(target) == table_contents(sample["db"])


def cli(*args, cwd=ROOT):
    env = dict(os.environ, PYTHONPATH=ROOT)
    return subprocess.run([sys.executable, "-m", "engine", *args], cwd=cwd, capture_output=True, text=True, env=env)


@pytest.mark.parametrize("target, replace", [("template1", True), ("postgres", False), ("template0", True)])
def test_system_databases_are_never_targets(target, replace, dump, sample, tmp_path, pgconf):
    before = query("postgres", "SELECT datname, datistemplate FROM pg_database ORDER BY 1")
    path = make_zip(tmp_path / "t.zip", dump, sample)
    args = ["import", path, "--target", target, "--data-dir", str(tmp_path / "data")]
    proc = cli(*(args + ["--replace"] if replace else args))
    assert proc.returncode == 2 and "never a restore target" in proc.stderr, proc.stderr
    assert query("postgres", "SELECT datname, datistemplate FROM pg_database ORDER BY 1") == before
    assert query("template1", "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'") == [(0,)]


def test_a_database_flagged_as_template_is_never_a_target(dump, sample, dbs, tmp_path, pgconf):
    name = dbs.name("tpl")
    execute("postgres", 'CREATE DATABASE "%s" IS_TEMPLATE true' % name)
    with pytest.raises(RestoreError, match="template database"):
        import_file(
            make_zip(tmp_path / "t.zip", dump, sample),
            RestoreOptions(name, pg=pgconf, data_dir=str(tmp_path / "data"), replace=True),
        )
    execute("postgres", 'ALTER DATABASE "%s" IS_TEMPLATE false' % name)


def test_replacing_a_database_odoo_uses_needs_its_name_typed(dump, sample, dbs, tmp_path, pgconf):
    """With an Odoo session on the target, --replace alone is refused; --confirm NAME goes on and says restart."""
    target = dbs.name("served")
    data_dir = str(tmp_path / "data")
    path = make_zip(tmp_path / "s.zip", dump, sample)
    import_file(path, RestoreOptions(target, pg=pgconf, data_dir=data_dir))
    odoo = psycopg2.connect(dbname=target, application_name="odoo-4242", **conn_kwargs())
    try:
        proc = cli("import", path, "--target", target, "--data-dir", data_dir, "--replace")
        assert proc.returncode == 2 and "--confirm %s" % target in proc.stderr, proc.stderr
        proc = cli("import", path, "--target", target, "--data-dir", data_dir, "--replace", "--confirm", target)
        assert proc.returncode == 1, proc.stderr
        assert "restart it now" in proc.stdout
    finally:
        odoo.close()


@pytest.mark.parametrize("dest", ["http://example.com/backups", "ftp://host/x", "backups", "./here", "s3:/bucket"])
def test_destinations_are_absolute_folders_or_s3(dest, sample, tmp_path):
    """Other schemes and relative paths are refused in words and leave no folder behind."""
    for args in (
        ["backup", "--database", sample["db"], "--dest", dest, "--data-dir", sample["data_dir"]],
        ["list", dest],
        ["verify", dest + "/db/latest"],
    ):
        proc = cli(*args, cwd=str(tmp_path))
        assert proc.returncode == 2, (args, proc.stderr)
        assert "absolute folder" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert sorted(os.listdir(tmp_path)) == sorted(n for n in os.listdir(tmp_path) if n in ("data", "backups"))


def test_plan_with_a_relative_destination_is_refused(sample, tmp_path):
    from conftest import run_plan

    plan = {
        "action": "backup",
        "db_name": sample["db"],
        "destinations": [{"kind": "local", "path": "relative/backups"}],
    }
    code, answer = run_plan(plan, tmp_path, data_dir=sample["data_dir"], database=sample["db"])
    assert code == 2 and not answer["ok"] and "absolute" in answer["error"], answer


def test_a_plan_that_says_a_folder_is_approved_opens_nothing(sample, tmp_path):
    """The worker checks a local destination against backup_roots of its own odoo.conf and the approvals the server
    recorded in its database; folders a plan calls approved (as plans did before) count for nothing: a backup, a
    restore and a verification naming a folder outside backup_roots are refused in words, nothing is written."""
    from conftest import run_plan

    outside = tmp_path.parent / ("%s_outside" % tmp_path.name)
    outside.mkdir()
    approved = [str(outside), "/"]
    source = {"destination": {"kind": "local", "path": str(outside)}, "db_name": sample["db"], "backup_id": "latest"}
    plans = [
        {
            "action": "backup",
            "db_name": sample["db"],
            "destinations": [{"kind": "local", "path": str(outside)}],
            "approved_paths": approved,
        },
        {"action": "restore", "source": dict(source, approved_paths=approved), "options": {"target_db": "x_new"}},
    ]
    for plan in plans:
        code, answer = run_plan(plan, tmp_path, data_dir=sample["data_dir"], database=sample["db"])
        assert code == 2 and not answer["ok"], answer
        assert "outside the folders this server may write backups to" in answer["error"], answer
        assert "backup_roots" in answer["error"] and "Traceback" not in answer["error"]
    code, answer = run_plan(
        {"action": "verify", "sources": [dict(source, approved_paths=approved)]},
        tmp_path,
        data_dir=sample["data_dir"],
        database=sample["db"],
    )
    report = answer["result"]["reports"][0]
    assert not report["ok"] and "outside the folders this server may write backups to" in report["error"], answer
    assert list(outside.iterdir()) == []


def test_plan_sending_a_readable_backup_or_to_an_unlisted_bucket_is_refused(sample, tmp_path, keys, monkeypatch):
    """The worker checks again what Odoo checked: no unencrypted copy to S3 unless odoo.conf allows it, and no
    bucket outside s3_buckets; both refused in words before anything is read or sent."""
    from conftest import run_plan

    plan = {"action": "backup", "db_name": sample["db"], "destinations": [{"kind": "s3", "bucket": "some-bucket"}]}
    code, answer = run_plan(plan, tmp_path, data_dir=sample["data_dir"], database=sample["db"])
    assert code == 2 and not answer["ok"] and "allow_unencrypted_offsite = true" in answer["error"], answer
    monkeypatch.setenv("SPP_BACKUP_S3_BUCKETS", "backups-prod, backups-dr")
    code, answer = run_plan(
        dict(plan, recipients=[keys["recipient"]]), tmp_path, data_dir=sample["data_dir"], database=sample["db"]
    )
    assert code == 2 and "some-bucket is not among the buckets" in answer["error"], answer
    assert "s3_buckets" in answer["error"] and "Traceback" not in answer["error"]


def test_unsigned_backup_is_a_warning_and_a_verify_key_refuses_it(sample, plan_for, keys):
    from engine.ops.backup import run_backup

    location = run_backup(plan_for(sample)).locations[0]
    proc = cli("verify", location)
    assert proc.returncode == 1 and "not signed" in proc.stdout, proc.stdout
    proc = cli("verify", location, "--verify-key", keys["public"])
    assert proc.returncode == 2 and "--allow-unsigned" in proc.stdout, proc.stdout
    proc = cli("verify", location, "--verify-key", keys["public"], "--allow-unsigned")
    assert proc.returncode == 1 and "not signed" in proc.stdout, proc.stdout
    signed = run_backup(plan_for(sample, signing_key_file=keys["signing_file"])).locations[0]
    assert cli("verify", signed, "--verify-key", keys["public"]).returncode == 0


def test_unsigned_restore_warns_with_exit_1(sample, plan_for, dbs, tmp_path, keys):
    from engine.ops.backup import run_backup

    location = run_backup(plan_for(sample)).locations[0]
    target = dbs.name("unsig")
    proc = cli("restore", location, "--target", target, "--data-dir", str(tmp_path / "r"))
    assert proc.returncode == 1 and "not signed" in proc.stdout, proc.stdout + proc.stderr
    proc = cli("restore", location, "--target", dbs.name("unsig"), "--verify-key", keys["public"])
    assert proc.returncode == 2 and "--allow-unsigned" in proc.stderr


def test_list_of_a_missing_folder_is_an_error_and_head_ends_quietly(sample, plan_for, tmp_path):
    from engine.ops.backup import run_backup

    proc = cli("list", str(tmp_path / "nowhere"))
    assert proc.returncode == 2 and "does not exist" in proc.stderr
    for _ in range(3):
        run_backup(plan_for(sample))
    shell = subprocess.run(
        "%s -m engine list %s | head -n 0; exit ${PIPESTATUS[0]}" % (sys.executable, sample["dest"]),
        executable="/bin/bash",
        shell=True,
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert shell.returncode == 0 and shell.stderr == "", shell.stderr


@contextlib.contextmanager
def server_role(prefix, *statements):
    """A login role made for one test (in ``statements``, %s is its name); dropped afterwards."""
    name = "%s_%d" % (prefix, os.getpid())

    def run(*more):
        execute("postgres", *(statement.replace("%s", '"%s"' % name) for statement in more))

    try:
        run("CREATE ROLE %s LOGIN", *statements)
        yield name, run
    finally:
        run("DROP ROLE IF EXISTS %s")


def test_no_role_means_a_sentence(pgconf):
    """A PostgreSQL user without CREATEROLE and no configured import role gets what to grant."""
    with server_role("spp_weak", "ALTER ROLE %s CREATEDB") as (name, run):
        weak = type(pgconf)(host=pgconf.host, port=pgconf.port, user=name)
        with pytest.raises(BackupError, match="CREATEROLE") as caught, sqlimport.ImportRole(weak):
            pass
        assert "import_role" in str(caught.value)
        run("ALTER ROLE %s CREATEROLE")
        with sqlimport.ImportRole(weak) as role:
            role.check_login("postgres")


def test_a_configured_role_that_could_do_more_is_refused(pgconf):
    from engine.core.config import Settings

    with server_role("spp_strong", "GRANT pg_read_server_files TO %s") as (name, _run):
        settings = Settings(section={"import_role": name})
        with pytest.raises(BackupError, match="pg_read_server_files"), sqlimport.ImportRole(pgconf, settings):
            pass


def test_roles_left_by_a_killed_import_are_dropped_later(pgconf):
    """An import killed outright leaves its role; the next import drops it once it is an hour old and unused."""
    old, young = "spp_import_0ldr01e%d" % os.getpid(), "spp_import_y0un9%d" % os.getpid()
    for name, age in ((old, 7200), (young, 60)):
        execute(
            "postgres",
            'CREATE ROLE "%s" LOGIN' % name,
            "COMMENT ON ROLE \"%s\" IS '%s (made at %d)'" % (name, sqlimport.ROLE_COMMENT, time.time() - age),
        )
    try:
        with sqlimport.ImportRole(pgconf) as role:
            assert role.temporary
        found = query("postgres", "SELECT rolname FROM pg_roles WHERE rolname IN %s", ((old, young),))
        assert found == [(young,)]
    finally:
        execute("postgres", 'DROP ROLE IF EXISTS "%s"' % old, 'DROP ROLE IF EXISTS "%s"' % young)


def test_import_as_an_engine_user_that_is_not_a_superuser(dump, sample, dbs, tmp_path, pgconf):
    """Odoo's usual PostgreSQL user (CREATEDB, here with CREATEROLE) imports; it owns the result, nothing else."""
    with server_role("spp_odoo", "ALTER ROLE %s CREATEDB CREATEROLE") as (name, _run):
        engine_pg = type(pgconf)(host=pgconf.host, port=pgconf.port, user=name)
        target = dbs.name("asodoo")
        path = make_zip(tmp_path / "u.zip", dump, sample)
        import_file(path, RestoreOptions(target, pg=engine_pg, data_dir=str(tmp_path / "data")))
        try:
            assert table_contents(target) == table_contents(sample["db"])
            assert query(
                "postgres", "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = %s", (target,)
            ) == [(name,)]
            assert query(target, "SELECT DISTINCT tableowner FROM pg_tables WHERE schemaname = 'public'") == [(name,)]
            assert leftovers(target + "_x", str(tmp_path / "data")) == []
        finally:
            execute("postgres", 'DROP DATABASE "%s" WITH (FORCE)' % target)


def test_modules_missing_on_this_server_are_named(dump, sample, dbs, tmp_path, pgconf):
    """Each installed module of the import must be on odoo.conf's addons_path; --strict refuses one that is not."""
    from engine.core.config import Settings

    installed = [row[0] for row in query(sample["db"], "SELECT name FROM ir_module_module WHERE state = 'installed'")]
    absent = sorted(name for name in installed if name != "base")[0]
    addons = tmp_path / "addons"
    for name in set(installed) - {absent}:
        (addons / name).mkdir(parents=True)
        (addons / name / "__manifest__.py").write_text("{'name': %r}" % name)
    settings = Settings(options={"addons_path": str(addons)})
    path = make_zip(tmp_path / "mods.zip", dump, sample)
    out = import_file(
        path, RestoreOptions(dbs.name("mods"), pg=pgconf, data_dir=str(tmp_path / "d")), settings=settings
    )
    check = next(c for c in out.checks if c["name"] == "modules on this server")
    assert not check["ok"] and check["detail"] == "not on this server's addons path: %s" % absent, check
    target = dbs.name("modstrict")
    with pytest.raises(RestoreError, match="--strict.*%s" % absent):
        import_file(
            path, RestoreOptions(target, pg=pgconf, data_dir=str(tmp_path / "d")), strict=True, settings=settings
        )
    assert leftovers(target, str(tmp_path / "d")) == []


@pytest.mark.parametrize(
    "function",
    [
        b"CREATE FUNCTION public.f() RETURNS int LANGUAGE sql SECURITY DEFINER AS $$ SELECT 1 $$;",
        b"CREATE FUNCTION public.f() RETURNS int LANGUAGE sql SET role = 'spp_nobody' AS $$ SELECT 1 $$;",
    ],
)
def test_owner_rights_functions_are_refused_after_the_load_too(function, dump, dbs, pgconf):
    """Past the guard, the hand-over still refuses functions that would run as the engine's user."""
    scratch = dbs.name("handover")
    with sqlimport.ImportRole(pgconf) as role:
        execute("postgres", 'CREATE DATABASE "%s" OWNER "%s"' % (scratch, role.name))
        try:
            sqlimport.load_sql(
                pgconf, role, scratch, with_payload(dump, function).splitlines(True), guard=PassThrough()
            )
            with pytest.raises(sqlguard.SqlRefused, match="owner's rights or switch roles"):
                role.hand_over(scratch)
        finally:
            execute("postgres", 'DROP DATABASE IF EXISTS "%s" WITH (FORCE)' % scratch)


def test_a_view_over_what_the_role_cannot_read_is_refused_after_the_load(dump, dbs, pgconf):
    """Taken over by the engine's user, a view over pg_authid would show it to anyone who may read the view."""
    view = b"CREATE VIEW public.v AS SELECT rolname, rolpassword FROM pg_catalog.pg_authid;"
    scratch = dbs.name("viewover")
    with sqlimport.ImportRole(pgconf) as role:
        execute("postgres", 'CREATE DATABASE "%s" OWNER "%s"' % (scratch, role.name))
        try:
            sqlimport.load_sql(pgconf, role, scratch, with_payload(dump, view).splitlines(True), guard=PassThrough())
            with pytest.raises(sqlguard.SqlRefused, match="views over tables it could not read itself"):
                role.hand_over(scratch)
        finally:
            execute("postgres", 'DROP DATABASE IF EXISTS "%s" WITH (FORCE)' % scratch)


def test_a_byte_order_mark_at_the_start_is_skipped_as_psql_does(dump):
    guard = sqlguard.SqlGuard()
    out = []
    for line in (b"\xef\xbb\xbf" + dump).splitlines(keepends=True):
        out += guard.feed(line)
    out += guard.finish()
    assert out and not out[0].startswith(b"\xef\xbb\xbf")


def test_a_function_switching_the_encoding_at_load_time_stops_the_load(dump, sample, dbs, tmp_path, pgconf):
    """A setting changed while loading (here standard_conforming_strings, by a trigger-like call the guard cannot
    see through) is caught by the checkpoint psql runs after every statement: refused before another line."""
    payload = (
        b"CREATE TABLE public.s (x text);\n"
        b"CREATE FUNCTION public.sw() RETURNS text LANGUAGE sql AS $$ SELECT 'x' $$;\n"
        b"ALTER FUNCTION public.sw() SET standard_conforming_strings = off;\n"
    )
    # A function's own SET is undone when it returns: the guard lets it through, and the checkpoint does not
    # fire for it. What does fire is a setting left changed for the session, which the next test makes with the
    # guard bypassed (no dump the guard accepts is known to do that).
    target = dbs.name("enc")
    with pytest.raises(RestoreError, match="standard_conforming_strings must stay on|a function may not"):
        import_file(
            make_zip(tmp_path / "enc.zip", with_payload(dump, payload), sample),
            RestoreOptions(target, pg=pgconf, data_dir=str(tmp_path / "data")),
        )
    assert leftovers(target, str(tmp_path / "data")) == []


def test_the_checkpoint_stops_psql_after_a_switched_setting(dump, dbs, pgconf):
    """With a statement that switches client_encoding for the session, psql stops at the next checkpoint."""
    scratch = dbs.name("checkpoint")
    with sqlimport.ImportRole(pgconf) as role:
        execute("postgres", 'CREATE DATABASE "%s" OWNER "%s"' % (scratch, role.name))
        try:
            sqlimport.install_checkpoint(pgconf, scratch, role.name)
            lines = with_payload(dump, b"SET client_encoding = 'SJIS';").splitlines(True)

            class Checkpointed(PassThrough):
                def feed(self, line):
                    out = super().feed(line)
                    return out + [sqlimport.CHECKPOINT_LINE] if line.rstrip().endswith(b";") else out

            with pytest.raises(RestoreError, match="changed client_encoding or standard_conforming_strings"):
                sqlimport.load_sql(pgconf, role, scratch, lines, guard=Checkpointed())
        finally:
            execute("postgres", 'DROP DATABASE IF EXISTS "%s" WITH (FORCE)' % scratch)


def swap_in_a_hostile_dump(location, evil_db):
    """Replace a set's database artifact by ``pg_dump -Fc`` of ``evil_db`` and rewrite the (unsigned) manifest
    to match, as anyone who can write to the destination could."""
    import hashlib

    import zstandard

    raw = subprocess.run(
        ["pg_dump", "-Fc", "--no-owner", evil_db], capture_output=True, check=True, env=dict(os.environ)
    ).stdout
    data = zstandard.ZstdCompressor().compress(raw)
    manifest_path = os.path.join(location, "manifest.json")
    with open(manifest_path, encoding="utf-8") as handle:
        manifest = json.load(handle)
    art = manifest["artifacts"]["database"]
    with open(os.path.join(location, art["file"]), "wb") as handle:
        handle.write(data)
    art.update(size=len(data), raw_size=len(raw), sha256=hashlib.sha256(data).hexdigest())
    with open(manifest_path, "w", encoding="utf-8") as handle:
        json.dump(manifest, handle)


@pytest.fixture
def hostile_set(sample, plan_for, dbs, victim):
    """An unsigned backup set of the sample whose dump, once loaded, refreshes a materialized view over a
    function that runs a shell command and renames another database (PostgreSQL runs it as the loading role)."""
    from engine.ops.backup import run_backup

    location = run_backup(plan_for(sample)).locations[0]
    flag = "/tmp/spp_backup_pwned_%s" % os.urandom(4).hex()
    evil = dbs.name("evilsrc")
    execute("postgres", 'CREATE DATABASE "%s"' % evil)
    body = (
        "BEGIN EXECUTE 'COPY (SELECT 1) TO PROGRAM ''touch %s'''; "
        'EXECUTE \'ALTER DATABASE "%s" RENAME TO "%s_gone"\'; RETURN 1; END' % (flag, victim, victim)
    )
    execute(
        evil,
        "CREATE TABLE res_partner (id int)",
        "CREATE FUNCTION payload() RETURNS int LANGUAGE plpgsql AS $f$ BEGIN RETURN 1; END $f$",
        # Populated while harmless, so that pg_dump writes REFRESH MATERIALIZED VIEW; then the body is swapped.
        "CREATE MATERIALIZED VIEW boom AS SELECT payload() AS x",
        "CREATE OR REPLACE FUNCTION payload() RETURNS int LANGUAGE plpgsql AS $f$ %s $f$" % body,
    )
    swap_in_a_hostile_dump(location, evil)
    yield {"location": location, "flag": flag, "victim": victim}
    with contextlib.suppress(OSError):
        os.unlink(flag)
    execute("postgres", 'DROP DATABASE IF EXISTS "%s_gone"' % victim)


def test_an_unsigned_set_with_a_hostile_dump_runs_nothing_on_restore(hostile_set, sample, dbs, pgconf):
    """Nothing proves an unsigned set is the server's own: its dump loads as the import role, so the function
    its materialized view calls is refused (no command, no other database touched) and the restore rolls back."""
    from engine.ops.restore import restore

    target = dbs.name("fromhostile")
    data_dir = str(sample["tmp"] / "rdata")
    with pytest.raises(RestoreError) as caught:
        restore(
            catalog.resolve(hostile_set["location"]),
            RestoreOptions(target_db=target, pg=pgconf, data_dir=data_dir),
        )
    message = str(caught.value)
    assert message.startswith("Refused the dump of") and "nothing was changed" in message, message
    assert "a function may not copy files or programs" in message, message
    assert not os.path.exists(hostile_set["flag"])
    assert victim_intact(hostile_set["victim"])
    assert leftovers(target, data_dir) == []


def test_an_unsigned_set_with_a_hostile_dump_runs_nothing_in_a_drill(hostile_set, sample, pgconf):
    """The drill restores the same way: it fails, and the command and the rename never happen."""
    from engine.ops.drill import run_drill

    result = run_drill(catalog.resolve(hostile_set["location"]), pgconf, str(sample["tmp"] / "ddata"))
    assert not result.ok
    assert not os.path.exists(hostile_set["flag"])
    assert victim_intact(hostile_set["victim"])
    drills = query("postgres", "SELECT datname FROM pg_database WHERE datname LIKE %s", ("%_drill_%",))
    assert drills == []


def test_an_unsigned_set_restores_as_the_import_role_and_says_so(sample, plan_for, dbs, pgconf):
    """A plain unsigned set still restores (its tables and rows), owned by the engine's user afterwards, with a
    warning that it went the guarded way; no import role is left."""
    from engine.ops.backup import run_backup
    from engine.ops.restore import UNTRUSTED_NOTE, restore

    location = run_backup(plan_for(sample)).locations[0]
    target = dbs.name("unsigned")
    result = restore(
        catalog.resolve(location), RestoreOptions(target_db=target, pg=pgconf, data_dir=str(sample["tmp"] / "r"))
    )
    assert UNTRUSTED_NOTE in result.warnings
    assert table_contents(target) == table_contents(sample["db"])
    owners = query(target, "SELECT DISTINCT tableowner FROM pg_tables WHERE schemaname = 'public'")
    assert owners == query(target, "SELECT current_user")
    assert query("postgres", "SELECT rolname FROM pg_roles WHERE rolname LIKE 'spp\\_import\\_%%'") == []
