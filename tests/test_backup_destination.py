import os
import shutil
import tempfile
from unittest.mock import patch

from odoo.exceptions import AccessError, UserError, ValidationError
from odoo.tests import tagged

from ..engine.service import protocol as run_protocol
from .common import BackupCase


@tagged("post_install", "-at_install")
class TestBackupDestination(BackupCase):
    def test_test_button_ok(self):
        """Test on an existing writable directory reports success and leaves no probe file behind."""
        path = os.path.join(self.tmp, "new", "folder")
        os.makedirs(path)
        destination = self.Destination.create({"name": "Writable", "path": path})
        action = destination.with_user(self.manager).action_test()
        self.assertEqual(action["tag"], "display_notification")
        self.assertEqual(action["params"]["type"], "success")
        self.assertIn(path, action["params"]["message"])
        self.assertEqual(os.listdir(path), [])

    def test_test_button_says_a_folder_is_missing(self):
        """Test on a folder that does not exist says so and creates nothing (an unmounted disk stays empty)."""
        path = os.path.join(self.tmp, "nas", "backups")
        destination = self.Destination.create({"name": "NAS", "path": path})
        with self.assertRaisesRegex(UserError, "Destination 'NAS' cannot be used: The folder .* does not exist"):
            destination.with_user(self.manager).action_test()
        self.assertFalse(os.path.exists(path))
        blocker = os.path.join(self.tmp, "a-file")
        with open(blocker, "w", encoding="utf-8") as handle:
            handle.write("not a directory")
        destination = self.Destination.create({"name": "Impossible", "path": os.path.join(blocker, "backups")})
        with self.assertRaisesRegex(UserError, "Destination 'Impossible' cannot be used: The folder"):
            destination.with_user(self.manager).action_test()

    def test_folder_outside_backup_roots_is_refused(self):
        """A local destination outside backup_roots (here /etc) is refused with the setting to change."""
        for path in ("/etc", "/etc/../var/lib/odoo", self.tmp + "/../elsewhere"):
            with self.assertRaisesRegex(ValidationError, "outside the folders this server may write backups to"):
                self.Destination.with_user(self.manager).create({"name": "System", "path": path})
        with self.assertRaisesRegex(ValidationError, "backup_roots"):
            self.destination.with_user(self.manager).write({"path": "/etc"})
        link = os.path.join(self.tmp, "link-to-etc")
        os.symlink("/etc", link)
        with self.assertRaisesRegex(ValidationError, "outside the folders"):
            self.Destination.with_user(self.manager).create({"name": "Link", "path": link})

    def test_s3_endpoint_must_be_allowed(self):
        """An S3 endpoint that odoo.conf does not list is refused; a listed one is accepted."""
        values = {"name": "Elsewhere", "kind": "s3", "bucket": "good-bucket", "endpoint_url": "http://10.9.9.9:9000"}
        with self.assertRaisesRegex(ValidationError, "s3_endpoints"):
            self.Destination.with_user(self.manager).create(values)
        with patch.dict(os.environ, {"SPP_BACKUP_S3_ENDPOINTS": "https://a.example, http://10.9.9.9:9000/"}):
            self.assertTrue(self.Destination.with_user(self.manager).create(values))

    def test_s3_bucket_must_be_allowed_when_listed(self):
        """With s3_buckets in odoo.conf, a Backup Manager names only those buckets, on create and on write."""
        values = {"name": "Theirs", "kind": "s3", "bucket": "someone-elses-bucket"}
        with patch.dict(os.environ, {"SPP_BACKUP_S3_BUCKETS": "backups-prod\nbackups-dr"}):
            with self.assertRaisesRegex(ValidationError, "s3_buckets"):
                self.Destination.with_user(self.manager).create(values)
            ours = self.Destination.with_user(self.manager).create(dict(values, bucket="backups-dr"))
            # (the savepoint stands for the request, rolled back with its error)
            with self.assertRaisesRegex(ValidationError, "not among the buckets"), self.env.cr.savepoint():
                ours.write({"bucket": "someone-elses-bucket"})
        ours.invalidate_recordset()
        self.assertEqual(ours.bucket, "backups-dr")

    def test_folders_in_use_before_the_upgrade_stay_usable(self):
        """At upgrade, an existing local destination outside backup_roots is approved (with a warning), not broken."""
        old = os.path.join(tempfile.mkdtemp(prefix="spp_backup_old_"), "backups")
        os.makedirs(old)
        self.addCleanup(shutil.rmtree, os.path.dirname(old), True)
        self.env.cr.execute(
            "INSERT INTO spp_backup_destination (name, kind, path, active, sse, addressing_style, object_lock_mode, "
            "object_lock_days, part_size_mb) VALUES ('Old disk', 'local', %s, true, 'none', 'auto', 'none', 0, 16) "
            "RETURNING id",
            (old,),
        )
        legacy = self.Destination.browse(self.env.cr.fetchone()[0])
        with self.assertLogs("odoo.addons.spp_backup.models.backup_destination", level="WARNING") as logs:
            approved = self.Destination._approve_existing_folders()
        self.assertEqual(approved, legacy)
        self.assertIn("backup_roots", logs.output[0])
        self.assertTrue(legacy.is_path_approved)
        self.assertEqual(legacy._approved_paths(), [old])
        legacy._check_scope()
        # The worker reads the approval from the row the server wrote, not from a plan.
        self.env.flush_all()
        self.assertEqual(run_protocol.approved_folders(self.env.cr), [old])
        with self.assertRaisesRegex(AccessError, "Approved folder.*the server records these"):
            legacy.with_user(self.manager).write({"is_path_approved": True, "approved_path": "/etc"})

    def test_path_required_and_absolute(self):
        """A local destination needs an absolute directory."""
        with self.assertRaisesRegex(ValidationError, "needs a directory"):
            self.Destination.create({"name": "No path"})
        for path in ("backups", "./backups", "~user/../backups"):
            with self.assertRaisesRegex(ValidationError, "relative path: give the destination as an absolute folder"):
                self.Destination.create({"name": "Relative", "path": path})
        for url in ("http://example.com/backups", "ftp://host/backups", "file:/var/backups"):
            with self.assertRaisesRegex(ValidationError, "not a destination this engine can use"):
                self.Destination.create({"name": "URL", "path": url})
        with self.assertRaisesRegex(ValidationError, "absolute folder"):
            self.Destination.create({"name": "S3 in a folder field", "path": "s3://bucket/odoo"})

    def test_engine_destination(self):
        """A destination turns into the engine's plain configuration."""
        config = self.destination._to_engine_destination()
        self.assertEqual((config.kind, config.path, config.name), ("local", self.destination.path, "Test disk"))

    def test_s3_fields_constraints(self):
        """S3 destinations need a valid bucket, a clean prefix and endpoint, sane part size; Object Lock needs days."""
        base = {"name": "Bucket", "kind": "s3"}
        with self.assertRaisesRegex(ValidationError, "needs a bucket"):
            self.Destination.create(base)
        with self.assertRaisesRegex(ValidationError, "not a valid S3 bucket name"):
            self.Destination.create(dict(base, bucket="My_Bucket"))
        with self.assertRaisesRegex(ValidationError, "cannot contain"):
            self.Destination.create(dict(base, bucket="good-bucket", prefix="odoo/../etc"))
        with self.assertRaisesRegex(ValidationError, "must start with https://"):
            self.Destination.create(dict(base, bucket="good-bucket", endpoint_url="minio:9000"))
        with self.assertRaisesRegex(ValidationError, "must not contain credentials"):
            self.Destination.create(dict(base, bucket="good-bucket", endpoint_url="https://key:secret@minio:9000"))
        with self.assertRaisesRegex(ValidationError, "between 5 and 5120"):
            self.Destination.create(dict(base, bucket="good-bucket", part_size_mb=1))
        with self.assertRaisesRegex(ValidationError, "at least 1"):
            self.Destination.create(dict(base, bucket="good-bucket", object_lock_mode="compliance"))
        with self.assertRaisesRegex(ValidationError, "only for S3"):
            self.Destination.create(
                {"name": "Disk", "path": self.tmp, "object_lock_mode": "governance", "object_lock_days": 3}
            )
        with self.assertRaisesRegex(ValidationError, "names a KMS key"):
            self.Destination.create(dict(base, bucket="good-bucket", sse="AES256", sse_kms_key_id="arn:aws:kms:x"))
        ok = self.Destination.create(
            dict(base, bucket="good-bucket", object_lock_mode="governance", object_lock_days=30)
        )
        self.assertEqual(ok.where, "s3://good-bucket")

    def test_s3_engine_destination(self):
        """An S3 destination turns into the engine's configuration, 'none'/'auto' choices as empty strings."""
        self.enterContext(patch.dict(os.environ, {"SPP_BACKUP_S3_ENDPOINTS": "https://minio.example.org:9000"}))
        destination = self.Destination.create(
            {
                "name": "Offsite",
                "kind": "s3",
                "endpoint_url": "https://minio.example.org:9000",
                "region": "eu-west-1",
                "bucket": "openspp-backups",
                "prefix": "/odoo/prod/",
                "storage_class": "STANDARD_IA",
                "sse": "aws:kms",
                "sse_kms_key_id": "alias/backups",
                "addressing_style": "path",
                "profile": "backups",
                "object_lock_mode": "compliance",
                "object_lock_days": 30,
                "part_size_mb": 64,
            }
        )
        config = destination._to_engine_destination()
        self.assertEqual(
            (config.kind, config.bucket, config.prefix, config.endpoint_url, config.region),
            ("s3", "openspp-backups", "odoo/prod", "https://minio.example.org:9000", "eu-west-1"),
        )
        self.assertEqual(
            (config.sse, config.sse_kms_key_id, config.storage_class), ("aws:kms", "alias/backups", "STANDARD_IA")
        )
        self.assertEqual((config.addressing_style, config.profile), ("path", "backups"))
        self.assertEqual(
            (config.object_lock_mode, config.object_lock_days, config.part_size_mb), ("compliance", 30, 64)
        )
        destination.write(
            {"sse": "none", "sse_kms_key_id": False, "addressing_style": "auto", "object_lock_mode": "none"}
        )
        config = destination._to_engine_destination()
        self.assertEqual(
            (config.sse, config.addressing_style, config.object_lock_mode, config.object_lock_days), ("", "", "", 0)
        )
        credentials = [name for name in self.Destination._fields if "secret" in name or "access_key" in name]
        self.assertEqual(credentials, [], "S3 credentials are never fields of a destination")
        self.assertEqual(destination.where, "s3://openspp-backups/odoo/prod (https://minio.example.org:9000)")
