import datetime
import os
import socket
import subprocess
import time
from unittest.mock import patch

from odoo import fields
from odoo.tests import tagged

from .common import BackupCase


@tagged("post_install", "-at_install")
class TestBackupJob(BackupCase):
    def test_new_job_is_queued(self):
        """A job starts queued, records who triggered it and becomes the policy's last job."""
        job = self.Job.with_user(self.manager).create({"policy_id": self.policy.id, "trigger": "manual"})
        self.assertEqual(job.state, "queued")
        self.assertEqual(job.user_id, self.manager)
        self.assertEqual(job.db_name, self.policy.database)
        self.assertEqual(self.policy.last_job_id, job)
        self.assertEqual(self.policy.job_count, 1)
        self.assertEqual(self.policy.action_view_jobs()["domain"], [("policy_id", "=", self.policy.id)])
        self.assertEqual(job.name, "Nightly / job %d" % job.id)

    def test_running_progress_is_copied(self):
        """While the runner runs, progress, current step and log are copied from its status file."""
        job = self.make_job(state="queued")
        self.write_status(
            job,
            progress=0.42,
            message="Dumping the database: 10 MiB",
            log=["10:00:00 Runner started", "10:00:01 Dumping"],
        )
        job._collect()
        self.assertEqual(job.state, "running")
        self.assertAlmostEqual(job.progress, 42.0)
        self.assertEqual(job.progress_message, "Dumping the database: 10 MiB")
        self.assertIn("10:00:01 Dumping", job.log_excerpt)

    def test_done_fills_evidence(self):
        """A done status fills sizes, SHA-256s, location, summary and warnings, and the policy's last success."""
        job = self.make_job()
        result = self.fake_result()
        finished = time.time()
        self.write_status(job, state="done", progress=1.0, message="Done", result=result, finished_at=finished)
        job._collect()
        self.assertEqual(job.state, "done")
        self.assertEqual(job.progress, 100.0)
        self.assertEqual(job.backup_id, result["backup_id"])
        self.assertEqual(job.name, "Nightly / " + result["backup_id"])
        self.assertEqual(job.database_size, 3_000_000_000, "sizes beyond 2 GiB are kept exactly")
        self.assertEqual(job.database_sha256, "a" * 64)
        self.assertEqual(job.filestore_sha256, "b" * 64)
        self.assertEqual(job.application_size, 512)
        self.assertEqual(job.total_size, 3_000_000_000 + 2048 + 512)
        self.assertEqual(job.total_size_human, "2.8 GiB")
        self.assertEqual(job.location, result["locations"][0])
        self.assertEqual(job.odoo_version, "17.0")
        self.assertEqual(job.module_count, 42)
        self.assertIn("res_partner: 1200", job.row_counts_text)
        self.assertEqual(job.missing_files_count, 1)
        self.assertEqual(job.missing_files_text, "ab/ab12")
        self.assertIn("missing", job.warnings)
        self.assertEqual(job.duration, 100.5)
        self.assertEqual(self.policy.last_success_at, job.finished_at)
        self.assertAlmostEqual(job.finished_at.timestamp(), finished, delta=2)
        self.assertEqual(self.policy.state, "ok")

    def test_failed_posts_to_job_and_policy(self):
        """A failed status stores the error in words and posts it with the 'Backup failed' subtypes."""
        job = self.make_job()
        error = "Not enough free space at /backups: 1.0 GiB free, at least 5.0 GiB needed."
        self.write_status(job, state="failed", error=error, message="Failed: " + error, finished_at=time.time())
        job._collect()
        self.assertEqual(job.state, "failed")
        self.assertEqual(job.error_message, error)
        subtype = self.env.ref("spp_backup.mt_backup_failed")
        messages = job.message_ids.filtered(lambda m: m.subtype_id == subtype)
        self.assertEqual(len(messages), 1)
        self.assertIn("Not enough free space", messages.body)
        policy_subtype = self.env.ref("spp_backup.mt_policy_backup_failed")
        self.assertTrue(
            self.policy.message_ids.filtered(lambda m: m.subtype_id == policy_subtype and "free space" in m.body)
        )
        self.assertTrue(self.policy.last_failure_at)
        self.assertEqual(self.policy.state, "failing")

    def test_dead_runner_is_failed(self):
        """A running status whose runner process no longer exists marks the job failed, naming the process."""
        finished = subprocess.Popen(["true"])
        finished.wait()
        job = self.make_job(runner_pid=finished.pid)
        self.write_status(job, pid=finished.pid, host=socket.gethostname(), progress=0.3)
        job._collect()
        self.assertEqual(job.state, "failed")
        self.assertIn("stopped unexpectedly", job.error_message)
        self.assertIn("Process %d is gone" % finished.pid, job.error_details)
        self.assertIn("next scheduled run will try again", job.error_message)
        subtype = self.env.ref("spp_backup.mt_backup_failed")
        self.assertTrue(job.message_ids.filtered(lambda m: m.subtype_id == subtype))

    def test_dead_runner_without_status(self):
        """A runner that died before writing any status is failed too, with its log tail as evidence."""
        finished = subprocess.Popen(["true"])
        finished.wait()
        log_path = os.path.join(self.tmp, "dead.log")
        with open(log_path, "w", encoding="utf-8") as handle:
            handle.write("ModuleNotFoundError: No module named 'zstandard'\n")
        job = self.make_job(runner_pid=finished.pid, runner_log_path=log_path)
        job._collect()
        self.assertEqual(job.state, "failed")
        self.assertIn("Process %d is gone" % finished.pid, job.error_details)
        self.assertIn(log_path, job.error_details)
        self.assertNotIn(log_path, job.error_message, "the server's paths stay out of the user-facing error")
        self.assertIn("zstandard", job.log_excerpt)

    def test_stale_heartbeat_is_failed(self):
        """A runner that has not reported for more than 10 minutes is considered stopped."""
        job = self.make_job()
        self.write_status(job, heartbeat=time.time() - 11 * 60)
        job._collect()
        self.assertEqual(job.state, "failed")
        self.assertIn("has not reported since", job.error_message)

    def test_live_runner_stays_running(self):
        """A runner that is alive and reporting is left alone."""
        job = self.make_job()
        self.write_status(job, pid=os.getpid(), progress=0.5)
        job._collect()
        self.assertEqual(job.state, "running")
        self.assertFalse(job.error_message)

    def test_cron_collect_only_touches_unfinished_jobs(self):
        """The collect cron leaves finished jobs alone, whatever their status file says."""
        job = self.make_job()
        self.write_status(job, state="done", result=self.fake_result())
        job.write({"state": "failed", "error_message": "earlier failure"})
        self.Job._cron_collect()
        self.assertEqual(job.state, "failed")
        self.assertEqual(job.error_message, "earlier failure")

    def test_runner_that_cannot_start_fails_in_words(self):
        """A configuration problem when starting the runner fails the job with a sentence, not a traceback."""
        job = self.Job.create({"policy_id": self.policy.id, "trigger": "manual"})
        with (
            patch.dict(os.environ, {"SPP_BACKUP_MIN_FREE_BYTES": "lots"}),
            self.assertLogs("odoo.addons.spp_backup.models.backup_job", level="ERROR") as logs,
        ):
            job._start_runner()
        self.assertIn("could not start", logs.output[0])
        self.assertEqual(job.state, "failed")
        self.assertIn("min_free_bytes", job.error_message)
        self.assertNotIn("Traceback", job.error_message)

    def test_queued_job_never_started(self):
        """A job left queued without a runner for more than 10 minutes is failed."""
        job = self.Job.create({"policy_id": self.policy.id, "trigger": "schedule"})
        old = fields.Datetime.now() - datetime.timedelta(minutes=11)
        self.env.cr.execute("UPDATE spp_backup_job SET create_date = %s WHERE id = %s", (old, job.id))
        job.invalidate_recordset(["create_date"])
        job._collect()
        self.assertEqual(job.state, "failed")
        self.assertIn("never started", job.error_message)

    def test_traceback_never_reaches_the_log_tab(self):
        """A runner log with a Python traceback shows only the final exception line and where the details are."""
        finished = subprocess.Popen(["true"])
        finished.wait()
        log_path = os.path.join(self.tmp, "crash.log")
        with open(log_path, "w", encoding="utf-8") as handle:
            handle.write(
                "10:00:00 Runner started\n"
                "Traceback (most recent call last):\n"
                '  File "/srv/odoo/engine/backup.py", line 12, in run\n'
                "    boom()\n"
                "KeyError: 'x'\n"
                "\nDuring handling of the above exception, another exception occurred:\n\n"
                "Traceback (most recent call last):\n"
                '  File "/srv/odoo/engine/runner.py", line 3, in main\n'
                "RuntimeError: the disk went away\n"
            )
        job = self.make_job(runner_pid=finished.pid, runner_log_path=log_path, trigger="manual")
        job._collect()
        self.assertEqual(job.state, "failed")
        self.assertNotIn("Traceback", job.log_excerpt)
        self.assertNotIn("/srv/odoo", job.log_excerpt)
        self.assertIn("10:00:00 Runner started", job.log_excerpt)
        self.assertIn("RuntimeError: the disk went away", job.log_excerpt)
        self.assertIn("details of this error are in the runner log on the server", job.log_excerpt)
        self.assertNotIn("next scheduled run", job.error_message, "a manual job is not retried by the schedule")

    def test_crashed_runner_finished_at_its_last_heartbeat(self):
        """A runner found dead finished when it last reported, not when the death was noticed."""
        finished = subprocess.Popen(["true"])
        finished.wait()
        job = self.make_job(runner_pid=finished.pid)
        last_beat = time.time() - 300
        self.write_status(job, pid=finished.pid, heartbeat=last_beat, started_at=last_beat - 60)
        job._collect()
        self.assertEqual(job.state, "failed")
        self.assertAlmostEqual(job.finished_at.timestamp(), last_beat, delta=2)
        self.assertAlmostEqual(job.duration, 60, delta=2)

    def test_partial_copy_failure_fails_the_job_and_keeps_the_good_copy(self):
        """Some copies failed, others stored: the job is failed with the error, the good copy and evidence stay."""
        second = self.Destination.create({"name": "Second disk", "path": os.path.join(self.tmp, "second")})
        self.policy.destination_ids = [(4, second.id)]
        order = ",".join(str(d.id) for d in self.policy.destination_ids)
        job = self.make_job(plan_destination_ids=order)
        result = self.fake_result()
        good, bad = self.policy.destination_ids
        result["copies"] = [
            {"destination": "1: %s" % good.path, "location": result["locations"][0], "ok": True, "error": None},
            {
                "destination": "2: %s" % bad.path,
                "location": os.path.join(bad.path, "db", result["backup_id"]),
                "ok": False,
                "error": "[Errno 28] No space left on device",
            },
        ]
        result["retention"] = [
            {"destination": good.path, "keep": [result["backup_id"]], "reasons": {result["backup_id"]: ["last"]}}
        ]
        error = "The backup was stored, but 1 of 2 copies failed: 2: %s: [Errno 28] No space left on device" % bad.path
        self.write_status(job, state="failed", result=result, error=error, finished_at=time.time())
        job._collect()
        self.assertEqual(job.state, "failed")
        self.assertEqual(job.error_message, error)
        self.assertEqual(job.backup_id, result["backup_id"])
        self.assertEqual(job.database_sha256, "a" * 64, "the evidence of the stored copy is kept")
        self.assertEqual(job.copy_ids.mapped("state"), ["ok", "failed"])
        self.assertEqual(job.copy_ids.mapped("destination_id"), good | bad)
        self.assertIn("No space left", job.copy_ids[1].error)
        self.assertTrue(job.has_stored_copy, "the good copy stays verifiable")
        self.assertIn("keep    %s" % result["backup_id"], job.retention_report)
        self.assertEqual(self.policy.state, "failing")
        self.assertFalse(self.policy.last_success_at)

    def test_done_job_records_copies_in_plan_order(self):
        """Copies are matched to destinations by the plan's order, whatever the policy's order later."""
        second = self.Destination.create({"name": "A first by name", "path": os.path.join(self.tmp, "a")})
        job = self.make_job(plan_destination_ids="%d,%d" % (self.destination.id, second.id))
        result = self.fake_result()
        result["copies"] = [
            {"destination": "1: x", "location": "/x/db/%s" % result["backup_id"], "ok": True, "error": None},
            {"destination": "2: y", "location": "/y/db/%s" % result["backup_id"], "ok": True, "error": None},
        ]
        self.write_status(job, state="done", result=result, finished_at=time.time())
        job._collect()
        self.assertEqual(job.state, "done")
        self.assertEqual(job.copy_ids.mapped("destination_id").ids, [self.destination.id, second.id])
        self.assertEqual(
            job.copy_ids.mapped("location"), ["/x/db/%s" % result["backup_id"], "/y/db/%s" % result["backup_id"]]
        )
        self.assertEqual(self.policy.last_success_job_id, job)
        self.assertEqual(job.filestore_bytes_human, "4.0 KiB")

    def test_duration_is_averaged_in_groups(self):
        """Grouped job lists show the average duration, not a meaningless sum of seconds."""
        self.assertEqual(self.Job._fields["duration"].group_operator, "avg")
        self.assertEqual(self.Job._fields["state"].string, "Status")
        self.assertFalse(getattr(self.Job._fields["backup_id"], "tracking", None), "backup_id is not tracked")
