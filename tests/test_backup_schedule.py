import datetime
from unittest.mock import patch

from odoo import fields
from odoo.tests import tagged

from .common import BackupCase


@tagged("post_install", "-at_install")
class TestBackupSchedule(BackupCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        now = fields.Datetime.now()
        cls.due = cls.policy
        cls.due.next_run = now - datetime.timedelta(minutes=5)
        cls.future = cls.Policy.create(
            {
                "name": "Future",
                "destination_ids": [(6, 0, cls.destination.ids)],
                "encrypt": False,
                "next_run": now + datetime.timedelta(hours=3),
            }
        )
        cls.inactive = cls.Policy.create(
            {
                "name": "Archived",
                "active": False,
                "destination_ids": [(6, 0, cls.destination.ids)],
                "encrypt": False,
                "next_run": now - datetime.timedelta(hours=3),
            }
        )

    def run_due_without_runner(self):
        """Run the cron with the runner replaced by a recorder; the job ids it would start."""
        started = []

        def fake_start(jobs):
            started.extend(jobs.ids)
            jobs.write({"state": "running"})

        with patch.object(type(self.Job), "_queue_run", fake_start):
            self.Policy._cron_run_due()
        return self.Job.browse(started)

    def test_which_policies_are_due(self):
        """Only active policies whose next_run has passed are due."""
        due = self.Policy._due()
        self.assertIn(self.due, due)
        self.assertNotIn(self.future, due)
        self.assertNotIn(self.inactive, due)

    def test_busy_policy_not_due(self):
        """A policy with a queued or running job is not started again."""
        job = self.make_job(self.due)
        self.assertNotIn(self.due, self.Policy._due())
        job.state = "queued"
        self.assertNotIn(self.due, self.Policy._due())
        job.state = "done"
        self.assertIn(self.due, self.Policy._due())

    def test_cron_starts_due_policy_once(self):
        """The cron creates one scheduled job per due policy, starts it, and does not start it twice."""
        started = self.run_due_without_runner()
        self.assertEqual(started.policy_id, self.due)
        self.assertEqual(started.trigger, "schedule")
        self.assertEqual(started.db_name, self.due.database)
        self.assertEqual(self.due.last_job_id, started)
        # still running: a second pass (even with next_run forced back) starts nothing
        self.due.next_run = fields.Datetime.now() - datetime.timedelta(minutes=1)
        self.assertFalse(self.run_due_without_runner())
        self.assertEqual(self.Job.search_count([("policy_id", "=", self.due.id)]), 1)

    def test_cron_skips_missed_slots(self):
        """After a long outage next_run moves to the next future slot, keeping its phase; one job, no storm."""
        now = fields.Datetime.now()
        missed = (now - datetime.timedelta(days=5)).replace(hour=1, minute=15, second=0)
        self.due.write({"next_run": missed})
        started = self.run_due_without_runner()
        self.assertEqual(len(started), 1)
        self.assertGreater(self.due.next_run, now)
        self.assertLessEqual(self.due.next_run, now + datetime.timedelta(days=1))
        self.assertEqual((self.due.next_run.hour, self.due.next_run.minute), (1, 15))
        self.assertFalse(self.Job.search([("policy_id", "in", (self.future.id, self.inactive.id))]))
