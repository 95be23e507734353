import base64
import contextlib
import datetime
import json
import logging
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
import threading
from unittest.mock import patch

from odoo import SUPERUSER_ID, api
from odoo.tests import HttpCase, new_test_user, tagged
from odoo.tests.common import ChromeBrowser

from .. import compat
from ..engine.core import states
from ..engine.db import pg
from ..engine.io import crypto
from ..engine.service.protocol import write_pitr_status
from .common import ADDON_DIR, work_queued

_logger = logging.getLogger(__name__)

TOUR = "spp_backup_first_week"
# What the tour logs on the console to ask the test for something (static/tests/tours/first_week.js).
SIGNAL = "spp_backup_tour:"
SCREENSHOTS = (
    "00_pitr_server",
    "00_pitr_restore_to_a_second",
    "01_destination_tested",
    "02_policy_encryption",
    "03_signing_key_made",
    "04_back_up_now",
    "05_job_queued",
    "06_job_done",
    "07_job_verified",
    "08_restore_wizard",
    "09_restore_checking",
    "10_restore_checked",
    "11_restore_done",
    "12_drill_passed",
    "13_dashboard",
)


class TourWorker:
    """The backup worker of the tour: runs what is queued when the tour asks, while the page stays open.

    A worker process could not see this test's uncommitted transaction, so
    this thread executes the queued runs in it, through a test cursor: the
    same cursor the browser's requests use, taken in turn with them (the
    requests wait while a run executes). The forms the tour watches are not
    reloaded: they must follow the run by themselves.
    """

    def __init__(self, registry, on_round=None):
        self.registry = registry
        self.on_round = on_round
        self.wanted = threading.Event()
        self.stopping = False
        self.rounds = 0
        self.errors = []
        self.thread = threading.Thread(target=self._loop, name="spp_backup tour worker", daemon=True)

    def start(self):
        self.thread.start()

    def stop(self):
        self.stopping = True
        self.wanted.set()
        self.thread.join(timeout=600)

    def _loop(self):
        threading.current_thread().dbname = self.registry.db_name
        threading.current_thread().testing = True
        while True:
            self.wanted.wait()
            self.wanted.clear()
            if self.stopping:
                return
            try:
                with self.registry.cursor() as cr:
                    work_queued(api.Environment(cr, SUPERUSER_ID, {}))
                self.rounds += 1
            except Exception as exc:  # reported by the test once the tour is over
                _logger.exception("The tour's worker failed")
                self.errors.append("%s: %s" % (type(exc).__name__, exc))
            if self.on_round:
                self.on_round(self.rounds)


@tagged("post_install", "-at_install")
class TestBackupTour(HttpCase):
    """An administrator's first week, in Chromium, through the web client only.

    A dedicated user with Backup Manager and Backup Restore (no Settings)
    adds and tests a local destination, makes the first policy encrypted to
    an age key made on the command line as the policy form says, backs up
    now and watches the job reach Done, verifies it, restores it into a new
    database, drills the policy and reads the dashboard. Screenshots of each
    step are written to $SPP_BACKUP_SCREENSHOTS (default .tmp/screenshots in
    the repository), in odoo17/first_week/ or odoo19/first_week/.
    """

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.root = tempfile.mkdtemp(prefix="spp_backup_tour_")
        cls.addClassCleanup(shutil.rmtree, cls.root, True)
        cls.folder = os.path.join(cls.root, "backups")
        os.makedirs(cls.folder)
        # The key pair is made on the host that restores (here, this server), as the policy form says.
        cls.identity = os.path.join(cls.root, "identity.txt")
        made = cls.engine_cli("--json", "keys", "age", "--out", cls.identity)
        if made.returncode:
            raise RuntimeError("spp-backup keys age failed: %s" % made.stderr)
        cls.recipient = json.loads(made.stdout)["public_key"]
        # odoo.conf names the server's signing key file; the administrator makes the key from the UI.
        os.makedirs(os.path.join(cls.root, "keys"))
        cls.signing_key_file = os.path.join(cls.root, "keys", "signing.pem")
        cls.startClassPatcher(
            patch.dict(
                os.environ,
                {
                    "SPP_BACKUP_BACKUP_ROOTS": cls.root,
                    "SPP_BACKUP_IDENTITY_FILE": cls.identity,
                    "SPP_BACKUP_SIGNING_KEY_FILE": cls.signing_key_file,
                },
            )
        )
        cls.user = new_test_user(
            cls.env,
            login="spp_backup_admin",
            name="Backup Administrator",
            groups="base.group_user,spp_backup.group_backup_manager,spp_backup.group_backup_restore",
        )
        cls.screenshot_dir = os.path.join(
            os.environ.get("SPP_BACKUP_SCREENSHOTS") or os.path.join(ADDON_DIR, ".tmp", "screenshots"),
            "odoo%d" % compat.SERIES,
            "first_week",
        )

    @classmethod
    def engine_cli(cls, *args, env=None):
        """The spp-backup command (python -m engine, from the addon's folder), its output captured."""
        return subprocess.run(
            [sys.executable, "-m", "engine", *args],
            cwd=ADDON_DIR,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )

    # ------------------------------------------------------------ browser

    def on_signal(self, browser, what):
        """What the tour asks on the console: a screenshot, or that the worker runs what is queued."""
        if what == "work":
            self.browser = browser
            self.worker.wanted.set()
        elif what.startswith("screenshot "):
            self.take_screenshot(browser, what.split(" ", 1)[1])
        else:
            self.signal_errors.append("unknown signal from the tour: %r" % what)

    def worker_round_done(self, rounds):
        """Tell the page how many rounds the worker has done (Odoo 19's tour waits for it; 17's reads nothing)."""
        self.browser._websocket_send(
            "Runtime.evaluate", params={"expression": "document.body.dataset.sppTourWorked = %d" % rounds}
        )

    def take_screenshot(self, browser, name):
        """Save the page as <name>.png, then tell the tour (which waits for it) that it is saved."""
        path = os.path.join(self.screenshot_dir, "%s.png" % name)

        def saved(future):
            try:
                with open(path, "wb") as handle:
                    handle.write(base64.b64decode(future.result(timeout=0)["data"], validate=True))
                self.screenshots.append(path)
            except Exception as exc:  # the missing file fails the test below
                self.signal_errors.append("screenshot %s: %s" % (name, exc))
            browser._websocket_send(
                "Runtime.evaluate", params={"expression": "document.body.dataset.sppTourShot = %s" % json.dumps(name)}
            )

        browser._websocket_send("Page.captureScreenshot", with_future=True).add_done_callback(saved)

    def browser_hooks(self):
        """Chrome's console messages reach the test too (Odoo's own handling, errors failing the tour, stays);
        the page is laid out at the class's browser size (headless Chromium may open a smaller window)."""
        original = ChromeBrowser._handle_console
        original_navigate = ChromeBrowser.navigate_to
        test = self
        # "1366x768" (Odoo 19's browser writes it back as "1366,768").
        width, height = (int(size) for size in re.split("[x,]", self.browser_size))

        def navigate_to(browser, url, wait_stop=False):
            browser._websocket_request(
                "Emulation.setDeviceMetricsOverride",
                params={"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
            )
            return original_navigate(browser, url, wait_stop=wait_stop)

        def handle_console(browser, type, args=None, stackTrace=None, **kw):  # noqa: A002 - Chrome's name
            text = str(browser._from_remoteobject(args[0])) if args else ""
            original(browser, type, args=args, stackTrace=stackTrace, **kw)
            if type == "log" and text.startswith(SIGNAL):
                test.on_signal(browser, text[len(SIGNAL) :])

        stack = contextlib.ExitStack()
        stack.enter_context(patch.object(ChromeBrowser, "_handle_console", handle_console))
        stack.enter_context(patch.object(ChromeBrowser, "navigate_to", navigate_to))
        return stack

    def run_tour(self, values):
        """Run the tour with ``values`` in window.sppBackupTour, as start_tour does, with the worker beside it."""
        url = compat.WEB_CLIENT_URL
        code = "window.sppBackupTour = %s; odoo.startTour(%s, %s)" % (
            json.dumps(values),
            json.dumps(TOUR),
            json.dumps({"stepDelay": 0, "keepWatchBrowser": False, "startUrl": url}),
        )
        self.worker = TourWorker(self.registry, on_round=self.worker_round_done)
        self.worker.start()
        try:
            with self.browser_hooks():
                self.start_tour(url, TOUR, code=code, login=self.user.login, timeout=1200)
        finally:
            self.worker.stop()
            self.env.invalidate_all()
            _logger.info("Screenshots of the tour: %s", ", ".join(self.screenshots) or "none")
        self.assertEqual(self.worker.errors, [], "the tour's worker failed")
        self.assertEqual(self.signal_errors, [])

    # -------------------------------------------------------------- test

    def test_first_week(self):
        """Destination, first encrypted policy, backup to Done, verify, restore, drill, dashboard; then decrypt."""
        os.makedirs(self.screenshot_dir, exist_ok=True)
        for name in os.listdir(self.screenshot_dir):
            if name.endswith(".png"):
                os.unlink(os.path.join(self.screenshot_dir, name))
        self.screenshots, self.signal_errors = [], []
        db = self.env.cr.dbname
        restore_db = "%s_tour_restored" % db
        engine = self.env["spp.backup.engine"]
        self.addCleanup(shutil.rmtree, os.path.join(engine._data_dir(), "filestore", restore_db), True)
        self.addCleanup(pg.drop_database, engine._pg(), restore_db)

        # The worker's report of the server it protects continuously (engine.pitr.service.PitrService.status).
        now = datetime.datetime.now(datetime.timezone.utc)
        self.env.flush_all()
        write_pitr_status(
            self.env.cr,
            {
                "system_id": 7400000000000000003,
                "server": "registry-db:5432",
                "receiver": {"receiving": True, "archive_behind_seconds": 2.0, "slot_status": "reserved"},
                "destinations": {
                    "/srv/backups/pitr": {
                        "ranges": [
                            [
                                (now - datetime.timedelta(days=6)).strftime("%Y-%m-%dT%H:%M:%SZ"),
                                (now - datetime.timedelta(seconds=2)).strftime("%Y-%m-%dT%H:%M:%SZ"),
                            ]
                        ],
                        "error": None,
                    }
                },
                "databases": [db],
            },
        )
        self.run_tour(
            {
                "pitrServer": "registry-db:5432",
                "destination": "Backup disk",
                "path": self.folder,
                "policy": "First policy",
                "database": db,
                "recipient": self.recipient,
                "restoreDb": restore_db,
            }
        )

        self.assertEqual(
            sorted(os.path.basename(path)[:-4] for path in self.screenshots),
            sorted(SCREENSHOTS),
            "every screenshot of the tour was written",
        )
        for path in self.screenshots:
            self.assertGreater(os.path.getsize(path), 10_000, "%s holds a page" % path)
        # What the clicks made, as recorded by the server.
        destination = self.env["spp.backup.destination"].search([("name", "=", "Backup disk")])
        self.assertEqual((destination.kind, destination.path), ("local", self.folder))
        self.assertEqual(destination.create_uid, self.user, "made by the administrator in the browser")
        policy = self.env["spp.backup.policy"].search([("name", "=", "First policy")])
        self.assertEqual(policy.destination_ids, destination)
        self.assertTrue(policy.encrypt)
        self.assertEqual(policy._recipient_lines(), [self.recipient])
        self.assertTrue(policy.sign, "a new policy signs when odoo.conf names a key file")
        self.assertEqual(stat.S_IMODE(os.stat(self.signing_key_file).st_mode), 0o600, "made by the server, 0600")
        signing_public = crypto.public_key_text(crypto.load_signing_key(self.signing_key_file).public_key())
        self.assertEqual(policy.signing_public_key, signing_public)
        job = self.env["spp.backup.job"].search([("policy_id", "=", policy.id)])
        self.assertEqual(len(job), 1)
        self.assertEqual(
            (job.state, job.trigger, job.user_id, job.verify_state), (states.DONE, "manual", self.user, "ok")
        )
        restore = self.env["spp.backup.restore"].search([("job_id", "=", job.id)])
        self.assertEqual((restore.state, restore.target_db, restore.is_replace), (states.DONE, restore_db, False))
        self.assertTrue(pg.database_exists(engine._pg(), restore_db))
        drill = self.env["spp.backup.drill"].search([("policy_id", "=", policy.id)])
        self.assertEqual((drill.state, drill.is_ok, drill.verdict), (states.DONE, True, "passed"))
        self.assertEqual((policy.state, policy.last_drill_state), ("ok", "passed"))
        self.assertEqual(self.worker.rounds, 5, "backup, verification, check, restore and drill: one round each")

        # The backup is readable with the identity only: decrypted to its end with it, refused without it.
        location = job.copy_ids.location.strip()
        with_identity = self.engine_cli(
            "--json", "verify", location, "--deep", "--identity", self.identity, "--verify-key", signing_public
        )
        report = json.loads(with_identity.stdout)
        self.assertTrue(report["ok"], with_identity.stdout + with_identity.stderr)
        self.assertEqual(report["signature"], "valid (Ed25519)", "signed with the key the dialog made")
        self.assertEqual(job.copy_ids.signature, "valid (Ed25519)")
        self.assertEqual(len(report["checks"]), 3)
        for check in report["checks"]:
            self.assertTrue(check["ok"], check)
            self.assertIn("decrypts and decompresses", check["message"])
        without = dict(os.environ)
        without.pop("SPP_BACKUP_IDENTITY_FILE")
        without_identity = self.engine_cli("--json", "verify", location, "--deep", env=without)
        self.assertFalse(json.loads(without_identity.stdout)["ok"], "without the identity nothing decrypts")
        self.assertEqual(without_identity.returncode, 2)
