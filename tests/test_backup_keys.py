import logging
import os
import stat
import subprocess
import sys
from unittest.mock import patch

from odoo.exceptions import AccessError, UserError, ValidationError
from odoo.tests import tagged
from psycopg2 import sql

from ..engine.core.errors import VerifyError
from ..engine.io import crypto
from .common import ADDON_DIR, BackupCase


@tagged("post_install", "-at_install")
class TestBackupKeys(BackupCase):
    """Keys that cannot be lost: no age identity ever reaches the server, one signing key pair per server."""

    def setUp(self):
        super().setUp()
        self.key_dir = os.path.join(self.tmp, "keys-%s" % self._testMethodName)
        os.makedirs(self.key_dir)
        self.key_file = os.path.join(self.key_dir, "signing.pem")
        self.enterContext(patch.dict(os.environ, {"SPP_BACKUP_SIGNING_KEY_FILE": self.key_file}))

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

    def open_signing(self, user=None):
        """The signing key dialog as the web client opens it: a saved record, read back."""
        action = self.env["spp.backup.signing"].with_user(user or self.manager).action_open()
        self.assertEqual((action["res_model"], action["target"]), ("spp.backup.signing", "new"))
        self.assertTrue(action["res_id"], "the dialog opens a saved record, whose fields the server computes")
        self.assertNotIn("context", action, "nothing travels in the action")
        return self.env["spp.backup.signing"].with_user(user or self.manager).browse(action["res_id"])

    def file_public_key(self):
        return crypto.public_key_text(crypto.load_signing_key(self.key_file).public_key())

    # ------------------------------------------------------------------ age

    def test_age_key_is_made_on_the_restoring_host_and_only_its_public_half_is_pasted(self):
        """The form tells how to make the key pair; a key made that way works on a new policy; no identity is made."""
        arch = self.Policy.with_user(self.manager).get_views([(False, "form")])["views"]["form"]["arch"]
        self.assertIn("spp-backup keys age --out identity.txt", arch)
        self.assertIn("age-keygen -o identity.txt", arch)
        self.assertNotIn("action_generate_age_key", arch)
        self.assertNotIn("spp.backup.key.show", self.env, "no model shows private keys any more")
        identity = os.path.join(self.tmp, "identity-%s.txt" % self._testMethodName)
        out = subprocess.run(
            [sys.executable, "-m", "engine", "keys", "age", "--out", identity],
            cwd=ADDON_DIR,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        public = out.split("Recipients: ")[1].split()[0]
        self.assertTrue(public.startswith("age1"), out)
        self.assertEqual(stat.S_IMODE(os.stat(identity).st_mode), 0o600)
        policy = self.Policy.with_user(self.manager).create(
            {
                "name": "First",
                "destination_ids": [(6, 0, self.destination.ids)],
                "age_recipients": public,
                "sign": False,
            }
        )
        self.assertTrue(policy.encrypt)
        self.assertEqual(policy._to_engine_plan().recipients, [public])
        with open(identity, encoding="ascii") as handle:
            secret = [line for line in handle.read().splitlines() if line.startswith("AGE-SECRET-KEY-")][0]
        self.assertEqual(self.tables_containing(secret[16:40]), [], "the identity is in no table")

    def test_a_pasted_identity_is_refused_without_being_repeated(self):
        """Pasting the private key where the public one belongs is refused, and the message does not echo it."""
        secret, _public = crypto.generate_identity()
        with self.assertRaises(ValidationError) as raised:
            self.policy.with_user(self.manager).write({"encrypt": True, "age_recipients": secret})
        self.assertIn("private age key", str(raised.exception))
        self.assertNotIn(secret[15:40], str(raised.exception))
        # refused before the database sees it (a failing INSERT would print it in the server's log)
        records = []
        handler = logging.Handler(level=logging.DEBUG)
        handler.emit = records.append
        logging.getLogger().addHandler(handler)
        self.addCleanup(logging.getLogger().removeHandler, handler)
        with self.assertRaises(ValidationError):
            self.Policy.with_user(self.manager).create({"age_recipients": secret})
        self.assertNotIn(secret[15:40], "\n".join(str(record.getMessage()) for record in records))
        pem_body = crypto.generate_signing_key()[0].splitlines()[1]
        with self.assertRaises(ValidationError) as raised:
            self.policy.with_user(self.manager).write({"encrypt": True, "age_recipients": pem_body})
        self.assertNotIn(pem_body[:20], str(raised.exception), "another kind of secret is not echoed either")
        self.assertEqual(self.tables_containing(secret[16:40]), [])

    # -------------------------------------------------------------- signing

    def test_the_server_makes_its_signing_key_straight_into_the_file(self):
        """Make the signing key: a 0600 file odoo.conf names, its public half shown on every signing policy."""
        self.policy.sign = True
        self.assertIn("no signing key yet", self.policy.signing_status)
        with self.assertRaisesRegex(UserError, "does not exist yet"):
            self.policy._to_engine_plan()
        dialog = self.open_signing()
        self.assertEqual(dialog.state, "missing")
        self.assertEqual(dialog.key_file, self.key_file)
        self.assertIn("spp-backup keys signing --out %s" % self.key_file, dialog.command)
        self.assertEqual(dialog.policy_ids, self.policy)
        action = dialog.action_make_key()
        self.assertEqual(stat.S_IMODE(os.stat(self.key_file).st_mode), 0o600)
        public = self.file_public_key()
        reopened = self.env["spp.backup.signing"].with_user(self.manager).browse(action["res_id"])
        self.assertEqual((reopened.state, reopened.public_key), ("ok", public))
        self.policy.invalidate_recordset()
        self.assertEqual(self.policy.signing_public_key, public)
        self.assertIn("ready", self.policy.signing_status)
        self.assertEqual(self.policy._to_engine_plan().signing_key_file, self.key_file)
        self.assertEqual(self.env["spp.backup.engine"]._trusted_public_key(), [public])
        self.assertIn(public, self.policy.message_ids[0].body, "the policy's chatter says which key it signs with")
        with open(self.key_file, encoding="ascii") as handle:
            body = handle.read().splitlines()[1]
        self.assertEqual(self.tables_containing(body), [], "the private key is in no table")
        self.assertFalse(self.env["mail.message"].search([("body", "ilike", body[:24])]))

    def test_a_new_key_pair_says_what_it_affects_and_old_backups_still_verify(self):
        """Replacing the key: the dialog lists the signing policies; the previous public key stays trusted."""
        other = self.Policy.create(
            {"name": "Weekly", "destination_ids": [(6, 0, self.destination.ids)], "encrypt": False, "sign": True}
        )
        unsigned = self.Policy.create(
            {"name": "Plain", "destination_ids": [(6, 0, self.destination.ids)], "encrypt": False, "sign": False}
        )
        self.policy.sign = True
        old = crypto.write_signing_key(self.key_file)
        data = b'{"format": 1}\n'
        old_signature = crypto.sign(data, crypto.load_signing_key(self.key_file)).decode()
        dialog = self.open_signing()
        self.assertEqual(dialog.state, "ok")
        self.assertEqual(dialog.policy_ids, self.policy | other)
        self.assertNotIn(unsigned, dialog.policy_ids)
        form = self.env["spp.backup.signing"].get_views([(False, "form")])["views"]["form"]["arch"]
        self.assertIn("Replace the signing key", form)
        self.assertIn("backups signed with the current key still verify", form)
        dialog.action_make_key()
        new = self.file_public_key()
        self.assertNotEqual(new, old)
        trusted = self.env["spp.backup.engine"]._trusted_public_key()
        self.assertEqual(trusted[0], new, "the current key comes first")
        self.assertIn(old, trusted)
        crypto.check_signature(data, old_signature, trusted)
        replaced = self.env["spp.backup.signing.key"].search([("public_key", "=", old)])
        self.assertTrue(replaced.replaced_at)
        for policy in (self.policy, other):
            self.assertIn("replaced the server's signing key", policy.message_ids[0].body)
        self.assertNotIn("signing key", unsigned.message_ids[:1].body or "")
        # verify_key in odoo.conf, set by whoever runs the server, is the only key when it is set
        self.enterContext(patch.dict(os.environ, {"SPP_BACKUP_VERIFY_KEY": old}))
        self.assertEqual(self.env["spp.backup.engine"]._trusted_public_key(), [old])

    def test_when_odoo_cannot_write_the_file_the_dialog_gives_the_command(self):
        """A key file Odoo cannot create: a sentence with the commands to run on the server; nothing is made."""
        blocked = os.path.join(self.key_dir, "not-a-folder")
        with open(blocked, "w", encoding="ascii") as handle:
            handle.write("x")
        path = os.path.join(blocked, "signing.pem")
        self.enterContext(patch.dict(os.environ, {"SPP_BACKUP_SIGNING_KEY_FILE": path}))
        dialog = self.open_signing()
        self.assertEqual(dialog.state, "missing")
        with self.assertRaises(UserError) as raised:
            dialog.action_make_key()
        self.assertIn("Odoo cannot write the signing key file %s" % path, str(raised.exception))
        self.assertIn("spp-backup keys signing --out %s" % path, str(raised.exception))
        self.assertFalse(self.env["spp.backup.signing.key"].search([]))

    def test_an_unusable_key_file_is_left_alone(self):
        """A file that is not an Ed25519 key is reported and never overwritten."""
        with open(self.key_file, "w", encoding="ascii") as handle:
            handle.write("someone's notes")
        dialog = self.open_signing()
        self.assertEqual(dialog.state, "invalid")
        self.assertIn("not an unencrypted PEM private key", dialog.problem)
        with self.assertRaisesRegex(UserError, "is left as it is"):
            dialog.action_make_key()
        with open(self.key_file, encoding="ascii") as handle:
            self.assertEqual(handle.read(), "someone's notes")

    def test_without_a_key_file_in_odoo_conf_the_steps_are_given(self):
        """odoo.conf names no file: new policies do not sign, and the dialog says what to add to odoo.conf."""
        self.enterContext(patch.dict(os.environ, {"SPP_BACKUP_SIGNING_KEY_FILE": ""}))
        policy = self.Policy.create(
            {"name": "New", "destination_ids": [(6, 0, self.destination.ids)], "encrypt": False}
        )
        self.assertFalse(policy.sign)
        dialog = self.open_signing()
        self.assertEqual(dialog.state, "unset")
        with self.assertRaisesRegex(UserError, "odoo.conf names no signing key file"):
            dialog.action_make_key()
        self.policy.sign = True
        self.assertIn("names no signing key file", self.policy.signing_status)
        with self.assertRaisesRegex(UserError, "names no signing key file"):
            self.policy._to_engine_plan()

    def test_a_new_policy_signs_when_odoo_conf_names_a_key_file(self):
        """With signing_key_file in odoo.conf, a new policy signs by default."""
        policy = self.Policy.with_user(self.manager).create(
            {"name": "New", "destination_ids": [(6, 0, self.destination.ids)], "encrypt": False}
        )
        self.assertTrue(policy.sign)

    def test_a_leaked_key_can_be_distrusted_and_stops_verifying(self):
        """Replace a leaked key, then distrust it: a manifest signed with it no longer verifies here."""
        self.policy.sign = True
        self.open_signing().action_make_key()
        leaked = self.file_public_key()
        data = b'{"format": 1}\n'
        forged = crypto.sign(data, crypto.load_signing_key(self.key_file)).decode()
        current = self.env["spp.backup.signing.key"].search([("public_key", "=", leaked)])
        with self.assertRaisesRegex(UserError, "replace the signing key first"):
            current.with_user(self.manager).action_distrust()
        self.open_signing().action_make_key()
        crypto.check_signature(data, forged, self.env["spp.backup.engine"]._trusted_public_key())
        for who in (self.internal, self.auditor, self.restorer):
            with self.subTest(user=who.login), self.assertRaises(AccessError):
                current.with_user(who).action_distrust()
        current.with_user(self.manager).action_distrust()
        self.assertTrue(current.revoked_at)
        self.assertEqual(current.revoked_by_id, self.manager)
        self.assertNotIn(leaked, self.env["spp.backup.engine"]._trusted_public_key())
        with self.assertRaisesRegex(VerifyError, "does not match"):
            crypto.check_signature(data, forged, self.env["spp.backup.engine"]._trusted_public_key())
        self.assertIn("distrusted", self.policy.message_ids[0].body)
        # again, or with no key: nothing more is announced
        posted = len(self.policy.message_ids)
        current.with_user(self.manager).action_distrust()
        with self.assertRaisesRegex(UserError, "Choose the signing key"):
            self.env["spp.backup.signing.key"].with_user(self.manager).action_distrust()
        self.policy.invalidate_recordset()
        self.assertEqual(len(self.policy.message_ids), posted)

    def test_making_the_key_needs_the_dialog_as_it_was_opened(self):
        """A stale or someone else's dialog, or none, makes nothing; with verify_key in odoo.conf, neither."""
        first = self.open_signing()
        stale = self.open_signing()
        first.action_make_key()
        made = self.file_public_key()
        with self.assertRaisesRegex(UserError, "changed since this dialog was opened"):
            stale.action_make_key()
        other_manager = self.manager.copy({"login": "sppb_manager_2"})
        mine = self.open_signing()
        with self.assertRaisesRegex(UserError, "Open Backup & Recovery"):
            mine.with_user(other_manager).action_make_key()
        with self.assertRaisesRegex(UserError, "Open Backup & Recovery"):
            self.env["spp.backup.signing"].with_user(self.manager).action_make_key()
        forged = self.env["spp.backup.signing"].with_user(self.manager).create({"opened_public_key": "x"})
        self.assertEqual(forged.opened_public_key, made, "what the caller sends is not kept")
        self.enterContext(
            patch.dict(os.environ, {"SPP_BACKUP_VERIFY_KEY": made + " " + crypto.generate_signing_key()[1]})
        )
        dialog = self.open_signing()
        self.assertTrue(dialog.verify_key_set)
        with self.assertRaisesRegex(UserError, "odoo.conf sets verify_key"):
            dialog.action_make_key()
        self.assertEqual(self.file_public_key(), made)
        self.assertEqual(len(self.env["spp.backup.engine"]._trusted_public_key()), 2, "verify_key may list several")

    def test_only_managers_see_or_make_the_signing_key(self):
        """No group but Backup Manager opens the dialog or makes a key, even by calling the methods."""
        for who in (self.internal, self.auditor, self.restorer):
            with self.subTest(user=who.login):
                with self.assertRaises(AccessError):
                    self.env["spp.backup.signing"].with_user(who).action_open()
                with self.assertRaises(AccessError):
                    self.env["spp.backup.signing"].with_user(who).create({})
        dialog = self.open_signing()
        for who in (self.internal, self.auditor, self.restorer):
            with self.subTest(user=who.login), self.assertRaises(AccessError):
                dialog.with_user(who).action_make_key()
        self.assertFalse(os.path.exists(self.key_file))
