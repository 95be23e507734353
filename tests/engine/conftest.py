"""Fixtures for engine tests: a real PostgreSQL server and sample Odoo-like databases.

The server is the one libpq's PG* variables point at (``dev/test`` starts a
throwaway cluster and exports them). Tests fail, not skip, when it is absent.
"""

import hashlib
import os
import sys
import uuid

import psycopg2
import pytest
from psycopg2 import sql

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "dev"))

import sampledb  # noqa: E402

from engine.config import BackupPlan, DestinationConfig, PgConfig  # noqa: E402


def conn_kwargs():
    return {
        k: v
        for k, v in (
            ("host", os.environ.get("PGHOST")),
            ("port", os.environ.get("PGPORT")),
            ("user", os.environ.get("PGUSER")),
        )
        if v
    }


@pytest.fixture(scope="session")
def pgconf():
    try:
        conn = psycopg2.connect(dbname="postgres", connect_timeout=5, **conn_kwargs())
    except psycopg2.OperationalError as exc:
        pytest.fail("The engine tests need a PostgreSQL server (run them through dev/test): %s" % exc)
    conn.close()
    return PgConfig(
        host=os.environ.get("PGHOST"),
        port=int(os.environ["PGPORT"]) if os.environ.get("PGPORT") else None,
        user=os.environ.get("PGUSER"),
    )


class Databases:
    """Creates uniquely named databases and drops them afterwards."""

    def __init__(self):
        self.names = []

    def name(self, prefix="t"):
        name = "%s_%s" % (prefix, uuid.uuid4().hex[:10])
        self.names.append(name)
        return name

    def drop_all(self):
        conn = psycopg2.connect(dbname="postgres", **conn_kwargs())
        conn.autocommit = True
        with conn.cursor() as cr:
            cr.execute("SELECT datname FROM pg_database")
            existing = [row[0] for row in cr.fetchall()]
            for name in existing:
                if any(name == n or name.startswith(n + "_replaced_") for n in self.names):
                    cr.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,))
                    cr.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))
        conn.close()


@pytest.fixture
def dbs():
    databases = Databases()
    yield databases
    databases.drop_all()


@pytest.fixture
def sample(dbs, tmp_path, pgconf):
    """A small Odoo-like database with a filestore; returns a dict of its places."""
    name = dbs.name("src")
    data_dir = str(tmp_path / "data")
    root = sampledb.build(conn_kwargs(), name, data_dir, partners=500, messages=2000, files=40, file_size=20000)
    return {"db": name, "data_dir": data_dir, "filestore": root, "dest": str(tmp_path / "backups"), "tmp": tmp_path}


@pytest.fixture
def plan_for(pgconf):
    def make(sample, **overrides):
        values = dict(
            db_name=sample["db"],
            destinations=[DestinationConfig(path=sample["dest"])],
            pg=pgconf,
            data_dir=sample["data_dir"],
        )
        values.update(overrides)
        return BackupPlan(**values)

    return make


def table_contents(dbname):
    """Every user table's rows, sorted: {table: [row, ...]}."""
    conn = psycopg2.connect(dbname=dbname, **conn_kwargs())
    try:
        with conn.cursor() as cr:
            cr.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename")
            tables = [row[0] for row in cr.fetchall()]
            contents = {}
            for table in tables:
                cr.execute(sql.SQL("SELECT * FROM {}").format(sql.Identifier(table)))
                contents[table] = sorted(cr.fetchall(), key=repr)
            return contents
    finally:
        conn.close()


def tree_digest(root):
    """{relative path: sha256} of every file under root."""
    result = {}
    for folder, _dirs, files in os.walk(root):
        for name in files:
            path = os.path.join(folder, name)
            with open(path, "rb") as handle:
                result[os.path.relpath(path, root)] = hashlib.sha256(handle.read()).hexdigest()
    return result


def query(dbname, statement, params=None):
    conn = psycopg2.connect(dbname=dbname, **conn_kwargs())
    conn.autocommit = True
    try:
        with conn.cursor() as cr:
            cr.execute(statement, params)
            return cr.fetchall() if cr.description else None
    finally:
        conn.close()
