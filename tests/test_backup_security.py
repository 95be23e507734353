import os
from unittest.mock import patch

from odoo.exceptions import AccessError, UserError, ValidationError
from odoo.tests import tagged

from .. import compat
from ..engine.core import states
from ..engine.io import crypto
from .common import BackupCase


@tagged("post_install", "-at_install")
class TestBackupSecurity(BackupCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.job = cls.Job.create({"policy_id": cls.policy.id, "trigger": "manual"})
        cls.job.write({"state": states.DONE, "location": "/nowhere/db/20261126T030000Z-abc123"})

    def test_internal_user_sees_nothing(self):
        """An internal user without a backup group cannot read policies, destinations or jobs."""
        for record in (self.policy, self.destination, self.job):
            with self.assertRaises(AccessError, msg=record._name):
                record.with_user(self.internal).read(["display_name"])
        with self.assertRaises(AccessError):
            self.Policy.with_user(self.internal).search([])

    def test_auditor_reads(self):
        """An auditor reads policies, destinations and jobs with their evidence."""
        self.assertEqual(self.policy.with_user(self.auditor).read(["name"])[0]["name"], "Nightly")
        self.assertEqual(self.destination.with_user(self.auditor).read(["path"])[0]["path"], self.destination.path)
        self.assertEqual(self.job.with_user(self.auditor).read(["state"])[0]["state"], states.DONE)

    def test_auditor_cannot_change_or_run(self):
        """An auditor can neither edit a policy nor back up, verify or test, even by calling the methods."""
        with self.assertRaises(AccessError):
            self.policy.with_user(self.auditor).write({"name": "Changed"})
        with self.assertRaises(AccessError):
            self.policy.with_user(self.auditor).action_backup_now()
        with self.assertRaises(AccessError):
            self.job.with_user(self.auditor).action_verify()
        with self.assertRaises(AccessError):
            self.destination.with_user(self.auditor).action_test()
        with self.assertRaises(AccessError):
            self.env["spp.backup.run.now"].with_user(self.auditor).create({"policy_id": self.policy.id})
        self.assertEqual(self.policy.name, "Nightly")
        self.assertEqual(self.job.verify_state, "not_verified")

    def test_manager_opens_backup_now(self):
        """A manager gets the confirmation wizard, which says what is backed up and where."""
        action = self.policy.with_user(self.manager).action_backup_now()
        self.assertEqual(action["res_model"], "spp.backup.run.now")
        wizard = self.env["spp.backup.run.now"].with_user(self.manager).with_context(action["context"]).create({})
        self.assertEqual(wizard.policy_id, self.policy)
        self.assertIn(self.destination.path, wizard.description)
        self.assertIn("the database, the filestore, the application snapshot", wizard.description)

    def test_system_admin_is_manager(self):
        """Settings administrators are Backup Managers through the implied group."""
        self.assertTrue(self.env.ref("base.user_admin").has_group("spp_backup.group_backup_manager"))
        self.assertTrue(self.manager.has_group("spp_backup.group_backup_auditor"))
        self.assertFalse(self.auditor.has_group("spp_backup.group_backup_manager"))

    def test_groups_are_choices_on_the_user_form_without_developer_mode(self):
        """A Settings administrator sees Backup & Recovery (Auditor/Manager) and Backup Restore as selections on
        the user form, as for Odoo's own applications; Restore is implied by no group, admins included."""
        auditor, manager, restore = (
            self.env.ref("spp_backup.group_backup_%s" % name) for name in ("auditor", "manager", "restore")
        )
        from odoo.tests.common import new_test_user

        admin = new_test_user(self.env, login="sppb_settings", groups="base.group_user,base.group_system")
        # Without a request in developer mode, what only developer mode shows (base.group_no_one) is left out.
        choices = compat.user_form_choices(self.env(user=admin))
        self.assertIn(set((auditor | manager).ids), choices)
        self.assertIn(set(restore.ids), choices)
        self.assertFalse(admin.has_group("spp_backup.group_backup_restore"))
        implying = self.env["res.groups"].search([("implied_ids", "in", restore.ids)])
        self.assertFalse(implying, "no group implies Backup Restore")


@tagged("post_install", "-at_install")
class TestEvidenceIsTheServers(BackupCase):
    """No group writes, creates or deletes runs or evidence: the ORM refuses each, whoever calls it."""

    EVIDENCE = {
        "spp.backup.run": ["state", "progress", "log", "result", "worker_host", "worker_pid", "plan", "is_applied"],
        "spp.backup.job": [
            "state",
            "backup_id",
            "database_sha256",
            "database_size",
            "verify_state",
            "verify_report",
            "location",
            "finished_at",
            "run_id",
        ],
        "spp.backup.job.copy": ["state", "location", "verify_state", "signature", "verify_report", "pruned_at"],
        "spp.backup.restore": ["state", "target_db", "is_replace", "restore_seconds", "run_id"],
        "spp.backup.drill": ["state", "is_ok", "restore_seconds", "is_rto_measured", "report", "copy_id", "verdict"],
        "spp.backup.drill.check": ["is_ok", "detail"],
        "spp.backup.alert": ["state", "message", "kind"],
        "spp.backup.signing.key": ["public_key", "origin", "replaced_at", "user_id"],
    }

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.admin = cls.env.ref("base.user_admin")
        cls.job = cls.Job.create({"policy_id": cls.policy.id, "trigger": "manual"})
        cls.job._queue_run()
        cls.job.write(
            {"state": states.DONE, "location": os.path.join(cls.destination.path, "db", "20261126T030000Z-abc123")}
        )
        cls.job._ensure_copies()
        cls.drill = cls.env["spp.backup.drill"].create(
            {"policy_id": cls.policy.id, "backup_id": "x", "job_id": cls.job.id}
        )
        cls.drill.write({"check_ids": [(0, 0, {"name": "restore", "is_ok": True})]})
        cls.restore = cls.env["spp.backup.restore"].create({"target_db": "copy_of_db", "backup_id": "x"})
        cls.alert = cls.env["spp.backup.alert"].create(
            {"policy_id": cls.policy.id, "kind": "job_failed", "message": "m"}
        )
        cls.records = {
            "spp.backup.run": cls.job.run_id,
            "spp.backup.job": cls.job,
            "spp.backup.job.copy": cls.job.copy_ids,
            "spp.backup.restore": cls.restore,
            "spp.backup.drill": cls.drill,
            "spp.backup.drill.check": cls.drill.check_ids,
            "spp.backup.alert": cls.alert,
            "spp.backup.signing.key": cls.env["spp.backup.signing.key"]._remember(
                crypto.generate_signing_key()[1], "a test key"
            ),
        }

    def users(self):
        return {
            "internal": self.internal,
            "auditor": self.auditor,
            "manager": self.manager,
            "restore": self.restorer,
            "settings admin": self.admin,
        }

    def test_no_group_writes_evidence(self):
        """Every evidence field of every evidence model is refused on write, for every group."""
        for model, fields_ in self.EVIDENCE.items():
            record = self.records[model]
            for who, user in self.users().items():
                for name in fields_:
                    value = record._fields[name].convert_to_write(record[name], record)
                    with self.subTest(model=model, user=who, field=name), self.assertRaises(AccessError):
                        record.with_user(user).write({name: value})

    def test_no_group_creates_or_deletes_evidence(self):
        """Nobody creates a run, a 'done' job or any other evidence record, nor deletes one, through the ORM."""
        forged = {
            "spp.backup.run": {"action": "backup", "state": states.DONE},
            "spp.backup.job": {
                "policy_id": self.policy.id,
                "state": states.DONE,
                "backup_id": "20261126T030000Z-f00000",
            },
            "spp.backup.job.copy": {"job_id": self.job.id, "location": "/etc"},
            "spp.backup.restore": {"target_db": "x"},
            "spp.backup.drill": {"policy_id": self.policy.id, "is_ok": True, "restore_seconds": 1.0},
            "spp.backup.drill.check": {"drill_id": self.drill.id, "name": "x", "is_ok": True},
            "spp.backup.alert": {"policy_id": self.policy.id, "kind": "rpo_breach"},
            "spp.backup.signing.key": {"public_key": crypto.generate_signing_key()[1]},
        }
        for model, values in forged.items():
            for who, user in self.users().items():
                with self.subTest(model=model, user=who, op="create"), self.assertRaises(AccessError):
                    self.env[model].with_user(user).create(values)
                with self.subTest(model=model, user=who, op="unlink"), self.assertRaises(AccessError):
                    self.records[model].with_user(user).unlink()

    def test_policy_evidence_fields_are_the_servers(self):
        """A manager edits a policy but not what the server records on it (last success, last drill, ...)."""
        for name in ("last_success_at", "last_failure_at", "last_success_job_id", "last_job_id", "last_drill_id"):
            value = self.policy._fields[name].convert_to_write(self.policy[name], self.policy) or False
            if name.endswith("_at"):
                value = "2026-11-26 03:00:00"
            elif name != "last_drill_id":
                value = self.job.id
            else:
                value = self.drill.id
            for user in (self.manager, self.admin):
                with self.subTest(field=name, user=user.login), self.assertRaises(AccessError):
                    self.policy.with_user(user).write({name: value})
        self.policy.with_user(self.manager).write({"name": "Renamed"})
        self.assertEqual(self.policy.name, "Renamed")

    def test_no_field_names_a_file_to_read(self):
        """The fields that once let a manager point the server at a file or SQL are gone."""
        for model in ("spp.backup.job", "spp.backup.restore", "spp.backup.drill", "spp.backup.restore.wizard"):
            for name in ("runner_log_path", "status_path", "plan_path", "source_json", "neutralize_sql"):
                self.assertNotIn(name, self.env[model]._fields, "%s.%s" % (model, name))

    def test_out_of_scope_database_and_folder_are_refused_in_words(self):
        """A policy on another database, a folder outside backup_roots: refused with the setting to change."""
        with self.assertRaisesRegex(ValidationError, "databases setting .*odoo.conf"):
            self.Policy.with_user(self.manager).create(
                {"name": "Other", "database": "postgres", "destination_ids": [(6, 0, self.destination.ids)]}
            )
        with self.assertRaisesRegex(ValidationError, "databases"):
            self.policy.with_user(self.manager).write({"database": "another_db"})
        with self.assertRaisesRegex(ValidationError, "backup_roots"):
            self.Destination.with_user(self.manager).create({"name": "etc", "path": "/etc/spp"})
        self.enterContext(patch.dict(os.environ, {"SPP_BACKUP_DATABASES": "^staging$"}))
        self.policy.with_user(self.manager).write({"database": "staging"})
        self.assertEqual(self.policy.database, "staging")

    def test_databases_pattern_matches_the_whole_name(self):
        """databases = ^acc_big$ allows acc_big only: acc_big with a new line, or acc_big2, is refused in words."""
        self.enterContext(patch.dict(os.environ, {"SPP_BACKUP_DATABASES": "^acc_big$"}))
        for name in ("acc_big\n", "acc_big2", "xacc_big"):
            with self.assertRaisesRegex(ValidationError, "database name|databases setting"):
                self.policy.with_user(self.manager).write({"database": name})
        Engine = self.env["spp.backup.engine"]
        self.assertFalse(Engine._database_allowed("acc_big\n"))
        with self.assertRaisesRegex(UserError, "not a database name"):
            Engine._check_database_scope("acc_big\n", what="restore")
        self.policy.with_user(self.manager).write({"database": "acc_big"})
        self.assertEqual(self.policy.database, "acc_big")

    def test_policy_out_of_scope_stops_with_one_alert(self):
        """A policy whose database leaves the scope (odoo.conf changed) does not run; one alert names the setting."""
        self.enterContext(patch.dict(os.environ, {"SPP_BACKUP_DATABASES": "^staging$"}))
        staging = self.Policy.create(
            {
                "name": "Staging",
                "database": "staging",
                "encrypt": False,
                "destination_ids": [(6, 0, self.destination.ids)],
            }
        )
        staging.next_run = "2026-01-01 00:00:00"
        os.environ["SPP_BACKUP_DATABASES"] = ""
        self.Policy._cron_run_due()
        staging.next_run = "2026-01-01 00:00:00"
        self.Policy._cron_run_due()
        self.assertFalse(self.Job.search([("policy_id", "=", staging.id)]))
        alerts = self.env["spp.backup.alert"].search([("policy_id", "=", staging.id), ("state", "=", "open")])
        self.assertEqual(
            len(alerts.filtered(lambda a: "databases = ^staging$" in a.message)), 1, alerts.mapped("message")
        )

    def test_people_post_as_themselves_on_evidence(self):
        """A reader's message on a job is a note by that reader, never a notification posing as the server."""
        bot = self.env.ref("base.partner_root")
        message = self.job.with_user(self.auditor).message_post(
            body="Backup verified: signature valid",
            author_id=bot.id,
            message_type="notification",
            subtype_xmlid="spp_backup.mt_verify_failed",
        )
        self.assertEqual(message.author_id, self.auditor.partner_id)
        self.assertEqual(message.message_type, "comment")
        self.assertEqual(message.subtype_id, self.env.ref("mail.mt_note"))
