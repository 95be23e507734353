import os
import shutil
import tempfile
from unittest.mock import patch

from odoo.tests import HttpCase, tagged


@tagged("post_install", "-at_install")
class TestBackupUi(HttpCase):
    """The web client in Chromium: the addon's assets load and the forms that follow a run open."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        root = tempfile.mkdtemp(prefix="spp_backup_ui_")
        cls.addClassCleanup(shutil.rmtree, root, True)
        cls.startClassPatcher(patch.dict(os.environ, {"SPP_BACKUP_BACKUP_ROOTS": root}))
        destination = cls.env["spp.backup.destination"].create({"name": "Disk", "path": root})
        policy = cls.env["spp.backup.policy"].create(
            {"name": "Nightly", "destination_ids": [(6, 0, destination.ids)], "encrypt": False}
        )
        cls.job = cls.env["spp.backup.job"].create({"policy_id": policy.id, "trigger": "manual"})
        cls.job._queue_run()

    def test_job_and_run_forms_open_with_the_live_widget(self):
        """A queued job's form and its run's form render, with the live-follow widget, and no error in the console."""
        for model, record_id in (("spp.backup.job", self.job.id), ("spp.backup.run", self.job.run_id.id)):
            code = """
                const started = Date.now();
                (function wait() {
                    if (document.querySelector('.o_form_view .o_spp_backup_run_live')) {
                        console.log('test successful');
                    } else if (Date.now() - started > 20000) {
                        console.error('the form with the live widget did not render');
                    } else {
                        setTimeout(wait, 100);
                    }
                })();
            """
            self.browser_js(
                "/web#model=%s&id=%d&view_type=form" % (model, record_id), code, ready="odoo.isReady", login="admin"
            )
