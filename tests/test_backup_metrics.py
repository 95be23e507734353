import calendar
import datetime
import os
import re
import shutil
import tempfile
from unittest.mock import patch

from odoo import fields
from odoo.tests import HttpCase, tagged

from ..controllers.metrics import render
from ..engine.core import states
from .common import as_the_server

TOKEN = "s3cret-metrics-token"


@tagged("post_install", "-at_install")
class TestBackupMetrics(HttpCase):
    """The Prometheus endpoint: its token check and what it reports per policy."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.env = as_the_server(cls.env)
        folder = tempfile.mkdtemp(prefix="spp_backup_metrics_")
        cls.addClassCleanup(shutil.rmtree, folder, True)
        # This server may report on database "prod" and write under the temporary folder.
        cls.startClassPatcher(
            patch.dict(os.environ, {"SPP_BACKUP_BACKUP_ROOTS": folder, "SPP_BACKUP_DATABASES": "^prod$"})
        )
        cls.destination = cls.env["spp.backup.destination"].create({"name": "Disk", "path": folder})
        cls.policy = cls.env["spp.backup.policy"].create(
            {
                "name": 'Nightly "main"',
                "database": "prod",
                "destination_ids": [(6, 0, cls.destination.ids)],
                "encrypt": False,
                "rpo_hours": 24,
            }
        )
        cls.job = cls.env["spp.backup.job"].create({"policy_id": cls.policy.id, "trigger": "schedule"})
        cls.finished = fields.Datetime.now() - datetime.timedelta(hours=2)
        cls.job.write(
            {
                "state": states.DONE,
                "backup_id": "20261126T030000Z-abc123",
                "duration": 42.5,
                "total_size": 123456789,
                "finished_at": cls.finished,
            }
        )
        cls.policy.write({"last_success_at": cls.finished, "last_success_job_id": cls.job.id})

    def setUp(self):
        super().setUp()
        # The request's database is the session's: what a single-database deployment selects by itself.
        self.authenticate(None, None)
        self.env.flush_all()

    def get(self, token=None, header=True, query=None):
        headers = {"Authorization": "Bearer %s" % token} if token and header else {}
        url = "/spp_backup/metrics" + ("?token=%s" % query if query else "")
        return self.url_open(url, headers=headers)

    def test_no_token_configured_hides_the_endpoint(self):
        """Without a configured token the endpoint answers 404, whatever is sent."""
        with patch.dict(os.environ, {"SPP_BACKUP_METRICS_TOKEN": ""}):
            self.assertEqual(self.get(TOKEN).status_code, 404)

    def test_wrong_or_missing_token_is_forbidden(self):
        """With a token configured, a wrong or missing token gets 403 and no metric."""
        with patch.dict(os.environ, {"SPP_BACKUP_METRICS_TOKEN": TOKEN}):
            for response in (self.get("wrong"), self.get()):
                self.assertEqual(response.status_code, 403)
                self.assertNotIn("spp_backup_", response.text)

    def test_a_token_in_the_url_is_refused(self):
        """The right token in the query string (where access logs keep it) gets 400 and no metric."""
        with patch.dict(os.environ, {"SPP_BACKUP_METRICS_TOKEN": TOKEN}):
            for response in (self.get(query=TOKEN), self.get(TOKEN, query=TOKEN)):
                self.assertEqual(response.status_code, 400)
                self.assertIn("Authorization header", response.text)
                self.assertNotIn("spp_backup_", response.text)

    def test_metrics_content(self):
        """With the right token in the header, each active policy's gauges come in Prometheus text format."""
        with patch.dict(os.environ, {"SPP_BACKUP_METRICS_TOKEN": TOKEN}):
            response = self.get(TOKEN)
        self.assertEqual(response.status_code, 200)
        self.assertEqual(response.headers["Content-Type"], "text/plain; version=0.0.4; charset=utf-8")
        text = response.text
        labels = 'policy="Nightly \\"main\\"",database="prod"'
        samples = dict(re.findall(r"^(\w+)\{%s\} (\S+)$" % re.escape(labels), text, re.M))
        self.assertEqual(
            samples["spp_backup_last_success_timestamp_seconds"], str(calendar.timegm(self.finished.timetuple()))
        )
        self.assertEqual(float(samples["spp_backup_last_duration_seconds"]), 42.5)
        self.assertEqual(samples["spp_backup_last_size_bytes"], "123456789")
        self.assertEqual(samples["spp_backup_rpo_compliant"], "1")
        self.assertEqual(samples["spp_backup_rto_compliant"], "-1")
        self.assertEqual(samples["spp_backup_last_drill_success"], "-1")
        self.assertIn("# TYPE spp_backup_rpo_compliant gauge", text)
        self.assertTrue(text.endswith("\n"))

    def test_render_breached_policy(self):
        """A policy whose newest backup is older than its RPO reports 0 for RPO compliance."""
        self.policy.rpo_hours = 1
        line = [line for line in render(self.policy).splitlines() if line.startswith("spp_backup_rpo_compliant{")]
        self.assertEqual(line, ['spp_backup_rpo_compliant{policy="Nightly \\"main\\"",database="prod"} 0'])
