import hashlib
import json
import os
import shutil
from unittest.mock import patch

from odoo.tests import tagged

from ..engine.core import states
from ..engine.io import crypto
from .common import BackupCase


def sha256_of(path):
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@tagged("post_install", "-at_install")
class TestBackupEndToEnd(BackupCase):
    """One real backup of this test database by the worker, started from the wizard."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        wizard = cls.env["spp.backup.run.now"].with_user(cls.manager).create({"policy_id": cls.policy.id})
        action = wizard.action_confirm()
        cls.job = cls.Job.browse(action["res_id"])

    def setUp(self):
        super().setUp()
        # The first test waits for the worker; the others find the job finished.
        self.wait_for_run(self.job)

    def test_job_done_with_real_evidence(self):
        """The worker backs up the database; the job holds the real sizes and SHA-256s of files on disk."""
        job = self.job
        self.assertEqual(job.state, states.DONE, job.error_message)
        self.assertEqual(job.trigger, "manual")
        self.assertEqual(job.user_id, self.manager)
        self.assertTrue(job.run_id.worker_host)
        self.assertEqual(job.progress, 100.0)
        location = job.location.strip()
        self.assertEqual(location, os.path.join(self.destination.path, self.env.cr.dbname, job.backup_id))
        dump = os.path.join(location, "database.dump.zst")
        self.assertTrue(os.path.isfile(os.path.join(location, "manifest.json")))
        self.assertEqual(job.database_sha256, sha256_of(dump))
        self.assertEqual(job.database_size, os.path.getsize(dump))
        self.assertGreater(job.database_size, 10_000)
        application = os.path.join(location, "application.json")
        self.assertEqual(job.application_sha256, sha256_of(application))
        self.assertEqual(job.filestore_sha256, sha256_of(os.path.join(location, "filestore.tar.zst")))
        self.assertEqual(job.total_size, job.database_size + job.filestore_size + job.application_size)
        self.assertGreater(job.module_count, 2)
        self.assertIn("res_users:", job.row_counts_text)
        self.assertEqual(self.policy.last_success_at, job.finished_at)
        self.assertIn("Done", job.log_excerpt)

    def test_plan_file_has_no_password(self):
        """The plan handed to the worker names the database and destination and holds no password."""
        plan = json.loads(self.job.run_id.plan)
        self.assertEqual(plan["db_name"], self.env.cr.dbname)
        self.assertEqual(plan["destinations"][0]["path"], self.destination.path)
        self.assertNotIn("password", plan["pg"])

    def test_verify_ok(self):
        """Verify on an intact backup records an OK verdict and a report."""
        self.job.with_user(self.manager).action_verify()
        self.assertEqual(self.job.verify_state, "verifying")
        self.work()
        self.assertEqual(self.job.verify_state, "ok")
        self.assertTrue(self.job.verified_at)
        self.assertIn("OK", self.job.verify_report)
        self.assertIn("database.dump.zst", self.job.verify_report)

    def test_unsigned_policy_still_verifies_once_the_server_has_a_key(self):
        """A policy with Sign unticked: its unsigned backup verifies (with the warning) on a server that has a
        signing key, while the same backup counted as a signing policy's is refused as unsigned."""
        key_file = os.path.join(self.tmp, "signing-e2e.pem")
        crypto.write_signing_key(key_file)
        self.enterContext(patch.dict(os.environ, {"SPP_BACKUP_SIGNING_KEY_FILE": key_file}))
        self.assertFalse(self.policy.sign)
        self.job.with_user(self.manager).action_verify()
        self.work()
        self.assertEqual(self.job.verify_state, "ok", self.job.verify_report)
        self.assertIn("unsigned (accepted)", self.job.verify_report)
        self.policy.sign = True
        self.job.with_user(self.manager).action_verify()
        self.work()
        self.assertEqual(self.job.verify_state, states.FAILED)
        self.assertIn("manifest.sig is missing", self.job.verify_report)

    def test_verify_detects_flipped_byte(self):
        """Verify on a copy with one flipped byte fails, names the artifact and posts to the chatter."""
        source = self.job.location.strip()
        copy_root = os.path.join(self.tmp, "tampered")
        copy = os.path.join(copy_root, self.env.cr.dbname, self.job.backup_id)
        shutil.copytree(source, copy)
        dump = os.path.join(copy, "database.dump.zst")
        with open(dump, "r+b") as handle:
            handle.seek(os.path.getsize(dump) // 2)
            byte = handle.read(1)
            handle.seek(-1, os.SEEK_CUR)
            handle.write(bytes([byte[0] ^ 0xFF]))
        tampered = self.job.copy({"location": copy})
        tampered.write({"state": states.DONE, "backup_id": self.job.backup_id})
        tampered.with_user(self.manager).action_verify()
        self.work()
        self.assertEqual(tampered.verify_state, states.FAILED)
        self.assertIn("database", tampered.verify_report)
        self.assertIn("SHA-256 differs", tampered.verify_report)
        subtype = self.env.ref("spp_backup.mt_verify_failed")
        posted = tampered.message_ids.filtered(lambda m: m.subtype_id == subtype)
        self.assertEqual(len(posted), 1)
        self.assertIn("database (database.dump.zst)", posted.body)
        # the original is untouched
        self.job.with_user(self.manager).action_verify()
        self.work()
        self.assertEqual(self.job.verify_state, "ok")


@tagged("post_install", "-at_install")
class TestBackupJobLog(BackupCase):
    """The job log of a real backup: a line per step and per artifact, never the ticks of a byte counter."""

    def test_log_has_a_line_per_step_and_artifact_of_a_small_filestore(self):
        """A filestore of three files gets its line like the dump, the snapshot, the copy and retention do."""
        data_dir = os.path.join(self.tmp, "worker-data")
        folder = os.path.join(data_dir, "filestore", self.env.cr.dbname, "ab")
        os.makedirs(folder)
        for index in range(3):
            with open(os.path.join(folder, "ab%038d" % index), "wb") as handle:
                handle.write(os.urandom(1000 + index))
        self.policy.keep_last = 5
        wizard = self.env["spp.backup.run.now"].with_user(self.manager).create({"policy_id": self.policy.id})
        job = self.Job.browse(wizard.action_confirm()["res_id"])
        self.work(data_dir=data_dir)
        self.assertEqual(job.state, states.DONE, job.error_message)
        for line in job.log_excerpt.splitlines():
            self.assertRegex(line, r"^\d\d:\d\d:\d\d \S", "every log line starts with its time")
        lines = [line.split(" ", 1)[1] for line in job.log_excerpt.splitlines()]

        def one(prefix):
            found = [line for line in lines if line.startswith(prefix)]
            self.assertEqual(len(found), 1, "one line %r in the log:\n%s" % (prefix, job.log_excerpt))
            return found[0]

        self.assertFalse([line for line in lines if line.startswith(("Dumping", "Archiving", "Connecting"))], lines)
        self.assertEqual(one("Checked "), "Checked 1 destination")
        self.assertIn(
            "(artifact database.dump.zst, sha256 %s\u2026)" % job.database_sha256[:12], one("Database dumped: ")
        )
        archived = one("Filestore archived: ")
        self.assertTrue(archived.startswith("Filestore archived: 3 files, 2.9 KiB in "), archived)
        self.assertIn("(artifact filestore.tar.zst, sha256 %s\u2026)" % job.filestore_sha256[:12], archived)
        self.assertEqual(job.filestore_files, 3)
        snapshot = one("Application snapshot written: ")
        self.assertIn("(artifact application.json, sha256 %s\u2026)" % job.application_sha256[:12], snapshot)
        self.assertEqual(
            one("Copy to "), "Copy to 'Test disk' stored at %s (manifest.json written last)" % job.location.strip()
        )
        self.assertEqual(one("Retention at "), "Retention at 'Test disk': kept 1, deleted 0")
        self.assertEqual(
            one("Backup %s done in " % job.backup_id), "Backup %s done in %s" % (job.backup_id, job.duration_text)
        )
        self.assertEqual(lines[-1], "Done")
        self.assertTrue(job.progress_message.startswith("Backup %s done" % job.backup_id))
