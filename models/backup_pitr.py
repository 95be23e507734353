import datetime
import json
import logging

from odoo import _, api, fields, models
from odoo.exceptions import AccessError, UserError

from .. import compat
from ..engine.core.human import human_bytes, human_duration
from ..engine.service.protocol import PITR_TABLE
from .server_fields import EVERY_FIELD

_logger = logging.getLogger(__name__)

# The worker reports every minute: a report older than this means it is not running (or not protecting).
SILENT_AFTER = datetime.timedelta(minutes=5)


def ceil_second(moment):
    """The first whole second at or after ``moment``: what a window starting at ``moment`` can restore to."""
    return moment if not moment.microsecond else moment.replace(microsecond=0) + datetime.timedelta(seconds=1)


def parse_utc(text):
    """A naive UTC datetime (as Odoo stores them) from the ISO 8601 text of a report; None when empty."""
    if not text:
        return None
    moment = datetime.datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    if moment.tzinfo is not None:
        moment = moment.astimezone(datetime.timezone.utc).replace(tzinfo=None)
    return moment


class SppBackupPitrServer(models.Model):
    """Continuous protection of one PostgreSQL server, as the worker that runs it last reported.

    Configured in odoo.conf alone (``pitr_destinations``...) and written by the worker only (one row per server,
    every minute, into each database it serves: engine.service.protocol.write_pitr_status): nobody creates,
    changes or copies one through Odoo.
    """

    _name = "spp.backup.pitr.server"
    _inherit = ["spp.backup.server.fields"]
    _description = "Continuous protection (point-in-time recovery)"
    _table = PITR_TABLE
    _server_fields = EVERY_FIELD
    _order = "name"

    name = fields.Char(string="Server", readonly=True)
    system_id = fields.Char(string="System identifier", readonly=True, required=True)
    receiving = fields.Boolean(string="Receiving WAL", readonly=True)
    behind_seconds = fields.Float(
        string="Archive behind (s)",
        readonly=True,
        help="How many seconds of the server's newest changes the archive does not yet hold (the RPO now).",
    )
    receive_lag_bytes = fields.Float(string="Not yet received (bytes)", readonly=True)
    slot_status = fields.Char(string="Replication slot", readonly=True)
    slot_retained_bytes = fields.Float(string="WAL the slot keeps on the server (bytes)", readonly=True)
    window_start = fields.Datetime(string="Restorable from", readonly=True)
    window_end = fields.Datetime(string="Restorable until", readonly=True)
    problems = fields.Text(string="Problems reported", readonly=True)
    status_json = fields.Text(string="Report", readonly=True, help="The worker's last report, as it wrote it.")
    reported_at = fields.Datetime(string="Reported", readonly=True)

    state = fields.Selection(
        [("ok", "Protected"), ("problem", "Problem"), ("silent", "No report")],
        compute="_compute_texts",
        string="Status",
    )
    problem_text = fields.Text(compute="_compute_texts", string="What is wrong")
    window_text = fields.Text(compute="_compute_texts", string="Restorable seconds")
    databases_text = fields.Char(compute="_compute_texts", string="Databases")
    behind_text = fields.Char(compute="_compute_texts", string="Archive behind the server")
    slot_text = fields.Char(compute="_compute_texts", string="Slot")
    standbys_text = fields.Text(compute="_compute_texts", string="Streaming standbys")
    last_drill_id = fields.Many2one("spp.backup.drill", compute="_compute_last_drill", string="Last drill to a second")
    last_drill_verdict = fields.Selection(
        [("passed", "Passed"), ("failed", "Failed"), ("pending", "Not finished")],
        compute="_compute_last_drill",
        string="Last drill",
    )

    compat.sql_constraints(locals(), [("system_id_unique", "UNIQUE (system_id)", "One record per PostgreSQL server.")])

    # ------------------------------------------------------------------ read

    def _report(self):
        self.ensure_one()
        try:
            data = json.loads(self.status_json or "{}")
        except ValueError:
            data = {}
        return data if isinstance(data, dict) else {}

    def _ranges(self, location=None):
        """[(start, end)] naive UTC of the whole seconds ``location`` (or any destination) can restore to."""
        found = []
        for where, win in sorted((self._report().get("destinations") or {}).items()):
            if location is not None and where != location:
                continue
            for start, end in (win or {}).get("ranges") or []:
                start, end = ceil_second(parse_utc(start)), parse_utc(end).replace(microsecond=0)
                if start <= end:
                    found.append((start, end))
        return found

    def _locations(self):
        """The destinations of the archive, those that can restore something first."""
        windows = self._report().get("destinations") or {}
        return sorted(windows, key=lambda where: (not (windows[where] or {}).get("ranges"), where))

    def _behind(self):
        """Seconds the archive is behind the server, or None when it vouches for no recent second yet."""
        value = (self._report().get("receiver") or {}).get("archive_behind_seconds")
        return float(value) if isinstance(value, (int, float)) else None

    def _databases(self):
        return [name for name in self._report().get("databases") or [] if isinstance(name, str)]

    def _problems_now(self, now=None):
        """What is wrong now, in words: the worker's problems, or its silence."""
        self.ensure_one()
        now = now or fields.Datetime.now()
        if not self.reported_at or now - self.reported_at > SILENT_AFTER:
            return [
                _(
                    "The worker has not reported on continuous protection since %s: is the worker service running "
                    "with pitr_destinations in its odoo.conf?",
                    self._local(self.reported_at) if self.reported_at else _("ever"),
                )
            ]
        return [line for line in (self.problems or "").splitlines() if line.strip()]

    def _local(self, moment):
        """``moment`` (naive UTC) in the user's time zone, with the zone's name."""
        local = fields.Datetime.context_timestamp(self, moment)
        return "%s %s" % (local.strftime("%Y-%m-%d %H:%M:%S"), local.tzname() or "UTC")

    @api.depends("problems", "status_json", "reported_at")
    def _compute_texts(self):
        now = fields.Datetime.now()
        for server in self:
            problems = server._problems_now(now)
            silent = not server.reported_at or now - server.reported_at > SILENT_AFTER
            server.state = "silent" if silent else ("problem" if problems else "ok")
            server.problem_text = "\n".join(problems) or False
            lines = []
            windows = server._report().get("destinations") or {}
            for where in sorted(windows):
                ranges = server._ranges(where)
                win = windows[where] or {}
                if win.get("error"):
                    lines.append(_("%(where)s: cannot be read (%(error)s)", where=where, error=win["error"]))
                elif not ranges:
                    lines.append(_("%s: nothing restorable yet", where))
                for start, end in ranges:
                    lines.append(
                        _(
                            "%(where)s: any second from %(start)s to %(end)s",
                            where=where,
                            start=server._local(start),
                            end=server._local(end),
                        )
                    )
            server.window_text = "\n".join(lines) or False
            server.databases_text = ", ".join(server._databases()) or False
            behind = server._behind()
            if behind is None:
                server.behind_text = _("unknown: the archive vouches for no recent second yet")
            else:
                server.behind_text = _("%s behind", human_duration(behind))
            server.standbys_text = "\n".join(server._standby_lines()) or _("none streams from this server")
            if server.slot_status and server.slot_retained_bytes:
                server.slot_text = _(
                    "%(status)s, keeps %(size)s of WAL on the server",
                    status=server.slot_status,
                    size=human_bytes(server.slot_retained_bytes),
                )
            else:
                server.slot_text = server.slot_status or False

    def _standbys(self):
        return [item for item in self._report().get("standbys") or [] if isinstance(item, dict)]

    def _standby_lines(self):
        lines = []
        for standby in self._standbys():
            if not standby.get("visible"):
                where = _("position hidden from the worker's role (grant it pg_monitor)")
            elif standby.get("replay_lag_bytes") is None:
                where = _("has not reported what it replayed yet")
            else:
                where = _(
                    "replays %(size)s behind, %(seconds).1f s",
                    size=human_bytes(standby["replay_lag_bytes"]),
                    seconds=float(standby.get("replay_lag_seconds") or 0.0),
                )
            lines.append(
                "%s (%s): %s, %s, %s"
                % (
                    standby.get("name") or "?",
                    standby.get("client") or "?",
                    standby.get("state") or "?",
                    standby.get("sync_state") or "?",
                    where,
                )
            )
        return lines

    def _compute_last_drill(self):
        Drill = self.env["spp.backup.drill"]
        for server in self:
            drill = Drill.search([("pitr_server_id", "=", server.id)], order="id desc", limit=1)
            server.last_drill_id = drill
            server.last_drill_verdict = drill.verdict or False

    # ---------------------------------------------------------------- alerts

    def _policies(self):
        """The active policies of the databases this server protects (all active ones before it knows them)."""
        self.ensure_one()
        Policy = self.env["spp.backup.policy"].sudo()
        databases = self._databases()
        policies = Policy.search([("active", "=", True)])
        if databases:
            policies = policies.filtered(lambda policy: policy.database in databases)
        return policies

    @api.model
    def _check_alerts(self, now=None):
        """One alert per policy of a protected database while the protection of a server holding it has a problem
        (the problems of every such server in one alert); resolved once none reports one, or once no server
        holds its database any more. Odoo's own odoo.conf naming pitr_destinations with no report at all is a
        problem of every active policy. A failure here is logged: it never undoes the other alerts of the cron."""
        try:
            with self.env.cr.savepoint():
                self._check_alerts_now(now)
        except Exception:  # the RPO/RTO alerts of the same cron stand
            _logger.exception("Cannot check the alerts of continuous protection")

    @api.model
    def _check_alerts_now(self, now):
        Alert = self.env["spp.backup.alert"]
        problems = {}
        servers = self.sudo().search([])
        for server in servers:
            found = server._problems_now(now)
            for policy in server._policies():
                problems.setdefault(policy, []).extend(
                    _("server %(server)s: %(problem)s", server=server.name, problem=problem) for problem in found
                )
        settings = self.env["spp.backup.engine"]._settings()
        if not servers and str(settings.get("pitr_destinations") or "").strip():
            never = _(
                "odoo.conf names pitr_destinations, but no worker has ever reported on continuous protection: "
                "start the worker service (spp-backup --conf <odoo.conf> worker) and check 'spp-backup pitr check'."
            )
            for policy in self.env["spp.backup.policy"].sudo().search([("active", "=", True)]):
                problems[policy] = [never]
        for policy, found in problems.items():
            if found:
                Alert._raise(policy, "pitr", _("Continuous protection: %s", "; ".join(found)))
            else:
                Alert._resolve(policy, "pitr", _("Continuous protection reports no problem."))
        covered = self.env["spp.backup.policy"].browse([policy.id for policy in problems])
        stale = Alert.sudo().search(
            [("kind", "=", "pitr"), ("state", "=", "open"), ("policy_id", "not in", covered.ids)]
        )
        for policy in stale.policy_id:
            Alert._resolve(policy, "pitr", _("No protected server holds this policy's database any more."))

    # --------------------------------------------------------------- actions

    def action_restore_to_second(self):
        """Open the window that restores one database of this server as it was at a chosen second."""
        self.ensure_one()
        self.env["spp.backup.engine"]._check_restore_right()
        return self.env["spp.backup.pitr.restore.wizard"]._open_for(self)

    def action_drill_now(self):
        """Restore this Odoo's database (through its policy) to a random second of the window into a scratch
        database, check it, time it and drop it: a drill of the policy."""
        self.ensure_one()
        Engine = self.env["spp.backup.engine"]
        Engine._check_manager()
        server = self.sudo()
        policy = server._policies().filtered(lambda p: p.database == self.env.cr.dbname)[:1]
        if not policy:
            raise UserError(
                _(
                    "No active policy backs up %s, a database this server's base backups hold: the drill is a "
                    "policy's.",
                    self.env.cr.dbname,
                )
            )
        if policy._is_drilling():
            raise UserError(_("A drill of policy '%s' is already running: wait for it to finish.", policy.name))
        locations = [where for where in server._locations() if server._ranges(where)]
        if not locations:
            raise UserError(_("No destination of this server's WAL archive can restore anything yet."))
        drill = (
            self.env["spp.backup.drill"]
            ._server_mode()
            .create(
                {
                    "policy_id": policy.id,
                    "pitr_server_id": server.id,
                    "source_location": locations[0],
                    "trigger": "manual",
                    "user_id": self.env.user.id,
                }
            )
        )
        drill._queue_run()
        return drill._form_action()

    def action_check_settings(self):
        """What the database server lacks for continuous protection (Backup Managers; the list's button, with no
        record selected or some: the same check)."""
        return self.env["spp.backup.pitr.check"].action_check()

    def unlink(self):
        if not (self.env.su or self.env.user.has_group("base.group_system")):
            raise AccessError(_("Only a Settings administrator forgets a server that is no longer protected."))
        return super().unlink()
