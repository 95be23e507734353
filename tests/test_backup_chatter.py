import xmlrpc.client

from odoo.exceptions import AccessError
from odoo.tests import HttpCase, tagged

from .common import BackupCase


@tagged("post_install", "-at_install")
class TestChatterIsEvidence(BackupCase, HttpCase):
    """What the server posts on backup records stays as posted: over XML-RPC, as every group, nobody rewrites it."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.admin = cls.env.ref("base.user_admin")
        cls.job = cls.Job.create({"policy_id": cls.policy.id, "trigger": "manual"})
        cls.job.write({"state": "done", "location": "/nowhere/db/20261126T030000Z-abc123"})
        cls.server_message = cls.job.message_post(body="Backup verified: signature valid")
        # An alert is posted to the managers: they are its recipients, which Odoo takes as leave to edit it.
        cls.alert = cls.env["spp.backup.alert"]._raise(cls.policy, "job_failed", "The nightly backup failed.")
        cls.alert_message = cls.env["mail.message"].search(
            [("model", "=", "spp.backup.policy"), ("res_id", "=", cls.policy.id), ("partner_ids", "!=", False)],
            limit=1,
        )
        cls.bot = cls.env.ref("base.partner_root")

    def rpc_users(self):
        # new_test_user's password is its login; the admin's is "admin".
        return {
            "internal": (self.internal, "sppb_internal"),
            "auditor": (self.auditor, "sppb_auditor"),
            "manager": (self.manager, "sppb_manager"),
            "restore": (self.restorer, "sppb_restorer"),
            "settings admin": (self.admin, "admin"),
        }

    def rpc(self, user, password, model, method, *args, **kwargs):
        return self.xmlrpc_object.execute_kw(self.env.cr.dbname, user.id, password, model, method, list(args), kwargs)

    def assert_refused(self, user, password, model, method, *args, **kwargs):
        with self.assertRaises(xmlrpc.client.Fault) as caught:
            self.rpc(user, password, model, method, *args, **kwargs)
        # Odoo's XML-RPC answers an AccessError with fault code 4 (a UserError would be 2).
        self.assertEqual(caught.exception.faultCode, 4, caught.exception.faultString)
        return caught.exception

    def test_no_group_rewrites_or_deletes_the_servers_messages(self):
        """Each group, even after notifying itself of the message, cannot change or delete it."""
        self.assertEqual(self.server_message.author_id, self.bot)
        self.assertIn(self.manager.partner_id, self.alert_message.partner_ids)
        originals = {m: m.body for m in (self.server_message, self.alert_message)}
        for who, (user, password) in self.rpc_users().items():
            for message in originals:
                with self.subTest(user=who, message=message.model):
                    # Odoo lets any internal user notify itself of a message it can read: the way to edit it.
                    notify = {
                        "mail_message_id": message.id,
                        "res_partner_id": user.partner_id.id,
                        "notification_type": "inbox",
                    }
                    notified = self.env["mail.notification"].search_count(
                        [("mail_message_id", "=", message.id), ("res_partner_id", "=", user.partner_id.id)]
                    )
                    if user == self.internal:
                        self.assert_refused(user, password, "mail.notification", "create", notify)
                    elif not notified:  # an alert's recipients are notified already
                        self.assertTrue(self.rpc(user, password, "mail.notification", "create", notify))
                    self.assert_refused(user, password, "mail.message", "write", [message.id], {"body": "forged"})
                    self.assert_refused(user, password, "mail.message", "unlink", [message.id])
        for message, body in originals.items():
            message.invalidate_recordset()
            self.assertEqual(message.exists().body, body)

    def test_nobody_posts_as_the_server(self):
        """A message created by RPC on a job in the server's name, or as a server notification, is refused."""
        failed = self.env.ref("spp_backup.mt_verify_failed").id
        for who, (user, password) in self.rpc_users().items():
            forgeries = {
                "author": {"body": "Backup verified", "author_id": self.bot.id, "message_type": "notification"},
                "subtype": {"body": "Verification failed", "author_id": user.partner_id.id, "subtype_id": failed},
            }
            for forged, values in forgeries.items():
                with self.subTest(user=who, forged=forged):
                    values = dict(values, model="spp.backup.job", res_id=self.job.id)
                    self.assert_refused(user, password, "mail.message", "create", values)
        forged = [("model", "=", "spp.backup.job"), ("body", "ilike", "Verification failed")]
        self.assertFalse(self.env["mail.message"].search(forged))
        verified = self.job.message_ids.filtered(lambda m: "verified" in (m.body or ""))
        self.assertEqual(verified, self.server_message)

    def test_tracked_changes_are_nobodys_to_change(self):
        """The settings administrator may edit tracking values in Odoo, but not those of backup records."""
        # A change as the server tracks it: a message with its tracking value.
        message = self.job.message_post(body="")
        tracking = self.env["mail.tracking.value"].create(
            {
                "field_id": self.env["ir.model.fields"]._get("spp.backup.job", "state").id,
                "old_value_char": "Done",
                "new_value_char": "Failed",
                "mail_message_id": message.id,
            }
        )
        self.assert_refused(self.admin, "admin", "mail.tracking.value", "write", tracking.ids, {"old_value_char": "x"})
        self.assert_refused(self.admin, "admin", "mail.tracking.value", "unlink", tracking.ids)

    def test_people_keep_their_own_words(self):
        """People still post notes, edit and delete their own comments, and mark alert to-dos done."""
        note = self.job.with_user(self.auditor).message_post(body="Checked the offsite copy")
        self.job.with_user(self.auditor)._message_update_content(note, "Checked the offsite copy by hand")
        self.assertIn("by hand", note.body)
        with self.assertRaises(AccessError):
            note.with_user(self.auditor).write({"author_id": self.bot.id})
        activity = self.alert.activity_ids.filtered(lambda a: a.user_id == self.manager)
        self.assertTrue(activity)
        activity.with_user(self.manager).action_feedback(feedback="Disk replaced")
        self.assertFalse(activity.exists())
        self.assertTrue(self.policy.message_ids.filtered(lambda m: "Disk replaced" in (m.body or "")))
        # A manager edits the policy, so may delete their own note on it (Odoo asks write access to delete).
        own = self.policy.with_user(self.manager).message_post(
            body="Moved to the new disk", message_type="comment", subtype_xmlid="mail.mt_note"
        )  # as the chatter's "Log note" posts it
        own.with_user(self.manager).unlink()
        self.assertFalse(own.exists())
