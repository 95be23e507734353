import datetime

from odoo import fields
from odoo.tests import tagged

from ..engine.core import states
from .common import RealBackupCase


@tagged("post_install", "-at_install")
class TestUnsignedPolicy(RealBackupCase):
    """A policy that does not sign says what that means for restores, and its first backup is drilled at once."""

    keep_first_drill = True

    def test_the_form_and_each_job_say_restores_take_the_guarded_path(self):
        """Sign off: the policy and each of its jobs say restores and drills take the guarded path (slower,
        refuses unknown code) and that the first backup is drilled at once; Sign on: neither says it."""
        self.assertFalse(self.policy.sign)
        note = self.policy.guarded_path_note
        for words in ("not signed", "guarded path", "slower", "refuses code it does not know", "drilled at once"):
            self.assertIn(words, note)
        self.assertEqual(self.job.signing, "unsigned")
        self.assertEqual(self.job.guarded_path_note, note)
        self.assertEqual(self.job.with_user(self.auditor).guarded_path_note, note, "the auditor reads it too")
        for model in ("spp.backup.policy", "spp.backup.job"):
            arch = self.env[model].get_views([(False, "form")])["views"]["form"]["arch"]
            self.assertIn('name="guarded_path_note"', arch, model)
        signed = self.Policy.create(
            {"name": "Signed", "destination_ids": [(6, 0, self.destination.ids)], "encrypt": False, "sign": True}
        )
        self.assertFalse(signed.guarded_path_note)
        job = self.Job.sudo().create({"policy_id": signed.id, "trigger": "schedule"})
        self.assertEqual(job.signing, "signed", "a job records whether its policy signs")
        self.assertFalse(job.guarded_path_note)
        signed.sign = False
        self.assertEqual(signed.guarded_path_note, note)
        self.assertEqual(job.signing, "signed", "a job keeps what its policy did when it was queued")
        self.assertEqual(self.Job.sudo().create({"policy_id": signed.id}).signing, "unsigned")
        signed.is_drill_scheduled = False
        self.assertIn("Drills are not scheduled", signed.guarded_path_note)
        self.assertNotIn("drilled at once, so", signed.guarded_path_note)

    def test_the_first_unsigned_backup_is_drilled_at_once(self):
        """The first successful backup of an unsigned policy queued a real drill of itself through the drill
        machinery, which passes the guarded path; the job says so."""
        drill = self.first_drill
        self.assertEqual(len(drill), 1)
        self.assertEqual(drill.trigger, "first_unsigned")
        self.assertEqual(drill.job_id, self.job)
        self.assertEqual(drill.copy_id, self.job.copy_ids[0])
        self.assertEqual(drill.state, states.QUEUED)
        self.assertEqual(drill.run_id.state, states.QUEUED)
        self.assertTrue(self.job.message_ids.filtered(lambda m: "first unsigned backup" in (m.body or "")))
        self.wait_for_run(drill)
        self.assertEqual(drill.state, states.DONE, drill.error_message or drill.report)
        self.assertTrue(drill.is_ok, drill.report)
        # The guarded path: the unsigned dump was loaded as the import role, through the SQL guard.
        self.assertIn("The dump's signature was not verified: loading it as role ", drill.log_excerpt)
        self.assertIn(" through the SQL guard", drill.log_excerpt)
        self.assertEqual(self.policy.last_drill_id, drill)

    def test_later_backups_and_signed_policies_are_not_drilled_at_once(self):
        """A second successful unsigned backup of the same policy, and a signed policy's first backup, queue no
        drill; a failed backup none either."""
        Drill = self.env["spp.backup.drill"]
        later = self.make_job(signing="unsigned")
        self.finish_run(later, states.DONE, self.fake_result("20261126T040000Z-1a7e00"))
        self.Run._cron_collect()
        self.assertEqual(later.state, states.DONE)
        self.assertEqual(Drill.search([("policy_id", "=", self.policy.id)]), self.first_drill)
        signed = self.Policy.create(
            {"name": "Signed", "destination_ids": [(6, 0, self.destination.ids)], "encrypt": False, "sign": True}
        )
        failed = self.make_job(signed, signing="signed")
        self.finish_run(failed, states.FAILED, error="disk full")
        job = self.make_job(signed, signing="signed")
        self.finish_run(job, states.DONE, self.fake_result("20261126T050000Z-519000"))
        self.Run._cron_collect()
        self.assertEqual((failed.state, job.state), (states.FAILED, states.DONE))
        self.assertFalse(Drill.search([("policy_id", "=", signed.id)]))
        unsigned = self.Policy.create(
            {"name": "Plain", "destination_ids": [(6, 0, self.destination.ids)], "encrypt": False, "sign": False}
        )
        failed = self.make_job(unsigned, signing="unsigned")
        self.finish_run(failed, states.FAILED, error="disk full")
        self.Run._cron_collect()
        self.assertFalse(Drill.search([("policy_id", "=", unsigned.id)]), "a failed backup is not drilled")
        undrilled = self.Policy.create(
            {
                "name": "No drills",
                "destination_ids": [(6, 0, self.destination.ids)],
                "encrypt": False,
                "sign": False,
                "is_drill_scheduled": False,
            }
        )
        job = self.make_job(undrilled, signing="unsigned")
        self.finish_run(job, states.DONE, self.fake_result("20261126T060000Z-0d0000"))
        self.Run._cron_collect()
        self.assertEqual(job.state, states.DONE)
        self.assertFalse(Drill.search([("policy_id", "=", undrilled.id)]), "drills are off for that policy")

    def test_a_first_unsigned_backup_met_by_a_running_drill_is_drilled_next(self):
        """While a drill of the policy runs, the first unsigned backup is not dropped: the policy's next drill is
        due at once (the drill cron's next pass takes the newest backup) and the job says so."""
        Drill = self.env["spp.backup.drill"]
        plain = self.Policy.create(
            {"name": "Busy", "destination_ids": [(6, 0, self.destination.ids)], "encrypt": False, "sign": False}
        )
        first = self.make_job(plain, signing="unsigned")
        self.finish_run(first, states.DONE, self.fake_result("20261126T070000Z-b0b000"))
        running = Drill.sudo().create({"policy_id": plain.id, "trigger": "manual"})
        self.env.cr.execute("UPDATE spp_backup_drill SET state = 'running' WHERE id = %s", (running.id,))
        running.invalidate_recordset()
        plain.next_drill = "2099-01-01 00:00:00"
        self.Run._cron_collect()
        self.assertEqual(first.state, states.DONE)
        self.assertEqual(Drill.search([("policy_id", "=", plain.id)]), running, "no second drill beside it")
        self.assertLess(plain.next_drill, fields.Datetime.now() + datetime.timedelta(minutes=1))
        self.assertTrue(first.message_ids.filtered(lambda m: "drilled once the drill running now" in (m.body or "")))
