import os
import shutil
import socket
import subprocess
import tempfile
import time
import unittest
import urllib.request
from unittest.mock import patch

from odoo import fields
from odoo.tests.common import TransactionCase, new_test_user

from ..engine import crypto, pg, runner

ADDON_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

S3_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


def moto_server_command():
    """moto's S3 server, from its own environment (SPP_MOTO_SERVER, or .venv-s3 in the addon), or None."""
    path = os.environ.get("SPP_MOTO_SERVER") or os.path.join(ADDON_DIR, ".venv-s3", "bin", "moto_server")
    return path if os.path.isfile(path) and os.access(path, os.X_OK) else None


class MotoServer:
    """A real S3 HTTP server (moto in server mode) on loopback, in its own process."""

    def __init__(self, command):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.endpoint = "http://127.0.0.1:%d" % self.port
        self.process = subprocess.Popen(  # noqa: S603 - argument list, no shell
            [command, "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=dict(os.environ, **S3_ENV),
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(self.endpoint + "/moto-api/", timeout=1) as response:  # noqa: S310
                    response.read()
                return
            except OSError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    self.stop()
                    raise RuntimeError("moto's S3 server did not start on %s" % self.endpoint) from None
                time.sleep(0.1)

    def client(self):
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )

    def stop(self):
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


class BackupCase(TransactionCase):
    """A destination and a policy in a temporary folder, and one user per role."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.tmp = tempfile.mkdtemp(prefix="spp_backup_test_")
        cls.addClassCleanup(shutil.rmtree, cls.tmp, True)
        cls.runs_dir = os.path.join(cls.tmp, "runs")
        runs_dir = cls.runs_dir
        cls.Job = cls.env["spp.backup.job"]
        cls.Policy = cls.env["spp.backup.policy"]
        cls.Destination = cls.env["spp.backup.destination"]
        cls.startClassPatcher(patch.object(type(cls.Job), "_runs_dir", lambda self: runs_dir))
        cls.destination = cls.Destination.create({"name": "Test disk", "path": os.path.join(cls.tmp, "dest")})
        cls.policy = cls.Policy.create(
            {
                "name": "Nightly",
                "destination_ids": [(6, 0, cls.destination.ids)],
                "time_of_day": 2.5,
                "encrypt": False,
            }
        )
        cls.manager = new_test_user(
            cls.env, login="sppb_manager", groups="base.group_user,spp_backup.group_backup_manager"
        )
        cls.auditor = new_test_user(
            cls.env, login="sppb_auditor", groups="base.group_user,spp_backup.group_backup_auditor"
        )
        cls.internal = new_test_user(cls.env, login="sppb_internal", groups="base.group_user")
        cls.restorer = new_test_user(
            cls.env, login="sppb_restorer", groups="base.group_user,spp_backup.group_backup_restore"
        )
        cls.recipient = crypto.generate_identity()[1]

    @classmethod
    def patch_environ(cls, values):
        """Set environment variables for the whole class; the previous values come back afterwards."""
        cls.startClassPatcher(patch.dict(os.environ, values))

    # ----------------------------------------------------------------- helpers

    def make_job(self, policy=None, **values):
        """A job as _start_runner leaves it: running, with its status file path set."""
        policy = policy or self.policy
        job = self.Job.create({"policy_id": policy.id, "trigger": "schedule"})
        status_path = os.path.join(self.tmp, "job-%d.status.json" % job.id)
        vals = {
            "state": "running",
            "started_at": fields.Datetime.now(),
            "runner_pid": os.getpid(),
            "runner_host": socket.gethostname(),
            "status_path": status_path,
        }
        vals.update(values)
        job.write(vals)
        return job

    def write_status(self, job, **values):
        """Write the job's status file the way the runner does."""
        now = time.time()
        status = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "state": "running",
            "progress": 0.0,
            "message": "",
            "started_at": now - 5,
            "heartbeat": now,
            "result": None,
            "error": None,
            "log": [],
        }
        status.update(values)
        runner.write_json_atomic(job.status_path, status)
        return status

    @staticmethod
    def fake_result(backup_id="20261126T030000Z-abc123", location="/backups/db/20261126T030000Z-abc123"):
        """A BackupResult.to_dict() as the runner stores it."""
        return {
            "backup_id": backup_id,
            "db_name": "db",
            "locations": [location],
            "artifacts": {
                "database": {
                    "file": "database.dump.zst",
                    "size": 3_000_000_000,
                    "sha256": "a" * 64,
                    "raw_size": 9_000_000_000,
                    "compression": "zstd",
                    "encryption": None,
                    "seconds": 100.0,
                },
                "filestore": {
                    "file": "filestore.tar.zst",
                    "size": 2048,
                    "sha256": "b" * 64,
                    "raw_size": 4096,
                    "compression": "zstd",
                    "encryption": None,
                    "seconds": 1.0,
                },
                "application": {
                    "file": "application.json",
                    "size": 512,
                    "sha256": "c" * 64,
                    "raw_size": 512,
                    "compression": "none",
                    "encryption": None,
                    "seconds": 0.1,
                },
            },
            "started_at": "2026-11-26T03:00:00Z",
            "finished_at": "2026-11-26T03:01:40Z",
            "duration": 100.5,
            "warnings": ["1 attachment file(s) referenced by the database are missing from /data/filestore/db"],
            "summary": {
                "backup_id": backup_id,
                "db_name": "db",
                "created_at": "2026-11-26T03:00:00Z",
                "version": "17.0",
                "module_count": 42,
                "row_counts": {"res_partner": 1200, "res_users": 7},
                "filestore_files": 30,
                "filestore_bytes": 4096,
                "missing_files": ["ab/ab12"],
                "artifacts": {},
            },
        }

    def wait_for_runner(self, job, timeout=240):
        """Collect the job (or restore, or drill) until its runner has finished (or the timeout passes)."""
        if not self.run_to_end(job, timeout):
            self.fail("The runner did not finish within %d s (%s state %s)" % (timeout, job._name, job.state))
        return job

    @staticmethod
    def run_to_end(record, timeout=240):
        """Collect ``record`` until its runner has finished; True when it did within ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            record._collect()
            if record.state in ("done", "failed"):
                return True
            time.sleep(0.5)
        return False

    # ------------------------------------------------------------- databases

    @classmethod
    def pg_config(cls):
        """The PostgreSQL connection of this Odoo, as the engine takes it."""
        return cls.env["spp.backup.policy"]._engine_pg()

    def database_exists(self, name):
        """Whether database ``name`` exists now (this test's transaction sees an older snapshot)."""
        return pg.database_exists(self.pg_config(), name)

    def drop_later(self, name):
        """Drop database ``name`` and remove its filestore folder when the test ends."""
        folder = os.path.join(self.env["spp.backup.policy"]._data_dir(), "filestore", name)
        self.addCleanup(shutil.rmtree, folder, True)
        self.addCleanup(pg.drop_database, self.pg_config(), name)

    def query(self, dbname, sql, params=None):
        """Rows of ``sql`` run in another database."""
        conn = pg.connect(self.pg_config(), dbname)
        try:
            with conn.cursor() as cr:
                cr.execute(sql, params)
                return cr.fetchall()
        finally:
            conn.close()


class RealBackupCase(BackupCase):
    """BackupCase with one real backup of this test database, made by the runner, done before the tests."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        wizard = cls.env["spp.backup.run.now"].with_user(cls.manager).create({"policy_id": cls.policy.id})
        cls.job = cls.Job.browse(wizard.action_confirm()["res_id"])
        if not cls.run_to_end(cls.job) or cls.job.state != "done":
            raise RuntimeError("The backup the tests need failed: %s" % (cls.job.error_message or cls.job.state))
        cls.backup_dir = cls.job.location.strip()


class S3BackupCase(BackupCase):
    """BackupCase with a real S3 server (moto) and test credentials in the environment.

    Skipped, with the reason, when moto's server is not installed.
    """

    @classmethod
    def setUpClass(cls):
        command = moto_server_command()
        if not command:
            raise unittest.SkipTest(
                "moto's S3 server is not installed (.venv-s3/bin/moto_server in the addon, or set SPP_MOTO_SERVER): "
                "the S3 tests are skipped"
            )
        super().setUpClass()
        cls.patch_environ(S3_ENV)
        cls.s3 = MotoServer(command)
        cls.addClassCleanup(cls.s3.stop)
        cls.s3_client = cls.s3.client()

    @classmethod
    def make_bucket(cls, name, object_lock=False):
        cls.s3_client.create_bucket(Bucket=name, ObjectLockEnabledForBucket=object_lock)
        return name

    @classmethod
    def s3_destination(cls, name, bucket, **values):
        vals = {
            "name": name,
            "kind": "s3",
            "endpoint_url": cls.s3.endpoint,
            "region": "us-east-1",
            "bucket": bucket,
            "prefix": "odoo/test",
            "addressing_style": "path",
            "part_size_mb": 5,
        }
        vals.update(values)
        return cls.Destination.create(vals)
