import datetime
from unittest.mock import patch

from odoo import fields
from odoo.tests import tagged
from odoo.tests.common import new_test_user

from ..engine.core import states
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

    def run_due_without_queueing(self):
        """Run the cron with queueing replaced by a recorder; the job ids it would start."""
        started = []

        def fake_start(jobs):
            started.extend(jobs.ids)
            jobs.write({"state": states.RUNNING})

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
        job.state = states.QUEUED
        self.assertNotIn(self.due, self.Policy._due())
        job.state = states.DONE
        self.assertIn(self.due, self.Policy._due())

    def test_cron_starts_due_policy_once(self):
        """The cron creates one scheduled job per due policy, starts it, and does not start it twice."""
        started = self.run_due_without_queueing()
        self.assertEqual(started.policy_id, self.due)
        self.assertEqual(started.trigger, "schedule")
        self.assertEqual(started.db_name, self.due.database)
        self.assertEqual(self.due.last_job_id, started)
        # still running: a second pass (even with next_run forced back) starts nothing
        self.due.next_run = fields.Datetime.now() - datetime.timedelta(minutes=1)
        self.assertFalse(self.run_due_without_queueing())
        self.assertEqual(self.Job.search_count([("policy_id", "=", self.due.id)]), 1)

    def test_cron_skips_missed_slots(self):
        """After a long outage next_run moves to the schedule's next future slot (02:30); one job, no storm."""
        now = fields.Datetime.now()
        missed = (now - datetime.timedelta(days=5)).replace(hour=1, minute=15, second=0)
        self.due.write({"next_run": missed})
        started = self.run_due_without_queueing()
        self.assertEqual(len(started), 1)
        self.assertGreater(self.due.next_run, now)
        self.assertLessEqual(self.due.next_run, now + datetime.timedelta(days=1))
        self.assertEqual((self.due.next_run.hour, self.due.next_run.minute), (2, 30))
        self.assertFalse(self.Job.search([("policy_id", "in", (self.future.id, self.inactive.id))]))

    def run_due_at(self, moment):
        """Run the cron (queueing replaced by a recorder) as if the time were ``moment``; the jobs it started."""
        with patch.object(fields.Datetime, "now", return_value=moment):
            return self.run_due_without_queueing()

    def test_hand_set_next_run_moves_only_that_run(self):
        """A next run set by hand runs then; the run after it is the schedule's regular slot, not a day later."""
        self.future.active = False  # far in the future, every policy is due: only this one is watched
        self.due.write({"tz": "Africa/Nairobi", "time_of_day": 2.5})  # 02:30 in Nairobi is 23:30 UTC
        moved = datetime.datetime(2031, 3, 4, 5, 47)
        self.due.next_run = moved
        self.assertEqual(self.due.time_of_day, 2.5, "the time of day is left as it is")
        self.assertFalse(self.run_due_at(moved - datetime.timedelta(minutes=1)), "not due before its time")
        job = self.run_due_at(moved + datetime.timedelta(minutes=4))
        self.assertEqual(len(job), 1)
        self.assertEqual(self.due.next_run, datetime.datetime(2031, 3, 4, 23, 30), "the regular 02:30 local")
        # the run done, a late cron pass before the next slot starts nothing: no slot runs twice
        job.state = states.DONE
        self.assertFalse(self.run_due_at(moved + datetime.timedelta(hours=3)))
        second = self.run_due_at(datetime.datetime(2031, 3, 4, 23, 36))
        self.assertEqual(len(second), 1)
        self.assertEqual(self.due.next_run, datetime.datetime(2031, 3, 5, 23, 30))

    def test_default_time_zone_from_the_user(self):
        """A new policy's time zone is its responsible's, else its creator's, else UTC."""
        self.manager.tz = "Africa/Nairobi"
        responsible = new_test_user(self.env, login="sppb_responsible", groups="base.group_user")
        responsible.tz = "America/New_York"
        no_zone = new_test_user(self.env, login="sppb_nozone", groups="base.group_user")
        no_zone.tz = False
        values = {"destination_ids": [(6, 0, self.destination.ids)], "encrypt": False}
        Policy = self.Policy.with_user(self.manager)
        self.assertEqual(Policy.create(dict(values, name="Creator's")).tz, "Africa/Nairobi")
        self.assertEqual(
            Policy.create(dict(values, name="Responsible's", user_id=responsible.id)).tz, "America/New_York"
        )
        self.assertEqual(
            Policy.create(dict(values, name="Creator's again", user_id=no_zone.id)).tz,
            "Africa/Nairobi",
            "a responsible without a time zone leaves the creator's",
        )
        self.manager.tz = False
        self.assertEqual(Policy.create(dict(values, name="Nobody's")).tz, "UTC")
        # the form proposes the creator's zone, then the responsible's once one is chosen
        self.manager.tz = "Africa/Nairobi"
        draft = Policy.new(Policy.default_get(["tz"]))
        self.assertEqual(draft.tz, "Africa/Nairobi")
        draft.user_id = responsible
        draft._onchange_user_id_tz()
        self.assertEqual(draft.tz, "America/New_York")
        # an existing policy keeps its zone when its responsible changes
        self.due.with_user(self.manager).user_id = responsible
        self.due._onchange_user_id_tz()
        self.assertEqual(self.due.tz, "UTC")

    def test_time_zone_change_recomputes_next_run(self):
        """Moving the schedule to another zone keeps its local time of day and moves the next run with it."""
        now = fields.Datetime.now()
        self.due.time_of_day = 2.5
        self.assertEqual((self.due.next_run.hour, self.due.next_run.minute), (2, 30))
        self.due.tz = "Africa/Nairobi"
        self.assertGreater(self.due.next_run, now)
        self.assertLessEqual(self.due.next_run, now + datetime.timedelta(days=1))
        self.assertEqual((self.due.next_run.hour, self.due.next_run.minute), (23, 30), "02:30 at UTC+3")
        self.assertEqual(self.due.schedule_text, "Every day at 02:30 (Africa/Nairobi)")

    def test_every_n_days_and_weeks_count_from_the_first_run(self):
        """Every 2 days counts from the day of the first run; every 2 weeks falls on the chosen weekday."""
        self.future.active = False
        self.due.write({"tz": "Africa/Nairobi", "interval_type": "days", "interval_number": 2})
        first = self.due.next_run
        self.assertEqual(self.due.schedule_anchor, (first + datetime.timedelta(hours=3)).date())
        self.run_due_at(first + datetime.timedelta(minutes=2)).state = states.DONE
        self.assertEqual(self.due.next_run, first + datetime.timedelta(days=2))
        self.assertEqual(self.due.schedule_text, "Every 2 days at 02:30 (Africa/Nairobi)")
        self.due.write({"interval_type": "weeks", "weekday": "6"})
        sunday = self.due.next_run + datetime.timedelta(hours=3)  # local time in Nairobi
        self.assertEqual((sunday.weekday(), sunday.hour, sunday.minute), (6, 2, 30))
        self.assertEqual(self.due.schedule_anchor, sunday.date())
        self.assertLessEqual(self.due.next_run, fields.Datetime.now() + datetime.timedelta(weeks=1))
        self.run_due_at(self.due.next_run + datetime.timedelta(minutes=2))
        self.assertEqual(self.due.next_run + datetime.timedelta(hours=3), sunday + datetime.timedelta(weeks=2))
        self.assertEqual(self.due.schedule_text, "Every 2 weeks on Sunday at 02:30 (Africa/Nairobi)")
        self.due.write({"interval_type": "hours", "interval_number": 6})
        self.assertEqual(self.due.schedule_text, "Every 6 hours from 02:30 (Africa/Nairobi)")
        self.assertEqual(self.due.next_run.hour % 6, 5, "23:30, 05:30, 11:30 and 17:30 UTC")
