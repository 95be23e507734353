import contextlib
import json
import os
import shutil
import socket
import tempfile
import unittest
from unittest.mock import patch

from odoo import fields
from odoo.tests.common import TransactionCase, new_test_user

from ..engine.core import plans, states
from ..engine.core.config import BackupPlan
from ..engine.db import pg
from ..engine.io import crypto
from ..engine.service import dispatch
from ..engine.service import protocol as run_protocol
from ..engine.service import worker as engine_worker
from ..models.server_fields import server_mode
from .s3server import S3_ENV, MotoServer, moto_server_command

ADDON_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def placeholder_plan(action, db_name):
    """A well-formed plan of ``action`` for a run a test holds itself (never given to a worker)."""
    source = plans.Source(destination={"kind": "local", "path": "/nonexistent"}, db_name=db_name)
    return {
        plans.BACKUP: BackupPlan(db_name=db_name, destinations=[]),
        plans.RESTORE: plans.RestorePlan(source=source, options=plans.RestoreRequest(target_db=db_name)),
        plans.DRILL: plans.DrillPlan(source=source),
        plans.VERIFY: plans.VerifyPlan(),
    }[action]


class _TestConnection:
    """The worker's database connection, made of this test's cursor: what the worker writes, the test sees.

    The worker commits its claim and its result in transactions of its own; here they stay in the test's
    transaction, which is never committed (``commit`` and ``rollback`` do nothing)."""

    autocommit = True

    def __init__(self, cr):
        self.cr = cr

    def cursor(self):
        return contextlib.nullcontext(self.cr)

    def commit(self):
        pass

    def rollback(self):
        pass


def as_the_server(env):
    """``env`` as the server's own code holds it (models/server_fields.py): the tests play the worker and the crons
    there, and people through ``with_user``, which leaves the server's mark behind."""
    return server_mode(env["res.users"]).env


def work_queued(env, collect=True, data_dir=None):
    """Run every queued run with the backup worker itself (engine.service.worker.Worker.run_next: its claim,
    its reporter, the engine's execution, its record of the end), in ``env``'s transaction; then record the
    results as the collect cron does.

    ``collect=False`` leaves the finished runs for someone to record (a person's Refresh, the cron);
    ``data_dir`` is the worker's own Odoo data directory (its filestores), when not this server's.

    What crosses processes (waking Odoo's cron from another session, the heartbeat thread, a worker that
    dies) is left out here and tested against a real server in tests/worker/.
    """
    env = as_the_server(env)
    Engine = env["spp.backup.engine"]
    settings = Engine._settings()
    identity_file = settings.get("identity_file")
    ctx = dispatch.WorkerContext(
        settings=settings,
        pg=Engine._pg(settings),
        data_dir=data_dir or Engine._data_dir(),
        conf_path=Engine._conf_path(),
        identities=crypto.load_identities(identity_file) if identity_file else [],
    )
    worker = engine_worker.Worker(ctx, databases=[env.cr.dbname], once=True)
    env.flush_all()
    with (
        # Another session would wait for this test's uncommitted rows; the test calls the cron itself.
        patch.object(engine_worker, "notify_odoo", lambda *args, **kwargs: None),
        # The heartbeat would write from a thread of its own through the test's cursor.
        patch.object(engine_worker.RunReporter, "start", lambda reporter: None),
    ):
        while worker.run_next(env.cr.dbname, _TestConnection(env.cr)):
            pass
    env.invalidate_all()
    if collect:
        env["spp.backup.run"]._cron_collect()


class BackupCase(TransactionCase):
    """A destination and a policy in a temporary folder, and one user per role."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.env = as_the_server(cls.env)
        cls.tmp = tempfile.mkdtemp(prefix="spp_backup_test_")
        cls.addClassCleanup(shutil.rmtree, cls.tmp, True)
        cls.Job = cls.env["spp.backup.job"]
        cls.Policy = cls.env["spp.backup.policy"]
        cls.Destination = cls.env["spp.backup.destination"]
        cls.Run = cls.env["spp.backup.run"]
        # Destinations of the tests lie in a temporary folder: that is their backup root.
        cls.patch_environ({"SPP_BACKUP_BACKUP_ROOTS": cls.tmp})
        os.makedirs(os.path.join(cls.tmp, "dest"))
        cls.destination = cls.Destination.create({"name": "Test disk", "path": os.path.join(cls.tmp, "dest")})
        cls.policy = cls.Policy.create(
            {
                "name": "Nightly",
                "destination_ids": [(6, 0, cls.destination.ids)],
                "time_of_day": 2.5,
                "tz": "UTC",
                "encrypt": False,
                # The tests of archives, their evidence and their log; an incremental policy has its own tests.
                "incremental_filestore": False,
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

    def make_job(self, policy=None, signing=False, **values):
        """A job whose run a live worker holds: running, with the run's lock taken by this test's session.

        Unless ``signing`` is given, the job records no signing, as a job from before it was kept: its result
        is a made-up one whose set does not exist, so it is never drilled as a first unsigned backup.
        """
        policy = policy or self.policy
        job = self.Job.sudo().create({"policy_id": policy.id, "trigger": "schedule", "signing": signing})
        job.plan_destination_ids = ",".join(str(dest.id) for dest in policy.destination_ids)
        self.attach_run(job, "backup")
        vals = {"state": states.RUNNING, "started_at": fields.Datetime.now()}
        vals.update(values)
        job.write(vals)
        return job

    def attach_run(self, record, action):
        """A running run for ``record`` (a job, restore or drill), held by a live worker: this test's session."""
        run = self.Run._queue(action, placeholder_plan(action, self.env.cr.dbname), record, policy=record._run_policy())
        run.write({"state": states.RUNNING, "started_at": fields.Datetime.now(), "worker_host": socket.gethostname()})
        record.sudo().write({"run_id": run.id, "state": states.RUNNING, "started_at": fields.Datetime.now()})
        self.hold_run_lock(run)
        return run

    def hold_run_lock(self, run):
        """Take the run's advisory lock in this test's session, as a live worker holds it (released at the end)."""
        self.env.cr.execute("SELECT pg_advisory_lock(%s, %s)", (run_protocol.RUN_LOCK_CLASS, run.id))
        self.addCleanup(
            lambda: self.env.cr.execute("SELECT pg_advisory_unlock(%s, %s)", (run_protocol.RUN_LOCK_CLASS, run.id))
        )

    def release_run_lock(self, run):
        """The worker of ``run`` dies: its lock goes."""
        self.env.cr.execute("SELECT pg_advisory_unlock(%s, %s)", (run_protocol.RUN_LOCK_CLASS, run.id))

    def finish_run(self, record, state=states.DONE, result=None, error=None, log=""):
        """Write the end of ``record``'s run the way the worker does (state, result, error, log)."""
        run = record.run_id.sudo()
        run.write(
            {
                "state": state,
                "result": json.dumps(result) if result is not None else False,
                "error_message": error or False,
                "log": log,
                "progress": 100.0 if state == states.DONE else run.progress,
                "started_at": run.started_at or fields.Datetime.now(),
                "finished_at": fields.Datetime.now(),
            }
        )
        self.release_run_lock(run)
        return run

    @staticmethod
    def fake_result(backup_id="20261126T030000Z-abc123", location="/backups/db/20261126T030000Z-abc123"):
        """A BackupResult.to_dict() as the worker stores it."""
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

    def wait_for_run(self, record, timeout=240):
        """Have the worker run what is queued, then record it; the record (job, restore or drill)."""
        if not self.run_to_end(record, timeout):
            self.fail("The run did not finish (%s state %s)" % (record._name, record.state))
        return record

    @classmethod
    def work(cls, collect=True, data_dir=None):
        """Execute every queued run as the worker does, in this test's transaction (see work_queued)."""
        work_queued(cls.env, collect=collect, data_dir=data_dir)

    @classmethod
    def run_to_end(cls, record, timeout=240):
        """Run what is queued and record it; True when ``record`` has finished."""
        cls.work()
        record.invalidate_recordset()
        return record.state in (states.DONE, states.PARTIAL, states.FAILED)

    # ------------------------------------------------------------- databases

    @classmethod
    def pg_config(cls):
        """The PostgreSQL connection of this Odoo, as the engine takes it."""
        return cls.env["spp.backup.engine"]._pg()

    def database_exists(self, name):
        """Whether database ``name`` exists now (this test's transaction sees an older snapshot)."""
        return pg.database_exists(self.pg_config(), name)

    def drop_later(self, name):
        """Drop database ``name`` and remove its filestore folder when the test ends."""
        folder = os.path.join(self.env["spp.backup.engine"]._data_dir(), "filestore", name)
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
    """BackupCase with one real backup of this test database, made by the worker, done before the tests.

    The policy does not sign, so that backup is drilled at once (its first unsigned backup): ``first_drill``,
    queued. Unless ``keep_first_drill``, that drill is taken back before the tests, which start from a policy
    that has never been drilled.
    """

    keep_first_drill = False

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        wizard = cls.env["spp.backup.run.now"].with_user(cls.manager).create({"policy_id": cls.policy.id})
        cls.job = cls.Job.browse(wizard.action_confirm()["res_id"])
        if not cls.run_to_end(cls.job) or cls.job.state != states.DONE:
            raise RuntimeError("The backup the tests need failed: %s" % (cls.job.error_message or cls.job.state))
        cls.backup_dir = cls.job.location.strip()
        cls.first_drill = cls.env["spp.backup.drill"].search([("policy_id", "=", cls.policy.id)])
        if not cls.keep_first_drill:
            cls.first_drill.run_id.sudo().unlink()
            cls.first_drill.sudo().unlink()


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
        cls.s3.start(env=dict(os.environ, **S3_ENV))
        cls.patch_environ({"SPP_BACKUP_S3_ENDPOINTS": cls.s3.endpoint})
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
