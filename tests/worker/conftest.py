"""The worker tier: a real Odoo server process on a throwaway, committed database, driven over RPC.

A TransactionCase never commits, so what crosses processes (the worker,
two nodes, a killed worker, Odoo restarted) is tested here: Odoo (17 or 19,
the series of the interpreter running these tests) runs as its own process,
workers run as ``python -m engine worker``, and the tests talk to Odoo over
XML-RPC as the users of each group would.
"""

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
import xmlrpc.client

import psycopg2
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SERIES_ADDONS = {17: ROOT, 19: os.path.join(ROOT, "series", "19.0", "spp_backup")}
"""Where each Odoo series finds the addon: the repository root is the 17.0 addon."""


def odoo_series():
    """The Odoo series this interpreter imports (17 or 19), or None."""
    try:
        import odoo.release

        series = odoo.release.version_info[0]
    except ImportError:
        return None
    return series if series in SERIES_ADDONS else None


def only_on_odoo(series):
    """A test of one Odoo series: not collected on the other one (dev/test declares it for that series only)."""
    return pytest.mark.only_on_odoo(series)


def pytest_configure(config):
    config.addinivalue_line("markers", "only_on_odoo(series): a test of one Odoo series")


def pytest_collection_modifyitems(config, items):
    series = odoo_series()
    kept, other = [], []
    for item in items:
        marker = item.get_closest_marker("only_on_odoo")
        (other if marker and marker.args[0] != series else kept).append(item)
    if other:
        config.hook.pytest_deselected(items=other)
        items[:] = kept


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def pg_kwargs():
    return {
        "host": os.environ.get("PGHOST", "127.0.0.1"),
        "port": int(os.environ.get("PGPORT", 5432)),
        "user": os.environ.get("PGUSER", "postgres"),
    }


def wait_for(condition, timeout, what, interval=0.25):
    """Poll ``condition()`` until it returns something true; its value. Fails the test after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail("%s did not happen within %d s" % (what, timeout))
        time.sleep(interval)


class OdooServer:
    """One Odoo installation with spp_backup on a database of its own, started and stopped at will."""

    def __init__(self, base):
        import odoo.release

        self.base = base
        self.db = "sppw_%s" % uuid.uuid4().hex[:8]
        self.data_dir = os.path.join(base, "data")
        self.backups = os.path.join(base, "backups")
        os.makedirs(self.backups)
        addons = os.path.join(base, "addons")
        os.makedirs(addons)
        self.addon = SERIES_ADDONS[odoo_series()]
        os.symlink(self.addon, os.path.join(addons, "spp_backup"))
        odoo_dir = os.path.dirname(odoo.release.__file__)
        paths = [addons] + [
            p
            for p in (os.path.join(os.path.dirname(odoo_dir), "addons"), os.path.join(odoo_dir, "addons"))
            if os.path.isdir(p)
        ]
        self.port = free_port()
        self.conf = os.path.join(base, "odoo.conf")
        self.log = os.path.join(base, "odoo.log")
        self.options = {
            "db_host": pg_kwargs()["host"],
            "db_port": pg_kwargs()["port"],
            "db_user": "odoo",
            "data_dir": self.data_dir,
            "addons_path": ",".join(paths),
            "http_interface": "127.0.0.1",
            "http_port": self.port,
            "gevent_port": free_port(),
            "dbfilter": "^%s$" % self.db,
            "list_db": "False",
            # No demo data: "all" on Odoo 17; Odoo 19 reads the option as a boolean only.
            "without_demo": "all" if odoo_series() == 17 else "True",
            "max_cron_threads": 1,
            "workers": 0,
            "logfile": self.log,
        }
        if odoo_series() == 19:
            # Odoo 19 warns on every XML-RPC call; these tests are XML-RPC clients on purpose.
            self.options["log_handler"] = ":INFO,odoo.addons.rpc.controllers.xmlrpc:ERROR"
        self.section = {"backup_roots": self.backups, "worker": "service"}
        self.process = None
        self.write_conf()

    def write_conf(self, **changes):
        for key, value in changes.items():
            if key.startswith("spp_"):
                self.section[key[4:]] = value
            else:
                self.options[key] = value
        with open(self.conf, "w", encoding="utf-8") as handle:
            handle.write("[options]\n")
            for key, value in self.options.items():
                handle.write("%s = %s\n" % (key, value))
            handle.write("\n[spp_backup]\n")
            for key, value in self.section.items():
                handle.write("%s = %s\n" % (key, value))

    def odoo_command(self, *args):
        # Odoo 19 refuses to start when PGUSER names postgres (as these tests' own connections do), whatever
        # odoo.conf's db_user says; its processes get the role odoo.conf names.
        return [
            "env",
            "PGUSER=%s" % self.options["db_user"],
            sys.executable,
            "-c",
            "import sys, odoo.cli; sys.argv[0] = 'odoo'; odoo.cli.main()",
            "-c",
            self.conf,
            "-d",
            self.db,
            *args,
        ]

    def install(self):
        subprocess.run(  # noqa: S603
            self.odoo_command("-i", "spp_backup", "--stop-after-init"), check=True, cwd=self.base, timeout=900
        )

    def start(self):
        env = dict(os.environ)
        env.pop("SPP_BACKUP_BACKUP_ROOTS", None)
        self.process = subprocess.Popen(self.odoo_command(), cwd=self.base, env=env)  # noqa: S603
        wait_for(self._answers, 120, "Odoo answering on port %d" % self.port)

    def _answers(self):
        if self.process.poll() is not None:
            pytest.fail("Odoo exited with %s; see %s" % (self.process.returncode, self.log))
        try:
            with urllib.request.urlopen("http://127.0.0.1:%d/web/login" % self.port, timeout=5) as response:  # noqa: S310
                return response.status == 200
        except OSError:
            return False

    def stop(self):
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def destroy(self):
        """Stop Odoo, drop its database and remove its folder."""
        self.stop()
        with contextlib.closing(psycopg2.connect(dbname="postgres", **pg_kwargs())) as conn, conn.cursor() as cr:
            conn.autocommit = True
            cr.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (self.db,))
            cr.execute('DROP DATABASE IF EXISTS "%s"' % self.db)
        shutil.rmtree(self.base, ignore_errors=True)

    # ------------------------------------------------------------------ RPC

    def rpc(self, login, password):
        common = xmlrpc.client.ServerProxy("http://127.0.0.1:%d/xmlrpc/2/common" % self.port, allow_none=True)
        uid = common.authenticate(self.db, login, password, {})
        assert uid, "cannot log in as %s" % login
        models = xmlrpc.client.ServerProxy("http://127.0.0.1:%d/xmlrpc/2/object" % self.port, allow_none=True)

        def call(model, method, *args, **kwargs):
            return models.execute_kw(self.db, uid, password, model, method, list(args), kwargs)

        call.uid = uid
        return call

    @property
    def groups_field(self):
        """res.users' groups: groups_id on Odoo 17, group_ids on Odoo 19."""
        return "groups_id" if odoo_series() == 17 else "group_ids"

    def make_user(self, login, groups):
        admin = self.rpc("admin", "admin")
        group_ids = [admin("ir.model.data", "check_object_reference", *xmlid.split("."))[1] for xmlid in groups]
        admin(
            "res.users",
            "create",
            {"name": login.title(), "login": login, "password": login + "-pw", self.groups_field: [(6, 0, group_ids)]},
        )
        return self.rpc(login, login + "-pw")

    # ----------------------------------------------------------- database

    def query(self, sql, params=None):
        with contextlib.closing(psycopg2.connect(dbname=self.db, **pg_kwargs())) as conn:
            conn.autocommit = True
            with conn.cursor() as cr:
                cr.execute(sql, params)
                return cr.fetchall() if cr.description else None

    # ------------------------------------------------------------- workers

    def start_worker(self, *extra):
        log = open(os.path.join(self.base, "worker-%d.log" % time.monotonic_ns()), "ab")  # noqa: SIM115
        process = subprocess.Popen(  # noqa: S603
            [
                sys.executable,
                "-m",
                "engine",
                "--conf",
                self.conf,
                "worker",
                "--database",
                self.db,
                "--poll",
                "1",
                *extra,
            ],
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        process.log_file = log
        return process


@pytest.fixture(scope="session")
def odoo_server():
    if not odoo_series():
        pytest.fail(
            "Neither Odoo 17 nor 19 is importable by %s: the worker tier needs one (dev/setup builds them)"
            % sys.executable
        )
    with contextlib.closing(psycopg2.connect(dbname="postgres", **pg_kwargs())) as conn, conn.cursor() as cr:
        conn.autocommit = True
        cr.execute("SELECT 1 FROM pg_roles WHERE rolname = 'odoo'")
        if not cr.fetchone():
            cr.execute("CREATE ROLE odoo SUPERUSER LOGIN")
    base = tempfile.mkdtemp(prefix="spp_backup_worker_")
    server = OdooServer(base)
    server.install()
    # Bulk for the backups to take a few seconds, so that they can be interrupted.
    server.query(
        "CREATE TABLE spp_bulk AS SELECT g AS id, md5(g::text) || md5((g * 7)::text) || md5((g * 13)::text) AS t "
        "FROM generate_series(1, 3000000) g"
    )
    server.start()
    yield server
    server.destroy()


@pytest.fixture
def workers(odoo_server):
    """Start workers with ``workers.start()``; every one left is killed at the end."""
    started = []

    class Workers:
        def start(self, *extra):
            process = odoo_server.start_worker(*extra)
            started.append(process)
            return process

    yield Workers()
    for process in started:
        if process.poll() is None:
            process.kill()
            process.wait()
        process.log_file.close()
