from odoo.exceptions import AccessError
from odoo.tests import tagged

from .common import BackupCase


@tagged("post_install", "-at_install")
class TestBackupSecurity(BackupCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.job = cls.Job.create({"policy_id": cls.policy.id, "trigger": "manual"})
        cls.job.write({"state": "done", "location": "/nowhere/db/20261126T030000Z-abc123"})

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
        self.assertEqual(self.job.with_user(self.auditor).read(["state"])[0]["state"], "done")

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
