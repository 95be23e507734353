import hashlib
import json
import os
import stat
from pathlib import Path

from odoo.exceptions import AccessError, UserError
from odoo.tests import tagged

from ..engine.core import states
from ..engine.formats import packstore
from .common import BackupCase


@tagged("post_install", "-at_install")
class TestIncrementalPolicy(BackupCase):
    """A policy with *Only new files*: each night's backup stores the attachment files its destination lacks."""

    def add_file(self, data_dir, content):
        sha1 = hashlib.sha1(content).hexdigest()  # noqa: S324 - Odoo's own naming
        folder = os.path.join(data_dir, "filestore", self.env.cr.dbname, sha1[:2])
        os.makedirs(folder, exist_ok=True)
        with open(os.path.join(folder, sha1), "wb") as handle:
            handle.write(content)

    def backup(self, policy, data_dir):
        wizard = self.env["spp.backup.run.now"].with_user(self.manager).create({"policy_id": policy.id})
        job = self.Job.browse(wizard.action_confirm()["res_id"])
        self.work(data_dir=data_dir)
        self.assertEqual(job.state, states.DONE, job.error_message)
        return job

    def test_new_policies_keep_only_new_files_and_restore_offers_the_filestore(self):
        """New policies default to the store; the second night stores only the new file, the job says so, the
        store key is made in the worker's data directory readable by its owner only, and the restore wizard
        offers the filestore of such a set."""
        policy = self.Policy.with_user(self.manager).create(
            {
                "name": "Incremental",
                "destination_ids": [(6, 0, self.destination.ids)],
                "time_of_day": 3.0,
                "tz": "UTC",
                "encrypt": False,
            }
        )
        self.assertTrue(policy.incremental_filestore)
        self.assertTrue(policy._to_engine_plan().incremental_filestore)
        self.assertIsNone(policy._to_engine_plan().store_key_file, "the worker names its own key file")
        data_dir = os.path.join(self.tmp, "worker-data")
        for index in range(3):
            self.add_file(data_dir, os.urandom(5000 + index))
        first = self.backup(policy, data_dir)
        key_file = os.path.join(data_dir, "spp_backup", "store.key")
        self.assertEqual(stat.S_IMODE(os.stat(key_file).st_mode), 0o600)
        location = first.location.strip()
        manifest = json.loads(Path(location, "manifest.json").read_text(encoding="utf-8"))
        self.assertIn("filelist", manifest["artifacts"])
        self.assertNotIn("filestore", manifest["artifacts"])
        self.assertEqual(first.filestore_files, 3)
        self.assertEqual(first.filestore_sha256, manifest["artifacts"]["filelist"]["sha256"])
        self.assertIn("Filestore at 'Test disk': 3 files, 14.7 KiB; 3 files new in the store", first.log_excerpt)

        self.add_file(data_dir, os.urandom(7000))
        second = self.backup(policy, data_dir)
        self.assertEqual(second.filestore_files, 4)
        self.assertIn("; 1 file new in the store", second.log_excerpt)
        self.assertIn("3 files already there", second.log_excerpt)
        info = json.loads(Path(second.location.strip(), packstore.STORE_SET_NAME).read_text(encoding="utf-8"))
        self.assertEqual(info["new_files"], 1)

        action = second.with_user(self.restorer).action_restore()
        wizard = self.env["spp.backup.restore.wizard"].with_user(self.restorer).browse(action["res_id"])
        self.assertTrue(wizard.has_filestore)
        self.assertTrue(wizard.include_filestore)
        self.assertIn("filestore: 4 files", wizard.manifest_summary)
        self.assertIn("in the destination's store", wizard.manifest_summary)

    def test_an_unticked_policy_writes_the_whole_archive(self):
        """*Only new files* unticked: the filestore is one archive in every backup, as before."""
        data_dir = os.path.join(self.tmp, "worker-data-full")
        self.add_file(data_dir, os.urandom(3000))
        self.assertFalse(self.policy.incremental_filestore)
        job = self.backup(self.policy, data_dir)
        self.assertTrue(os.path.isfile(os.path.join(job.location.strip(), "filestore.tar.zst")))
        self.assertFalse(os.path.exists(os.path.join(data_dir, "spp_backup", "store.key")))

    def test_only_managers_change_the_setting_and_a_hostile_file_list_set_is_refused_in_words(self):
        """Over RPC only a Backup Manager writes *Only new files* (tracked); the plan a run carries holds no store
        key nor a path to one; a copied set whose manifest lies about the filestore gets a sentence."""
        for user in (self.internal, self.auditor, self.restorer):
            with self.assertRaises(AccessError, msg=user.login):
                self.policy.with_user(user).write({"incremental_filestore": True})
        self.assertFalse(self.policy.incremental_filestore)
        self.policy.with_user(self.manager).write({"incremental_filestore": True})
        self.env.flush_all()
        self.env.cr.precommit.run()  # what a commit does first: the tracking message is posted
        self.policy.invalidate_recordset(["message_ids"])
        tracked = self.policy.message_ids.tracking_value_ids.filtered(
            lambda value: value.field_id.name == "incremental_filestore"
        )
        self.assertTrue(tracked)

        data_dir = os.path.join(self.tmp, "worker-data-hostile")
        self.add_file(data_dir, os.urandom(4000))
        job = self.backup(self.policy, data_dir)
        key = Path(data_dir, "spp_backup", "store.key").read_text(encoding="ascii").strip()
        plan = json.dumps(job.run_id._plan_data())
        self.assertNotIn(key, plan)
        self.assertNotIn("store_key", plan.replace('"store_key_file": null', ""))
        for text in (job.log_excerpt, job.warnings or "", "\n".join(job.message_ids.mapped("body"))):
            self.assertNotIn(key, text)

        manifest_path = Path(job.location.strip(), "manifest.json")
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        manifest["filestore"]["bytes"] = "lots"
        manifest_path.write_text(json.dumps(manifest), encoding="utf-8")
        with self.assertRaisesRegex(UserError, "filestore bytes is not a count"):
            job.with_user(self.restorer).action_restore()
