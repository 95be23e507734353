import copy
import os
from unittest.mock import patch

from odoo.exceptions import UserError
from odoo.tests import tagged

from ..engine.core import states
from ..engine.io import crypto
from .common import S3BackupCase


@tagged("post_install", "-at_install")
class TestS3Destination(S3BackupCase):
    """The Test button of S3 destinations against a real S3 server."""

    def test_test_button_ok(self):
        """Test on a reachable bucket writes, reads back and deletes a probe and says whether Object Lock is on."""
        destination = self.s3_destination("Offsite", self.make_bucket("probe-bucket"))
        action = destination.with_user(self.manager).action_test()
        self.assertEqual(action["params"]["type"], "success")
        self.assertIn("s3://probe-bucket/odoo/test", action["params"]["message"])
        self.assertIn("Object Lock is not enabled", action["params"]["message"])
        self.assertNotIn("Contents", self.s3_client.list_objects_v2(Bucket="probe-bucket"), "no probe left behind")
        locked = self.s3_destination(
            "Locked",
            self.make_bucket("locked-bucket", object_lock=True),
            object_lock_mode="governance",
            object_lock_days=1,
        )
        self.assertIn("Object Lock is available", locked.with_user(self.manager).action_test()["params"]["message"])

    def test_test_button_missing_bucket(self):
        """A bucket that does not exist is a UserError naming the destination and the bucket."""
        destination = self.s3_destination("Nowhere", "no-such-bucket")
        with self.assertRaisesRegex(
            UserError, "Destination 'Nowhere' cannot be used: The S3 bucket 'no-such-bucket' does not exist"
        ):
            destination.with_user(self.manager).action_test()

    def test_object_lock_on_a_bucket_without_it(self):
        """Object Lock configured on a bucket created without it is refused by Test, in words."""
        destination = self.s3_destination(
            "Unlockable", self.make_bucket("plain-bucket"), object_lock_mode="compliance", object_lock_days=7
        )
        with self.assertRaisesRegex(UserError, "does not have Object Lock enabled"):
            destination.with_user(self.manager).action_test()


@tagged("post_install", "-at_install")
class TestOffsiteBackup(S3BackupCase):
    """A real backup by the worker to a local directory and an S3 bucket, encrypted and signed."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        secret, cls.public = crypto.generate_identity()
        cls.identity_file = os.path.join(cls.tmp, "identity.txt")
        with open(cls.identity_file, "w", encoding="utf-8") as handle:
            handle.write("# offline key\n%s\n" % secret)
        cls.signing_key_file = os.path.join(cls.tmp, "signing.pem")
        cls.signing_public = crypto.write_signing_key(cls.signing_key_file)
        cls.patch_environ(
            {"SPP_BACKUP_SIGNING_KEY_FILE": cls.signing_key_file, "SPP_BACKUP_IDENTITY_FILE": cls.identity_file}
        )
        cls.bucket = cls.s3_destination("Offsite bucket", cls.make_bucket("offsite-bucket"))
        cls.policy.write(
            {
                "destination_ids": [(6, 0, (cls.destination | cls.bucket).ids)],
                "encrypt": True,
                "age_recipients": cls.public,
                "sign": True,
                "keep_last": 3,
            }
        )
        wizard = cls.env["spp.backup.run.now"].with_user(cls.manager).create({"policy_id": cls.policy.id})
        cls.job = cls.Job.browse(wizard.action_confirm()["res_id"])

    def setUp(self):
        super().setUp()
        self.wait_for_run(self.job)

    def test_two_copies_encrypted_signed_and_verified(self):
        """Both copies are stored, encrypted and signed; Verify reads each back (S3 from the bucket) and decrypts."""
        job = self.job
        self.assertEqual(job.state, states.DONE, job.error_message)
        self.assertEqual(job.copy_ids.mapped("state"), ["ok", "ok"])
        self.assertEqual(job.copy_ids.mapped("destination_id"), self.destination | self.bucket)
        s3_copy = job.copy_ids[1]
        self.assertEqual(s3_copy.location, "s3://offsite-bucket/odoo/test/%s/%s" % (self.env.cr.dbname, job.backup_id))
        keys = [o["Key"] for o in self.s3_client.list_objects_v2(Bucket="offsite-bucket")["Contents"]]
        prefix = "odoo/test/%s/%s/" % (self.env.cr.dbname, job.backup_id)
        self.assertIn(prefix + "manifest.json", keys)
        self.assertIn(prefix + "manifest.sig", keys)
        self.assertIn(prefix + "database.dump.zst.age", keys)
        local = job.copy_ids[0].location
        self.assertTrue(os.path.isfile(os.path.join(local, "filestore.tar.zst.age")))
        self.assertIn("keep    %s" % job.backup_id, job.retention_report)

        job.with_user(self.manager).action_verify()

        self.work()
        self.assertEqual(job.verify_state, "ok", job.verify_report)
        self.assertEqual(job.copy_ids.mapped("verify_state"), ["ok", "ok"])
        self.assertEqual(job.copy_ids.mapped("signature"), ["valid (Ed25519)", "valid (Ed25519)"])
        self.assertIn("decrypts and decompresses", s3_copy.verify_report)
        self.assertIn("deep check", s3_copy.verify_report)
        self.assertIn("s3://offsite-bucket", job.verify_report)
        self.assertIn(job.backup_id, self.policy._to_engine_plan().verified_ids)

    def test_backups_signed_before_the_key_was_replaced_still_verify(self):
        """A manager replaces the server's key: the stored backup still verifies, and the next one signs anew."""
        self.assertEqual(self.job.state, states.DONE, self.job.error_message)
        with open(self.signing_key_file, "rb") as handle:
            original = handle.read()

        def put_back():
            with open(self.signing_key_file, "wb") as handle:
                handle.write(original)

        self.addCleanup(put_back)
        dialog = self.env["spp.backup.signing"].with_user(self.manager).create({})
        self.assertEqual(dialog.public_key, self.signing_public)
        self.policy._to_engine_plan()  # the server records the key it signs with
        dialog.action_make_key()
        self.assertNotEqual(self.policy.signing_public_key, self.signing_public)
        self.job.with_user(self.manager).action_verify()
        self.work()
        self.assertEqual(self.job.verify_state, "ok", self.job.verify_report)
        self.assertEqual(self.job.copy_ids.mapped("signature"), ["valid (Ed25519)", "valid (Ed25519)"])

    def test_wrong_signing_key_fails_verification_on_the_policy(self):
        """Verified against another public key, both copies fail and the policy shows the failed verification."""
        self.assertEqual(self.job.state, states.DONE, self.job.error_message)
        self.assertEqual(self.policy.last_success_job_id, self.job)
        self.assertEqual(self.policy.signing_public_key, self.signing_public)
        self.enterContext(patch.dict(os.environ, {"SPP_BACKUP_VERIFY_KEY": crypto.generate_signing_key()[1]}))
        self.job.with_user(self.manager).action_verify()
        self.work()
        self.assertEqual(self.job.verify_state, states.FAILED)
        self.assertEqual(self.job.copy_ids.mapped("signature"), ["BAD", "BAD"])
        self.assertEqual(self.policy.state, "verify_failed")
        posted = self.job.message_ids.filtered(lambda m: m.subtype_id == self.env.ref("spp_backup.mt_verify_failed"))
        self.assertIn("signature", posted[0].body)

    def test_failed_copy_keeps_the_good_copy_verifiable(self):
        """A run whose S3 copy failed is partly done, while its local copy is listed as stored and verifies."""
        self.assertEqual(self.job.state, states.DONE, self.job.error_message)
        partial = self.make_job(plan_destination_ids=self.job.plan_destination_ids)
        result = copy.deepcopy(self.worker_result)
        result["copies"][1].update(ok=False, error="S3 failed to upload part 2: connection reset")
        result["locations"] = [result["copies"][0]["location"]]
        error = "The backup was stored, but 1 of 2 copies failed: %s" % result["copies"][1]["error"]
        self.finish_run(partial, states.FAILED, result, error=error)
        partial._collect()
        self.assertEqual(partial.state, states.PARTIAL)
        self.assertEqual(partial.error_message, error)
        self.assertEqual(partial.copy_ids.mapped("state"), ["ok", states.FAILED])
        partial.with_user(self.manager).action_verify()
        self.work()
        self.assertEqual(partial.copy_ids[0].verify_state, "ok", partial.verify_report)
        self.assertEqual(partial.copy_ids[1].verify_state, "not_verified", "a failed copy is not verified")
        self.assertEqual(partial.verify_state, "ok")

    @property
    def worker_result(self):
        return self.job.run_id._result_data()

    def test_bucket_gone_is_named_and_the_local_copy_is_made(self):
        """A bucket deleted after the destination was tested: the next run names it and still stores the local
        copy (copies are independent), so the job is partly done."""
        self.assertEqual(self.job.state, states.DONE, self.job.error_message)
        doomed = self.s3_destination("Doomed", self.make_bucket("doomed-bucket"))
        doomed.with_user(self.manager).action_test()
        self.s3_client.delete_bucket(Bucket="doomed-bucket")
        self.policy.destination_ids = [(4, doomed.id)]
        wizard = self.env["spp.backup.run.now"].with_user(self.manager).create({"policy_id": self.policy.id})
        job = self.Job.browse(wizard.action_confirm()["res_id"])
        self.wait_for_run(job)
        self.assertEqual(job.state, states.PARTIAL)
        self.assertIn("bucket 'doomed-bucket' does not exist", job.error_message)
        self.assertNotIn("Traceback", job.log_excerpt or "")
        self.assertTrue(job.has_stored_copy)
        stored = job.copy_ids.filtered(lambda c: c.state == "ok")
        self.assertEqual(stored.destination_id, self.policy.destination_ids - doomed)
        self.assertIn("doomed-bucket", job.copy_ids.filtered(lambda c: c.state != "ok").error)
