import calendar
import datetime
import json
import os
import xmlrpc.client
from unittest.mock import patch

from odoo import fields
from odoo.exceptions import AccessError, UserError
from odoo.tests import HttpCase, tagged
from odoo.tests.common import new_test_user

from ..controllers.metrics import render
from ..engine.core import plans, states
from ..engine.service.protocol import write_pitr_status
from .common import BackupCase

ARCHIVE = "/srv/backups/pitr"
OFFSITE = "s3://ministry/pitr"


def iso(moment):
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class PitrCase(BackupCase):
    """A server whose continuous protection the worker reports, as engine.pitr.service.PitrService.status()
    writes it (the worker's own function writes the row)."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.now = fields.Datetime.now().replace(microsecond=0)
        cls.start = cls.now - datetime.timedelta(days=3)
        cls.end = cls.now - datetime.timedelta(seconds=20)
        cls.settings_admin = new_test_user(
            cls.env, login="sppb_settings", groups="base.group_user,base.group_system,spp_backup.group_backup_manager"
        )
        cls.report({})
        cls.server = cls.env["spp.backup.pitr.server"].search([("system_id", "=", "7400000000000000001")])

    @classmethod
    def status(cls, problems=(), receiving=True, ranges=None, databases=None):
        ranges = [[iso(cls.start), iso(cls.end)]] if ranges is None else ranges
        return {
            "system_id": 7400000000000000001,
            "server": "127.0.0.1:5432",
            "receiver": {
                "receiving": receiving,
                "archive_behind_seconds": 1.5,
                "receive_lag_bytes": 0,
                "slot_status": "reserved",
                "slot_retained_bytes": 16777216,
            },
            "destinations": {
                ARCHIVE: {"ranges": ranges, "gaps": [], "problems": [], "databases": [], "error": None},
                OFFSITE: {"ranges": [], "error": "the endpoint does not answer"},
            },
            "databases": [cls.env.cr.dbname, "postgres"] if databases is None else databases,
            "standbys": [
                {
                    "name": "replica1",
                    "client": "10.0.0.7",
                    "state": "streaming",
                    "sync_state": "async",
                    "sent_lag_bytes": 0,
                    "replay_lag_bytes": 8192,
                    "replay_lag_seconds": 0.4,
                    "visible": True,
                }
            ],
            "problems": list(problems),
        }

    @classmethod
    def report(cls, changes):
        status = cls.status()
        status.update(changes)
        cls.env.flush_all()
        written = write_pitr_status(cls.env.cr, status)
        cls.env.invalidate_all()
        return written

    def open_wizard(self, user=None):
        action = self.server.with_user(user or self.restorer).action_restore_to_second()
        return self.env["spp.backup.pitr.restore.wizard"].with_user(user or self.restorer).browse(action["res_id"])


class TestPitrServer(PitrCase):
    def test_the_workers_report_becomes_one_record_per_server(self):
        self.assertEqual(len(self.server), 1)
        self.assertEqual(self.server.state, "ok")
        self.assertEqual((self.server.window_start, self.server.window_end), (self.start, self.end))
        self.assertIn("%s: any second from" % ARCHIVE, self.server.window_text)
        self.assertIn("%s: cannot be read (the endpoint does not answer)" % OFFSITE, self.server.window_text)
        self.assertEqual(self.server.databases_text, "%s, postgres" % self.env.cr.dbname)
        # A second report updates the same record.
        self.report({"problems": ["the archive is 400 s behind the server (limit 300 s)"]})
        self.assertEqual(self.env["spp.backup.pitr.server"].search_count([]), 1)
        self.assertEqual(self.server.state, "problem")
        self.assertIn("400 s behind", self.server.problem_text)

    def test_standbys_and_the_last_drill_are_on_the_record_and_everything_in_the_metrics(self):
        self.assertIn("replica1 (10.0.0.7): streaming, async, replays 8.0 KiB behind, 0.4 s", self.server.standbys_text)
        self.report({"standbys": []})
        self.assertEqual(self.server.standbys_text, "none streams from this server")
        self.report({"problems": ["standby replica1: it replays 90.0 s behind"]})
        text = render(self.env["spp.backup.policy"], self.server, fields.Datetime.now())
        samples = dict(line.rsplit(" ", 1) for line in text.splitlines() if not line.startswith("#"))
        labels = 'server="127.0.0.1:5432",system_id="7400000000000000001"'
        self.assertEqual(samples["spp_backup_pitr_receiving{%s}" % labels], "1")
        self.assertEqual(samples["spp_backup_pitr_archive_behind_seconds{%s}" % labels], "1.5")
        self.assertEqual(samples["spp_backup_pitr_problems{%s}" % labels], "1")
        end = calendar.timegm(self.end.timetuple())
        self.assertEqual(samples["spp_backup_pitr_window_end_timestamp_seconds{%s}" % labels], str(end))
        standby = '%s,standby="replica1",client="10.0.0.7"' % labels
        self.assertEqual(samples["spp_backup_standby_replay_lag_bytes{%s}" % standby], "8192")
        self.assertEqual(samples["spp_backup_standby_streaming{%s}" % standby], "1")
        self.assertFalse(self.server.last_drill_id)
        # An archive that vouches for no recent second yet is not "0 s behind".
        self.report({"receiver": {"receiving": True}})
        self.assertEqual(self.server.behind_text, "unknown: the archive vouches for no recent second yet")
        text = render(self.env["spp.backup.policy"], self.server)
        self.assertIn("spp_backup_pitr_archive_behind_seconds{%s} -1.0" % labels, text)

    def test_times_are_shown_in_the_users_time_zone(self):
        shown = self.server.with_context(tz="Asia/Manila")
        shown.invalidate_recordset()
        local = (self.start + datetime.timedelta(hours=8)).strftime("%Y-%m-%d %H:%M:%S")
        self.assertIn("from %s PST" % local, shown.window_text)

    def test_a_silent_worker_is_an_alert_and_a_report_resolves_it(self):
        Alert = self.env["spp.backup.alert"]
        self.policy.database = self.env.cr.dbname
        later = fields.Datetime.now() + datetime.timedelta(minutes=6)
        self.env["spp.backup.pitr.server"]._check_alerts(later)
        alert = Alert.search([("policy_id", "=", self.policy.id), ("kind", "=", "pitr"), ("state", "=", "open")])
        self.assertEqual(len(alert), 1)
        self.assertIn("has not reported on continuous protection", alert.message)
        # One alert per incident: the next check raises nothing new.
        self.env["spp.backup.pitr.server"]._check_alerts(later)
        self.assertEqual(Alert.search_count([("policy_id", "=", self.policy.id), ("kind", "=", "pitr")]), 1)
        self.report({})
        self.env["spp.backup.pitr.server"]._check_alerts()
        self.assertEqual(alert.state, "resolved")

    def test_a_reported_problem_alerts_the_policies_of_the_servers_databases_only(self):
        self.policy.database = self.env.cr.dbname
        lost = "the replication slot is lost: WAL the archive lacks may be gone (a gap)"
        Alert = self.env["spp.backup.alert"]
        # The server's base backups hold other databases only: this policy's database is not on it.
        self.report({"problems": [lost], "databases": ["postgres", "registry"]})
        self.env["spp.backup.policy"]._cron_check_objectives()
        self.assertFalse(Alert.search([("kind", "=", "pitr")]))
        self.report({"problems": [lost]})
        self.env["spp.backup.policy"]._cron_check_objectives()
        alerts = Alert.search([("kind", "=", "pitr"), ("state", "=", "open")])
        self.assertEqual(alerts.policy_id, self.policy)
        self.assertIn("slot is lost", alerts.message)

    def test_two_servers_holding_the_database_make_one_alert_and_a_server_that_no_longer_holds_it_resolves_it(
        self,
    ):
        self.policy.database = self.env.cr.dbname
        Alert = self.env["spp.backup.alert"]
        self.report({"problems": ["the archive is 400 s behind the server (limit 300 s)"]})
        other = dict(self.status(problems=["pg_receivewal is not running: connection refused"]), system_id=99)
        other["server"] = "new-cluster:5432"
        self.env.flush_all()
        write_pitr_status(self.env.cr, other)
        self.env.invalidate_all()
        for _round in range(2):
            self.env["spp.backup.pitr.server"]._check_alerts()
        alert = Alert.search([("kind", "=", "pitr")])
        self.assertEqual(len(alert), 1, "one alert for the policy, not one per server and pass")
        self.assertIn("400 s behind", alert.message)
        self.assertIn("new-cluster:5432: pg_receivewal is not running", alert.message)
        # Neither server holds the policy's database any more: the alert is resolved, not left open.
        self.report({"databases": ["postgres"]})
        self.env.flush_all()
        write_pitr_status(self.env.cr, dict(other, databases=["postgres"]))
        self.env.invalidate_all()
        self.env["spp.backup.pitr.server"]._check_alerts()
        self.assertEqual(alert.state, "resolved")
        self.assertIn("No protected server holds", alert.resolution)

    def test_continuous_protection_configured_but_never_reported_is_an_alert(self):
        self.server.sudo().unlink()
        self.env["spp.backup.pitr.server"]._check_alerts()
        self.assertFalse(self.env["spp.backup.alert"].search([("kind", "=", "pitr")]), "not configured: no alert")
        with patch.dict(os.environ, {"SPP_BACKUP_PITR_DESTINATIONS": ARCHIVE}):
            self.env["spp.backup.pitr.server"]._check_alerts()
        alert = self.env["spp.backup.alert"].search([("kind", "=", "pitr"), ("policy_id", "=", self.policy.id)])
        self.assertIn("no worker has ever reported", alert.message)

    def test_nobody_makes_changes_or_copies_a_server_record(self):
        for user in (self.internal, self.auditor, self.manager, self.restorer, self.settings_admin):
            records = self.env["spp.backup.pitr.server"].with_user(user)
            with self.subTest(user=user.login, op="create"), self.assertRaises(AccessError):
                records.with_context(default_window_end="2099-01-01 00:00:00").create(
                    {"system_id": "1", "name": "forged", "window_end": "2099-01-01 00:00:00"}
                )
            with self.subTest(user=user.login, op="write"), self.assertRaises(AccessError):
                self.server.with_user(user).write({"window_end": "2099-01-01 00:00:00"})
            with self.subTest(user=user.login, op="copy"), self.assertRaises(AccessError):
                self.server.with_user(user).copy({"system_id": "2"})
        for user in (self.internal, self.auditor, self.manager, self.restorer):
            with self.subTest(user=user.login, op="unlink"), self.assertRaises(AccessError):
                self.server.with_user(user).unlink()
        self.assertEqual(self.server.window_end, self.end)
        # A Settings administrator forgets a server that is no longer protected.
        self.server.with_user(self.settings_admin).unlink()
        self.assertFalse(self.server.exists())


class TestPitrRestoreWizard(PitrCase):
    def test_only_the_restore_right_opens_it(self):
        for user in (self.internal, self.auditor, self.manager):
            with self.subTest(user=user.login), self.assertRaises(AccessError):
                self.server.with_user(user).action_restore_to_second()

    def test_it_opens_on_the_newest_second_of_the_archive_that_can_restore(self):
        wizard = self.open_wizard()
        self.assertEqual(wizard.location, ARCHIVE)
        self.assertEqual(wizard.source_db_name, self.env.cr.dbname)
        self.assertEqual(wizard.to_time, self.end)
        self.assertEqual(wizard.target_mode, "new")
        self.assertTrue(wizard.target_db.startswith("%s_restored_" % self.env.cr.dbname))

    def test_the_window_offers_whole_seconds_inside_it(self):
        start = self.start + datetime.timedelta(microseconds=400000)
        self.report({"destinations": {ARCHIVE: {"ranges": [[iso(start), iso(self.end)]], "error": None}}})
        first = self.start + datetime.timedelta(seconds=1)
        self.assertEqual(self.server._ranges(ARCHIVE), [(first, self.end)])
        wizard = self.open_wizard()
        wizard.to_time = self.start
        with self.assertRaisesRegex(UserError, "is not a second the archive"):
            wizard.action_run()

    def test_a_report_without_a_database_opens_no_wizard(self):
        self.report({"databases": []})
        with self.assertRaisesRegex(UserError, "names no restorable database yet"):
            self.open_wizard()

    def test_a_second_outside_the_window_is_refused_in_words_and_queues_nothing(self):
        wizard = self.open_wizard()
        wizard.to_time = self.start - datetime.timedelta(seconds=1)
        with self.assertRaisesRegex(UserError, "is not a second the archive at %s can restore to" % ARCHIVE):
            wizard.action_run()
        wizard.write({"to_time": self.end, "location": OFFSITE})
        with self.assertRaisesRegex(UserError, "It can restore to: nothing yet"):
            wizard.action_run()
        self.assertFalse(self.env["spp.backup.restore"].search([]))

    def test_a_database_the_server_does_not_hold_is_refused(self):
        wizard = self.open_wizard()
        # A database the server's base backups held once and no longer hold: the newest report is what counts.
        self.report({"databases": ["postgres"]})
        with self.assertRaisesRegex(UserError, "Choose the database among those"):
            wizard.action_run()
        self.assertFalse(self.env["spp.backup.restore"].search([]))

    def test_replacing_needs_the_name_typed(self):
        wizard = self.open_wizard()
        wizard.write({"target_mode": "replace", "target_db": "postgres"})
        with self.assertRaisesRegex(UserError, "type its name exactly"):
            wizard.action_run()
        self.assertFalse(self.env["spp.backup.restore"].search([]))

    def test_a_second_inside_the_window_queues_the_workers_restore_to_that_second(self):
        wizard = self.open_wizard()
        moment = self.start + datetime.timedelta(hours=5, seconds=7)
        wizard.to_time = moment
        action = wizard.action_run()
        restore = self.env["spp.backup.restore"].browse(action["res_id"])
        self.assertEqual(
            (restore.to_time, restore.source_db_name, restore.state), (moment, self.env.cr.dbname, states.QUEUED)
        )
        self.assertEqual(restore.run_id.action, plans.PITR_RESTORE)
        plan = restore.run_id._plan()
        self.assertEqual(plan.location, ARCHIVE)
        self.assertEqual(plan.db_name, self.env.cr.dbname)
        self.assertEqual(plan.to_time, moment.strftime("%Y-%m-%dT%H:%M:%SZ"))
        self.assertEqual(plan.options.target_db, wizard.target_db)
        self.assertEqual(plan.system_id, "7400000000000000001", "the archive of this server, among others there")
        # Each module's neutralization: the worker runs those of the modules installed in the copy at that second.
        self.assertTrue(plan.options.neutralize)
        self.assertEqual(plan.options.neutralize_sql, [])
        self.assertTrue({"base", "mail"} <= set(plan.neutralize_modules), plan.neutralize_modules.keys())
        self.assertTrue(any("as it was at" in (m.body or "") for m in restore.message_ids))

    def test_the_workers_result_is_the_restores_evidence(self):
        wizard = self.open_wizard()
        restore = self.env["spp.backup.restore"].browse(wizard.action_run()["res_id"])
        reached = "recovery stopping before commit of transaction 812, time 2026-12-07 10:00:01.5+00"
        self.finish_run(
            restore,
            result={
                "target_db": restore.target_db,
                "base_backup": "20261207T020000Z-ab12",
                "base_chain": ["20261206T020000Z-aa00", "20261207T020000Z-ab12"],
                "wal_first": "000000010000000000000010",
                "wal_last": "000000010000000000000013",
                "wal_files": 4,
                "partial_used": True,
                "reached": reached,
                "filestore_files": 3,
                "seconds": {"database": 1.0},
                "duration": 9.5,
                "warnings": [],
            },
        )
        self.env["spp.backup.run"]._cron_collect()
        restore.invalidate_recordset()
        self.assertEqual(restore.state, states.DONE)
        self.assertEqual(restore.pitr_base_backup, "20261206T020000Z-aa00 + 20261207T020000Z-ab12")
        self.assertEqual(
            restore.pitr_wal, "000000010000000000000010 to 000000010000000000000013 (4 files, the newest in progress)"
        )
        self.assertEqual(restore.pitr_reached, reached)
        self.assertTrue(any("before commit of transaction 812" in (m.body or "") for m in restore.message_ids))


class TestPitrCheck(PitrCase):
    def test_a_manager_reads_what_the_server_lacks_and_nothing_changes(self):
        before = self.query("postgres", "SELECT count(*) FROM pg_replication_slots")
        action = self.env["spp.backup.pitr.server"].with_user(self.manager).action_check_settings()
        check = self.env["spp.backup.pitr.check"].browse(action["res_id"])
        self.assertEqual(check.create_uid, self.manager)
        self.assertIn(check.verdict, ("ok", "advice", "missing"))
        # The tests' server: what the check reads of it, by name.
        for name in ("wal_level", "max_wal_senders", "replication role", "client tools"):
            self.assertIn(name, check.report)
        self.assertEqual(self.query("postgres", "SELECT count(*) FROM pg_replication_slots"), before)
        for user in (self.internal, self.auditor, self.restorer):
            with self.subTest(user=user.login), self.assertRaises(AccessError):
                self.env["spp.backup.pitr.server"].with_user(user).action_check_settings()
        with self.assertRaises(AccessError):
            check.with_user(self.manager).write({"report": "all is well", "verdict": "ok"})


class TestPitrDrill(PitrCase):
    def test_a_manager_drills_this_databases_policy_to_a_random_second(self):
        self.policy.database = self.env.cr.dbname
        action = self.server.with_user(self.manager).action_drill_now()
        drill = self.env["spp.backup.drill"].browse(action["res_id"])
        self.assertEqual((drill.policy_id, drill.pitr_server_id, drill.state), (self.policy, self.server, "queued"))
        self.assertEqual(drill.run_id.action, plans.PITR_DRILL)
        plan = drill.run_id._plan()
        # The destination that can restore (the other one cannot be read), the policy's database, a random second.
        self.assertEqual((plan.location, plan.db_name, plan.to_time), (ARCHIVE, self.env.cr.dbname, None))
        self.assertEqual(plan.system_id, "7400000000000000001")
        self.assertIn("mail", plan.neutralize_modules)
        with self.assertRaisesRegex(UserError, "already running"):
            self.server.with_user(self.manager).action_drill_now()
        self.finish_run(
            drill,
            result={
                "backup_id": "20261207T020000Z-ab12",
                "source": "%s (WAL archive)" % ARCHIVE,
                "scratch_db": "%s_drill_pitr_x1" % self.env.cr.dbname,
                "ok": True,
                "checks": [
                    {"name": "window", "ok": True, "detail": "restoring to 2026-12-06 10:00:00 UTC"},
                    {"name": "restore", "ok": True, "detail": "base backup 20261207T020000Z-ab12 and 3 WAL file(s)"},
                    {"name": "attachments", "ok": True, "detail": "12 files present, SHA-1 as recorded"},
                ],
                "restore_seconds": 14.2,
                "total_seconds": 15.0,
                "cleaned_up": True,
            },
        )
        self.env["spp.backup.run"]._cron_collect()
        drill.invalidate_recordset()
        self.assertEqual(
            (drill.state, drill.verdict, drill.backup_id), (states.DONE, "passed", "20261207T020000Z-ab12")
        )
        self.assertEqual(self.policy.last_drill_id, drill)
        self.assertEqual(len(drill.check_ids), 3)
        self.server.invalidate_recordset()
        self.assertEqual((self.server.last_drill_id, self.server.last_drill_verdict), (drill, "passed"))

    def test_only_managers_drill_and_only_a_policy_of_a_protected_database(self):
        for user in (self.internal, self.auditor, self.restorer):
            with self.subTest(user=user.login), self.assertRaises(AccessError):
                self.server.with_user(user).action_drill_now()
        self.policy.active = False
        with self.assertRaisesRegex(UserError, "No active policy backs up"):
            self.server.with_user(self.manager).action_drill_now()
        self.policy.active = True
        self.report({"destinations": {OFFSITE: {"ranges": [], "error": "down"}}})
        with self.assertRaisesRegex(UserError, "can restore anything yet"):
            self.server.with_user(self.manager).action_drill_now()
        self.assertFalse(self.env["spp.backup.drill"].search([]))


@tagged("post_install", "-at_install")
class TestPitrOverRpc(PitrCase, HttpCase):
    """Over XML-RPC, as each group: the server record and the restore wizard's facts refuse every change."""

    def rpc(self, login, model, method, *args, **kwargs):
        user = self.env["res.users"].search([("login", "=", login)])
        return self.xmlrpc_object.execute_kw(self.env.cr.dbname, user.id, login, model, method, list(args), kwargs)

    def assert_refused(self, login, model, method, *args, codes=(3, 4), **kwargs):
        """Refused over XML-RPC: an access error (3, 4), or with ``codes=(2,)`` a refusal in words (UserError)."""
        with self.assertRaises(xmlrpc.client.Fault) as caught:
            self.rpc(login, model, method, *args, **kwargs)
        self.assertIn(caught.exception.faultCode, codes, caught.exception.faultString)
        return caught.exception.faultString

    def test_every_group_is_refused_on_the_server_record(self):
        logins = ("sppb_internal", "sppb_auditor", "sppb_manager", "sppb_restorer", "sppb_settings")
        for login in logins:
            with self.subTest(user=login, op="write"):
                self.assert_refused(login, "spp.backup.pitr.server", "write", self.server.ids, {"problems": False})
            with self.subTest(user=login, op="create"):
                self.assert_refused(
                    login,
                    "spp.backup.pitr.server",
                    "create",
                    {"system_id": "9", "name": "x"},
                    context={"default_status_json": json.dumps(self.status())},
                )
            with self.subTest(user=login, op="copy"):
                self.assert_refused(login, "spp.backup.pitr.server", "copy", self.server.ids)
        for login in logins[:4]:
            with self.subTest(user=login, op="unlink"):
                self.assert_refused(login, "spp.backup.pitr.server", "unlink", self.server.ids)
        for login in ("sppb_internal", "sppb_auditor", "sppb_manager"):
            with self.subTest(user=login, op="open the wizard"):
                self.assert_refused(login, "spp.backup.pitr.server", "action_restore_to_second", self.server.ids)
        for login in ("sppb_internal", "sppb_auditor", "sppb_restorer"):
            with self.subTest(user=login, op="drill"):
                self.assert_refused(login, "spp.backup.pitr.server", "action_drill_now", self.server.ids)
            with self.subTest(user=login, op="check"):
                self.assert_refused(login, "spp.backup.pitr.server", "action_check_settings", [])
                self.assert_refused(login, "spp.backup.pitr.check", "action_check", [])
        # A manager's: from the list's button (no record) and from a report's "Check again".
        first = self.rpc("sppb_manager", "spp.backup.pitr.server", "action_check_settings", [])["res_id"]
        again = self.rpc("sppb_manager", "spp.backup.pitr.check", "action_check", [first])["res_id"]
        self.assertNotEqual(first, again)
        self.assertEqual(self.env["spp.backup.pitr.server"].search_count([]), 1)
        self.assertEqual(self.server.window_end, self.end)
        self.assertFalse(self.env["spp.backup.drill"].search([]))

    def test_the_restorer_sets_only_the_choices(self):
        wizard = self.open_wizard()
        for name, value in (("server_id", False), ("window_text", "forged")):
            with self.subTest(field=name):
                self.assert_refused("sppb_restorer", wizard._name, "write", wizard.ids, {name: value})
        self.assert_refused(
            "sppb_restorer",
            wizard._name,
            "create",
            {"location": ARCHIVE},
            context={"default_server_id": self.server.id},
        )
        for login in ("sppb_auditor", "sppb_manager", "sppb_settings"):
            with self.subTest(user=login):
                self.assert_refused(login, wizard._name, "action_run", wizard.ids)
                self.assert_refused(login, wizard._name, "write", wizard.ids, {"to_time": "2000-01-01 00:00:00"})
        late = (self.now + datetime.timedelta(days=1)).strftime("%Y-%m-%d %H:%M:%S")
        self.rpc("sppb_restorer", wizard._name, "write", wizard.ids, {"to_time": late})
        said = self.assert_refused("sppb_restorer", wizard._name, "action_run", wizard.ids, codes=(2,))
        self.assertIn("is not a second the archive at %s can restore to" % ARCHIVE, said)
        self.assertFalse(self.env["spp.backup.restore"].search([]))
