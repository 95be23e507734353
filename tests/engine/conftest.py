"""Fixtures for engine tests: a real PostgreSQL server and sample Odoo-like databases.

The server is the one libpq's PG* variables point at (``dev/test`` starts a
throwaway cluster and exports them). Tests fail, not skip, when it is absent.
"""

import contextlib
import hashlib
import os
import subprocess
import sys
import uuid

import psycopg2
import pytest
from psycopg2 import sql

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "dev"))

import sampledb  # noqa: E402

from engine.core.config import BackupPlan, DestinationConfig, PgConfig  # noqa: E402
from tests import s3server  # noqa: E402
from tests.s3server import S3_ENV  # noqa: E402

conn_kwargs = sampledb.conn_kwargs


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


def build_sample(dbs, tmp_path, prefix="src", partners=500, messages=2000, files=40):
    """A small Odoo-like database with a filestore on the server libpq's variables name: a dict of its places."""
    name = dbs.name(prefix)
    data_dir = str(tmp_path / "data")
    root = sampledb.build(
        conn_kwargs(), name, data_dir, partners=partners, messages=messages, files=files, file_size=20000
    )
    # Destination folders exist before a backup: the engine never makes a missing one (an unmounted disk).
    (tmp_path / "backups").mkdir(mode=0o700)
    return {"db": name, "data_dir": data_dir, "filestore": root, "dest": str(tmp_path / "backups"), "tmp": tmp_path}


@pytest.fixture
def sample(dbs, tmp_path, pgconf):
    """A small Odoo-like database with a filestore; returns a dict of its places."""
    return build_sample(dbs, tmp_path)


@pytest.fixture
def dump(sample):
    """pg_dump --no-owner of the sample database, as Odoo's database manager makes it."""
    return subprocess.run(
        ["pg_dump", "--no-owner", sample["db"]], capture_output=True, check=True, env=dict(os.environ)
    ).stdout


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


def run_plan(plan, tmp_path, data_dir=None, database=None):
    """``spp-backup run --plan``, as Odoo's worker executes plans: (exit code, its JSON answer).

    Local destinations under ``tmp_path`` are within the scope (backup_roots).
    """
    import json
    import subprocess

    plan_path = tmp_path / "plan.json"
    plan_path.write_text(json.dumps(plan))
    args = [sys.executable, "-m", "engine", "run", "--plan", str(plan_path)]
    if data_dir:
        args += ["--data-dir", str(data_dir)]
    if database:
        args += ["--database", database]
    env = dict(os.environ, SPP_BACKUP_BACKUP_ROOTS=str(tmp_path))
    proc = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, env=env)  # noqa: S603
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    assert lines, "no answer from run: %s" % proc.stderr
    return proc.returncode, json.loads(lines[-1])


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


def query(dbname, statement, params=None, **conn):
    """The rows of one statement (None for a statement without rows), on the tests' server or the one ``conn``
    names."""
    conn = psycopg2.connect(dbname=dbname, **(conn or conn_kwargs()))
    conn.autocommit = True
    try:
        with conn.cursor() as cr:
            cr.execute(statement, params)
            return cr.fetchall() if cr.description else None
    finally:
        conn.close()


def moto_server_command():
    """The S3 test server: moto in server mode, from its own environment (.venv-s3)."""
    path = s3server.moto_server_path()
    if not os.path.exists(path):
        pytest.fail("The S3 tests need moto's server at %s (dev/setup installs it, or set SPP_MOTO_SERVER)" % path)
    return path


class MotoServer(s3server.MotoServer):
    """A real S3 HTTP server on loopback, in its own process, started at once; the test fails when it does not start.

    ``env`` adds variables to the server's environment.
    """

    def __init__(self, env=None):
        super().__init__(moto_server_command())
        try:
            self.start(env=dict(os.environ, **(env or {})))
        except s3server.MotoServerError as exc:
            pytest.fail(str(exc))


@pytest.fixture(scope="session")
def s3_server():
    saved = {key: os.environ.get(key) for key in S3_ENV}
    os.environ.update(S3_ENV)
    server = MotoServer()
    yield server
    server.stop()
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture
def s3_bucket(s3_server):
    """A fresh bucket on the shared S3 server; returns (endpoint, bucket name)."""
    import boto3

    name = "b-%s" % uuid.uuid4().hex[:12]
    boto3.client("s3", endpoint_url=s3_server.endpoint, region_name="us-east-1").create_bucket(Bucket=name)
    return s3_server.endpoint, name


class CutProxy:
    """A TCP proxy on loopback in front of the S3 server whose link can be cut and mended.

    Cutting closes every open connection and refuses new ones: to the client
    it is a network failure in the middle of whatever it was sending.
    """

    def __init__(self, target_port):
        import socket
        import threading

        self.target_port = target_port
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.port = self.listener.getsockname()[1]
        self.endpoint = "http://127.0.0.1:%d" % self.port
        self.open = True
        self.sockets = []
        self.lock = threading.Lock()
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        import socket
        import threading

        while not self.closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if not self.open:
                client.close()
                continue
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            with self.lock:
                self.sockets += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src, dst):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                with contextlib.suppress(OSError):
                    sock.close()

    def cut(self):
        import socket

        self.open = False
        with self.lock:
            for sock in self.sockets:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                    sock.close()
                except OSError:
                    pass
            self.sockets = []

    def mend(self):
        self.open = True

    def close(self):
        self.closed = True
        self.cut()
        self.listener.close()


@pytest.fixture
def keys(tmp_path):
    """An age key pair and an Ed25519 signing key pair, private halves in files."""
    from engine.io import crypto

    identity, recipient = crypto.generate_identity()
    identity_file = tmp_path / "identity.txt"
    identity_file.write_text(identity + "\n")
    pem, public = crypto.generate_signing_key()
    signing_file = tmp_path / "signing.pem"
    signing_file.write_text(pem)
    return {
        "identity": identity,
        "recipient": recipient,
        "identity_file": str(identity_file),
        "signing_file": str(signing_file),
        "public": public,
        "identities": crypto.load_identities(str(identity_file)),
    }
