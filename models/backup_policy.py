import datetime
import math
import os

from odoo import _, api, fields, models, release
from odoo.exceptions import AccessError, UserError, ValidationError
from odoo.tools import config as odoo_config

from ..engine.config import BackupPlan, PgConfig, Settings
from ..engine.errors import BackupError

# Advisory lock keys of backup policies: a fixed namespace plus the policy id,
# so two runs of one policy never overlap, whoever starts them.
LOCK_NAMESPACE = 0x5350_0000

# A scheduled run may start up to one cron interval late; beyond an hour the
# policy is reported late.
OVERDUE_GRACE = datetime.timedelta(hours=1)

INTERVAL_UNITS = {
    "hours": datetime.timedelta(hours=1),
    "days": datetime.timedelta(days=1),
    "weeks": datetime.timedelta(weeks=1),
}


def next_slot(after, interval_number, interval_type, time_of_day, anchor=None):
    """The first scheduled moment strictly after ``after`` (naive UTC datetimes).

    Slots are ``anchor + k * interval``. Without an anchor, the slots are laid
    on the day of ``after`` at ``time_of_day`` (hours, UTC). With one (the
    previous planned run), missed slots are skipped and the phase is kept, so a
    server that was down for days runs once, not once per missed slot.
    """
    step = INTERVAL_UNITS[interval_type] * interval_number
    if anchor is None:
        minutes = int(round((time_of_day or 0.0) * 60)) % (24 * 60)
        anchor = datetime.datetime.combine(after.date(), datetime.time(minutes // 60, minutes % 60))
    count = math.floor((after - anchor) / step) + 1
    return anchor + step * count


class SppBackupPolicy(models.Model):
    _name = "spp.backup.policy"
    _description = "Backup Policy"
    _inherit = ["mail.thread"]
    _order = "name, id"

    name = fields.Char(
        required=True, tracking=True, help="A name for what this policy protects, e.g. 'Nightly full backup'."
    )
    active = fields.Boolean(default=True, tracking=True, help="Only active policies run on their schedule.")
    database = fields.Char(
        required=True,
        default=lambda self: self.env.cr.dbname,
        tracking=True,
        help="Name of the PostgreSQL database to back up; by default the database of this Odoo.",
    )
    include_database = fields.Boolean(
        string="Database dump",
        default=True,
        tracking=True,
        help="Dump the PostgreSQL database (pg_dump custom format, from one consistent snapshot).",
    )
    include_filestore = fields.Boolean(
        string="Filestore",
        default=True,
        tracking=True,
        help="Archive the attachment files of the database (Odoo's filestore in the data directory).",
    )
    include_application = fields.Boolean(
        string="Application snapshot",
        default=True,
        tracking=True,
        help="Record the installed modules and their versions, the Odoo configuration without secrets, "
        "and the PostgreSQL and Python versions, so the backup can be restored on a matching server.",
    )
    interval_number = fields.Integer(
        string="Every",
        default=1,
        required=True,
        tracking=True,
        help="How many hours, days or weeks between two scheduled backups.",
    )
    interval_type = fields.Selection(
        [("hours", "Hours"), ("days", "Days"), ("weeks", "Weeks")],
        string="Interval unit",
        default="days",
        required=True,
        tracking=True,
        help="The unit of the interval between two scheduled backups.",
    )
    time_of_day = fields.Float(
        string="Time of day (UTC)",
        default=2.0,
        tracking=True,
        help="Time of day the schedule is anchored at, in UTC (not in your time zone): 2.5 means 02:30 UTC. "
        "With an interval in hours, runs fall at this time plus multiples of the interval.",
    )
    next_run = fields.Datetime(
        string="Next run",
        copy=False,
        help="When the next scheduled backup starts. Computed from the schedule when the policy is created or "
        "its schedule changes; you may set it by hand. Shown in your time zone.",
    )
    destination_ids = fields.Many2many(
        "spp.backup.destination",
        "spp_backup_policy_destination_rel",
        "policy_id",
        "destination_id",
        string="Destinations",
        tracking=True,
        help="Every backup set is written to each of these destinations.",
    )
    rpo_hours = fields.Float(
        string="RPO (hours)",
        default=24.0,
        tracking=True,
        help="Recovery point objective: the most data, in hours, you accept to lose. The policy is reported "
        "late when its last successful backup is older than this.",
    )
    rto_minutes = fields.Integer(
        string="RTO (minutes)",
        default=240,
        tracking=True,
        help="Recovery time objective: how long, in minutes, a restore may take. Drills measure it.",
    )
    last_success_at = fields.Datetime(string="Last success", readonly=True, copy=False)
    last_failure_at = fields.Datetime(string="Last failure", readonly=True, copy=False)
    last_job_id = fields.Many2one("spp.backup.job", string="Last job", readonly=True, copy=False)
    job_ids = fields.One2many("spp.backup.job", "policy_id", string="Jobs", readonly=True)
    job_count = fields.Integer(compute="_compute_job_count", string="Job count")
    state = fields.Selection(
        [("ok", "OK"), ("late", "Late"), ("failing", "Failing"), ("never", "Never ran")],
        string="Status",
        compute="_compute_state",
        help="OK: the last backup succeeded within the RPO. Late: the last success is older than the RPO, "
        "or the next run is more than an hour overdue. Failing: the last finished backup failed. "
        "Never ran: no backup of this policy has finished yet.",
    )

    # ------------------------------------------------------------------ checks

    @api.constrains("interval_number")
    def _check_interval_number(self):
        for policy in self:
            if policy.interval_number <= 0:
                raise ValidationError(
                    _("Policy '%s': the interval must be at least 1 (hour, day or week).", policy.name)
                )

    @api.constrains("rpo_hours", "rto_minutes")
    def _check_objectives(self):
        for policy in self:
            if policy.rpo_hours <= 0:
                raise ValidationError(
                    _("Policy '%s': the RPO must be more than 0 hours, e.g. 24 for a daily backup.", policy.name)
                )
            if policy.rto_minutes < 0:
                raise ValidationError(_("Policy '%s': the RTO cannot be negative.", policy.name))

    @api.constrains("time_of_day")
    def _check_time_of_day(self):
        for policy in self:
            if not 0 <= policy.time_of_day < 24:
                raise ValidationError(
                    _("Policy '%s': the time of day must be between 00:00 and 23:59 (UTC).", policy.name)
                )

    @api.constrains("active", "destination_ids")
    def _check_destinations(self):
        for policy in self:
            if policy.active and not policy.destination_ids:
                raise ValidationError(
                    _("Policy '%s' has no destination: add at least one, or archive the policy.", policy.name)
                )

    @api.constrains("include_database", "include_filestore", "include_application")
    def _check_includes(self):
        for policy in self:
            if not (policy.include_database or policy.include_filestore or policy.include_application):
                raise ValidationError(
                    _(
                        "Policy '%s' backs up nothing: tick the database, the filestore or the application snapshot.",
                        policy.name,
                    )
                )

    # ----------------------------------------------------------------- compute

    def _compute_job_count(self):
        counts = {
            policy.id: count
            for policy, count in self.env["spp.backup.job"]._read_group(
                [("policy_id", "in", self.ids)], ["policy_id"], ["__count"]
            )
        }
        for policy in self:
            policy.job_count = counts.get(policy.id, 0)

    @api.depends("last_success_at", "last_failure_at", "next_run", "rpo_hours", "active")
    def _compute_state(self):
        now = fields.Datetime.now()
        for policy in self:
            success, failure = policy.last_success_at, policy.last_failure_at
            if failure and (not success or failure >= success):
                policy.state = "failing"
            elif not success:
                policy.state = "never"
            elif now - success > datetime.timedelta(hours=policy.rpo_hours or 0) or (
                policy.active and policy.next_run and now - policy.next_run > OVERDUE_GRACE
            ):
                policy.state = "late"
            else:
                policy.state = "ok"

    # ---------------------------------------------------------------- schedule

    SCHEDULE_FIELDS = ("interval_number", "interval_type", "time_of_day")

    def _next_slot(self, after=None, anchor=None):
        self.ensure_one()
        return next_slot(
            after or fields.Datetime.now(), self.interval_number, self.interval_type, self.time_of_day, anchor=anchor
        )

    @api.model_create_multi
    def create(self, vals_list):
        policies = super().create(vals_list)
        for policy, vals in zip(policies, vals_list, strict=True):
            if not vals.get("next_run"):
                policy.next_run = policy._next_slot()
        return policies

    def write(self, vals):
        result = super().write(vals)
        if "next_run" not in vals and any(name in vals for name in self.SCHEDULE_FIELDS):
            for policy in self:
                policy.next_run = policy._next_slot()
        return result

    def _is_busy(self):
        """True when a job of this policy is queued or running."""
        self.ensure_one()
        return bool(
            self.env["spp.backup.job"].search_count(
                [("policy_id", "=", self.id), ("state", "in", ("queued", "running"))], limit=1
            )
        )

    def _due(self, now=None):
        """Active policies whose next run has come and that have no job in progress."""
        now = now or fields.Datetime.now()
        candidates = self.search([("active", "=", True), ("next_run", "!=", False), ("next_run", "<=", now)])
        return candidates.filtered(lambda policy: not policy._is_busy())

    @api.model
    def _cron_run_due(self):
        """Start a backup for every due policy; the dump runs in a detached runner."""
        Job = self.env["spp.backup.job"]
        for policy in self._due():
            now = fields.Datetime.now()
            policy.next_run = policy._next_slot(after=now, anchor=policy.next_run)
            job = Job.create({"policy_id": policy.id, "trigger": "schedule"})
            # The job and the advanced schedule are committed before the runner
            # starts: the runner outlives this transaction and a crash here must
            # not re-run the slot.
            self._commit_unless_testing()
            job._start_runner()
            self._commit_unless_testing()

    def _commit_unless_testing(self):
        if not (self.env.registry.in_test_mode() or odoo_config["test_enable"]):
            self.env.cr.commit()  # pylint: disable=invalid-commit

    # ------------------------------------------------------------------ engine

    @api.model
    def _engine_settings(self):
        """The ``[spp_backup]`` settings of odoo.conf (environment variables first)."""
        rcfile = odoo_config.rcfile
        try:
            return Settings.from_config(rcfile if rcfile and os.path.isfile(rcfile) else None)
        except BackupError as exc:
            raise UserError(str(exc)) from exc

    @api.model
    def _engine_pg(self, settings=None):
        """PostgreSQL connection of this Odoo server (with the password, kept in memory)."""
        settings = settings or self._engine_settings()
        port = odoo_config.get("db_port")
        return PgConfig(
            host=odoo_config.get("db_host") or None,
            port=int(port) if port else None,
            user=odoo_config.get("db_user") or None,
            password=odoo_config.get("db_password") or None,
            bin_dir=settings.get("pg_bin_dir") or None,
        )

    def _to_engine_plan(self):
        """This policy as a plain engine BackupPlan."""
        self.ensure_one()
        settings = self._engine_settings()
        try:
            min_free_bytes = int(settings.get("min_free_bytes", 0) or 0)
        except ValueError as exc:
            raise UserError(
                _("min_free_bytes in the [spp_backup] section of the Odoo configuration must be a number of bytes.")
            ) from exc
        rcfile = odoo_config.rcfile
        return BackupPlan(
            db_name=self.database,
            destinations=[destination._to_engine_destination() for destination in self.destination_ids],
            pg=self._engine_pg(settings),
            data_dir=odoo_config["data_dir"],
            include_database=self.include_database,
            include_filestore=self.include_filestore,
            include_application=self.include_application,
            odoo_conf=rcfile if rcfile and os.path.isfile(rcfile) else None,
            odoo_version={
                "version": release.version,
                "version_info": list(release.version_info),
                "major_version": release.major_version,
            },
            min_free_bytes=min_free_bytes,
            lock_key=LOCK_NAMESPACE + self.id,
            label=self.name,
        )

    # ----------------------------------------------------------------- actions

    @api.model
    def _check_backup_manager(self):
        if not (self.env.su or self.env.user.has_group("spp_backup.group_backup_manager")):
            raise AccessError(_("Only Backup Managers may run, verify or test backups."))

    def action_backup_now(self):
        """Open the confirmation to back up this policy now."""
        self.ensure_one()
        self._check_backup_manager()
        return {
            "type": "ir.actions.act_window",
            "name": _("Back up now"),
            "res_model": "spp.backup.run.now",
            "view_mode": "form",
            "target": "new",
            "context": {"default_policy_id": self.id},
        }

    def action_view_jobs(self):
        self.ensure_one()
        action = self.env["ir.actions.act_window"]._for_xml_id("spp_backup.action_spp_backup_job")
        action["domain"] = [("policy_id", "=", self.id)]
        action["context"] = {"default_policy_id": self.id}
        return action
