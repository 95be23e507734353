import datetime
from unittest.mock import patch

from odoo import fields
from odoo.tests import tagged

from .. import compat
from ..engine.core import states
from .common import BackupCase


@tagged("post_install", "-at_install")
class TestBackupAlerts(BackupCase):
    """Alerts: one per incident, to the managers, resolved when the condition clears."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.Alert = cls.env["spp.backup.alert"]
        cls.Drill = cls.env["spp.backup.drill"]
        cls.alert_type = cls.env.ref("spp_backup.mail_activity_type_backup_alert")

    # ----------------------------------------------------------------- helpers

    def alerts(self, kind=None, state="open", policy=None):
        domain = [("policy_id", "=", (policy or self.policy).id), ("state", "=", state)]
        if kind:
            domain.append(("kind", "=", kind))
        return self.Alert.search(domain)

    def alert_activities(self, policy=None):
        policy = policy or self.policy
        return self.env["mail.activity"].search(
            [
                ("res_model", "=", "spp.backup.policy"),
                ("res_id", "=", policy.id),
                ("activity_type_id", "=", self.alert_type.id),
            ]
        )

    def fail_job(self, reason="disk full"):
        job = self.make_job()
        self.finish_run(job, states.FAILED, error=reason)
        job._collect()
        self.assertEqual(job.state, states.FAILED)
        return job

    def succeed_job(self):
        job = self.make_job()
        self.finish_run(job, states.DONE, self.fake_result())
        job._collect()
        self.assertEqual(job.state, states.DONE)
        return job

    def finished_drill(self, ok=True, restore_seconds=60.0, policy=None, by_cron=False):
        """A drill as the collect leaves it once its run reported."""
        drill = self.Drill.sudo().create(
            {"policy_id": (policy or self.policy).id, "backup_id": "20261126T030000Z-abc123"}
        )
        result = {
            "backup_id": drill.backup_id,
            "source": "/backups",
            "scratch_db": "db_drill_x",
            "ok": ok,
            "checks": [{"name": "restore", "ok": ok, "detail": "pg_restore exited 0" if ok else "pg_restore failed"}],
            "restore_seconds": restore_seconds if ok else None,
            "total_seconds": (restore_seconds or 0) + 5,
            "cleaned_up": True,
            "error": None if ok else "pg_restore failed",
        }
        self.attach_run(drill, "drill")
        self.finish_run(
            drill,
            states.DONE if ok else states.FAILED,
            result,
            error=None if ok else "The restore drill failed: pg_restore failed",
        )
        if by_cron:
            self.Run._cron_collect()
        else:
            drill._collect()
        return drill

    # ------------------------------------------------------------------- tests

    def test_two_failures_raise_one_alert_and_success_resolves_it(self):
        """Two failed jobs open one alert with one activity per manager and one email; a success resolves it."""
        self.fail_job("disk full")
        alert = self.alerts("job_failed")
        self.assertEqual(len(alert), 1)
        self.assertIn("disk full", alert.message)
        managers = compat.group_members(self.env.ref("spp_backup.group_backup_manager")).filtered(
            lambda u: u.active and not u.share
        )
        self.assertIn(self.manager, managers)
        activities = self.alert_activities()
        self.assertEqual(set(activities.mapped("user_id").ids), set(managers.ids))
        self.assertEqual(len(activities), len(managers), "one to-do per manager")
        self.assertEqual(alert.activity_ids, activities)
        subtype = self.env.ref("spp_backup.mt_policy_alert")
        emails = self.policy.message_ids.filtered(lambda m: m.subtype_id == subtype)
        self.assertEqual(len(emails), 1)
        self.assertEqual(emails.partner_ids, managers.partner_id)

        self.fail_job("disk still full")
        self.assertEqual(self.alerts("job_failed"), alert, "a second failure raises nothing new")
        self.assertEqual(self.alert_activities(), activities)
        self.assertEqual(len(self.policy.message_ids.filtered(lambda m: m.subtype_id == subtype)), 1)

        self.succeed_job()
        self.assertEqual(alert.state, "resolved")
        self.assertTrue(alert.resolved_at)
        self.assertFalse(self.alert_activities(), "the activities are marked done")
        self.assertFalse(self.alerts())

        self.fail_job("again")
        self.assertEqual(len(self.alerts("job_failed")), 1, "a new incident after a resolution opens a new alert")
        self.assertEqual(len(self.alerts("job_failed", state="resolved")), 1)

    def test_responsible_gets_the_activity(self):
        """With a responsible on the policy, only they get the to-do; the managers still get the email."""
        self.policy.user_id = self.manager
        self.fail_job()
        self.assertEqual(self.alert_activities().user_id, self.manager)
        subtype = self.env.ref("spp_backup.mt_policy_alert")
        email = self.policy.message_ids.filtered(lambda m: m.subtype_id == subtype)
        self.assertIn(self.manager.partner_id, email.partner_ids)
        self.assertIn(self.env.ref("base.user_admin").partner_id, email.partner_ids)

    def test_rpo_breach_with_frozen_clock(self):
        """A backup older than the RPO raises exactly one RPO alert, even with no job running; a newer one clears it."""
        job = self.succeed_job()
        finished = job.finished_at
        later = finished + datetime.timedelta(hours=25)
        self.Policy._cron_check_objectives(now=finished + datetime.timedelta(hours=23))
        self.assertFalse(self.alerts("rpo_breach"))
        self.Policy._cron_check_objectives(now=later)
        self.Policy._cron_check_objectives(now=later + datetime.timedelta(hours=1))
        alert = self.alerts("rpo_breach")
        self.assertEqual(len(alert), 1)
        self.assertIn("is 25 h old; its RPO is 24 h.", alert.message)
        self.assertEqual(len(alert.activity_ids), len(self.alert_activities()))
        with patch.object(fields.Datetime, "now", return_value=later):
            self.policy.invalidate_recordset()
            self.assertEqual(self.policy.rpo_status, "breached")
            self.assertAlmostEqual(self.policy.rpo_age_seconds, 25 * 3600, delta=1)
            self.assertEqual(self.policy.rpo_text, "newest good backup 25 h old (target 24 h)")
            self.assertEqual(self.policy.compliance_color, 1)
        # Backups resumed: the next check resolves the alert.
        self.Policy._cron_check_objectives(now=finished + datetime.timedelta(hours=1))
        self.assertEqual(alert.state, "resolved")
        self.policy.invalidate_recordset()  # the status above was computed at the frozen time
        self.assertEqual(self.policy.rpo_status, "ok")

    def test_rpo_breach_without_any_backup(self):
        """A policy that never backed up breaches its RPO once it is older than the RPO."""
        created = self.policy.create_date
        self.Policy._cron_check_objectives(now=created + datetime.timedelta(hours=1))
        self.assertFalse(self.alerts("rpo_breach"))
        self.Policy._cron_check_objectives(now=created + datetime.timedelta(hours=30))
        self.assertEqual(
            self.alerts("rpo_breach").message, "Policy 'Nightly' has no successful backup, and its RPO is 24 h."
        )

    def test_rpo_ignores_a_backup_that_failed_verification(self):
        """The newest backup does not count for the RPO when its verification failed."""
        old = self.succeed_job()
        new = self.succeed_job()
        old.finished_at = new.finished_at - datetime.timedelta(hours=30)
        new.verify_state = states.FAILED
        self.assertEqual(self.policy._recovery_point(), old)
        self.assertEqual(self.policy._rpo_verdict(new.finished_at)[0], "breached")

    def test_drill_alerts_and_rto(self):
        """Failed drills open one alert; a passing drill resolves it; a slow one breaches the RTO once."""
        self.policy.rto_minutes = 30
        self.finished_drill(ok=False)
        self.finished_drill(ok=False)
        self.assertEqual(len(self.alerts("drill_failed")), 1)
        self.assertEqual(self.policy.rto_status, "unknown")
        self.finished_drill(ok=True, restore_seconds=3600)
        self.assertFalse(self.alerts("drill_failed"))
        self.assertEqual(self.policy.rto_status, "breached")
        self.assertAlmostEqual(self.policy.rto_measured_seconds, 3600.0)
        rto = self.alerts("rto_breach")
        self.assertEqual(len(rto), 1)
        self.assertEqual(rto.message, "The last drill of policy 'Nightly' restored in 1 h; its RTO is 30 min.")
        self.Policy._cron_check_objectives()
        self.assertEqual(self.alerts("rto_breach"), rto)
        drill = self.finished_drill(ok=True, restore_seconds=600, by_cron=True)
        self.assertEqual(drill.state, states.DONE, "the collect cron collects drills too")
        self.assertEqual(rto.state, "resolved")
        self.assertEqual(self.policy.rto_status, "ok")
        self.assertEqual(self.policy.last_drill_state, "passed")
        self.succeed_job()
        self.assertEqual(self.policy.compliance_color, 10, "RPO and RTO met, last drill passed: green")

    def test_a_failing_policy_is_red(self):
        """The last backup failed: the dashboard card is red, not orange; a success turns it back."""
        self.succeed_job()
        self.fail_job()
        self.assertEqual(self.policy.state, "failing")
        self.assertEqual(self.policy.compliance_color, 1)

    def test_rpo_unknown_before_the_first_backup(self):
        """A young policy that never backed up shows its RPO as unknown (orange), not met; breached after the RPO."""
        created = self.policy.create_date
        with patch.object(fields.Datetime, "now", return_value=created + datetime.timedelta(hours=1)):
            self.policy.invalidate_recordset()
            self.assertEqual(self.policy.rpo_status, "unknown")
            self.assertEqual(self.policy.compliance_color, 2)
            self.assertEqual(self.policy.rpo_text, "no good backup yet (target 24 h)")
            self.assertFalse(self.policy.has_good_backup)
        with patch.object(fields.Datetime, "now", return_value=created + datetime.timedelta(hours=30)):
            self.policy.invalidate_recordset()
            self.assertEqual(self.policy.rpo_status, "breached")
            self.assertEqual(self.policy.compliance_color, 1)

    def test_objective_texts_are_human(self):
        """The dashboard says '2.5 s' and '24 h', not '0.04 min' and '24.00 h'."""
        self.policy.rpo_hours = 24.0
        self.policy.rto_minutes = 240
        self.succeed_job()
        self.finished_drill(ok=True, restore_seconds=2.5)
        self.assertTrue(self.policy.has_good_backup)
        self.assertAlmostEqual(self.policy.rto_measured_seconds, 2.5)
        self.assertEqual(self.policy.rto_text, "last drill restored in 2.5 s (target 4 h)")
        self.assertIn("(target 24 h)", self.policy.rpo_text)

    def test_objectives_read_in_one_unit_of_words(self):
        """Hours of RPO and minutes of RTO, targets and measures, all read as durations: '1 d 12 h', '1 h 30 min'."""
        self.policy.write({"rpo_hours": 36.0, "rto_minutes": 90})
        job = self.succeed_job()
        self.finished_drill(ok=True, restore_seconds=75.0)
        with patch.object(
            fields.Datetime, "now", return_value=job.finished_at + datetime.timedelta(hours=3, minutes=12)
        ):
            self.policy.invalidate_recordset()
            self.assertEqual((self.policy.rpo_target_text, self.policy.rto_target_text), ("36 h", "1 h 30 min"))
            self.assertEqual(self.policy.rpo_text, "newest good backup 3 h 12 min old (target 36 h)")
            self.assertEqual(self.policy.rto_text, "last drill restored in 1 min 15 s (target 1 h 30 min)")
        self.policy.write({"rpo_hours": 72.0, "rto_minutes": 1})
        self.assertEqual(self.policy.rpo_target_text, "3 d")
        self.Policy._cron_check_objectives()
        self.assertEqual(
            self.alerts("rto_breach").message,
            "The last drill of policy 'Nightly' restored in 1 min 15 s; its RTO is 1 min.",
        )

    def test_alert_activity_summary_does_not_repeat_the_policy(self):
        """Odoo names the policy in the activity's email subject already: the summary is just the alert kind."""
        self.fail_job()
        self.assertEqual(self.alert_activities().mapped("summary"), ["Backup failed"] * len(self.alert_activities()))
