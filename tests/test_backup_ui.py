import os
import shutil
import tempfile
from unittest.mock import patch

from odoo.tests import HttpCase, tagged

from ..engine.core import states
from .common import as_the_server


@tagged("post_install", "-at_install")
class TestBackupUi(HttpCase):
    """The web client in Chromium: the addon's assets load and the forms that follow a run open."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.env = as_the_server(cls.env)
        root = tempfile.mkdtemp(prefix="spp_backup_ui_")
        cls.addClassCleanup(shutil.rmtree, root, True)
        cls.startClassPatcher(patch.dict(os.environ, {"SPP_BACKUP_BACKUP_ROOTS": root}))
        destination = cls.env["spp.backup.destination"].create({"name": "Disk", "path": root})
        cls.policy = policy = cls.env["spp.backup.policy"].create(
            {
                "name": "Nightly",
                "destination_ids": [(6, 0, destination.ids)],
                "encrypt": False,
                "tz": "Africa/Nairobi",
                "time_of_day": 2.5,
            }
        )
        cls.job = cls.env["spp.backup.job"].create({"policy_id": policy.id, "trigger": "manual"})
        cls.job._queue_run()
        cls.drill = cls.env["spp.backup.drill"].create({"policy_id": policy.id, "backup_id": "20261126T030000Z-abc123"})
        cls.drill.write({"state": states.FAILED, "is_ok": False, "total_seconds": 75.0})

    def open_form_until(self, model, record_id, condition, failure):
        """Open a record's form in Chromium; pass once the JavaScript ``condition`` holds, fail after 20 s."""
        code = """
            const started = Date.now();
            (function wait() {
                if (%s) {
                    console.log('test successful');
                } else if (Date.now() - started > 20000) {
                    console.error(%r);
                } else {
                    setTimeout(wait, 100);
                }
            })();
        """ % (condition, failure)
        self.browser_js(
            "/web#model=%s&id=%d&view_type=form" % (model, record_id), code, ready="odoo.isReady", login="admin"
        )

    def test_job_and_run_forms_open_with_the_live_widget(self):
        """A queued job's form and its run's form render, with the live-follow widget, and no error in the console."""
        for model, record_id in (("spp.backup.job", self.job.id), ("spp.backup.run", self.job.run_id.id)):
            self.open_form_until(
                model,
                record_id,
                "document.querySelector('.o_form_view .o_spp_backup_run_live')",
                "the form with the live widget did not render",
            )

    def test_policy_form_shows_the_schedule_in_its_time_zone(self):
        """The Schedule tab shows the time zone beside the time of day, the schedule in words, no weekday for days."""
        self.open_form_until(
            "spp.backup.policy",
            self.policy.id,
            "document.querySelector('.o_form_view .o_row .o_field_widget[name=time_of_day] + .o_field_widget[name=tz]')"
            " && document.querySelector('.o_form_view .o_field_widget[name=tz] select')"
            " && document.querySelector('.o_form_view').textContent.includes('Every day at 02:30 (Africa/Nairobi)')"
            " && !document.querySelector('.o_form_view .o_field_widget[name=weekday]')",
            "the policy form shows no time zone beside the time of day, or not the schedule in words",
        )

    def test_drill_form_shows_its_verdict(self):
        """A failed drill's form carries a "Failed" ribbon and a human duration, not raw seconds."""
        self.open_form_until(
            "spp.backup.drill",
            self.drill.id,
            "(document.querySelector('.o_form_view .ribbon') || {textContent: ''}).textContent.includes('Failed')"
            " && document.querySelector('.o_form_view').textContent.includes('1 min 15 s')",
            "the drill form shows no Failed ribbon or no human duration",
        )
