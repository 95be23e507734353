from odoo.exceptions import AccessError
from odoo.tests import tagged
from psycopg2 import sql

from ..engine import crypto
from .common import BackupCase


@tagged("post_install", "-at_install")
class TestBackupKeys(BackupCase):
    """Key pairs made from the policy: Odoo keeps the public halves only, and shows the private ones once."""

    def tables_containing(self, needle):
        """Every (table, column) of this database whose text holds ``needle``."""
        self.env.flush_all()
        cr = self.env.cr
        cr.execute(
            "SELECT c.table_name, c.column_name FROM information_schema.columns c "
            "JOIN information_schema.tables t ON t.table_schema = c.table_schema AND t.table_name = c.table_name "
            "WHERE c.table_schema = 'public' AND t.table_type = 'BASE TABLE' "
            "AND c.data_type IN ('text', 'character varying', 'jsonb', 'bytea')"
        )
        found = []
        for table, column in cr.fetchall():
            cr.execute(
                sql.SQL("SELECT 1 FROM {} WHERE {}::text LIKE %s LIMIT 1").format(
                    sql.Identifier(table), sql.Identifier(column)
                ),
                ["%" + needle + "%"],
            )
            if cr.fetchone():
                found.append("%s.%s" % (table, column))
        return found

    def open_dialog(self, action):
        """What the key dialog shows: a new record in the action's context, as the web client opens it."""
        self.assertEqual(action["res_model"], "spp.backup.key.show")
        self.assertEqual(action["target"], "new")
        self.assertNotIn("res_id", action, "the dialog opens an unsaved record")
        return self.env["spp.backup.key.show"].with_user(self.manager).with_context(**action["context"]).new({})

    def test_age_key_keeps_only_the_public_key(self):
        """Generate age key adds a recipient, turns encryption on and shows the identity once, stored nowhere."""
        action = self.policy.with_user(self.manager).action_generate_age_key()
        dialog = self.open_dialog(action)
        secret, public = dialog.secret, dialog.public_key
        self.assertTrue(secret.startswith("AGE-SECRET-KEY-1"), secret[:20])
        self.assertTrue(public.startswith("age1"))
        self.assertTrue(self.policy.encrypt)
        self.assertEqual(self.policy._recipient_lines(), [public])
        self.assertIn("offline", dialog.instructions)
        # even if the dialog were saved, it would keep nothing
        saved = self.env["spp.backup.key.show"].with_user(self.manager).with_context(**action["context"]).create({})
        saved.invalidate_recordset()
        self.assertEqual(self.tables_containing(secret[16:40]), [], "the private key is in no table")
        self.assertTrue(self.tables_containing(public), "the public key is recorded (policy, chatter)")
        self.assertFalse(
            self.env["mail.message"].search([("body", "ilike", secret[16:40])]), "the chatter never shows the secret"
        )
        self.assertFalse(self.env["ir.attachment"].search([("name", "ilike", "AGE-SECRET")]))
        # a second key pair is appended: both holders can decrypt
        self.policy.with_user(self.manager).action_generate_age_key()
        self.assertEqual(len(self.policy._recipient_lines()), 2)
        self.assertEqual(self.policy._recipient_lines()[0], public)

    def test_signing_key_keeps_only_the_public_key(self):
        """Generate signing key sets the policy's public key and shows the private PEM once, stored nowhere."""
        action = self.policy.with_user(self.manager).action_generate_signing_key()
        dialog = self.open_dialog(action)
        pem = dialog.secret
        self.assertIn("BEGIN PRIVATE KEY", pem)
        self.assertEqual(self.policy.signing_public_key, dialog.public_key)
        crypto.load_public_key(self.policy.signing_public_key)
        self.assertIn("signing_key_file", dialog.instructions)
        body = pem.splitlines()[1]
        self.assertEqual(self.tables_containing(body), [], "the private signing key is in no table")

    def test_standalone_age_key_pair_for_a_new_policy(self):
        """The Configuration menu makes a key pair without a policy, so a new policy can be saved with its key."""
        action = self.Policy.with_user(self.manager).action_new_age_key_pair()
        dialog = self.open_dialog(action)
        self.assertIn("Paste the public key", dialog.instructions)
        policy = self.Policy.with_user(self.manager).create(
            {"name": "Fresh", "destination_ids": [(6, 0, self.destination.ids)], "age_recipients": dialog.public_key}
        )
        self.assertEqual(policy._to_engine_plan().recipients, [dialog.public_key])
        self.assertEqual(self.tables_containing(dialog.secret[16:40]), [])

    def test_dialog_without_context_shows_nothing(self):
        """Reopened without its context (e.g. after a reload), the dialog has no key to show."""
        dialog = self.env["spp.backup.key.show"].with_user(self.manager).new({})
        self.assertFalse(dialog.secret)
        self.assertIn("no longer shown", dialog.instructions)

    def test_only_managers_generate_keys_or_preview(self):
        """An auditor can neither generate key pairs nor preview retention, even by calling the methods."""
        for method in ("action_generate_age_key", "action_generate_signing_key", "action_preview_retention"):
            with self.assertRaises(AccessError, msg=method):
                getattr(self.policy.with_user(self.auditor), method)()
        with self.assertRaises(AccessError):
            self.Policy.with_user(self.auditor).action_new_age_key_pair()
        with self.assertRaises(AccessError):
            self.env["spp.backup.retention.preview"].with_user(self.auditor).create(
                {"policy_id": self.policy.id, "report": "x"}
            )
        with self.assertRaises(AccessError):
            self.env["spp.backup.key.show"].with_user(self.auditor).create({})
        self.assertFalse(self.policy.signing_public_key)
        self.assertFalse(self.policy.age_recipients)
