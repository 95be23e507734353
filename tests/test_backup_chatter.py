import contextlib
import xmlrpc.client

from odoo.exceptions import AccessError
from odoo.tests import HttpCase, tagged

from .. import compat
from ..engine.core import states
from .common import BackupCase


@tagged("post_install", "-at_install")
class TestChatterIsEvidence(BackupCase, HttpCase):
    """What the server posts on backup records stays as posted: over XML-RPC, as every group, nobody rewrites it."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.admin = cls.env.ref("base.user_admin")
        cls.job = cls.Job.create({"policy_id": cls.policy.id, "trigger": "manual"})
        cls.job.write({"state": states.DONE, "location": "/nowhere/db/20261126T030000Z-abc123"})
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

    def server_tracking(self, old, new):
        """A change of the job's state as the server tracks it: a message with its tracking value."""
        return self.env["mail.tracking.value"].create(
            {
                "field_id": self.env["ir.model.fields"]._get("spp.backup.job", "state").id,
                "old_value_char": old,
                "new_value_char": new,
                "mail_message_id": self.job.message_post(body="").id,
            }
        )

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
        tracking = self.server_tracking("Done", "Failed")
        self.assert_refused(self.admin, "admin", "mail.tracking.value", "write", tracking.ids, {"old_value_char": "x"})
        self.assert_refused(self.admin, "admin", "mail.tracking.value", "unlink", tracking.ids)

    def test_people_keep_their_own_words(self):
        """People still post notes, edit and delete their own comments, and mark alert to-dos done."""
        note = self.job.with_user(self.auditor).message_post(body="Checked the offsite copy")
        self.job.with_user(self.auditor)._message_update_content(note, body="Checked the offsite copy by hand")
        self.assertIn("by hand", note.body)
        with self.assertRaises(AccessError):
            note.with_user(self.auditor).write({"author_id": self.bot.id})
        activity = self.alert.activity_ids.filtered(lambda a: a.user_id == self.manager)
        self.assertTrue(activity)
        activity.with_user(self.manager).action_feedback(feedback="Disk replaced")
        # Odoo 17 deletes a done activity, Odoo 19 archives it: either way it is no longer open.
        self.assertFalse(activity.exists().filtered("active"))
        self.assertTrue(self.policy.message_ids.filtered(lambda m: "Disk replaced" in (m.body or "")))
        # A manager edits the policy, so may delete their own note on it (Odoo asks write access to delete).
        own = self.policy.with_user(self.manager).message_post(
            body="Moved to the new disk", message_type="comment", subtype_xmlid="mail.mt_note"
        )  # as the chatter's "Log note" posts it
        own.with_user(self.manager).unlink()
        self.assertFalse(own.exists())

    # The ways Odoo turns superuser on a person's behalf.

    def test_tracked_changes_are_not_moved_or_deleted_through_a_new_message(self):
        """Odoo applies a new message's tracking commands as superuser: refused, for any internal user."""
        tracking = self.server_tracking("Running", "Failed")
        message = tracking.mail_message_id
        for who in ("internal", "auditor"):
            user, password = self.rpc_users()[who]
            for command in ([1, tracking.id, {"new_value_char": "Done"}], [2, tracking.id], [4, tracking.id]):
                with self.subTest(user=who, command=command[0]):
                    self.assert_refused(
                        user, password, "mail.message", "create", {"body": "x", "tracking_value_ids": [command]}
                    )
        tracking.invalidate_recordset()
        self.assertEqual((tracking.exists().new_value_char, tracking.mail_message_id), ("Failed", message))

    def test_no_mass_mail_on_backup_records(self):
        """The mass-mail composer writes as superuser: an auditor cannot use it to post as OdooBot on a job."""
        user, password = self.rpc_users()["auditor"]
        composer = self.rpc(
            user,
            password,
            "mail.compose.message",
            "create",
            {
                "composition_mode": "mass_mail",
                "model": "spp.backup.job",
                "res_ids": str([self.job.id]),
                "author_id": self.bot.id,
                "body": "<p>Restore drill passed</p>",
                "subject": "Drill",
                "auto_delete": False,
            },
        )
        self.assert_refused(user, password, "mail.compose.message", "action_send_mail", [composer])
        self.assertFalse(self.job.message_ids.filtered(lambda m: "drill passed" in (m.body or "")))

    def test_a_person_message_is_theirs_dated_now_and_a_comment(self):
        """A message a person creates on a job has no guest author, is a comment and is dated when posted."""
        user, password = self.rpc_users()["auditor"]
        guest = self.env["mail.guest"].create({"name": "Backup server"})
        mine = {"model": "spp.backup.job", "res_id": self.job.id, "author_id": user.partner_id.id}
        for forged, values in {
            "guest author": {"author_guest_id": guest.id},
            "notification": {"message_type": "notification"},
            "back-dated": {"date": "2020-01-01 00:00:00"},
        }.items():
            with self.subTest(forged=forged):
                self.assert_refused(user, password, "mail.message", "create", dict(mine, body=forged, **values))
        self.assertTrue(self.rpc(user, password, "mail.message", "create", dict(mine, body="my own note")))

    def test_incoming_mail_is_not_posted_on_a_backup_record(self):
        """A reply e-mail to the server's message (Odoo would post it as superuser, as its From) is dropped."""
        raw = (
            "From: OdooBot <odoobot@example.com>\r\n"
            "To: catchall@example.com\r\n"
            "Subject: Re: backup\r\n"
            "Message-Id: <forged-reply@example.com>\r\n"
            "In-Reply-To: %s\r\n"
            "Content-Type: text/plain\r\n\r\n"
            "Restore drill passed\r\n"
        ) % self.server_message.message_id
        with contextlib.suppress(ValueError):  # no other route: Odoo says so
            self.env["mail.thread"].message_process(False, raw)
        self.assertFalse(self.job.message_ids.filtered(lambda m: "drill passed" in (m.body or "")))

    def test_an_administrator_does_not_edit_someone_elses_comment(self):
        """Odoo lets administrators edit any comment (as superuser); not on backup records."""
        note = self.job.with_user(self.auditor).message_post(body="Offsite copy checked")
        with self.assertRaises(AccessError):
            self.job.with_user(self.admin)._message_update_content(note.sudo(), body="")
        self.assertIn("Offsite copy checked", note.body)

    def test_the_chatter_route_posts_no_notification_in_the_servers_words(self):
        """The web client's /mail/message/post (which Odoo 19 runs as superuser with the type and subtype the
        browser sends) makes no notification and no server subtype on a backup record; a note still posts."""
        server_subtypes = self.env["ir.model.data"].search(
            [("module", "=", "spp_backup"), ("model", "=", "mail.message.subtype")]
        )
        forged = [
            ("sppb_auditor", self.job, "spp_backup.mt_backup_failed", "notification"),
            ("sppb_auditor", self.job, "spp_backup.mt_backup_failed", "comment"),
            ("sppb_manager", self.policy, "spp_backup.mt_policy_alert_resolved", "email"),
            ("sppb_auditor", self.job, "mail.mt_note", "notification"),
        ]
        for login, record, subtype, message_type in forged:
            with self.subTest(user=login, subtype=subtype, message_type=message_type):
                self.authenticate(login, login)
                body = "Forged %s %s" % (subtype, message_type)
                with contextlib.suppress(Exception):  # Odoo 19 answers an access error; Odoo 17 posts a note
                    self.make_jsonrpc_request(
                        "/mail/message/post",
                        {
                            "thread_model": record._name,
                            "thread_id": record.id,
                            "post_data": {"body": body, "message_type": message_type, "subtype_xmlid": subtype},
                        },
                    )
                posted = self.env["mail.message"].search([("model", "=", record._name), ("res_id", "=", record.id)])
                posted = posted.filtered(lambda message, body=body: body in (message.body or ""))
                for message in posted:
                    self.assertEqual(message.message_type, "comment")
                    self.assertNotIn(message.subtype_id.id, server_subtypes.mapped("res_id"))
        # Control: the chatter's "Log note" goes through.
        self.authenticate("sppb_auditor", "sppb_auditor")
        self.make_jsonrpc_request(
            "/mail/message/post",
            {
                "thread_model": "spp.backup.job",
                "thread_id": self.job.id,
                "post_data": {
                    "body": "Offsite copy checked by hand",
                    "message_type": "comment",
                    "subtype_xmlid": "mail.mt_note",
                },
            },
        )
        note = self.job.message_ids.filtered(lambda message: "Offsite copy checked by hand" in (message.body or ""))
        self.assertEqual((note.message_type, note.subtype_id), ("comment", self.env.ref("mail.mt_note")))
        self.assertEqual(note.author_id, self.auditor.partner_id)

    def test_nobody_runs_the_backup_crons_actions_over_rpc(self):
        """ir.actions.server.run of the addon's scheduled actions is refused to every group (Odoo 19 checks the
        superuser's copy of the action, Odoo 17 the caller's write right, which a Manager has on policies); the
        cron itself and its Run Manually still run them as the server."""
        crons = [
            self.env.ref("spp_backup.%s" % name)
            for name in (
                "ir_cron_spp_backup_run_due",
                "ir_cron_spp_backup_collect",
                "ir_cron_spp_backup_run_drills",
                "ir_cron_spp_backup_check_objectives",
            )
        ]
        alerts = self.env["spp.backup.alert"].search_count([])
        for who, (user, password) in self.rpc_users().items():
            for cron in crons:
                with self.subTest(user=who, cron=cron.name):
                    self.assert_refused(user, password, "ir.actions.server", "run", cron.ir_actions_server_id.ids)
        self.assertEqual(self.env["spp.backup.alert"].search_count([]), alerts, "nothing ran")
        # Control: the scheduled action runs as the cron's user (the superuser).
        for cron in crons:
            cron.ir_actions_server_id.with_user(cron.user_id).run()

    def test_people_edit_their_own_comment_through_the_web_client(self):
        """Through the web client's routes (Odoo 19 prepares an edit like a new post): an Auditor edits the note
        they posted, but not the server's message."""
        self.authenticate("sppb_auditor", "sppb_auditor")
        posted = self.make_jsonrpc_request(
            "/mail/message/post",
            {
                "thread_model": "spp.backup.job",
                "thread_id": self.job.id,
                "post_data": {"body": "Copy checked", "message_type": "comment", "subtype_xmlid": "mail.mt_note"},
            },
        )
        note = self.job.message_ids.filtered(lambda message: "Copy checked" in (message.body or ""))
        self.assertEqual(len(note), 1, posted)
        self.make_jsonrpc_request(
            "/mail/message/update_content", compat.message_update_params(note.id, "Copy checked twice")
        )
        note.invalidate_recordset()
        self.assertIn("Copy checked twice", note.body)
        with contextlib.suppress(Exception):  # refused: a 404 or an access error, by series
            self.make_jsonrpc_request(
                "/mail/message/update_content", compat.message_update_params(self.server_message.id, "Rewritten")
            )
        self.server_message.invalidate_recordset()
        self.assertNotIn("Rewritten", self.server_message.body or "")
