import json
import os

from odoo.tests import tagged

from ..engine.core import states
from .common import BackupCase

BACKUP_IDS = (
    "20260101T030000Z-aaaaaa",
    "20260102T030000Z-bbbbbb",
    "20260103T030000Z-cccccc",
    "20260104T030000Z-dddddd",
)


@tagged("post_install", "-at_install")
class TestBackupRetention(BackupCase):
    """The retention preview: a dry run of the policy's rules on each destination."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.db_dir = os.path.join(cls.destination.path, cls.policy.database)
        for backup_id in BACKUP_IDS:
            cls.write_set(backup_id, cls.policy._backup_owner())

    @classmethod
    def write_set(cls, backup_id, owner):
        """A set as the engine leaves it, its manifest naming the policy that made it."""
        folder = os.path.join(cls.db_dir, backup_id)
        os.makedirs(folder)
        with open(os.path.join(folder, "manifest.json"), "w", encoding="utf-8") as handle:
            json.dump({"backup_id": backup_id, "owner": owner}, handle)

    def preview(self):
        action = self.policy.with_user(self.manager).action_preview_retention()
        self.assertEqual((action["res_model"], action["target"]), ("spp.backup.retention.preview", "new"))
        return self.env["spp.backup.retention.preview"].browse(action["res_id"]).report

    def test_preview_shows_keep_and_delete_without_deleting(self):
        """keep_last 2 over four backups: the two newest kept, two would be deleted, all four still there."""
        self.policy.keep_last = 2
        report = self.preview()
        self.assertIn("Test disk", report)
        self.assertIn("keep 2, would delete 2", report)
        self.assertIn("keep    %s" % BACKUP_IDS[-1], report)
        self.assertIn("delete   %s" % BACKUP_IDS[0], report)
        self.assertEqual(sorted(os.listdir(self.db_dir)), list(BACKUP_IDS), "a preview deletes nothing")

    def test_preview_keeps_the_newest_verified_backup(self):
        """A backup whose copy verified OK at this destination is kept as the newest verified one."""
        job = self.make_job()
        job.write({"state": states.DONE, "backup_id": BACKUP_IDS[0]})
        self.env["spp.backup.job.copy"].create(
            {
                "job_id": job.id,
                "destination_id": self.destination.id,
                "location": os.path.join(self.db_dir, BACKUP_IDS[0]),
                "verify_state": "ok",
            }
        )
        self.policy.keep_last = 1
        report = self.preview()
        self.assertIn("keep    %s  (newest verified)" % BACKUP_IDS[0], report)
        self.assertIn("keep 2, would delete 2", report)

    def test_sets_of_another_policy_are_left_alone(self):
        """Another policy of the same database and destination: its sets are neither kept nor deleted here."""
        other = self.policy.copy({"name": "Other policy"})
        self.write_set("20250101T030000Z-eeeeee", other._backup_owner())
        self.policy.keep_last = 1
        report = self.preview()
        self.assertIn("keep 1, would delete 3", report)
        self.assertIn("1 set(s) of other policies left alone", report)
        self.assertNotIn("20250101T030000Z-eeeeee", report)

    def test_preview_without_rules_deletes_nothing(self):
        """With every rule at 0 the preview says the policy keeps everything."""
        report = self.preview()
        self.assertIn("keeps all its backups and deletes nothing", report)
        self.assertIn("would delete 0", report)

    def test_preview_of_an_unreadable_destination_is_a_sentence(self):
        """A destination that cannot be read is named in the preview with the reason; the others are shown."""
        blocker = os.path.join(self.tmp, "blocker")
        with open(blocker, "w", encoding="utf-8") as handle:
            handle.write("a file")
        broken = self.Destination.create({"name": "Broken disk", "path": os.path.join(blocker, "below")})
        self.policy.write({"destination_ids": [(4, broken.id)], "keep_last": 3})
        report = self.preview()
        self.assertIn("keep 3, would delete 1", report)
        self.assertIn("Broken disk", report)
        self.assertNotIn("Traceback", report)
