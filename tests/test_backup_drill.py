import datetime
import hashlib
import json
import os
import shutil
from unittest.mock import patch

from odoo import fields
from odoo.exceptions import AccessError, UserError
from odoo.tests import tagged

from ..engine.core import states
from ..engine.core.human import count
from .common import RealBackupCase

CHECK_NAMES = ["signature", "checksums", "restore", "row counts", "attachments", "odoo version/modules"]


@tagged("post_install", "-at_install")
class TestBackupDrill(RealBackupCase):
    """Restore drills of a real backup, run by the worker."""

    def broken_copy(self, breaker, policy=None):
        """A done job whose only copy is a copy of the real backup set, broken by ``breaker(folder)``."""
        root = os.path.join(self.tmp, "broken-%d" % len(os.listdir(self.tmp)))
        folder = os.path.join(root, self.env.cr.dbname, self.job.backup_id)
        shutil.copytree(self.backup_dir, folder)
        breaker(folder)
        job = self.job.copy({"location": folder, "policy_id": (policy or self.policy).id})
        job.write({"state": states.DONE, "backup_id": self.job.backup_id, "finished_at": fields.Datetime.now()})
        job.copy_ids.unlink()
        job._ensure_copies()
        return job

    def assert_scratch_gone(self, drill):
        self.assertTrue(drill.scratch_db)
        self.assertFalse(self.database_exists(drill.scratch_db), "the scratch database is dropped")
        folder = os.path.join(self.env["spp.backup.engine"]._data_dir(), "filestore", drill.scratch_db)
        self.assertFalse(os.path.exists(folder), "the scratch filestore is removed")

    def test_drill_now_passes_and_measures_rto(self):
        """Drill now restores the newest backup into a scratch database, checks it, records the RTO, drops it."""
        action = self.policy.with_user(self.manager).action_drill_now()
        drill = self.env["spp.backup.drill"].browse(action["res_id"])
        self.assertEqual(drill.job_id, self.job)
        self.assertEqual(drill.trigger, "manual")
        with self.assertRaises(UserError, msg="one drill of a policy at a time"):
            self.policy.with_user(self.manager).action_drill_now()
        self.wait_for_run(drill)
        self.assertEqual(drill.state, states.DONE, drill.error_message or drill.report)
        self.assertTrue(drill.is_ok)
        self.assertEqual(drill.check_ids.mapped("name"), CHECK_NAMES)
        self.assertTrue(all(drill.check_ids.mapped("is_ok")), drill.report)
        self.assertTrue(drill.is_rto_measured)
        self.assertGreater(drill.restore_seconds, 0)
        self.assertGreaterEqual(drill.total_seconds, drill.restore_seconds)
        self.assertTrue(drill.is_cleaned_up)
        self.assertEqual(drill.verdict, "passed")
        self.assertRegex(drill.restore_time, r"^\d+(\.\d)? (s|min)")
        self.assert_scratch_gone(drill)
        self.assertEqual(self.policy.last_drill_id, drill)
        self.assertEqual(self.policy.last_drill_state, "passed")
        self.assertEqual(self.policy.rto_status, "ok")
        self.assertAlmostEqual(self.policy.rto_measured_seconds, drill.restore_seconds)
        self.assertEqual(self.policy.rto_text, "last drill restored in %s (target 4 h)" % drill.restore_time)
        self.assertTrue(drill.message_ids.filtered(lambda m: "passed" in (m.body or "")))
        # The drill's log: what it verified, restored and checked, one line each.
        log = drill.log_excerpt
        for line in (
            "Verified backup %s: signature " % self.job.backup_id,
            "Database restored in ",
            "Filestore restored: %s, " % count(self.job.filestore_files, "file"),
            "Restore took %s (the measured RTO)" % drill.restore_time,
            "Check row counts: passed (",
            "Check attachments: passed (",
            "Scratch database %s dropped" % drill.scratch_db,
        ):
            self.assertEqual(log.count(" " + line), 1, "%r once in the drill's log:\n%s" % (line, log))

    def test_drill_of_corrupt_dump_fails_and_cleans_up(self):
        """A dump that matches its manifest but does not restore fails the drill; the scratch database is dropped."""

        def corrupt(folder):
            dump = os.path.join(folder, "database.dump.zst")
            garbage = b"this is not a zstd stream" * 1000
            with open(dump, "wb") as handle:
                handle.write(garbage)
            path = os.path.join(folder, "manifest.json")
            with open(path, encoding="utf-8") as handle:
                manifest = json.load(handle)
            manifest["artifacts"]["database"].update(size=len(garbage), sha256=hashlib.sha256(garbage).hexdigest())
            with open(path, "w", encoding="utf-8") as handle:
                json.dump(manifest, handle)

        job = self.broken_copy(corrupt)
        drill = self.policy._start_drill(job=job, copy=job.copy_ids[0])
        self.wait_for_run(drill)
        self.assertEqual(drill.state, states.FAILED)
        self.assertFalse(drill.is_ok)
        checks = {check.name: check for check in drill.check_ids}
        self.assertTrue(checks["checksums"].is_ok, "the bytes match the manifest")
        self.assertFalse(checks["restore"].is_ok)
        self.assertFalse(drill.is_rto_measured)
        self.assertTrue(drill.is_cleaned_up)
        self.assertEqual(drill.verdict, "failed")
        self.assertFalse(drill.restore_time, "no RTO is shown when the restore did not complete")
        self.assert_scratch_gone(drill)
        self.assertIn("drill failed", drill.error_message)
        subtype = self.env.ref("spp_backup.mt_drill_failed")
        self.assertEqual(len(drill.message_ids.filtered(lambda m: m.subtype_id == subtype)), 1)
        alert = self.env["spp.backup.alert"].search([("policy_id", "=", self.policy.id), ("state", "=", "open")])
        self.assertEqual(alert.mapped("kind"), ["drill_failed"])
        self.assertEqual(self.policy.last_drill_state, "failed")
        self.assertEqual(self.policy.rto_status, "unknown")
        self.assertEqual(self.policy.compliance_color, 1)

    def test_drill_of_truncated_dump_fails_verification(self):
        """A truncated dump fails the checksums; nothing is restored and nothing is left behind."""

        def truncate(folder):
            dump = os.path.join(folder, "database.dump.zst")
            with open(dump, "r+b") as handle:
                handle.truncate(os.path.getsize(dump) // 2)

        job = self.broken_copy(truncate)
        drill = self.policy._start_drill(job=job, copy=job.copy_ids[0])
        self.wait_for_run(drill)
        self.assertEqual(drill.state, states.FAILED)
        checks = {check.name: check for check in drill.check_ids}
        self.assertFalse(checks["checksums"].is_ok)
        self.assertIn("database", checks["checksums"].detail)
        self.assertNotIn("restore", checks)
        self.assertTrue(drill.is_cleaned_up)
        self.assert_scratch_gone(drill)

    def test_cron_starts_due_drills_only(self):
        """The drill cron starts a drill of a due policy on its newest good copy and moves its next drill on."""
        now = fields.Datetime.now()
        self.policy.write({"next_drill": now - datetime.timedelta(minutes=5), "drill_interval_type": "weeks"})
        self.policy.next_drill = now - datetime.timedelta(minutes=5)
        idle = self.Policy.create(
            {"name": "Not due", "destination_ids": [(6, 0, self.destination.ids)], "encrypt": False}
        )
        legacy = self.Policy.create(
            {"name": "Made before drills", "destination_ids": [(6, 0, self.destination.ids)], "encrypt": False}
        )
        legacy.next_drill = False
        Drill = self.env["spp.backup.drill"]
        with patch.object(type(Drill), "_queue_run", autospec=True) as start:
            self.Policy._cron_run_drills(now=now)
        drill = Drill.search([("policy_id", "=", self.policy.id)])
        self.assertEqual(len(drill), 1)
        self.assertEqual(drill.trigger, "schedule")
        self.assertEqual(drill.job_id, self.job)
        self.assertEqual(drill._run_plan().source.backup_id, self.job.backup_id)
        self.assertEqual(start.call_count, 1)
        self.assertEqual(self.policy.next_drill, now + datetime.timedelta(weeks=1))
        self.assertFalse(Drill.search([("policy_id", "=", idle.id)]))
        self.assertGreater(idle.next_drill, now)
        self.assertEqual(legacy.next_drill, now + datetime.timedelta(weeks=1), "a policy without a next drill starts")
        self.assertFalse(Drill.search([("policy_id", "=", legacy.id)]))

    def due_pair(self):
        """This policy (a good backup) and another whose only backup set is broken, both due for a drill."""
        now = fields.Datetime.now()
        broken = self.Policy.create(
            {"name": "Broken set", "destination_ids": [(6, 0, self.destination.ids)], "encrypt": False}
        )

        def malformed(folder):
            path = os.path.join(folder, "manifest.json")
            with open(path, encoding="utf-8") as handle:
                manifest = json.load(handle)
            manifest["modules"] = 5
            with open(path, "w", encoding="utf-8") as handle:
                json.dump(manifest, handle)

        self.broken_copy(malformed, policy=broken)
        for policy in (self.policy, broken):
            policy.next_drill = now - datetime.timedelta(minutes=5)
        return broken, now

    def test_cron_drills_the_others_when_a_set_is_malformed(self):
        """A set whose manifest is malformed fails its drill in words; the other policy is drilled all the same."""
        broken, now = self.due_pair()
        Drill = self.env["spp.backup.drill"]
        self.Policy._cron_run_drills(now=now)
        failed = Drill.search([("policy_id", "=", broken.id)])
        self.assertEqual(failed.state, states.FAILED)
        self.assertIn("modules", failed.error_message)
        self.assertNotIn("Traceback", failed.error_message)
        good = Drill.search([("policy_id", "=", self.policy.id)])
        self.assertEqual(good.state, states.QUEUED)
        self.assertTrue(good.run_id)

    def test_cron_goes_on_when_a_drill_cannot_start(self):
        """An error nobody foresaw while starting one policy's drill: it is alerted, the cron goes on."""
        broken, now = self.due_pair()
        Drill = self.env["spp.backup.drill"]
        original = type(Drill)._run_plan

        def plan(drill):
            if drill.policy_id == broken:
                raise TypeError("an unforeseen error")
            return original(drill)

        with patch.object(type(Drill), "_run_plan", autospec=True, side_effect=plan):
            self.Policy._cron_run_drills(now=now)
        self.assertFalse(Drill.search([("policy_id", "=", broken.id)]), "its savepoint is rolled back")
        alert = self.env["spp.backup.alert"].search(
            [("policy_id", "=", broken.id), ("kind", "=", "drill_failed"), ("state", "=", "open")]
        )
        self.assertEqual(len(alert), 1)
        self.assertIn("could not start: an unforeseen error", alert.message)
        self.assertGreater(broken.next_drill, now, "it is not retried on every run of the cron")
        self.assertEqual(Drill.search([("policy_id", "=", self.policy.id)]).state, states.QUEUED)

    def test_drill_now_needs_manager_and_a_backup(self):
        """Auditors cannot start a drill; a policy without any backup says so instead of starting one."""
        with self.assertRaises(AccessError):
            self.policy.with_user(self.auditor).action_drill_now()
        empty = self.Policy.create(
            {"name": "Empty", "destination_ids": [(6, 0, self.destination.ids)], "encrypt": False}
        )
        with self.assertRaisesRegex(UserError, "no successful backup"):
            empty.with_user(self.manager).action_drill_now()
