import json
import os
import threading
from unittest.mock import patch

from odoo import SUPERUSER_ID, api, fields
from odoo.exceptions import UserError
from odoo.tests import tagged

from ..engine.core import plans, states
from ..engine.service import protocol as run_protocol
from .common import BackupCase, as_the_server

BEING_RECORDED = "being recorded right now: refresh in a moment"
RACES = 50


@tagged("post_install", "-at_install")
class TestBackupCollect(BackupCase):
    """The collector records every finished run once, whatever one of them raises."""

    def make_checking_wizard(self, env=None):
        """A restore wizard whose check run the worker has just finished (done, not recorded yet)."""
        env = env or self.env
        destination = env["spp.backup.destination"].browse(self.destination.id)
        wizard = env["spp.backup.restore.wizard"]._server_create(
            {
                "destination_id": destination.id,
                "source_db_name": env.cr.dbname,
                "backup_id": "20260101T000000Z-abc123",
                "target_db": "%s_collect" % env.cr.dbname[:40],
            }
        )
        run = env["spp.backup.run"]._queue(plans.VERIFY, plans.VerifyPlan(), wizard)
        run.write(
            {
                "state": states.DONE,
                "result": json.dumps({"reports": [{"error": "the set is gone"}]}),
                "started_at": fields.Datetime.now(),
                "finished_at": fields.Datetime.now(),
            }
        )
        wizard.sudo().write({"step": "checking", "check_run_id": run.id})
        return wizard

    def test_run_whose_apply_raises_is_failed_in_words_and_the_next_ones_are_recorded(self):
        """A wizard's check whose recording raises: its run is failed in words (apply_error), the wizard says so
        without a traceback, the job after it is recorded in the same pass, and the broken run is never retried."""
        wizard = self.make_checking_wizard()
        job = self.make_job()
        self.finish_run(job, states.DONE, self.fake_result("20261126T040000Z-900d00"))
        calls = []

        def broken(record, run):
            calls.append(run.id)
            raise AttributeError("'spp.backup.restore.wizard' object has no attribute 'state'")

        Wizard = type(self.env["spp.backup.restore.wizard"])
        with patch.object(Wizard, "_apply_run", broken), self.assertLogs(level="ERROR"):
            self.Run._cron_collect()
        run = wizard.check_run_id
        self.assertEqual(calls, [run.id])
        self.assertTrue(run.is_applied)
        self.assertEqual(run.state, states.FAILED)
        self.assertIn("The result of this run could not be recorded: AttributeError", run.apply_error)
        self.assertEqual((wizard.step, wizard.is_check_ok), ("checked", False))
        self.assertIn("could not be recorded", wizard.check_report)
        self.assertNotIn("Traceback", wizard.check_report)
        self.assertEqual((job.state, job.backup_id), (states.DONE, "20261126T040000Z-900d00"))
        self.assertTrue(job.run_id.is_applied)
        with patch.object(Wizard, "_apply_run", broken):
            self.Run._cron_collect()
            wizard.action_refresh_check()
        self.assertEqual(len(calls), 1, "a run that could not be recorded is not tried on every pass")

    def test_collector_records_a_wizard_check_without_touching_fields_it_lacks(self):
        """A wizard's finished check is recorded by the collector: the wizard has no state, and nothing asks for one."""
        wizard = self.make_checking_wizard()
        self.Run._cron_collect()
        self.assertTrue(wizard.check_run_id.is_applied)
        self.assertFalse(wizard.check_run_id.apply_error)
        self.assertEqual((wizard.step, wizard.is_check_ok), ("checked", False))
        self.assertIn("the set is gone", wizard.check_report)


@tagged("post_install", "-at_install")
class TestBackupCollectConcurrency(BackupCase):
    """The collector and a person's Refresh in two real transactions, on rows committed for the test.

    What is committed here (a destination, wizards, runs) is removed again at the end.
    """

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        path = os.path.join(cls.tmp, "race")
        os.makedirs(path)
        with cls.registry.cursor() as cr:
            env = as_the_server(api.Environment(cr, SUPERUSER_ID, {}))
            cls.race_destination_id = env["spp.backup.destination"].create({"name": "Race", "path": path}).id
            cls.race_policy_id = (
                env["spp.backup.policy"]
                .create(
                    {
                        "name": "Race",
                        "destination_ids": [(6, 0, [cls.race_destination_id])],
                        "encrypt": False,
                        "is_drill_scheduled": False,
                    }
                )
                .id
            )
        cls.addClassCleanup(cls.remove_committed)

    @classmethod
    def remove_committed(cls):
        with cls.registry.cursor() as cr:
            cr.execute("SELECT id FROM spp_backup_job WHERE policy_id = %s", (cls.race_policy_id,))
            jobs = [row[0] for row in cr.fetchall()]
            cr.execute("UPDATE spp_backup_policy SET last_job_id = NULL WHERE id = %s", (cls.race_policy_id,))
            cr.execute("DELETE FROM spp_backup_run WHERE policy_id = %s", (cls.race_policy_id,))
            cr.execute("DELETE FROM spp_backup_job WHERE id = ANY(%s)", (jobs,))
            cr.execute("DELETE FROM spp_backup_alert WHERE policy_id = %s", (cls.race_policy_id,))
            for model, ids in (("spp.backup.job", jobs), ("spp.backup.policy", [cls.race_policy_id])):
                cr.execute("DELETE FROM mail_activity WHERE res_model = %s AND res_id = ANY(%s)", (model, ids))
                cr.execute("DELETE FROM mail_followers WHERE res_model = %s AND res_id = ANY(%s)", (model, ids))
                cr.execute("DELETE FROM mail_message WHERE model = %s AND res_id = ANY(%s)", (model, ids))
            cr.execute("DELETE FROM spp_backup_policy WHERE id = %s", (cls.race_policy_id,))
            cr.execute(
                "DELETE FROM spp_backup_run WHERE res_model = 'spp.backup.restore.wizard' AND res_id IN "
                "(SELECT id FROM spp_backup_restore_wizard WHERE destination_id = %s)",
                (cls.race_destination_id,),
            )
            cr.execute("DELETE FROM spp_backup_restore_wizard WHERE destination_id = %s", (cls.race_destination_id,))
            cr.execute("DELETE FROM spp_backup_destination WHERE id = %s", (cls.race_destination_id,))

    def committed_wizard(self):
        """(wizard id, run id): a restore wizard whose check run is done and not recorded, committed."""
        with self.registry.cursor() as cr:
            env = as_the_server(api.Environment(cr, SUPERUSER_ID, {}))
            wizard = env["spp.backup.restore.wizard"]._server_create(
                {
                    "destination_id": self.race_destination_id,
                    "source_db_name": cr.dbname,
                    "backup_id": "20260101T000000Z-abc123",
                    "target_db": "%s_race" % cr.dbname[:40],
                }
            )
            # Written as the worker leaves it (not queued: a committed queued run would start a one-shot worker).
            run = env["spp.backup.run"].create(
                {
                    "action": "verify",
                    "plan": "{}",
                    "res_model": wizard._name,
                    "res_id": wizard.id,
                    "state": states.DONE,
                    "result": json.dumps({"reports": [{"error": "the set is gone"}]}),
                    "finished_at": fields.Datetime.now(),
                }
            )
            wizard.write({"step": "checking", "check_run_id": run.id})
            return wizard.id, run.id

    def committed_state(self, wizard_id, run_id):
        with self.registry.cursor() as cr:
            cr.execute("SELECT state, is_applied, apply_error FROM spp_backup_run WHERE id = %s", (run_id,))
            state, is_applied, apply_error = cr.fetchone()
            cr.execute("SELECT step FROM spp_backup_restore_wizard WHERE id = %s", (wizard_id,))
            return (state, bool(is_applied), apply_error), cr.fetchone()[0]

    def refresh(self, cr, wizard_id):
        env = api.Environment(cr, SUPERUSER_ID, {})
        return env["spp.backup.restore.wizard"].browse(wizard_id).action_refresh_check()

    def test_refresh_while_the_collector_holds_the_run_says_so(self):
        """Refresh while the collector records the same run (its row lock held): a sentence at once, no wait."""
        wizard_id, run_id = self.committed_wizard()
        with self.registry.cursor() as collector, self.registry.cursor() as person:
            collector.execute("SELECT id FROM spp_backup_run WHERE id = %s FOR UPDATE", (run_id,))
            with self.assertRaises(UserError) as caught:
                self.refresh(person, wizard_id)
            self.assertIn(BEING_RECORDED, caught.exception.args[0])
            person.rollback()
            collector.rollback()
        self.assertEqual(self.committed_state(wizard_id, run_id), ((states.DONE, False, None), "checking"))

    def test_job_refresh_while_the_collector_holds_its_run_says_so_and_the_due_cron_passes(self):
        """A backup job's Refresh while the collector records its run: the same sentence; the due-policies cron,
        which records its jobs' results too, passes over that run without an error and sees the job busy."""
        with self.registry.cursor() as cr:
            env = as_the_server(api.Environment(cr, SUPERUSER_ID, {}))
            job = env["spp.backup.job"].create({"policy_id": self.race_policy_id, "trigger": "schedule"})
            run = env["spp.backup.run"].create(
                {
                    "action": "backup",
                    "plan": "{}",
                    "res_model": job._name,
                    "res_id": job.id,
                    "policy_id": self.race_policy_id,
                    "state": states.FAILED,
                    "error_message": "disk full",
                    "finished_at": fields.Datetime.now(),
                }
            )
            job.write({"run_id": run.id, "state": states.RUNNING})
            job_id = job.id
        with self.registry.cursor() as collector, self.registry.cursor() as person:
            collector.execute("SELECT id FROM spp_backup_run WHERE id = %s FOR UPDATE", (run.id,))
            env = api.Environment(person, SUPERUSER_ID, {})
            with self.assertRaises(UserError) as caught:
                env["spp.backup.job"].browse(job_id).action_refresh()
            self.assertIn(BEING_RECORDED, caught.exception.args[0])
            person.rollback()
            with self.assertNoLogs(level="WARNING"):
                self.assertTrue(env["spp.backup.policy"].browse(self.race_policy_id)._is_busy())
            person.rollback()
            collector.rollback()
        with self.registry.cursor() as person:
            env = api.Environment(person, SUPERUSER_ID, {})
            env["spp.backup.job"].browse(job_id).action_refresh()
            job = env["spp.backup.job"].browse(job_id)
            self.assertEqual((job.state, job.error_message), (states.FAILED, "disk full"))

    def test_refresh_after_the_collector_recorded_it_under_its_snapshot_says_so(self):
        """The collector records the run after Refresh's transaction began: a sentence, not a serialization error;
        the next Refresh shows the checks."""
        wizard_id, run_id = self.committed_wizard()
        with self.registry.cursor() as person:
            person.execute("SELECT step FROM spp_backup_restore_wizard WHERE id = %s", (wizard_id,))  # its snapshot
            with self.registry.cursor() as collector:
                as_the_server(api.Environment(collector, SUPERUSER_ID, {}))["spp.backup.run"]._cron_collect()
            with self.assertRaises(UserError) as caught:
                self.refresh(person, wizard_id)
            self.assertIn(BEING_RECORDED, caught.exception.args[0])
            person.rollback()
        with self.registry.cursor() as person:
            self.refresh(person, wizard_id)
        self.assertEqual(self.committed_state(wizard_id, run_id), ((states.DONE, True, None), "checked"))

    def test_refresh_racing_the_collector_fifty_times(self):
        """Refresh and "Backup: Collect results" started together on the same finished check, 50 times: each
        either records it or says it is being recorded, never a traceback; the run is recorded once."""
        outcomes = {"recorded": 0, "being recorded": 0}
        with self.assertNoLogs(level="ERROR"):
            self.race(outcomes)
        self.assertEqual(sum(outcomes.values()), RACES)
        print("Refresh racing the collector: %s" % outcomes)

    def race(self, outcomes):
        for _race in range(RACES):
            wizard_id, run_id = self.committed_wizard()
            self.assertEqual(self.race_once(wizard_id, outcomes), [])
            run, step = self.committed_state(wizard_id, run_id)
            self.assertEqual(run, (states.DONE, True, None))
            self.assertEqual(step, "checked")

    def race_once(self, wizard_id, outcomes):
        """The collector and a Refresh on ``wizard_id`` in two threads started together; what went wrong."""
        start = threading.Barrier(2, timeout=30)
        errors = []

        def collect():
            try:
                with self.registry.cursor() as cr:
                    start.wait()
                    as_the_server(api.Environment(cr, SUPERUSER_ID, {}))["spp.backup.run"]._cron_collect()
            except Exception as exc:  # what the cron would log
                errors.append("collector: %s: %s" % (type(exc).__name__, exc))

        def refresh():
            try:
                with self.registry.cursor() as cr:
                    start.wait()
                    self.refresh(cr, wizard_id)
                    outcomes["recorded"] += 1
            except UserError as exc:
                if BEING_RECORDED not in exc.args[0]:
                    errors.append("refresh: %s" % exc.args[0])
                outcomes["being recorded"] += 1
            except Exception as exc:  # what would reach the person as a traceback
                errors.append("refresh: %s: %s" % (type(exc).__name__, exc))

        threads = [threading.Thread(target=collect), threading.Thread(target=refresh)]
        # Odoo 19 runs the tests while holding the registry class's lock, which api.Environment takes to find
        # the registry: the threads would wait for the end of the test run.
        with patch.object(type(self.registry), "_lock", threading.RLock()):
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(60)
        if any(thread.is_alive() for thread in threads):
            errors.append("a race did not end within 60 s")
        return errors

    def test_reaping_a_run_that_finished_under_the_collectors_snapshot_is_quiet(self):
        """A run its worker finishes after the collector's snapshot is not a dead run: the reap gives way without
        an error in the log, and on a new snapshot the run is seen done and recorded."""
        wizard_id, run_id = self.committed_wizard()
        with self.registry.cursor() as cr:
            cr.execute("UPDATE spp_backup_run SET state = 'running', finished_at = NULL WHERE id = %s", (run_id,))
        with self.registry.cursor() as worker, self.registry.cursor() as cron:
            worker.execute("SELECT pg_advisory_lock(%s, %s)", (run_protocol.RUN_LOCK_CLASS, run_id))
            worker.commit()
            Run = as_the_server(api.Environment(cron, SUPERUSER_ID, {}))["spp.backup.run"]
            cron.execute("SELECT state FROM spp_backup_run WHERE id = %s", (run_id,))
            self.assertEqual(cron.fetchone()[0], states.RUNNING)
            worker.execute("UPDATE spp_backup_run SET state = 'done', finished_at = now() WHERE id = %s", (run_id,))
            worker.commit()
            worker.execute("SELECT pg_advisory_unlock(%s, %s)", (run_protocol.RUN_LOCK_CLASS, run_id))
            with self.assertNoLogs(level="WARNING"):
                self.assertIsNone(Run._reap_dead_runs())
                Run._cron_collect()
            cron.rollback()
            self.assertEqual(Run._reap_dead_runs(), [], "on a new snapshot the run is seen done")
        self.assertEqual(self.committed_state(wizard_id, run_id)[0][0], states.DONE)
        with self.registry.cursor() as cron:
            as_the_server(api.Environment(cron, SUPERUSER_ID, {}))["spp.backup.run"]._cron_collect()
        self.assertEqual(self.committed_state(wizard_id, run_id), ((states.DONE, True, None), "checked"))
