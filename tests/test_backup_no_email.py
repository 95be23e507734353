import os
from unittest.mock import patch

from odoo.tests import new_test_user, tagged

from ..engine.core import states
from .common import RealBackupCase


@tagged("post_install", "-at_install")
class TestBackupManagerWithoutEmail(RealBackupCase):
    """A Backup Manager whose account has no email address: every button works, the server's records and mail
    carry the server as their sender."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.no_email = new_test_user(
            cls.env, login="sppb_no_email", groups="base.group_user,spp_backup.group_backup_manager", email=False
        )
        cls.server = cls.env.ref("base.user_root").partner_id

    def setUp(self):
        super().setUp()
        self.assertFalse(self.no_email.partner_id.email)
        self.first_message = self.env["mail.message"].search([], order="id desc", limit=1).id

    def commit(self):
        """What a commit does before it commits: the tracking messages are posted."""
        self.env.flush_all()
        self.env.cr.precommit.run()

    def assert_server_sent_everything(self):
        """Since the test began: the person's own logs (records created, fields changed) notify nobody; every
        other message is the server's, with a sender address; no mail failed. Returns the server's messages."""
        self.commit()
        messages = self.env["mail.message"].search([("id", ">", self.first_message)])
        own = messages.filtered(lambda m: m.author_id == self.no_email.partner_id)
        for message in own:
            self.assertEqual(message.message_type, "notification", message.body)
            self.assertFalse(message.notification_ids, message.body)
        messages -= own
        self.assertTrue(messages)
        for message in messages:
            self.assertEqual(message.author_id, self.server, message.body)
            self.assertTrue(message.email_from, message.body)
        failed = (
            self.env["mail.mail"].sudo().search([("mail_message_id", "in", messages.ids), ("state", "=", "exception")])
        )
        self.assertFalse(failed.mapped("failure_reason"))
        return messages

    def test_refresh_records_a_failed_backup_and_its_alert(self):
        """Refresh on a job whose run failed: recorded, the alert raised and mailed, nothing from the person."""
        self.policy.user_id = self.no_email
        job = self.make_job()
        self.finish_run(job, states.FAILED, None, error="the disk is full")
        self.assertTrue(job.with_user(self.no_email).action_refresh())
        self.assertEqual(job.state, states.FAILED)
        alert = self.env["spp.backup.alert"].search([("policy_id", "=", self.policy.id), ("kind", "=", "job_failed")])
        self.assertEqual(alert.activity_ids.user_id, self.no_email)
        messages = self.assert_server_sent_everything()
        self.assertTrue(messages.filtered(lambda m: "the disk is full" in (m.body or "") and m.model == job._name))
        mailed = messages.filtered(lambda m: m.subtype_id == self.env.ref("spp_backup.mt_policy_alert"))
        self.assertIn(self.manager.partner_id, mailed.partner_ids)

    def test_a_callers_context_changes_nothing_the_server_records(self):
        """Refresh by an Auditor who sends context keys that switch off activities and tracking: the failure is
        recorded all the same, with its alert, its activity and its tracked state change (the server acts in a
        context of its own)."""
        job = self.make_job()
        self.finish_run(job, states.FAILED, None, error="the disk is full")
        context = {"mail_activity_automation_skip": True, "tracking_disable": True, "mail_notrack": True}
        self.assertTrue(job.with_user(self.auditor).with_context(**context).action_refresh())
        self.assertEqual(job.state, states.FAILED)
        self.assertFalse(job.run_id.apply_error)
        alert = self.env["spp.backup.alert"].search([("policy_id", "=", self.policy.id), ("kind", "=", "job_failed")])
        self.assertTrue(alert.activity_ids)
        tracked = (
            self.env["mail.tracking.value"]
            .sudo()
            .search([("mail_message_id.model", "=", job._name), ("mail_message_id.res_id", "=", job.id)])
        )
        self.assertIn("Failed", tracked.mapped("new_value_char"))

    def test_back_up_now_verify_and_drill_now_with_refresh(self):
        """The manager backs up, verifies and drills, pressing Refresh each time; the server sends what it records."""
        wizard = self.env["spp.backup.run.now"].with_user(self.no_email).create({"policy_id": self.policy.id})
        job = self.Job.with_user(self.no_email).browse(wizard.action_confirm()["res_id"])
        self.commit()
        self.work(collect=False)
        job.action_refresh()
        self.assertEqual(job.state, states.DONE, job.error_message)
        self.assertEqual(job.user_id, self.no_email)
        job.action_verify()
        self.work()
        self.assertEqual(job.verify_state, "ok", job.verify_report)
        drill = (
            self.env["spp.backup.drill"]
            .with_user(self.no_email)
            .browse(self.policy.with_user(self.no_email).action_drill_now()["res_id"])
        )
        self.commit()
        self.work(collect=False)
        drill.action_refresh()
        self.assertEqual(drill.state, states.DONE, drill.error_message or drill.report)
        messages = self.assert_server_sent_everything()
        self.assertTrue(messages.filtered(lambda m: m.model == job._name and "done" in (m.body or "")))
        self.assertTrue(messages.filtered(lambda m: m.model == drill._name and "passed" in (m.body or "")))

    def test_making_the_signing_key_is_recorded_by_the_server(self):
        """Make and replace the server's signing key: each signing policy's chatter says who, posted by the server."""
        key_file = os.path.join(self.tmp, "signing-no-email.pem")
        self.enterContext(patch.dict(os.environ, {"SPP_BACKUP_SIGNING_KEY_FILE": key_file}))
        self.policy.sign = True
        self.commit()
        self.first_message = self.env["mail.message"].search([], order="id desc", limit=1).id
        Signing = self.env["spp.backup.signing"].with_user(self.no_email)
        dialog = Signing.browse(Signing.action_open()["res_id"])
        dialog.action_make_key()
        Signing.browse(Signing.action_open()["res_id"]).action_make_key()
        messages = self.assert_server_sent_everything().filtered(lambda m: m.model == self.policy._name)
        self.assertEqual(len(messages.filtered(lambda m: self.no_email.name in (m.body or ""))), 2)
