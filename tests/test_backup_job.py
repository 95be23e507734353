import datetime
import os
import time
from unittest.mock import patch

from odoo import fields
from odoo.exceptions import UserError
from odoo.tests import tagged

from .. import compat
from ..engine.core import states
from ..engine.service import protocol as run_protocol
from .common import BackupCase


@tagged("post_install", "-at_install")
class TestBackupJob(BackupCase):
    def test_new_job_is_queued(self):
        """Back up now queues a job and its run as the server: who asked, a plan without secrets, no process yet."""
        wizard = self.env["spp.backup.run.now"].with_user(self.manager).create({"policy_id": self.policy.id})
        job = self.Job.browse(wizard.action_confirm()["res_id"])
        self.assertEqual(job.state, states.QUEUED)
        self.assertEqual(job.user_id, self.manager)
        self.assertEqual(job.db_name, self.policy.database)
        self.assertEqual(self.policy.last_job_id, job)
        self.assertEqual(self.policy.job_count, 1)
        self.assertEqual(self.policy.action_view_jobs()["domain"], [("policy_id", "=", self.policy.id)])
        self.assertEqual(job.name, "Nightly / job %d" % job.id)
        run = job.run_id
        self.assertEqual(
            (run.state, run.action, run.res_model, run.res_id), (states.QUEUED, "backup", job._name, job.id)
        )
        self.assertEqual(run.user_id, self.manager)
        plan = run._plan_data()
        self.assertEqual(plan["db_name"], self.env.cr.dbname)
        self.assertNotIn("password", plan["pg"])

    def test_running_progress_is_shown(self):
        """While the worker runs, the job shows the run's progress, step and log, and is marked running."""
        job = self.make_job(state=states.QUEUED)
        job.run_id.write(
            {
                "progress": 42.0,
                "progress_message": "Dumping the database",
                "log": "10:00:00 Worker started\n10:00:01 Dumping",
            }
        )
        self.Run._cron_collect()
        self.assertEqual(job.state, states.RUNNING)
        self.assertAlmostEqual(job.progress, 42.0)
        self.assertEqual(job.progress_message, "Dumping the database")
        self.assertIn("10:00:01 Dumping", job.log_excerpt)

    def test_done_fills_evidence(self):
        """A done status fills sizes, SHA-256s, location, summary and warnings, and the policy's last success."""
        job = self.make_job()
        result = self.fake_result()
        finished = time.time()
        self.finish_run(job, states.DONE, result)
        self.Run._cron_collect()
        self.assertEqual(job.state, states.DONE)
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
        self.finish_run(job, states.FAILED, error=error)
        self.Run._cron_collect()
        self.assertEqual(job.state, states.FAILED)
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

    def test_dead_worker_is_failed(self):
        """A running run whose worker's lock is gone (the worker died) fails its job in words, on any node."""
        job = self.make_job()
        self.release_run_lock(job.run_id)
        self.Run._cron_collect()
        self.assertEqual(job.run_id.state, states.FAILED)
        self.assertEqual(job.state, states.FAILED)
        self.assertIn("stopped before it reported a result", job.error_message)
        self.assertIn("Nothing was marked complete", job.error_message)
        subtype = self.env.ref("spp_backup.mt_backup_failed")
        self.assertTrue(job.message_ids.filtered(lambda m: m.subtype_id == subtype))
        self.assertFalse(job.has_stored_copy)

    def test_live_worker_stays_running(self):
        """A run whose worker holds its lock is left alone, however long it runs."""
        job = self.make_job()
        old = fields.Datetime.now() - datetime.timedelta(hours=5)
        job.run_id.write({"heartbeat_at": old, "started_at": old})
        self.Run._cron_collect()
        self.assertEqual(job.run_id.state, states.RUNNING)
        self.assertEqual(job.state, states.RUNNING)
        self.assertFalse(job.error_message)
        self.assertEqual(job.run_id._live_ids(), {job.run_id.id})

    def test_cron_collect_only_touches_unfinished_jobs(self):
        """A finished job is not rewritten by a result recorded later."""
        job = self.make_job()
        job.write({"state": states.FAILED, "error_message": "earlier failure"})
        self.finish_run(job, states.DONE, self.fake_result())
        self.Run._cron_collect()
        self.assertEqual(job.state, states.FAILED)
        self.assertEqual(job.error_message, "earlier failure")
        self.assertTrue(job.run_id.is_applied)

    def test_job_that_cannot_be_planned_fails_in_words(self):
        """A configuration problem when queueing fails the job with a sentence, not a traceback."""
        job = self.Job.create({"policy_id": self.policy.id, "trigger": "manual"})
        with (
            patch.dict(os.environ, {"SPP_BACKUP_MIN_FREE_BYTES": "lots"}),
            self.assertLogs("odoo.addons.spp_backup.models.backup_job", level="ERROR") as logs,
        ):
            job._queue_run()
        self.assertIn("could not be queued", logs.output[0])
        self.assertEqual(job.state, states.FAILED)
        self.assertFalse(job.run_id)
        self.assertIn("min_free_bytes", job.error_message)
        self.assertNotIn("Traceback", job.error_message)

    def test_result_that_cannot_be_recorded_does_not_block_the_others(self):
        """One run whose result raises while it is recorded is failed in words; the next one is recorded."""
        broken, good = self.make_job(), self.make_job()
        self.finish_run(broken, states.DONE, self.fake_result("20261126T030000Z-bad000"))
        self.finish_run(good, states.DONE, self.fake_result("20261126T040000Z-900d00"))
        original = type(self.Job)._record_result

        def record(job, status):
            if job.id == broken.id:
                raise ValueError("a result this version cannot read")
            return original(job, status)

        with patch.object(type(self.Job), "_record_result", record), self.assertLogs(level="ERROR"):
            self.Run._cron_collect()
        self.assertEqual(good.state, states.DONE)
        self.assertEqual(good.backup_id, "20261126T040000Z-900d00")
        self.assertEqual(broken.state, states.FAILED)
        self.assertIn("could not be recorded", broken.error_message)
        self.assertIn("could not be recorded", broken.run_id.apply_error)
        self.assertTrue(broken.run_id.is_applied and good.run_id.is_applied)

    def test_dashboard_says_which_worker_mode_is_in_use(self):
        """With no worker, the dashboard says one-shot workers are used; with a service worker's lock, the service."""
        self.assertIn("one-shot", self.policy.worker_mode_text)
        self.env.cr.execute("SELECT pg_advisory_lock_shared(%s, %s)", (run_protocol.WORKER_LOCK_CLASS, 0))
        self.addCleanup(
            self.env.cr.execute, "SELECT pg_advisory_unlock_shared(%s, %s)", (run_protocol.WORKER_LOCK_CLASS, 0)
        )
        self.policy.invalidate_recordset(["worker_mode_text"])
        self.assertEqual(self.policy.worker_mode_text, "Worker service running")

    def test_waiting_without_a_worker_raises_one_alert(self):
        """Work queued for more than 5 minutes with no worker alive raises one alert, resolved once it moves."""
        job = self.Job.create({"policy_id": self.policy.id, "trigger": "schedule"})
        job._queue_run()
        old = fields.Datetime.now() - datetime.timedelta(minutes=6)
        self.env.cr.execute("UPDATE spp_backup_run SET create_date = %s WHERE id = %s", (old, job.run_id.id))
        job.run_id.invalidate_recordset(["create_date"])
        self.assertEqual(self.env["spp.backup.engine"]._worker_mode(), "none")
        self.Run._cron_collect()
        self.Run._cron_collect()
        alerts = self.env["spp.backup.alert"].search([("policy_id", "=", self.policy.id), ("kind", "=", "no_worker")])
        self.assertEqual(len(alerts), 1)
        self.assertIn("spp-backup worker", alerts.message)
        self.work()
        self.assertEqual(alerts.state, "resolved")

    def test_partial_copy_failure_is_partly_done_and_keeps_the_good_copy(self):
        """Some copies failed, others stored: the job is partly done with the error (it counts for the RPO), the
        good copy and its evidence stay, and one alert names the failing destination."""
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
        self.finish_run(job, states.FAILED, result, error=error)
        job._collect()
        self.assertEqual(job.state, states.PARTIAL)
        self.assertEqual(job.error_message, error)
        self.assertEqual(job.backup_id, result["backup_id"])
        self.assertEqual(job.database_sha256, "a" * 64, "the evidence of the stored copy is kept")
        self.assertEqual(job.copy_ids.mapped("state"), ["ok", "failed"])
        self.assertEqual(job.copy_ids.mapped("destination_id"), good | bad)
        self.assertIn("No space left", job.copy_ids[1].error)
        self.assertTrue(job.has_stored_copy, "the good copy stays verifiable")
        self.assertIn("keep    %s" % result["backup_id"], job.retention_report)
        self.assertEqual(self.policy.state, "partial")
        self.assertEqual(self.policy.last_success_at, job.finished_at, "a partly done backup counts for the RPO")
        alerts = self.env["spp.backup.alert"].search([("policy_id", "=", self.policy.id), ("state", "=", "open")])
        self.assertEqual(alerts.mapped("kind"), ["copy_failed"])
        self.assertIn("Second disk", alerts.message)
        self.assertTrue(any("partly done" in str(m.body) for m in job.message_ids), job.message_ids.mapped("body"))
        # The next backup that stores every copy resolves the alert.
        ok = self.make_job()
        self.finish_run(ok, states.DONE, self.fake_result())
        ok._collect()
        self.assertEqual(alerts.state, "resolved")
        self.assertEqual(self.policy.state, "ok")

    def test_durations_read_in_words(self):
        """A job's duration shows as words (1 min 40 s), the seconds stay for sorting and averages."""
        job = self.make_job()
        self.finish_run(job, states.DONE, self.fake_result())
        job._collect()
        self.assertEqual(job.duration, 100.5)
        self.assertEqual(job.duration_text, "1 min 40 s")

    def test_done_job_records_copies_in_plan_order(self):
        """Copies are matched to destinations by the plan's order, whatever the policy's order later."""
        second = self.Destination.create({"name": "A first by name", "path": os.path.join(self.tmp, "a")})
        job = self.make_job(plan_destination_ids="%d,%d" % (self.destination.id, second.id))
        result = self.fake_result()
        result["copies"] = [
            {"destination": "1: x", "location": "/x/db/%s" % result["backup_id"], "ok": True, "error": None},
            {"destination": "2: y", "location": "/y/db/%s" % result["backup_id"], "ok": True, "error": None},
        ]
        self.finish_run(job, states.DONE, result)
        job._collect()
        self.assertEqual(job.state, states.DONE)
        self.assertEqual(job.copy_ids.mapped("destination_id").ids, [self.destination.id, second.id])
        self.assertEqual(
            job.copy_ids.mapped("location"), ["/x/db/%s" % result["backup_id"], "/y/db/%s" % result["backup_id"]]
        )
        self.assertEqual(self.policy.last_success_job_id, job)
        self.assertEqual(job.filestore_bytes_human, "4.0 KiB")

    def test_duration_is_averaged_in_groups(self):
        """Grouped job lists show the average duration, not a meaningless sum of seconds."""
        self.assertEqual(compat.field_aggregator(self.Job._fields["duration"]), "avg")
        self.assertEqual(self.Job._fields["state"].string, "Status")
        self.assertFalse(getattr(self.Job._fields["backup_id"], "tracking", None), "backup_id is not tracked")


@tagged("post_install", "-at_install")
class TestPrunedCopies(BackupCase):
    """Job records follow what is really stored: a copy retention deleted says so and offers nothing."""

    def test_pruned_copy_says_so_and_offers_no_restore_or_verify(self):
        old_id, new_id = "20261120T030000Z-aaaaaa", "20261126T030000Z-bbbbbb"
        where = self.destination.path
        old = self.make_job()
        self.finish_run(old, states.DONE, self.fake_result(old_id, "%s/db/%s" % (where, old_id)))
        old._collect()
        self.assertTrue(old.has_stored_copy)
        new = self.make_job()
        result = self.fake_result(new_id, "%s/db/%s" % (where, new_id))
        result["retention"] = [{"destination": where, "keep": [new_id], "delete": [old_id], "deleted": [old_id]}]
        self.finish_run(new, states.DONE, result)
        new._collect()
        old.invalidate_recordset()
        self.assertEqual(old.copy_ids.mapped("state"), ["pruned"])
        self.assertTrue(old.copy_ids.pruned_at)
        self.assertFalse(old.has_stored_copy, "no Restore… and no Verify for a pruned backup")
        self.assertEqual(new.copy_ids.mapped("state"), ["ok"])
        for action in ("action_verify", "action_restore"):
            with self.assertRaisesRegex(UserError, "pruned by retention at every destination"):
                getattr(old.with_user(self.restorer if action == "action_restore" else self.manager), action)()
        self.assertEqual(old.verify_state, "not_verified", "a pruned copy is not a failed verification")
