import json
import os
import re
import shutil
from unittest.mock import patch

from odoo import fields
from odoo.exceptions import AccessError, UserError
from odoo.tests import new_test_user, tagged

from ..engine.core import states
from ..engine.core.human import count
from ..engine.db import pg
from ..engine.io import crypto
from .common import RealBackupCase


@tagged("post_install", "-at_install")
class TestBackupRestore(RealBackupCase):
    """Restores of a real backup of this test database, through the wizard and the worker."""

    # ----------------------------------------------------------------- helpers

    def open_wizard_for_job(self, user=None):
        action = self.job.with_user(user or self.restorer).action_restore()
        self.assertEqual(action["res_model"], "spp.backup.restore.wizard")
        return self.env["spp.backup.restore.wizard"].with_user(user or self.restorer).browse(action["res_id"])

    def checks(self, wizard):
        """{check name: (ok, detail)} of the wizard's report, once the worker has read the backup back."""
        wizard.action_check()
        self.work()
        self.assertEqual(wizard.step, "checked")
        result = {}
        for line in wizard.check_report.splitlines():
            match = re.match(r"^(.*?)\s+(ok  |FAIL)  (.*)$", line)
            if match:
                result[match.group(1).strip()] = (match.group(2) == "ok  ", match.group(3))
        return result

    def copy_backup_set(self, db_name=None, edit_manifest=None):
        """A copy of the backup set under a new destination root (optionally as another database's backup)."""
        db_name = db_name or self.env.cr.dbname
        root = os.path.join(self.tmp, "copy-%s" % len(os.listdir(self.tmp)))
        target = os.path.join(root, db_name, self.job.backup_id)
        shutil.copytree(self.backup_dir, target)
        if edit_manifest:
            path = os.path.join(target, "manifest.json")
            with open(path, encoding="utf-8") as handle:
                manifest = json.load(handle)
            edit_manifest(manifest)
            with open(path, "w", encoding="utf-8") as handle:
                json.dump(manifest, handle)
        destination = self.Destination.create({"name": "Copy %s" % root, "path": root})
        return destination, target

    def wizard_from_destination(self, destination, db_name=None, user=None):
        user = user or self.restorer
        action = destination.with_user(user).action_browse_backups()
        browse = self.env["spp.backup.browse"].with_user(user).browse(action["res_id"])
        line = browse.line_ids.filtered(
            lambda entry: entry.backup_id == self.job.backup_id and entry.db_name == (db_name or self.env.cr.dbname)
        )
        self.assertEqual(len(line), 1, browse.line_ids.mapped("db_name"))
        action = line.action_restore()
        return self.env["spp.backup.restore.wizard"].with_user(user).browse(action["res_id"])

    # ------------------------------------------------------------------- tests

    def test_restore_into_new_database(self):
        """From a job's copy, the wizard checks, then restores into a new, neutralized database with a new UUID."""
        wizard = self.open_wizard_for_job()
        source_db = self.env.cr.dbname
        expected = "%s_restored_%s" % (source_db, fields.Date.context_today(wizard).strftime("%Y%m%d"))
        self.assertEqual(wizard.target_mode, "new")
        self.assertEqual(wizard.target_db, expected)
        self.assertTrue(wizard.new_uuid)
        self.assertTrue(wizard.neutralize)
        self.assertTrue(wizard.include_filestore)
        self.drop_later(wizard.target_db)
        with self.assertRaises(UserError, msg="Run before Check is refused"):
            wizard.action_run()
        wizard.action_check()
        self.work()
        self.assertEqual(wizard.step, "checked")
        self.assertTrue(wizard.is_check_ok, wizard.check_report)
        for name in ("signature", "checksums", "odoo version", "modules", "disk space", "target"):
            self.assertIn(name, wizard.check_report)
        self.assertNotIn("FAIL", wizard.check_report)
        action = wizard.action_run()
        restore = self.env["spp.backup.restore"].browse(action["res_id"])
        self.assertEqual(restore.user_id, self.restorer)
        self.assertEqual(restore.backup_id, self.job.backup_id)
        self.assertEqual(restore.state, states.QUEUED)
        self.assertEqual(restore.run_id.state, states.QUEUED)
        self.wait_for_run(restore)
        self.assertEqual(restore.state, states.DONE, restore.error_message)
        self.assertTrue(self.database_exists(expected))
        self.assertFalse(restore.replaced_db_aside)
        self.assertGreater(restore.restore_seconds, 0)
        self.assertEqual(restore.filestore_files, self.job.filestore_files)
        self.assertTrue(os.path.isdir(restore.filestore_path))
        # The restored copy has the data, its own UUID and no active mail server or cron.
        users = self.query(expected, "SELECT count(*) FROM res_users")[0][0]
        self.assertEqual(
            users, int(dict(line.split(": ") for line in self.job.row_counts_text.splitlines())["res_users"])
        )
        uuid = self.query(expected, "SELECT value FROM ir_config_parameter WHERE key = 'database.uuid'")[0][0]
        self.assertNotEqual(uuid, self.env["ir.config_parameter"].sudo().get_param("database.uuid"))
        crons = self.query(
            expected,
            "SELECT count(*) FROM ir_cron c JOIN ir_model_data d ON d.model = 'ir.cron' AND d.res_id = c.id "
            "WHERE c.active AND d.name <> 'autovacuum_job'",
        )[0][0]
        self.assertEqual(crons, 0, "a neutralized copy runs no cron")
        self.assertTrue(
            restore.message_ids.filtered(lambda m: "was restored into database %s" % expected in (m.body or ""))
        )
        for line in (
            "Verified backup %s: signature " % self.job.backup_id,
            "Database restored in ",
            "Filestore restored: %s, " % count(self.job.filestore_files, "file"),
            "Neutralized the copy",
            "Swapped the restored copy in as %s" % expected,
            "Restored %s into %s in " % (self.job.backup_id, expected),
        ):
            self.assertEqual(restore.log_excerpt.count(" " + line), 1, "%r once in:\n%s" % (line, restore.log_excerpt))

    def test_refresh_shows_the_checks_before_the_collect_cron(self):
        """While the wizard is checking, Refresh records the worker's finished verdict itself; until then, nothing."""
        wizard = self.open_wizard_for_job()
        wizard.action_check()
        self.assertEqual(wizard.step, "checking")
        action = wizard.action_refresh_check()
        self.assertEqual((action["res_id"], action["target"]), (wizard.id, "new"))
        self.assertEqual(wizard.step, "checking", "the worker has not read the backup back yet")
        with patch.object(type(self.Run), "_cron_collect"):
            self.work()
        self.assertEqual((wizard.check_run_id.state, wizard.check_run_id.is_applied), (states.DONE, False))
        self.assertEqual(wizard.step, "checking")
        wizard.action_refresh_check()
        self.assertEqual(wizard.step, "checked")
        self.assertTrue(wizard.is_check_ok, wizard.check_report)
        self.assertTrue(wizard.check_run_id.is_applied)
        with self.assertRaises(AccessError):
            wizard.with_user(self.auditor).action_refresh_check()

    def test_replace_existing_database_with_typed_name(self):
        """Replacing another database needs it in the databases setting and its name typed; the old one is kept."""
        name = "%s_victim" % self.env.cr.dbname[:40]
        pg.create_database(self.pg_config(), name)
        self.drop_later(name)
        wizard = self.wizard_from_destination(self.destination)
        wizard.write({"target_mode": "replace", "target_db": name, "confirm_db_name": name})
        self.assertIn("databases setting", self.checks(wizard)["target"][1])
        self.assertFalse(wizard.is_check_ok)
        self.enterContext(patch.dict(os.environ, {"SPP_BACKUP_DATABASES": ".*_victim"}))
        folder = os.path.join(self.env["spp.backup.engine"]._data_dir(), "filestore", name)
        os.makedirs(folder)
        with open(os.path.join(folder, "marker"), "w", encoding="utf-8") as handle:
            handle.write("old")
        wizard = self.wizard_from_destination(self.destination)
        wizard.write({"target_mode": "replace", "target_db": name, "new_uuid": False, "neutralize": False})
        self.assertFalse(wizard.is_current_db)
        wizard.action_check()
        self.work()
        self.assertTrue(wizard.is_check_ok, wizard.check_report)
        self.assertIn("renamed aside", wizard.check_report)
        with self.assertRaises(UserError):
            wizard.action_run()
        wizard.confirm_db_name = name.upper()
        with self.assertRaises(UserError, msg="the name must be typed exactly"):
            wizard.action_run()
        self.assertFalse(self.env["spp.backup.restore"].search([("target_db", "=", name)]))
        wizard.confirm_db_name = name
        restore = self.env["spp.backup.restore"].browse(wizard.action_run()["res_id"])
        self.assertTrue(restore.is_replace)
        self.wait_for_run(restore)
        self.assertEqual(restore.state, states.DONE, restore.error_message)
        aside = restore.replaced_db_aside
        self.assertTrue(aside and aside.startswith(name + "_replaced_"), aside)
        self.drop_later(aside)
        self.addCleanup(shutil.rmtree, restore.replaced_filestore_aside or "", True)
        allowed = self.query("postgres", "SELECT datallowconn FROM pg_database WHERE datname = %s", (aside,))
        self.assertEqual(allowed, [(False,)], "the replaced database is closed to connections")
        self.assertTrue(self.query(name, "SELECT count(*) FROM res_users")[0][0] > 0)
        self.assertTrue(os.path.isfile(os.path.join(restore.replaced_filestore_aside, "marker")))
        self.assertFalse(os.path.exists(os.path.join(folder, "marker")))
        self.assertTrue(restore.message_ids.filtered(lambda m: aside in (m.body or "")))

    def test_run_refused_without_restore_right(self):
        """Backup Managers and Settings admins do not restore: the methods themselves refuse them."""
        admin = self.env.ref("base.user_admin")
        self.assertFalse(self.manager.has_group("spp_backup.group_backup_restore"))
        self.assertFalse(admin.has_group("spp_backup.group_backup_restore"))
        self.assertTrue(self.restorer.has_group("spp_backup.group_backup_auditor"))
        with self.assertRaises(AccessError):
            self.job.with_user(self.manager).action_restore()
        with self.assertRaises(AccessError):
            self.job.copy_ids[0].with_user(admin).action_restore()
        wizard = self.open_wizard_for_job()
        wizard._server_mode().write({"step": "checked", "is_check_ok": True})  # as if its checks had passed
        with self.assertRaises(AccessError):
            wizard.with_user(self.manager).action_run()
        with self.assertRaises(AccessError):
            self.env["spp.backup.restore.wizard"].with_user(self.manager).create(
                {"target_db": "x", "copy_id": wizard.copy_id.id}
            )
        self.assertFalse(self.env["spp.backup.restore"].search([]))

    def test_replace_refused_without_typed_name_by_rpc(self):
        """A client that skips the dialog and calls action_run for a replace without the name gets an error."""
        wizard = self.open_wizard_for_job()
        wizard.write({"target_mode": "replace", "target_db": self.env.cr.dbname})
        # Even with its checks marked passed (which only the server can write), no confirmation, no restore.
        wizard._server_mode().write({"step": "checked", "is_check_ok": True})
        self.assertTrue(wizard.is_current_db)
        with self.assertRaisesRegex(UserError, "type its name exactly"):
            wizard.action_run()
        self.assertFalse(self.env["spp.backup.restore"].search([]))

    def test_the_wizards_facts_are_the_servers(self):
        """Which backup, its job, policy, location and checks: refused to a Restore user, recorded as found."""
        wizard = self.open_wizard_for_job()
        other_job = self.Job.create({"policy_id": self.policy.id, "trigger": "manual"})
        forged = {
            "backup_id": "20200101T000000Z-f00000",
            "job_id": other_job.id,
            "policy_id": False,
            "copy_id": False,
            "destination_id": False,
            "source_location": "s3://elsewhere/odoo",
            "source_db_name": "postgres",
            "check_report": "signature ok  valid",
            "is_check_ok": True,
            "step": "checked",
            "check_run_id": False,
            "manifest_summary": "nothing",
            "has_filestore": False,
        }
        for name, value in forged.items():
            with self.subTest(field=name), self.assertRaises(AccessError):
                wizard.write({name: value})
        self.assertEqual(wizard.backup_id, self.job.backup_id)
        self.assertEqual(wizard.job_id, self.job)
        self.drop_later(wizard.target_db)
        self.assertTrue(self.checks(wizard)["signature"][0], wizard.check_report)
        report = wizard.check_report
        # A changed option after the checks makes them stale: they run again before a restore.
        wizard.write({"neutralize": False})
        self.assertEqual((wizard.step, wizard.is_check_ok), ("options", False))
        with self.assertRaisesRegex(UserError, "Run the checks first"):
            wizard.action_run()
        self.checks(wizard)
        restore = self.env["spp.backup.restore"].browse(wizard.action_run()["res_id"])
        self.assertEqual(
            (restore.backup_id, restore.job_id, restore.source_location, restore.neutralize),
            (self.job.backup_id, self.job, self.job.copy_ids[0].location, False),
        )
        self.assertEqual(restore.check_report.splitlines()[0], report.splitlines()[0])
        self.assertNotIn("Traceback", restore.check_report)

    def test_the_callers_context_fills_no_fact_of_the_wizard(self):
        """default_* keys an RPC caller puts in the context do not reach the wizard the server creates."""
        other_job = self.Job.create({"policy_id": self.policy.id, "trigger": "manual"})
        action = self.destination.with_user(self.restorer).action_browse_backups()
        line = (
            self.env["spp.backup.browse"]
            .browse(action["res_id"])
            .line_ids.filtered(lambda entry: entry.backup_id == self.job.backup_id)
        )
        forged = {
            "default_copy_id": self.job.copy_ids[0].id,
            "default_job_id": other_job.id,
            "default_step": "checked",
            "default_is_check_ok": True,
            "default_check_report": "all ok",
        }
        action = line.with_user(self.restorer).with_context(**forged).action_restore()
        wizard = self.env["spp.backup.restore.wizard"].browse(action["res_id"])
        self.assertEqual(
            (wizard.copy_id, wizard.job_id, wizard.step, wizard.is_check_ok, wizard.check_report),
            (self.env["spp.backup.job.copy"], self.env["spp.backup.job"], "options", False, False),
        )

    def test_a_restore_wizard_is_its_openers(self):
        """Another Restore user neither reads, changes, checks nor runs someone else's restore."""
        wizard = self.open_wizard_for_job()
        groups = "base.group_user,spp_backup.group_backup_restore"
        other = new_test_user(self.env, login="sppb_restorer2", groups=groups)
        theirs = wizard.with_user(other)
        for attempt in (
            lambda: theirs.read(["target_db"]),
            lambda: theirs.write({"target_db": "hijacked"}),
            lambda: theirs.action_check(),
            lambda: theirs.action_run(),
            lambda: theirs.action_back(),
        ):
            with self.subTest(attempt=attempt), self.assertRaises(AccessError):
                attempt()
        self.assertFalse(self.env["spp.backup.restore.wizard"].with_user(other).search([("id", "=", wizard.id)]))
        self.assertNotEqual(wizard.target_db, "hijacked")

    def test_check_fails_on_missing_module_and_other_version(self):
        """A backup listing a module this server lacks, made by another Odoo version, fails its checks."""

        def edit(manifest):
            manifest["modules"]["spp_no_such_module"] = "17.0.1.0.0"
            manifest["major_version"] = "16.0"

        destination, _target = self.copy_backup_set(edit_manifest=edit)
        wizard = self.wizard_from_destination(destination)
        checks = self.checks(wizard)
        self.assertFalse(checks["modules"][0])
        self.assertIn("spp_no_such_module", checks["modules"][1])
        self.assertFalse(checks["odoo version"][0])
        self.assertIn("Odoo 16.0", checks["odoo version"][1])
        self.assertTrue(checks["checksums"][0], checks["checksums"][1])
        wizard.action_check()
        self.work()
        self.assertFalse(wizard.is_check_ok)
        self.assertRegex(wizard.check_report, r"modules\s+FAIL")
        with self.assertRaises(UserError):
            wizard.action_run()

    def test_check_signature_and_tampering(self):
        """With a public key, an unsigned backup fails the signature check; a changed byte fails the checksums."""
        wizard = self.open_wizard_for_job()
        wizard.public_key = crypto.generate_signing_key()[1]
        checks = self.checks(wizard)
        self.assertFalse(checks["signature"][0])
        self.assertIn("MISSING", checks["signature"][1])
        self.assertTrue(checks["checksums"][0])

        destination, target = self.copy_backup_set()
        dump = os.path.join(target, "database.dump.zst")
        with open(dump, "r+b") as handle:
            handle.seek(100)
            byte = handle.read(1)
            handle.seek(100)
            handle.write(bytes([byte[0] ^ 0xFF]))
        checks = self.checks(self.wizard_from_destination(destination))
        self.assertFalse(checks["checksums"][0])
        self.assertIn("database", checks["checksums"][1])

    def test_check_refuses_existing_target_and_lack_of_space(self):
        """A new database must not exist yet; a filestore larger than the free space fails the space check."""
        wizard = self.open_wizard_for_job()
        wizard.target_db = self.env.cr.dbname
        self.assertFalse(self.checks(wizard)["target"][0])
        wizard.target_db = "postgres"
        self.assertFalse(self.checks(wizard)["target"][0])

        def edit(manifest):
            manifest["artifacts"]["filestore"]["raw_size"] = 1 << 60

        destination, _target = self.copy_backup_set(edit_manifest=edit)
        checks = self.checks(self.wizard_from_destination(destination))
        self.assertFalse(checks["disk space"][0])
        self.assertIn("free some space", checks["disk space"][1])

    def test_browse_lists_every_database(self):
        """Browsing lists the backups of every database the databases setting allows; incomplete ones unrestorable."""
        destination, _target = self.copy_backup_set(db_name="other_server_db")
        action = destination.with_user(self.manager).action_browse_backups()
        browse = self.env["spp.backup.browse"].browse(action["res_id"])
        self.assertFalse(browse.line_ids, "another database's backups are hidden without the databases setting")
        self.assertIn("not shown", browse.summary)
        self.enterContext(patch.dict(os.environ, {"SPP_BACKUP_DATABASES": "^other_server_db$"}))
        incomplete = os.path.join(destination.path, "other_server_db", "20200101T000000Z-abcdef")
        os.makedirs(incomplete)
        with open(os.path.join(incomplete, "database.dump.zst"), "wb") as handle:
            handle.write(b"partial")
        action = destination.with_user(self.manager).action_browse_backups()
        browse = self.env["spp.backup.browse"].browse(action["res_id"])
        lines = {(line.db_name, line.backup_id): line for line in browse.line_ids}
        self.assertTrue(lines[("other_server_db", self.job.backup_id)].is_restorable)
        self.assertFalse(lines[("other_server_db", "20200101T000000Z-abcdef")].is_restorable)
        self.assertIn("2 backup(s) of 1 database(s)", browse.summary)
        with self.assertRaises(AccessError):
            lines[("other_server_db", self.job.backup_id)].with_user(self.manager).action_restore()
        with self.assertRaises(AccessError, msg="the manager's list is the manager's"):
            lines[("other_server_db", self.job.backup_id)].with_user(self.restorer).action_restore()
        action = destination.with_user(self.restorer).action_browse_backups()
        line = (
            self.env["spp.backup.browse"]
            .browse(action["res_id"])
            .line_ids.filtered(lambda entry: entry.backup_id == self.job.backup_id)
        )
        wizard = self.env["spp.backup.restore.wizard"].browse(line.with_user(self.restorer).action_restore()["res_id"])
        self.assertEqual(wizard.source_db_name, "other_server_db")
        self.assertTrue(wizard.target_db.startswith("other_server_db_restored_"))
        with self.assertRaises(AccessError):
            destination.with_user(self.auditor).action_browse_backups()

    def test_failed_restore_is_recorded(self):
        """A backup damaged between Check and Run: the worker refuses it, nothing is created, the failure is told."""
        destination, target = self.copy_backup_set()
        wizard = self.wizard_from_destination(destination)
        self.drop_later(wizard.target_db)
        wizard.action_check()
        self.work()
        self.assertTrue(wizard.is_check_ok, wizard.check_report)
        dump = os.path.join(target, "database.dump.zst")
        with open(dump, "r+b") as handle:
            handle.truncate(1000)
        restore = self.env["spp.backup.restore"].browse(wizard.action_run()["res_id"])
        self.wait_for_run(restore)
        self.assertEqual(restore.state, states.FAILED)
        self.assertIn("failed verification, nothing was changed", restore.error_message)
        self.assertNotIn("Traceback", restore.error_message + (restore.log_excerpt or ""))
        self.assertFalse(self.database_exists(restore.target_db))
        subtype = self.env.ref("spp_backup.mt_restore_failed")
        self.assertEqual(len(restore.message_ids.filtered(lambda m: m.subtype_id == subtype)), 1)

    def test_restore_right_is_checked_by_the_method(self):
        """The restore right check refuses managers and admins and accepts the Backup Restore group."""
        Engine = self.env["spp.backup.engine"]
        for user in (self.manager, self.env.ref("base.user_admin"), self.auditor):
            with self.assertRaises(AccessError):
                Engine.with_user(user)._check_restore_right()
        Engine.with_user(self.restorer)._check_restore_right()

    def test_signature_key_is_the_servers_whatever_the_wizard_says(self):
        """A wizard written over RPC without policy or key still checks the server's key; flags cannot skip it."""
        Wizard = self.env["spp.backup.restore.wizard"].with_user(self.restorer)
        values = {
            "destination_id": self.destination.id,
            "source_db_name": self.env.cr.dbname,
            "backup_id": self.job.backup_id,
            "target_db": "%s_forged" % self.env.cr.dbname[:40],
            "policy_id": False,
            "copy_id": False,
            "public_key": False,
        }
        self.policy.sudo().sign = True  # the policy the server finds signs: an unsigned backup is refused
        key_file = os.path.join(self.tmp, "signing-restore.pem")
        own_key = crypto.write_signing_key(key_file)
        self.enterContext(patch.dict(os.environ, {"SPP_BACKUP_SIGNING_KEY_FILE": key_file}))
        typed = dict(values, public_key=crypto.generate_signing_key()[1])
        # The wizard as a hand-written RPC client would have it (the server creates it: RPC cannot).
        with self.assertRaises(AccessError):
            Wizard.create(typed)
        self.assertEqual(
            Wizard._server_mode().create(typed).sudo(False)._effective_public_key(), [own_key], "the server's own key"
        )
        server_key = crypto.generate_signing_key()[1]
        self.enterContext(patch.dict(os.environ, {"SPP_BACKUP_VERIFY_KEY": server_key}))
        wizard = Wizard._server_mode().create(values).sudo(False)
        self.assertEqual(wizard._effective_public_key(), [server_key], "odoo.conf's verify_key before all others")
        self.assertFalse(self.checks(wizard)["signature"][0], "this unsigned backup fails the server's key")
        with self.assertRaises(AccessError):
            wizard.write({"step": "checked", "is_check_ok": True})
        wizard.sudo().write({"step": "checked", "is_check_ok": True})
        with self.assertRaisesRegex(UserError, "Run the checks first"):
            wizard.action_run()
        self.assertFalse(self.env["spp.backup.restore"].search([("target_db", "=", values["target_db"])]))
