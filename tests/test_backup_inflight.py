from odoo import fields
from odoo.tests import tagged

from ..engine.core import plans, states
from ..engine.ops import inflight
from .common import BackupCase


@tagged("post_install", "-at_install")
class TestRestoredDatabase(BackupCase):
    """A database restored (replaced, not neutralized) from a backup taken while its own job ran, started with
    its crons: the rows are as the snapshot held them, without the worker that held them."""

    def snapshot_in_flight(self):
        """This database as the backup's snapshot holds it: the backup's own job running, its run running (no
        worker holds it any more), and a verification of an older job under way."""
        older = self.make_job()
        self.finish_run(older, states.DONE, self.fake_result("20261126T010000Z-01de00"))
        self.Run._cron_collect()
        # What action_verify leaves, its worker then running the verification.
        verify = self.Run._queue(plans.VERIFY, plans.VerifyPlan(), older, policy=self.policy)
        verify.write({"state": states.RUNNING, "started_at": fields.Datetime.now()})
        older.write({"verify_run_id": verify.id, "verify_state": "verifying"})
        job = self.make_job()
        self.release_run_lock(job.run_id)
        self.env.flush_all()
        return job, older

    def run_crons(self):
        """The crons that reap, collect and alert, as Odoo runs them once started."""
        self.Run._cron_collect()
        self.Policy._cron_check_objectives()

    def noise(self):
        """(alerts, activities, e-mails, failure messages) about this policy and its jobs now."""
        Message = self.env["mail.message"]
        failures = (self.env.ref("spp_backup.mt_backup_failed") | self.env.ref("spp_backup.mt_policy_alert")).ids
        return (
            self.env["spp.backup.alert"].search_count([("policy_id", "=", self.policy.id)]),
            self.env["mail.activity"].search_count([("res_model", "=", "spp.backup.policy")]),
            # Every e-mail to a person, queued or (in tests, at once) sent.
            self.env["mail.notification"].search_count([("notification_type", "=", "email")]),
            Message.search_count([("subtype_id", "in", failures)]),
        )

    def test_without_the_restore_closing_them_the_crons_accuse_the_database(self):
        """What the restore prevents: left as the snapshot holds them, the crons fail the job, open "Backup failed"
        and queue e-mails to the managers."""
        job, _older = self.snapshot_in_flight()
        before = self.noise()
        self.run_crons()
        self.assertEqual(job.state, states.FAILED)
        after = self.noise()
        self.assertGreater(after[0], before[0], "an alert is opened")
        self.assertGreater(after[1], before[1], "activities are planned")
        self.assertGreater(after[2], before[2], "e-mails are sent")

    def test_restored_database_closed_by_the_restore_raises_no_alert_and_sends_no_mail(self):
        """Closed by the restore's own statements (engine.ops.inflight), the in-flight job, run and verification say
        so in words; the crons then open no alert, plan no activity, queue no e-mail and fail nothing."""
        job, older = self.snapshot_in_flight()
        before = self.noise()
        closed = inflight.close_in_flight_rows(self.env.cr)
        self.env.invalidate_all()
        self.assertEqual(closed, {"run": 2, "backup job": 1, "verification": 1})
        self.run_crons()
        self.run_crons()
        self.assertEqual(self.noise(), before)
        self.assertEqual((job.state, job.error_message), (states.FAILED, inflight.IN_FLIGHT_MESSAGE))
        self.assertIn("in flight when this backup was taken", job.error_message.lower())
        self.assertEqual((job.run_id.state, job.run_id.is_applied), (states.FAILED, True))
        self.assertEqual(job.run_id.error_message, inflight.IN_FLIGHT_MESSAGE)
        self.assertFalse(job.run_id.apply_error)
        self.assertEqual((older.state, older.verify_state), (states.DONE, "not_verified"))
        self.assertEqual(older.verify_report, inflight.IN_FLIGHT_MESSAGE)
        self.assertFalse(self.policy.last_failure_at)
        self.assertNotEqual(self.policy.state, "failing")
        self.assertFalse(self.policy._is_busy(), "the next backup of the policy is not held up")

    def test_restore_record_says_how_many_it_closed(self):
        """The restore's record tells in its chatter how many runs and jobs the restore closed as in flight."""
        restore = (
            self.env["spp.backup.restore"]
            .sudo()
            .create({"target_db": "%s_restored" % self.env.cr.dbname[:40], "backup_id": "20261126T030000Z-abc123"})
        )
        self.attach_run(restore, "restore")
        closed = {"run": 1, "backup job": 1}
        self.finish_run(restore, states.DONE, {"in_flight_closed": closed, "duration": 3.0})
        restore._collect()
        self.assertEqual(restore.state, states.DONE)
        said = restore.message_ids.filtered(lambda m: inflight.closed_text(closed) in (m.body or ""))
        self.assertEqual(len(said), 1)
        self.assertIn(
            "In the restored database: closed 1 run and 1 backup job that were in flight when this backup was taken",
            said.body,
        )
