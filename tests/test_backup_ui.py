import json
import os
import shutil
import tempfile
from unittest.mock import patch

from odoo.tests import HttpCase, tagged

from .. import compat
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
        admin = cls.env.ref("base.user_admin")
        if "tour_enabled" in admin._fields:  # Odoo 19's onboarding tours would load their own assets on the page
            admin.tour_enabled = False

    def open_form_until(self, model, record_id, conditions):
        """Open a record's form in Chromium; pass once every JavaScript condition of ``conditions`` ({what it
        means: condition}) holds; after 20 s fail, naming those that do not."""
        checks = ", ".join("[%s, () => (%s)]" % (json.dumps(what), condition) for what, condition in conditions.items())
        code = (
            """
            const started = Date.now();
            const checks = [%s];
            (function wait() {
                const holds = (check) => {
                    try {
                        return Boolean(check());
                    } catch {
                        return false;  // the form is not there yet
                    }
                };
                const failing = checks.filter(([what, check]) => !holds(check)).map(([what]) => what);
                if (!failing.length) {
                    console.log('test successful');
                } else if (Date.now() - started > 20000) {
                    console.error('The form does not show: ' + failing.join('; '));
                } else {
                    setTimeout(wait, 100);
                }
            })();
        """
            % checks
        )
        self.browser_js(compat.form_url(model, record_id), code, ready="odoo.isReady", login="admin")

    def test_job_and_run_forms_open_with_the_live_widget(self):
        """A queued job's form and its run's form render, with the live-follow widget, and no error in the console."""
        for model, record_id in (("spp.backup.job", self.job.id), ("spp.backup.run", self.job.run_id.id)):
            self.open_form_until(
                model, record_id, {"the live widget": "document.querySelector('.o_form_view .o_spp_backup_run_live')"}
            )

    def test_policy_form_shows_the_schedule_in_its_time_zone(self):
        """The Schedule tab shows the time zone beside the time of day, the schedule in words, no weekday for days."""
        form = "document.querySelector('.o_form_view')"
        self.open_form_until(
            "spp.backup.policy",
            self.policy.id,
            {
                "the time zone beside the time of day": (
                    "document.querySelector('.o_form_view .o_row .o_field_widget[name=time_of_day]"
                    " + .o_field_widget[name=tz]')"
                ),
                # A selection: a <select> on Odoo 17, a select menu (an input) on Odoo 19.
                "the time zone as a choice": "%s.querySelector('.o_field_widget[name=tz] :is(select, input)')" % form,
                "the schedule in words": "%s.textContent.includes('Every day at 02:30 (Africa/Nairobi)')" % form,
                "no weekday for a daily schedule": "!%s.querySelector('.o_field_widget[name=weekday]')" % form,
            },
        )

    def test_drill_form_shows_its_verdict(self):
        """A failed drill's form carries a "Failed" ribbon and a human duration, not raw seconds."""
        self.open_form_until(
            "spp.backup.drill",
            self.drill.id,
            {
                "a Failed ribbon": (
                    "(document.querySelector('.o_form_view .ribbon') || {textContent: ''})"
                    ".textContent.includes('Failed')"
                ),
                "the duration in words": "document.querySelector('.o_form_view').textContent.includes('1 min 15 s')",
            },
        )
