import os

from odoo.exceptions import UserError, ValidationError
from odoo.tests import tagged

from .common import BackupCase


@tagged("post_install", "-at_install")
class TestBackupDestination(BackupCase):
    def test_test_button_ok(self):
        """Test on a writable directory creates it, reports success and leaves no probe file behind."""
        path = os.path.join(self.tmp, "new", "folder")
        destination = self.Destination.create({"name": "Writable", "path": path})
        action = destination.with_user(self.manager).action_test()
        self.assertEqual(action["tag"], "display_notification")
        self.assertEqual(action["params"]["type"], "success")
        self.assertIn(path, action["params"]["message"])
        self.assertTrue(os.path.isdir(path))
        self.assertEqual(os.listdir(path), [])

    def test_test_button_impossible_path(self):
        """Test on a path below a regular file raises a UserError that names the destination and the cause."""
        blocker = os.path.join(self.tmp, "a-file")
        with open(blocker, "w", encoding="utf-8") as handle:
            handle.write("not a directory")
        destination = self.Destination.create({"name": "Impossible", "path": os.path.join(blocker, "backups")})
        with self.assertRaisesRegex(UserError, "Destination 'Impossible' cannot be used: Cannot create the directory"):
            destination.with_user(self.manager).action_test()

    def test_path_required_and_absolute(self):
        """A local destination needs an absolute directory."""
        with self.assertRaisesRegex(ValidationError, "needs a directory"):
            self.Destination.create({"name": "No path"})
        with self.assertRaisesRegex(ValidationError, "absolute path"):
            self.Destination.create({"name": "Relative", "path": "backups"})

    def test_engine_destination(self):
        """A destination turns into the engine's plain configuration."""
        config = self.destination._to_engine_destination()
        self.assertEqual((config.kind, config.path, config.name), ("local", self.destination.path, "Test disk"))
