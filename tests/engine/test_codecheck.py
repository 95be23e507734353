"""Code that arrives in a dump is data until a person accepts it: the catalog check after the load.

Every payload here passes the SQL guard's text scan (its keywords are hidden
by adjacent literals, E'' escapes or format()/chr()), is loaded by psql as the
import role, and would run a command as the engine's own user the first time
the engine or Odoo wrote the table. The catalog check must refuse each one,
naming the object, and leave nothing behind; a person who copies the digests
into an --accept-code file gets exactly that code, and the engine's own
statements (the new uuid, neutralize) still run as the import role.
"""

import os
import pathlib
import re
import shutil
import subprocess
import tempfile
import zipfile

import pytest
from conftest import conn_kwargs, query, table_contents
from test_untrusted import execute, leftovers, make_zip, server_role, swap_in_a_hostile_dump

from engine.core.errors import RestoreError
from engine.db import codecheck
from engine.formats import catalog
from engine.ops.odoozip import import_file
from engine.ops.restore import RestoreOptions
from tests.sqlsamples import QUEUE_JOB

MARKER = b"-- PostgreSQL database dump complete"
# The payload acts only when it runs as someone other than the import role: as the engine or as Odoo.
OUTSIDE_ROLE = "current_user NOT LIKE ''spp\\_import\\_%''"


@pytest.fixture
def flag():
    """Where a payload would leave its mark: a folder the database server's OS user may write to, so that the
    payload's command would succeed if it ever ran."""
    folder = tempfile.mkdtemp(prefix="spp_codecheck_")
    os.chmod(folder, 0o1777)
    yield pathlib.Path(folder) / "pwned"
    shutil.rmtree(folder, ignore_errors=True)


def with_tail(dump, payload):
    """``payload`` just before pg_dump's end marker: after every table, its data and its indexes."""
    at = dump.rindex(MARKER)
    return dump[:at] + payload.encode() + b"\n\n" + dump[at:]


def hidden_function(name, flag, style, returns="integer", volatility="VOLATILE", statement=None):
    """A plpgsql function that runs ``COPY ... TO PROGRAM 'touch <flag>'`` (or ``statement``) made at run time,
    with EXECUTE, COPY and PROGRAM hidden from a text scan in one of three ways."""
    result = "NEW" if returns == "trigger" else "1"
    if style == "adjacent":
        # Two literals on two lines are one string to PostgreSQL: 'EXEC' 'UTE' is EXECUTE.
        command = statement or "''CO'' || ''PY (SELECT 1) TO PRO'' || ''GRAM ''''touch %s''''''" % flag
        body = "'BEGIN IF %s THEN EXEC'\n'UTE %s; END IF; RETURN %s; END'" % (OUTSIDE_ROLE, command, result)
        return "CREATE FUNCTION public.%s() RETURNS %s LANGUAGE plpgsql %s AS %s;" % (
            name,
            returns,
            volatility,
            body,
        )
    if style == "escape":
        # \x45 is E and \x4f is O once the E'' string is read.
        body = (
            "E'BEGIN IF %s THEN \\x45XECUTE ''C\\x4fPY (SELECT 1) TO PR\\x4fGRAM ''''touch %s''''''; END IF; "
            "RETURN %s; END'" % (OUTSIDE_ROLE, flag, result)
        )
        return "CREATE FUNCTION public.%s() RETURNS %s LANGUAGE plpgsql %s AS %s;" % (name, returns, volatility, body)
    assert style == "format"
    body = (
        "'BEGIN IF %s THEN EXEC'\n'UTE format(''%%sPY (SELECT 1) TO PR%%sGRAM %%L'', chr(67) || chr(79), chr(79), "
        "''touch %s''); END IF; RETURN %s; END'" % (OUTSIDE_ROLE, flag, result)
    )
    return "CREATE FUNCTION public.%s() RETURNS %s LANGUAGE plpgsql %s AS %s;" % (name, returns, volatility, body)


CARRIERS = {
    "trigger": (
        "trigger",
        "CREATE TRIGGER spp_t AFTER UPDATE ON public.ir_config_parameter FOR EACH ROW EXECUTE FUNCTION public.{f}();",
        "spp_t ON public.ir_config_parameter",
    ),
    "column default": (
        "integer",
        "ALTER TABLE public.res_partner ADD COLUMN spp_note integer DEFAULT public.{f}();",
        "public.res_partner.spp_note",
    ),
    "check constraint": (
        "integer",
        "ALTER TABLE public.ir_config_parameter ADD CONSTRAINT spp_c CHECK (public.{f}() = 1) NOT VALID;",
        "spp_c ON public.ir_config_parameter",
    ),
    "index": (
        "integer",
        "CREATE INDEX spp_i ON public.ir_config_parameter ((public.{f}() + id));",
        "public.spp_i",
    ),
    "row-level policy": (
        "integer",
        "ALTER TABLE public.ir_config_parameter ENABLE ROW LEVEL SECURITY;\n"
        "CREATE POLICY spp_p ON public.ir_config_parameter USING (public.{f}() = 1);",
        "spp_p ON public.ir_config_parameter",
    ),
    "rule": (
        "integer",
        "CREATE RULE spp_r AS ON UPDATE TO public.ir_config_parameter DO ALSO SELECT public.{f}();",
        "spp_r ON public.ir_config_parameter",
    ),
}
CASES = [
    ("trigger", "adjacent"),
    ("trigger", "escape"),
    ("trigger", "format"),
    ("column default", "adjacent"),
    ("check constraint", "escape"),
    ("index", "format"),
    ("row-level policy", "adjacent"),
    ("rule", "escape"),
]


def payload_for(carrier, style, flag):
    returns, statement, _name = CARRIERS[carrier]
    volatility = "IMMUTABLE" if carrier == "index" else "VOLATILE"
    return hidden_function("spp_x", flag, style, returns, volatility) + "\n" + statement.format(f="spp_x")


def options(target, pgconf, tmp_path, **more):
    return RestoreOptions(
        target_db=target, pg=pgconf, data_dir=str(tmp_path / "data"), new_uuid=True, neutralize=True, **more
    )


def refusal(path, target, pgconf, tmp_path, **more):
    with pytest.raises(RestoreError) as caught:
        import_file(path, options(target, pgconf, tmp_path, **more))
    return str(caught.value)


@pytest.mark.parametrize(("carrier", "style"), CASES)
def test_hidden_code_is_refused_after_the_load(carrier, style, flag, dump, sample, dbs, tmp_path, pgconf):
    """The guard's text scan lets each payload through; the catalog refuses it by kind and name, with --copy
    --neutralize asked for, and nothing is left: no database, no role, no folder, no file made by the payload."""
    body = with_tail(dump, payload_for(carrier, style, flag))
    path = make_zip(tmp_path / "evil.zip", body, sample)
    target = dbs.name("evil")
    message = refusal(path, target, pgconf, tmp_path)
    assert "function public.spp_x()" in message, message
    kind, name = carrier, CARRIERS[carrier][2]
    assert re.search(r"sha256:[0-9a-f]{64}  %s %s" % (re.escape(kind), re.escape(name)), message), message
    assert "--accept-code" in message and "nothing was changed" in message, message
    assert leftovers(target, str(tmp_path / "data")) == []
    assert not flag.exists()


def test_a_call_to_a_query_running_builtin_is_refused(flag, dump, sample, dbs, tmp_path, pgconf):
    """No function of the dump's own at all: a column default calling query_to_xml (which runs any SQL it is
    given, as whoever inserts the row) and a view over pg_read_file are refused as what they call."""
    body = with_tail(
        dump,
        "ALTER TABLE public.res_partner ALTER COLUMN phone SET DEFAULT "
        "query_to_xml('SELECT 1', true, true, '')::text;\n"
        "CREATE VIEW public.spp_v AS SELECT pg_catalog.length(pg_catalog.md5('x')) AS n, "
        "(ts_stat('SELECT to_tsvector(name) FROM res_partner')).word AS s;",
    )
    path = make_zip(tmp_path / "evil.zip", body, sample)
    target = dbs.name("evil")
    message = refusal(path, target, pgconf, tmp_path)
    assert "column default public.res_partner.phone" in message and "query_to_xml" in message, message
    assert "view public.spp_v" in message and "ts_stat" in message, message
    assert leftovers(target, str(tmp_path / "data")) == [] and not flag.exists()


def accept_file(tmp_path, message, change_one=False):
    lines = re.findall(r"^  (sha256:[0-9a-f]{64}  .*)$", message, re.M)
    assert lines, message
    if change_one:
        digest = lines[0][7:71]
        lines[0] = "sha256:" + ("0" if digest[0] != "0" else "1") + digest[1:] + lines[0][71:]
    path = tmp_path / "accepted.txt"
    path.write_text("# reviewed\n" + "\n".join(lines) + "\n")
    return str(path)


def test_accepted_digests_load_exactly_that_code_as_the_import_role(flag, dump, sample, dbs, tmp_path, pgconf):
    """With the refusal's digests in --accept-code the same zip imports, says what it accepted, and the engine's
    own writes (the new uuid fires the trigger) still run as the import role: no file. The code is live: the
    first write by a superuser afterwards runs it. One digest changed, and the import is refused again."""
    body = with_tail(dump, payload_for("trigger", "adjacent", flag))
    path = make_zip(tmp_path / "evil.zip", body, sample)
    target = dbs.name("evil")
    message = refusal(path, target, pgconf, tmp_path)

    wrong = accept_file(tmp_path, message, change_one=True)
    again = refusal(path, target, pgconf, tmp_path, accepted_code=codecheck.read_accepted(wrong))
    assert "sha256:" in again and leftovers(target, str(tmp_path / "data")) == []

    accepted = codecheck.read_accepted(accept_file(tmp_path, message))
    result = import_file(path, options(target, pgconf, tmp_path, accepted_code=accepted))
    assert any("accepted with --accept-code (2 objects)" in w for w in result.warnings), result.warnings
    assert query(target, "SELECT value FROM ir_config_parameter WHERE key = 'database.is_neutralized'") == [("true",)]
    assert not flag.exists(), "the engine's own statements ran the accepted code with its rights"
    assert table_contents(target)["res_partner"] == table_contents(sample["db"])["res_partner"]
    execute(target, "UPDATE ir_config_parameter SET value = value WHERE key = 'database.uuid'")
    assert flag.exists(), "the accepted trigger did not fire for a superuser: the test proves nothing"


def test_an_engine_role_with_createrole_gains_nothing(dump, sample, dbs, tmp_path, pgconf):
    """The README's non-superuser engine role (CREATEDB, CREATEROLE): a hidden GRANT of
    pg_execute_server_program to whoever fires it is refused, and the role is no member afterwards."""
    with server_role("spp_eng", "ALTER ROLE %s CREATEDB CREATEROLE") as (name, _run):
        engine_pg = type(pgconf)(host=pgconf.host, port=pgconf.port, user=name)
        grant = "''GRA'' || ''NT pg_execute_server_program TO CURRENT_USER''"
        payload = (
            hidden_function("spp_g", "-", "adjacent", "trigger", statement=grant)
            + "\nCREATE TRIGGER spp_t AFTER UPDATE ON public.ir_config_parameter FOR EACH ROW "
            "EXECUTE FUNCTION public.spp_g();"
        )
        path = make_zip(tmp_path / "evil.zip", with_tail(dump, payload), sample)
        target = dbs.name("evil")
        message = refusal(path, target, engine_pg, tmp_path)
        assert "function public.spp_g()" in message and "trigger spp_t ON public.ir_config_parameter" in message
        member = query("postgres", "SELECT pg_has_role(%s, 'pg_execute_server_program', 'MEMBER')", (name,))
        assert member == [(False,)]
        assert leftovers(target, str(tmp_path / "data")) == []


def test_queue_job_notify_trigger_is_odoos_own(sample, dbs, tmp_path, pgconf):
    """A database with OCA queue_job's notify function and trigger, made with the statements queue_job's install
    hook runs, imports without --accept-code, and the trigger still notifies the job runner."""
    execute(
        sample["db"], QUEUE_JOB, "INSERT INTO public.queue_job (uuid, state) VALUES ('a1', 'done'), ('b2', 'pending')"
    )
    dump = subprocess.run(
        ["pg_dump", "--no-owner", sample["db"]], capture_output=True, check=True, env=dict(os.environ)
    ).stdout
    path = make_zip(tmp_path / "qj.zip", dump, sample)
    target = dbs.name("qj")
    result = import_file(path, options(target, pgconf, tmp_path))
    assert not any("accept-code" in w for w in result.warnings)
    assert query(target, "SELECT count(*) FROM pg_trigger WHERE tgname = 'queue_job_notify'") == [(1,)]
    import psycopg2

    conn = psycopg2.connect(dbname=target, **conn_kwargs())
    conn.autocommit = True
    try:
        with conn.cursor() as cr:
            cr.execute("LISTEN queue_job")
            cr.execute("UPDATE queue_job SET state = 'enqueued' WHERE uuid = 'b2'")
            conn.poll()
            assert [n.payload for n in conn.notifies] == ["b2"]
    finally:
        conn.close()


def test_postgis_with_a_topology_imports(dbs, tmp_path, pgconf):
    """OpenSPP's GIS modules (OCA base_geoengine) make postgis and postgis_topology, the postgis/postgis image also
    fuzzystrmatch and the tiger geocoder: a database with them, a geometry column, a GiST index and a topology
    imports with no refusal, geometry and topology intact."""
    source = dbs.name("gis")
    execute("postgres", 'CREATE DATABASE "%s"' % source)
    available = query(source, "SELECT count(*) FROM pg_available_extensions WHERE name = 'postgis_topology'")
    assert available == [(1,)], "PostGIS is not installed on this server (dev/setup installs postgresql-15-postgis-3)"
    execute(
        source,
        "CREATE EXTENSION postgis",
        "CREATE EXTENSION postgis_topology",
        "CREATE EXTENSION fuzzystrmatch",
        "CREATE EXTENSION postgis_tiger_geocoder",
        "CREATE TABLE spp_area (id serial PRIMARY KEY, name varchar, geo geometry(MultiPolygon, 4326))",
        "CREATE INDEX spp_area_geo_gist_index ON spp_area USING gist (geo)",
        "INSERT INTO spp_area (name, geo) SELECT 'area ' || i, ST_Multi(ST_Buffer(ST_MakePoint(i, i), 0.5))::"
        "geometry(MultiPolygon, 4326) FROM generate_series(1, 50) i",
        "SELECT topology.CreateTopology('spp_topo', 4326)",
        "SELECT topology.AddTopoGeometryColumn('spp_topo', 'public', 'spp_area', 'topo', 'POLYGON')",
        "SELECT topology.TopoGeo_AddPolygon('spp_topo', ST_GeomFromText('POLYGON((0 0,1 0,1 1,0 1,0 0))', 4326))",
    )
    dump = subprocess.run(
        ["pg_dump", "--no-owner", source], capture_output=True, check=True, env=dict(os.environ)
    ).stdout
    path = tmp_path / "gis.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("dump.sql", dump)
    target = dbs.name("gisimp")
    import_file(str(path), options(target, pgconf, tmp_path, include_filestore=False))
    area = "SELECT count(*), round(sum(ST_Area(geo))::numeric, 6) FROM spp_area"
    assert query(target, area) == query(source, area)
    assert query(target, "SELECT name FROM topology.topology") == [("spp_topo",)]
    assert query(target, "SELECT count(*) FROM spp_topo.face") == query(source, "SELECT count(*) FROM spp_topo.face")
    assert query(target, "SELECT count(*) FROM pg_trigger WHERE tgname = 'relation_integrity_checks'") == [(1,)]


def test_an_unsigned_set_with_unknown_code_is_refused_on_restore_and_drill(sample, plan_for, dbs, pgconf):
    """A backup set nobody signed goes the guarded way: a dump with a trigger nobody allowed is refused by the
    catalog check on restore (with --copy) and in a drill, naming the trigger; with its digests accepted on the
    command line the restore goes through, and the engine's own writes still fire it only as the import role."""
    from engine.ops.backup import run_backup
    from engine.ops.drill import run_drill
    from engine.ops.restore import restore

    location = run_backup(plan_for(sample)).locations[0]
    evil = dbs.name("evilsrc")
    execute("postgres", 'CREATE DATABASE "%s" TEMPLATE "%s"' % (evil, sample["db"]))
    # pg_dump writes a function's body as PostgreSQL keeps it, so a command hidden in the zip's text would be in
    # plain sight here: this one only rewrites every registrant's name, when whoever fires it is not the import role.
    execute(
        evil,
        "CREATE FUNCTION public.spp_x() RETURNS trigger LANGUAGE plpgsql AS $f$BEGIN IF current_user NOT LIKE "
        "'spp\\_import\\_%' THEN UPDATE public.res_partner SET name = 'hijacked'; END IF; RETURN NEW; END$f$",
        CARRIERS["trigger"][1].format(f="spp_x"),
    )
    swap_in_a_hostile_dump(location, evil)
    target = dbs.name("fromset")
    data_dir = str(sample["tmp"] / "rdata")
    opts = dict(target_db=target, pg=pgconf, data_dir=data_dir, new_uuid=True)
    with pytest.raises(RestoreError) as caught:
        restore(catalog.resolve(location), RestoreOptions(**opts))
    message = str(caught.value)
    assert "trigger spp_t ON public.ir_config_parameter" in message and "nothing was changed" in message, message
    assert leftovers(target, data_dir) == []

    drill = run_drill(catalog.resolve(location), pgconf, str(sample["tmp"] / "ddata"))
    assert not drill.ok and "spp_t" in drill.text(), drill.text()
    assert query("postgres", "SELECT datname FROM pg_database WHERE datname LIKE %s", ("%_drill_%",)) == []

    accepted = codecheck.read_accepted(accept_file(sample["tmp"], message))
    result = restore(catalog.resolve(location), RestoreOptions(accepted_code=accepted, **opts))
    assert any("accept-code" in w for w in result.warnings)
    names = "SELECT count(*) FROM res_partner WHERE name = 'hijacked'"
    assert query(target, names) == [(0,)], "the engine's own statements ran the accepted code with its rights"
    execute(target, "UPDATE ir_config_parameter SET value = value WHERE key = 'database.uuid'")
    assert query(target, names) != [(0,)], "the accepted trigger did not fire for a superuser: the test proves nothing"


def test_an_extension_function_that_runs_sql_is_not_called_from_a_default(dump, sample, dbs, tmp_path, pgconf):
    """PostGIS's st_findextent builds SQL from its arguments without quoting them: a column default calling it
    would run what the dump wrote as whoever inserts a row. Only an extension's C functions may be called from a
    default, a check, an index or a view."""
    payload = (
        "CREATE EXTENSION IF NOT EXISTS postgis WITH SCHEMA public;\n"
        # Harmless while the load fills the column as the import role; live for anyone else.
        "ALTER TABLE public.res_partner ADD COLUMN spp_note text DEFAULT (CASE WHEN current_user NOT LIKE "
        "'spp\\_import\\_%' THEN public.st_findextent('x', 'y', 'a')::text END);"
    )
    path = make_zip(tmp_path / "evil.zip", with_tail(dump, payload), sample)
    target = dbs.name("evil")
    message = refusal(path, target, pgconf, tmp_path)
    assert "column default public.res_partner.spp_note" in message and "st_findextent" in message, message
    assert leftovers(target, str(tmp_path / "data")) == []


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (
            "CREATE MATERIALIZED VIEW public.spp_mv AS SELECT rolname, rolpassword FROM pg_catalog.pg_authid "
            "WITH NO DATA;",
            "views over tables it could not read itself (spp_mv)",
        ),
        (
            "CREATE SCHEMA postgres;\nCREATE VIEW postgres.ir_config_parameter AS SELECT * FROM "
            "public.ir_config_parameter;",
            "schema named after a role postgres",
        ),
    ],
    ids=["materialized view over pg_authid", "schema named after a role"],
)
def test_objects_that_read_with_other_rights_are_refused(payload, expected, dump, sample, dbs, tmp_path, pgconf):
    """A materialized view made WITH NO DATA over what the import role cannot read would be filled by its next
    owner's REFRESH; a schema named after a role comes first in that role's search path and would stand in for
    Odoo's tables. Both are refused and nothing is left."""
    path = make_zip(tmp_path / "evil.zip", with_tail(dump, payload), sample)
    target = dbs.name("evil")
    message = refusal(path, target, pgconf, tmp_path)
    assert expected in message, message
    assert leftovers(target, str(tmp_path / "data")) == []


def test_a_refusal_shows_every_character_a_definition_holds(dump, sample, dbs, tmp_path, pgconf):
    """Terminal escapes that would hide part of a body, and a body longer than a screen, are printed whole and
    escaped: what a person reads is what the digest accepts."""
    hidden = "\x1b[8m PERFORM 2; \x1b[0m"
    padding = "PERFORM 1; " * 60
    payload = (
        "CREATE FUNCTION public.spp_count() RETURNS integer LANGUAGE plpgsql AS $f$BEGIN %s%s RETURN 1; END$f$;"
        % (
            padding,
            hidden,
        )
    )
    path = make_zip(tmp_path / "evil.zip", with_tail(dump, payload), sample)
    message = refusal(path, dbs.name("evil"), pgconf, tmp_path)
    assert "\x1b" not in message and "\\x1b[8m PERFORM 2;" in message, message
    assert message.count("PERFORM 1;") == 60


def test_the_accepted_code_file_must_be_a_small_regular_file(tmp_path):
    """--accept-code reads a file a person wrote: a device or a FIFO is refused in words, as is a line that is
    not a digest; the digest of a default names its column, so accepting one accepts no other."""
    from engine.db.sqlguard import SqlRefused

    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for path in ("/dev/zero", str(tmp_path), str(fifo)):
        with pytest.raises(SqlRefused, match="not a regular file"):
            codecheck.read_accepted(path)
    bad = tmp_path / "bad.txt"
    bad.write_text("sha256:1234 function public.x()\n")
    with pytest.raises(SqlRefused, match="line 1 .* is not a digest"):
        codecheck.read_accepted(str(bad))
    one = codecheck.CodeObject("column default", "public.a.x", "DEFAULT (1)")
    other = codecheck.CodeObject("column default", "public.b.x", "DEFAULT (1)")
    assert one.digest != other.digest


def test_calls_that_tamper_with_sequences_large_objects_or_statistics_are_refused(dump, sample, dbs, tmp_path, pgconf):
    """A default resetting a sequence, a check that makes a large object or consumes a sequence on every row:
    no code of the dump's own, yet each write would corrupt or grow the database. Odoo's own nextval() defaults
    still load (control: the sample's serial columns)."""
    body = with_tail(
        dump,
        "ALTER TABLE public.res_partner ADD COLUMN spp_z bigint DEFAULT setval('public.res_partner_id_seq', 1);\n"
        "ALTER TABLE public.res_partner ADD CONSTRAINT spp_c CHECK "
        "(lo_from_bytea(0, convert_to(coalesce(name, ''), 'UTF8')) > 0);\n"
        "CREATE DOMAIN public.spp_d AS text CHECK (nextval('public.res_partner_id_seq') > 0);\n"
        "CREATE TABLE public.spp_t (x public.spp_d);",
    )
    path = make_zip(tmp_path / "evil.zip", body, sample)
    target = dbs.name("evil")
    message = refusal(path, target, pgconf, tmp_path)
    assert "column default public.res_partner.spp_z" in message and "setval" in message, message
    assert "check constraint" in message and "lo_from_bytea" in message, message
    assert "domain constraint" in message and "nextval" in message, message
    assert leftovers(target, str(tmp_path / "data")) == []


def test_what_a_dump_grants_to_others_is_not_kept(dump, sample, dbs, tmp_path, pgconf):
    """GRANTs to PUBLIC or to another role of the cluster (on tables, a column, a sequence, schemas) and
    row-level security switched on would outlive the import: another role could read res_users' password
    hashes, or plant a function in schema public that wins over a built-in. None is kept; the import goes on."""
    other = "spp_other_%s" % os.urandom(4).hex()
    execute("postgres", "CREATE ROLE %s LOGIN" % other)
    try:
        body = with_tail(
            dump,
            "GRANT SELECT ON public.res_partner TO PUBLIC;\n"
            "GRANT ALL ON public.res_partner TO %(o)s WITH GRANT OPTION;\n"
            "GRANT SELECT (name) ON public.res_partner TO %(o)s;\n"
            "GRANT ALL ON SEQUENCE public.res_partner_id_seq TO PUBLIC;\n"
            "GRANT CREATE ON SCHEMA public TO PUBLIC;\n"
            "CREATE SCHEMA spp_open;\nGRANT ALL ON SCHEMA spp_open TO PUBLIC;\n"
            "ALTER TABLE public.res_partner ENABLE ROW LEVEL SECURITY;\n"
            "ALTER TABLE public.res_partner FORCE ROW LEVEL SECURITY;" % {"o": other},
        )
        path = make_zip(tmp_path / "grants.zip", body, sample)
        target = dbs.name("grants")
        import_file(path, options(target, pgconf, tmp_path))
        foreign = query(
            target,
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace, aclexplode(c.relacl) a "
            "WHERE n.nspname = 'public' AND a.grantee <> c.relowner "
            "UNION ALL SELECT t.attname FROM pg_attribute t, aclexplode(t.attacl) a "
            "WHERE t.attrelid = 'public.res_partner'::regclass "
            "UNION ALL SELECT n.nspname || ':' || a.privilege_type FROM pg_namespace n, aclexplode(n.nspacl) a "
            "WHERE n.nspname IN ('public', 'spp_open') AND a.grantee <> n.nspowner "
            "AND NOT (n.nspname = 'public' AND a.grantee = 0 AND a.privilege_type = 'USAGE')",
        )
        assert foreign == [], foreign
        assert query(
            target,
            "SELECT relrowsecurity, relforcerowsecurity FROM pg_class WHERE oid = 'public.res_partner'::regclass",
        ) == [(False, False)]
        assert query(target, "SELECT count(*) > 0 FROM public.res_partner") == [(True,)], "the data came in"
        # As the other role: nothing of the imported database is readable, and schema public takes no function.
        import psycopg2

        conn = psycopg2.connect(dbname=target, **dict(conn_kwargs(), user=other))
        try:
            with conn.cursor() as cr:
                with pytest.raises(psycopg2.errors.InsufficientPrivilege):
                    cr.execute("SELECT name FROM public.res_partner LIMIT 1")
                conn.rollback()
                with pytest.raises(psycopg2.errors.InsufficientPrivilege):
                    cr.execute("CREATE FUNCTION public.lower(varchar) RETURNS text LANGUAGE sql AS 'SELECT 1::text'")
                conn.rollback()
        finally:
            conn.close()
    finally:
        dbs.drop_all()
        execute("postgres", "DROP ROLE IF EXISTS %s" % other)
