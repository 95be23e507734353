import os
import xmlrpc.client
from unittest.mock import patch

from odoo.tests import HttpCase, tagged

from .common import RealBackupCase


@tagged("post_install", "-at_install")
class TestHostileRpc(RealBackupCase, HttpCase):
    """Over XML-RPC, a Backup Manager and an Auditor write every field of the restore wizard and the browse
    list, call every public method of them, and the S3 scope fields; each is refused, nothing changes."""

    WIZARD_FIELDS = {
        "target_mode": "replace",
        "target_db": "hijacked",
        "confirm_db_name": "hijacked",
        "include_filestore": False,
        "neutralize": False,
        "new_uuid": False,
        "public_key": "AAAA",
        "backup_id": "20200101T000000Z-f00000",
        "source_location": "s3://elsewhere",
        "source_db_name": "postgres",
        "check_report": "all ok",
        "is_check_ok": True,
        "step": "checked",
        "manifest_summary": "x",
        "has_filestore": False,
    }
    WIZARD_METHODS = ("action_check", "action_refresh_check", "action_back", "action_run")

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        Wizard = cls.env["spp.backup.restore.wizard"]
        cls.wizard = Wizard.browse(cls.job.with_user(cls.restorer).action_restore()["res_id"])
        action = cls.destination.with_user(cls.restorer).action_browse_backups()
        cls.browse = cls.env["spp.backup.browse"].browse(action["res_id"])

    def rpc(self, login, model, method, *args, **kwargs):
        user = self.env["res.users"].search([("login", "=", login)])
        return self.xmlrpc_object.execute_kw(self.env.cr.dbname, user.id, login, model, method, list(args), kwargs)

    def assert_refused(self, login, model, method, *args, code=4, **kwargs):
        with self.assertRaises(xmlrpc.client.Fault) as caught:
            self.rpc(login, model, method, *args, **kwargs)
        self.assertEqual(caught.exception.faultCode, code, caught.exception.faultString)

    def test_managers_and_auditors_cannot_touch_a_restore(self):
        before = self.wizard.read(list(self.WIZARD_FIELDS))[0]
        line = self.browse.line_ids[:1]
        for login in ("sppb_manager", "sppb_auditor"):
            for name, value in self.WIZARD_FIELDS.items():
                with self.subTest(user=login, field=name):
                    self.assert_refused(login, "spp.backup.restore.wizard", "write", self.wizard.ids, {name: value})
            for method in self.WIZARD_METHODS:
                with self.subTest(user=login, method=method):
                    self.assert_refused(login, "spp.backup.restore.wizard", method, self.wizard.ids)
            with self.subTest(user=login, op="create"):
                self.assert_refused(login, "spp.backup.restore.wizard", "create", {"target_db": "x"})
            with self.subTest(user=login, op="read"):
                self.assert_refused(login, "spp.backup.restore.wizard", "read", self.wizard.ids, ["target_db"])
            for model, record in (("spp.backup.browse", self.browse), ("spp.backup.browse.line", line)):
                with self.subTest(user=login, model=model):
                    self.assert_refused(
                        login, model, "write", record.ids, {"summary" if record == self.browse else "backup_id": "x"}
                    )
            with self.subTest(user=login, method="line.action_restore"):
                self.assert_refused(login, "spp.backup.browse.line", "action_restore", line.ids)
            with self.subTest(user=login, method="copy.action_restore"):
                self.assert_refused(login, "spp.backup.job.copy", "action_restore", self.job.copy_ids[:1].ids)
        self.wizard.invalidate_recordset()
        self.assertEqual(self.wizard.read(list(self.WIZARD_FIELDS))[0], before)
        self.assertFalse(self.env["spp.backup.restore"].search([]))

    def test_the_restorer_writes_only_the_options_over_rpc(self):
        for name in ("backup_id", "source_location", "check_report", "is_check_ok", "step", "source_db_name"):
            with self.subTest(field=name):
                self.assert_refused(
                    "sppb_restorer",
                    "spp.backup.restore.wizard",
                    "write",
                    self.wizard.ids,
                    {name: self.WIZARD_FIELDS[name]},
                )
        self.rpc("sppb_restorer", "spp.backup.restore.wizard", "write", self.wizard.ids, {"neutralize": False})
        self.wizard.invalidate_recordset()
        self.assertEqual((self.wizard.neutralize, self.wizard.step), (False, "options"))

    def test_a_manager_cannot_send_a_readable_backup_or_pick_a_bucket(self):
        bucket = self.Destination.create({"name": "Bucket", "kind": "s3", "bucket": "backups-prod"})
        self.enterContext(patch.dict(os.environ, {"SPP_BACKUP_S3_BUCKETS": "backups-prod"}))
        # A ValidationError is a warning to XML-RPC (fault code 2).
        self.assert_refused(
            "sppb_manager",
            "spp.backup.policy",
            "write",
            self.policy.ids,
            {"encrypt": False, "allow_unencrypted_offsite": True, "destination_ids": [(4, bucket.id)]},
            code=2,
        )
        self.assert_refused(
            "sppb_manager", "spp.backup.destination", "write", bucket.ids, {"bucket": "attacker-bucket"}, code=2
        )
        self.assert_refused(
            "sppb_manager",
            "spp.backup.destination",
            "create",
            {"name": "Theirs", "kind": "s3", "bucket": "attacker-bucket"},
            code=2,
        )
        for name, value in (("allow_unencrypted_offsite", True), ("encrypt", False)):
            self.assert_refused("sppb_auditor", "spp.backup.policy", "write", self.policy.ids, {name: value})
        self.assert_refused("sppb_auditor", "spp.backup.destination", "write", bucket.ids, {"bucket": "x-bucket"})
        self.policy.invalidate_recordset()
        bucket.invalidate_recordset()
        self.assertEqual((self.policy.allow_unencrypted_offsite, bucket.bucket), (False, "backups-prod"))
        self.assertNotIn(bucket, self.policy.destination_ids)
