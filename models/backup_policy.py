import logging

from odoo import _, api, fields, models, release
from odoo.addons.base.models.res_partner import _tz_get
from odoo.exceptions import UserError, ValidationError
from odoo.tools.sql import column_exists, create_column, table_exists

from ..engine.core import objectives, scope, states
from ..engine.core.config import BackupPlan
from ..engine.core.errors import BackupError
from ..engine.core.retention import RetentionRules
from ..engine.core.schedule import WEEKDAYS, hour_minute, next_slot, schedule_anchor, time_zone
from ..engine.io import crypto
from ..engine.ops.prune import prune

RETENTION_FIELDS = ("keep_last", "keep_daily", "keep_weekly", "keep_monthly", "keep_yearly")

RETENTION_HELP = (
    " Retention follows grandfather-father-son: each rule keeps the newest backup of each of the N most recent "
    "periods (days, ISO weeks, months, years) that have a backup, and a backup kept by any rule stays. 0 turns a "
    "rule off; when every rule is 0 nothing is ever deleted. Whatever the rules, the newest verified backup, "
    "backups under S3 Object Lock and everything after a failed run are kept."
)

# Advisory lock keys of backup policies: a fixed namespace plus the policy id,
# so two runs of one policy never overlap, whoever starts them.
LOCK_NAMESPACE = 0x5350_0000

_logger = logging.getLogger(__name__)

WEEKDAY_SELECTION = [(str(number), name) for number, name in enumerate(WEEKDAYS)]


class SppBackupPolicy(models.Model):
    _name = "spp.backup.policy"
    _description = "Backup Policy"
    _inherit = ["spp.backup.server.fields", "mail.thread", "mail.activity.mixin"]
    _order = "name, id"
    # What the server records on a policy from its backups and drills; nobody sets them (see server_fields.py).
    _server_fields = frozenset(
        {
            "last_success_at",
            "last_success_job_id",
            "last_failure_at",
            "last_job_id",
            "last_drill_id",
            "job_ids",
            "drill_ids",
            "alert_ids",
        }
    )

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
    incremental_filestore = fields.Boolean(
        string="Only new files",
        default=True,
        tracking=True,
        help="Keep the filestore in a store at each destination (packs of about 32 MiB, encrypted when the policy "
        "encrypts) "
        "and write only the attachment files that store does not hold yet: a nightly backup then costs what "
        "changed. Every backup still lists all its files and restores on its own; retention removes a pack "
        "once no kept backup uses it. Untick to write the whole filestore as one archive in every backup.",
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
        string="Time of day",
        default=2.0,
        tracking=True,
        help="Time of day of the scheduled backups on the clock of the policy's time zone: 2.5 means 02:30 there. "
        "With an interval in hours, runs fall at this time on the Counting from day and every N hours before and "
        "after it, on the same clock (every 6 hours from 02:00 is 02:00, 08:00, 14:00 and 20:00). A time the clock "
        "skips when summer time starts runs at the first moment after the jump (02:30 runs at 03:00); a time "
        "the clock shows twice when it ends runs once, the first time.",
    )
    tz = fields.Selection(
        _tz_get,
        string="Time zone",
        required=True,
        default=lambda self: self._default_tz(),
        tracking=True,
        help="The time zone of the schedule: the time of day and the days are read on its clock, summer time "
        "included. By default the time zone of the responsible, else of the person who creates the policy.",
    )
    weekday = fields.Selection(
        WEEKDAY_SELECTION,
        string="On",
        default=lambda self: str(fields.Date.context_today(self).weekday()),
        tracking=True,
        help="With an interval in weeks, the day of the week of the backups; by default the day the policy "
        "was created.",
    )
    schedule_anchor = fields.Date(
        string="Counting from",
        copy=False,
        tracking=True,
        help="The day the schedule counts from: with every N days or weeks, backups fall on this day (its week, "
        "for weeks) and every N days or weeks before and after it. Set to the day of the first run whenever the "
        "schedule changes; you may change it to shift which days are used.",
    )
    next_run = fields.Datetime(
        string="Next run",
        copy=False,
        help="When the next scheduled backup starts. Computed from the schedule when the policy is created or "
        "its schedule changes; you may set it by hand, which moves only this run: the one after it follows the "
        "schedule again. Shown in your time zone.",
    )
    schedule_text = fields.Char(
        string="Schedule",
        compute="_compute_schedule_text",
        help="The schedule in words, with its time zone.",
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
        help="Recovery point objective, set in hours: the most data you accept to lose. The policy is reported "
        "late when its last successful backup is older than this. Shown everywhere else as a duration in words.",
    )
    rto_minutes = fields.Integer(
        string="RTO (minutes)",
        default=240,
        tracking=True,
        help="Recovery time objective, set in minutes: how long a restore may take. Drills measure it. Shown "
        "everywhere else as a duration in words.",
    )
    encrypt = fields.Boolean(
        string="Encrypt",
        default=True,
        tracking=True,
        help="Encrypt every artifact with age to the recipients below. The server keeps only the public keys, so "
        "a stolen server or bucket cannot read the backups; the private key (identity) stays offline or on the "
        "host that restores. Required for S3 destinations unless explicitly allowed below.",
    )
    allow_unencrypted_offsite = fields.Boolean(
        string="Allow unencrypted offsite copies",
        default=False,
        tracking=True,
        help="Tick only if backups may leave this server unencrypted: without it, a policy with an S3 destination "
        "must encrypt. Anyone who can read the bucket can then read every record of the database. The server "
        "must allow it too (allow_unencrypted_offsite = true in the [spp_backup] section of odoo.conf).",
    )
    age_recipients = fields.Text(
        string="Recipients (age public keys)",
        tracking=True,
        help="The age public keys (age1..., one per line) the backups are encrypted to. Each holder of the "
        "matching private key (identity) can decrypt; keep at least one identity offline, e.g. printed in a safe. "
        "Lines starting with # are comments. Make a key pair on the host that restores, never on this server: "
        "spp-backup keys age --out identity.txt (or age-keygen -o identity.txt), and paste the public key it prints.",
    )
    keep_last = fields.Integer(
        string="Keep last",
        default=0,
        tracking=True,
        help="Keep the N newest backups, whatever their dates." + RETENTION_HELP,
    )
    keep_daily = fields.Integer(
        string="Keep daily",
        default=0,
        tracking=True,
        help="Keep the newest backup of each of the N most recent days (UTC) that have one." + RETENTION_HELP,
    )
    keep_weekly = fields.Integer(
        string="Keep weekly",
        default=0,
        tracking=True,
        help="Keep the newest backup of each of the N most recent ISO weeks that have one." + RETENTION_HELP,
    )
    keep_monthly = fields.Integer(
        string="Keep monthly",
        default=0,
        tracking=True,
        help="Keep the newest backup of each of the N most recent months that have one." + RETENTION_HELP,
    )
    keep_yearly = fields.Integer(
        string="Keep yearly",
        default=0,
        tracking=True,
        help="Keep the newest backup of each of the N most recent years that have one." + RETENTION_HELP,
    )
    has_s3_destination = fields.Boolean(compute="_compute_has_s3_destination", string="Has an S3 destination")
    last_success_at = fields.Datetime(string="Last success", readonly=True, copy=False)
    last_success_job_id = fields.Many2one(
        "spp.backup.job", string="Last successful job", readonly=True, copy=False, index="btree_not_null"
    )
    last_failure_at = fields.Datetime(string="Last failure", readonly=True, copy=False)
    last_job_id = fields.Many2one("spp.backup.job", string="Last job", readonly=True, copy=False)
    job_ids = fields.One2many("spp.backup.job", "policy_id", string="Jobs", readonly=True)
    job_count = fields.Integer(compute="_compute_job_count", string="Job count")
    state = fields.Selection(
        [
            ("ok", "OK"),
            ("late", "Late"),
            ("failing", "Failing"),
            ("verify_failed", "Verification failed"),
            ("partial", "A copy failed"),
            ("never", "Never ran"),
        ],
        string="Status",
        compute="_compute_state",
        help="OK: the last backup succeeded within the RPO. Late: the last success is older than the RPO, "
        "or the next run is more than an hour overdue. Failing: the last finished backup failed. "
        "Verification failed: the newest successful backup was read back and did not match its manifest "
        "or signature. Never ran: no backup of this policy has finished yet.",
    )

    user_id = fields.Many2one(
        "res.users",
        string="Responsible",
        tracking=True,
        domain=[("share", "=", False)],
        help="Who gets the to-do when this policy raises an alert (failed backup or drill, RPO or RTO breached). "
        "Leave empty to give it to every Backup Manager; every Backup Manager gets the email either way.",
    )
    # ------------------------------------------------------------- drills
    is_drill_scheduled = fields.Boolean(
        string="Scheduled drills",
        default=True,
        tracking=True,
        help="Regularly restore the newest good backup into a scratch database, check it and drop it again: the "
        "proof that the backups restore, and the measure of the real recovery time (RTO). Needs the age identity "
        "on this server (identity_file in odoo.conf) when the backups are encrypted.",
    )
    drill_interval_number = fields.Integer(
        string="Drill every",
        default=1,
        tracking=True,
        help="How many days, weeks or months between two scheduled restore drills.",
    )
    drill_interval_type = fields.Selection(
        [("days", "Days"), ("weeks", "Weeks"), ("months", "Months")],
        string="Drill interval unit",
        default="weeks",
        required=True,
        tracking=True,
        help="The unit of the interval between two scheduled restore drills.",
    )
    next_drill = fields.Datetime(
        string="Next drill",
        copy=False,
        help="When the next scheduled drill starts; set from the drill interval, you may change it by hand.",
    )
    drill_ids = fields.One2many("spp.backup.drill", "policy_id", string="Drills", readonly=True)
    drill_count = fields.Integer(compute="_compute_drill_count", string="Drill count")
    last_drill_id = fields.Many2one("spp.backup.drill", string="Last drill", readonly=True, copy=False)
    last_drill_state = fields.Selection(
        [("passed", "Passed"), ("failed", "Failed"), ("none", "No drill yet")],
        string="Last drill result",
        compute="_compute_objectives",
    )
    # --------------------------------------------------------- objectives
    rpo_status = fields.Selection(
        [("ok", "Met"), ("breached", "Breached"), ("unknown", "Unknown")],
        string="RPO",
        compute="_compute_objectives",
        help="Met when the newest good backup (done, and not failed verification) is younger than the RPO. "
        "Without any backup it is unknown, and breached (with an alert) once the policy is older than the RPO.",
    )
    rpo_target_text = fields.Char(
        string="RPO target", compute="_compute_objectives", help="The RPO, as a duration in words."
    )
    rpo_age_seconds = fields.Float(
        string="Newest good backup age (s)",
        compute="_compute_objectives",
        digits=(16, 0),
        help="Seconds since the newest good backup finished (the data you would lose now).",
    )
    rto_status = fields.Selection(
        [("ok", "Met"), ("breached", "Breached"), ("unknown", "Unknown")],
        string="RTO",
        compute="_compute_objectives",
        help="Met when the last drill restored within the RTO; unknown until a drill has measured it.",
    )
    rto_target_text = fields.Char(
        string="RTO target", compute="_compute_objectives", help="The RTO, as a duration in words."
    )
    rto_measured_seconds = fields.Float(
        string="Measured restore time (s)",
        compute="_compute_objectives",
        digits=(16, 1),
        help="How long the restore of the last drill took, in seconds.",
    )
    rpo_text = fields.Char(
        string="Recovery point",
        compute="_compute_objectives",
        help="Age of the newest good backup against the RPO target.",
    )
    rto_text = fields.Char(
        string="Recovery time",
        compute="_compute_objectives",
        help="Restore time measured by the last drill against the RTO target.",
    )
    has_good_backup = fields.Boolean(
        string="Has a successful backup",
        compute="_compute_has_good_backup",
        help="At least one backup of this policy succeeded, so there is something to drill.",
    )
    worker_mode_text = fields.Char(
        string="Worker",
        compute="_compute_worker_mode_text",
        help="Who runs the backups: a worker service beside Odoo, or one-shot workers that Odoo starts itself "
        "(embedded mode), which die with an Odoo restart.",
    )
    compliance_color = fields.Integer(compute="_compute_objectives", string="Compliance colour")
    alert_ids = fields.One2many("spp.backup.alert", "policy_id", string="Alerts", readonly=True)
    open_alert_count = fields.Integer(compute="_compute_open_alert_count", string="Open alerts")

    def _auto_init(self):
        # Policies made before encryption existed keep backing up as they did
        # (unencrypted) until an administrator gives them a key: the new
        # column is created empty (False) instead of filled with the default.
        cr = self.env.cr
        if table_exists(cr, self._table) and not column_exists(cr, self._table, "encrypt"):
            create_column(cr, self._table, "encrypt", "boolean")
        return super()._auto_init()

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

    @api.constrains("drill_interval_number", "is_drill_scheduled")
    def _check_drill_interval(self):
        for policy in self:
            if policy.is_drill_scheduled and policy.drill_interval_number <= 0:
                raise ValidationError(
                    _(
                        "Policy '%s': the drill interval must be at least 1 (day, week or month), or untick "
                        "Scheduled drills.",
                        policy.name,
                    )
                )

    @api.constrains("time_of_day")
    def _check_time_of_day(self):
        for policy in self:
            if not 0 <= policy.time_of_day < 24:
                raise ValidationError(
                    _(
                        "Policy '%s': the time of day must be between 00:00 and 23:59 (on the clock of its time zone).",
                        policy.name,
                    )
                )

    @api.constrains("tz")
    def _check_tz(self):
        for policy in self:
            try:
                time_zone(policy.tz)
            except ValueError as exc:
                raise ValidationError(
                    _(
                        "Policy '%(name)s': this server does not know the time zone %(tz)s; choose another one, "
                        "e.g. the main city of the same zone.",
                        name=policy.name,
                        tz=policy.tz,
                    )
                ) from exc

    @api.constrains("interval_type", "weekday")
    def _check_weekday(self):
        for policy in self:
            if policy.interval_type == "weeks" and not policy.weekday:
                raise ValidationError(
                    _("Policy '%s' runs every week or more: choose the day of the week it runs on.", policy.name)
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

    @api.constrains("encrypt", "age_recipients")
    def _check_recipients(self):
        for policy in self:
            if policy.age_recipients:
                try:
                    crypto.parse_recipients([policy.age_recipients])
                except BackupError as exc:
                    raise ValidationError(
                        _(
                            "Policy '%(name)s': %(reason)s Give one age public key per line, as printed by "
                            "'age-keygen -y identity.txt' or 'spp-backup keys age' on the host that restores.",
                            name=policy.name,
                            reason=exc,
                        )
                    ) from exc
            if policy.encrypt and not policy._recipient_lines():
                raise ValidationError(
                    _(
                        "Policy '%s' encrypts its backups but has no recipient: paste the age public key (age1...) "
                        "whose private key you keep offline. Make the key pair on the host that restores, never on "
                        "this server: spp-backup keys age --out identity.txt (or age-keygen -o identity.txt).",
                        policy.name,
                    )
                )

    @api.constrains(*RETENTION_FIELDS)
    def _check_retention(self):
        for policy in self:
            for name in RETENTION_FIELDS:
                if policy[name] < 0:
                    raise ValidationError(
                        _(
                            "Policy '%(policy)s': '%(rule)s' must be 0 or more (0 turns the rule off).",
                            policy=policy.name,
                            rule=self._fields[name].string,
                        )
                    )

    @api.constrains("encrypt", "allow_unencrypted_offsite", "destination_ids")
    def _check_offsite_encryption(self):
        for policy in self:
            if policy.encrypt or policy._unencrypted_offsite_allowed():
                continue
            offsite = policy.destination_ids.filtered(lambda d: d.kind == "s3")
            if not offsite:
                continue
            names = ", ".join("'%s'" % name for name in offsite.mapped("name"))
            if policy.allow_unencrypted_offsite:
                raise ValidationError(
                    _(
                        "Policy '%(policy)s' would write to the S3 destination %(dest)s without encryption, and "
                        "this server does not allow unencrypted offsite copies: tick Encrypt (recommended), or "
                        "have the server's administrator set allow_unencrypted_offsite = true in the "
                        "[spp_backup] section of odoo.conf.",
                        policy=policy.name,
                        dest=names,
                    )
                )
            raise ValidationError(
                _(
                    "Policy '%(policy)s' writes to the S3 destination %(dest)s without encryption: tick Encrypt "
                    "(recommended), or tick 'Allow unencrypted offsite copies' if the data may leave this "
                    "server readable.",
                    policy=policy.name,
                    dest=names,
                )
            )

    def _unencrypted_offsite_allowed(self):
        """Readable copies may go to S3: the policy's own tick, and odoo.conf's allow_unencrypted_offsite."""
        self.ensure_one()
        return self.allow_unencrypted_offsite and scope.unencrypted_offsite_allowed(
            self.env["spp.backup.engine"]._settings()
        )

    @api.onchange("destination_ids")
    def _onchange_destination_ids_encrypt(self):
        if not self.allow_unencrypted_offsite and any(d.kind == "s3" for d in self.destination_ids):
            self.encrypt = True

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

    def _compute_drill_count(self):
        counts = {
            policy.id: count
            for policy, count in self.env["spp.backup.drill"]._read_group(
                [("policy_id", "in", self.ids)], ["policy_id"], ["__count"]
            )
        }
        for policy in self:
            policy.drill_count = counts.get(policy.id, 0)

    def _compute_open_alert_count(self):
        counts = {
            policy.id: count
            for policy, count in self.env["spp.backup.alert"]._read_group(
                [("policy_id", "in", self.ids), ("state", "=", "open")], ["policy_id"], ["__count"]
            )
        }
        for policy in self:
            policy.open_alert_count = counts.get(policy.id, 0)

    @api.depends(
        "last_success_at",
        "last_failure_at",
        "rpo_hours",
        "rto_minutes",
        "last_drill_id.state",
        "last_drill_id.restore_seconds",
        "last_success_job_id.state",
        "last_success_job_id.verify_state",
    )
    def _compute_objectives(self):
        now = fields.Datetime.now()
        for policy in self:
            verdicts = policy._objectives(now)
            for name in (
                "rpo_status",
                "rto_status",
                "rpo_age_seconds",
                "rto_measured_seconds",
                "rpo_target_text",
                "rto_target_text",
                "rpo_text",
                "rto_text",
            ):
                policy[name] = verdicts[name]
            drill = policy.last_drill_id
            policy.last_drill_state = objectives.drill_verdict(bool(drill), drill.state == states.DONE, drill.is_ok)
            policy.compliance_color = objectives.compliance_color(
                policy.rpo_status, policy.rto_status, policy.last_drill_state, policy.state
            )

    def _compute_worker_mode_text(self):
        Engine = self.env["spp.backup.engine"]
        mode, embedded = Engine._worker_mode(), Engine._embedded_allowed()
        if mode == "service":
            text = _("Worker service running")
        elif embedded:
            text = _("Embedded: Odoo starts one-shot workers (they stop with an Odoo restart)")
        else:
            text = _("No worker running: start the spp-backup worker service")
        for policy in self:
            policy.worker_mode_text = text

    @api.depends("last_success_at", "last_success_job_id")
    def _compute_has_good_backup(self):
        for policy in self:
            policy.has_good_backup = bool(policy.last_success_at or policy.last_success_job_id)

    @api.depends("destination_ids.kind")
    def _compute_has_s3_destination(self):
        for policy in self:
            policy.has_s3_destination = any(d.kind == "s3" for d in policy.destination_ids)

    @api.depends(
        "last_success_at",
        "last_failure_at",
        "next_run",
        "rpo_hours",
        "active",
        "last_success_job_id.verify_state",
        "last_success_job_id.state",
    )
    def _compute_state(self):
        now = fields.Datetime.now()
        for policy in self:
            policy.state = objectives.policy_state(
                now,
                last_success_at=policy.last_success_at,
                last_failure_at=policy.last_failure_at,
                success_verify_state=policy.last_success_job_id.verify_state,
                success_partial=policy.last_success_job_id.state == states.PARTIAL,
                rpo_hours=policy.rpo_hours,
                active=policy.active,
                next_run=policy.next_run,
            )

    # ---------------------------------------------------------------- schedule

    SCHEDULE_FIELDS = ("interval_number", "interval_type", "time_of_day", "tz", "weekday", "schedule_anchor")

    @api.model
    def _default_tz(self):
        return self.env.user.tz or "UTC"

    @api.onchange("user_id")
    def _onchange_user_id_tz(self):
        # A new policy takes its responsible's time zone; an existing schedule stays as it is.
        if not self._origin.id and self.user_id.tz:
            self.tz = self.user_id.tz

    def _schedule_args(self):
        """The schedule as the engine takes it: interval, time of day, time zone and weekday."""
        self.ensure_one()
        weekday = int(self.weekday) if self.interval_type == "weeks" and self.weekday else None
        return self.interval_number, self.interval_type, self.time_of_day, self.tz or "UTC", weekday

    def _next_slot(self, after=None, anchor=None):
        """The first slot of the schedule after ``after`` (now), naive UTC; the anchor day is the policy's."""
        number, unit, time_of_day, tz, weekday = self._schedule_args()
        return next_slot(
            after or fields.Datetime.now(),
            number,
            unit,
            time_of_day,
            tz=tz,
            anchor=anchor or self.schedule_anchor or None,
            weekday=weekday,
        )

    def _plan_schedule(self, given=()):
        """Anchor day and next run from the schedule as it is now, except those named in ``given`` (set by hand)."""
        now = fields.Datetime.now()
        for policy in self:
            _number, unit, time_of_day, tz, weekday = policy._schedule_args()
            updates = {}
            anchor = policy.schedule_anchor
            if "schedule_anchor" not in given or not anchor:
                anchor = updates["schedule_anchor"] = schedule_anchor(now, unit, time_of_day, tz=tz, weekday=weekday)
            if "next_run" not in given:
                updates["next_run"] = policy._next_slot(after=now, anchor=anchor)
            if updates:
                super(SppBackupPolicy, policy).write(updates)

    @api.depends("interval_number", "interval_type", "time_of_day", "tz", "weekday")
    @api.depends_context("lang")
    def _compute_schedule_text(self):
        weekdays = dict(self._fields["weekday"]._description_selection(self.env))
        for policy in self:
            hour, minute = hour_minute(policy.time_of_day)
            values = {
                "n": policy.interval_number,
                "time": "%02d:%02d" % (hour, minute),
                "tz": policy.tz or "UTC",
                "day": weekdays.get(policy.weekday, ""),
            }
            if policy.interval_type == "hours":
                text = (
                    _("Every hour from %(time)s (%(tz)s)", **values)
                    if policy.interval_number == 1
                    else _("Every %(n)s hours from %(time)s (%(tz)s)", **values)
                )
            elif policy.interval_type == "weeks":
                text = (
                    _("Every week on %(day)s at %(time)s (%(tz)s)", **values)
                    if policy.interval_number == 1
                    else _("Every %(n)s weeks on %(day)s at %(time)s (%(tz)s)", **values)
                )
            else:
                text = (
                    _("Every day at %(time)s (%(tz)s)", **values)
                    if policy.interval_number == 1
                    else _("Every %(n)s days at %(time)s (%(tz)s)", **values)
                )
            policy.schedule_text = text

    DRILL_SCHEDULE_FIELDS = ("is_drill_scheduled", "drill_interval_number", "drill_interval_type")

    @api.constrains("database")
    def _check_database(self):
        Engine = self.env["spp.backup.engine"]
        settings = Engine._settings()
        for policy in self:
            if not Engine._database_allowed(policy.database, settings):
                try:
                    Engine._check_database_scope(policy.database, settings=settings)
                except UserError as exc:
                    raise ValidationError(exc.args[0]) from exc

    @api.model_create_multi
    def create(self, vals_list):
        for vals in vals_list:
            if not vals.get("tz") and vals.get("user_id"):
                responsible_tz = self.env["res.users"].browse(vals["user_id"]).tz
                if responsible_tz:
                    vals["tz"] = responsible_tz
        policies = super().create(vals_list)
        for policy, vals in zip(policies, vals_list, strict=True):
            policy._plan_schedule(given={name for name in ("schedule_anchor", "next_run") if vals.get(name)})
            if not vals.get("next_drill"):
                policy.next_drill = policy._next_drill_slot()
        return policies

    def write(self, vals):
        result = super().write(vals)
        if any(name in vals for name in self.SCHEDULE_FIELDS):
            self._plan_schedule(given=vals)
        if "next_drill" not in vals and any(name in vals for name in self.DRILL_SCHEDULE_FIELDS):
            for policy in self:
                policy.next_drill = policy._next_drill_slot()
        return result

    def _is_busy(self):
        """True when a backup of this policy is queued or running (the worker's run decides, not the job)."""
        self.ensure_one()
        jobs = (
            self.env["spp.backup.job"].sudo().search([("policy_id", "=", self.id), ("state", "in", states.IN_FLIGHT)])
        )
        jobs._collect()
        return any(job.state in states.IN_FLIGHT for job in jobs)

    def _due(self, now=None):
        """Active policies whose next run has come and that have no job in progress."""
        now = now or fields.Datetime.now()
        candidates = self.search([("active", "=", True), ("next_run", "!=", False), ("next_run", "<=", now)])
        return candidates.filtered(lambda policy: not policy._is_busy())

    @api.model
    def _cron_run_due(self):
        """Queue a backup for every due policy; the worker runs it. One alert for a policy out of scope."""
        Engine = self.env["spp.backup.engine"]
        Job = self.env["spp.backup.job"].sudo()
        settings = Engine._settings()
        for policy in self._due():
            now = fields.Datetime.now()
            # The next slot comes from the schedule, not from the run now due (which may have been set by
            # hand); it lies after now, so missed slots run once. The advanced schedule and the queued run
            # commit together: a crash here never re-runs the slot.
            policy.next_run = policy._next_slot(after=now)
            if not Engine._database_allowed(policy.database, settings):
                policy._raise_scope_alert()
                Engine._commit_unless_testing()
                continue
            job = Job.create({"policy_id": policy.id, "trigger": "schedule", "user_id": False})
            job._queue_run()
            Engine._commit_unless_testing()

    def _raise_scope_alert(self):
        """One alert: this policy's database is outside the databases setting, so it does not run."""
        self.ensure_one()
        self.env["spp.backup.alert"]._raise(
            self,
            "job_failed",
            _(
                "Policy '%(name)s' backs up database %(db)s, which is not this Odoo's database (%(here)s), and the "
                "databases setting in the [spp_backup] section of odoo.conf does not allow it: it did not run. Add "
                "it there (for example databases = ^%(db)s$) and restart Odoo, or change the policy.",
                name=self.name,
                db=self.database,
                here=self.env.cr.dbname,
            ),
        )

    # ------------------------------------------------------------------ engine

    def _to_engine_plan(self):
        """This policy as a plain engine BackupPlan."""
        self.ensure_one()
        Engine = self.env["spp.backup.engine"]
        settings = Engine._settings()
        Engine._check_database_scope(self.database, settings=settings)
        try:
            min_free_bytes = int(settings.get("min_free_bytes", 0) or 0)
        except ValueError as exc:
            raise UserError(
                _("min_free_bytes in the [spp_backup] section of the Odoo configuration must be a number of bytes.")
            ) from exc
        rcfile = Engine._conf_path()
        recipients = self._recipient_lines() if self.encrypt else []
        if self.encrypt and not recipients:
            raise UserError(
                _("Policy '%s' encrypts its backups but has no age recipient (public key): add one.", self.name)
            )
        if not self.encrypt and self.has_s3_destination and not self._unencrypted_offsite_allowed():
            raise UserError(
                _("Policy '%s' would copy unencrypted backups to S3: tick Encrypt on the policy.", self.name)
            )
        return BackupPlan(
            db_name=self.database,
            destinations=[destination._to_engine_destination() for destination in self.destination_ids],
            recipients=recipients,
            signing_key_file=self._signing_key_file(settings),
            retention=self._retention_dict(),
            verified_ids=self._verified_backup_ids(),
            owner=self._backup_owner(),
            owned_ids=self._owned_backup_ids(),
            pg=Engine._pg(settings),
            data_dir=Engine._data_dir(),
            include_database=self.include_database,
            include_filestore=self.include_filestore,
            incremental_filestore=self.include_filestore and self.incremental_filestore,
            include_application=self.include_application,
            odoo_conf=rcfile,
            odoo_version={
                "version": release.version,
                "version_info": list(release.version_info),
                "major_version": release.major_version,
            },
            min_free_bytes=min_free_bytes,
            lock_key=LOCK_NAMESPACE + self.id,
            label=self.name,
        )

    def _recipient_lines(self):
        """The age public keys of this policy, one per item, comments and blank lines left out."""
        self.ensure_one()
        lines = [line.strip() for line in (self.age_recipients or "").splitlines()]
        return [line for line in lines if line and not line.startswith("#")]

    def _retention_dict(self):
        """The retention rules as the engine takes them, or None when every count is 0 (keep everything)."""
        self.ensure_one()
        rules = {name: int(self[name] or 0) for name in RETENTION_FIELDS}
        return rules if any(rules.values()) else None

    def _backup_owner(self):
        """What this policy's backup sets record as their owner: this database's identity and the policy."""
        self.ensure_one()
        uuid = self.env["ir.config_parameter"].sudo().get_param("database.uuid")
        return {"database_uuid": uuid, "policy_id": self.id}

    def _owned_backup_ids(self):
        """Backup ids of this policy's jobs (sets made before manifests named their owner are found by these)."""
        self.ensure_one()
        jobs = self.env["spp.backup.job"].sudo().search([("policy_id", "=", self.id), ("backup_id", "!=", False)])
        return sorted(set(jobs.mapped("backup_id")))

    def _verified_backup_ids(self, destination=None):
        """Backup ids of this policy with a copy that verified OK (at ``destination`` when given), newest first."""
        self.ensure_one()
        domain = [
            ("job_id.policy_id", "=", self.id),
            ("verify_state", "=", "ok"),
            ("job_id.backup_id", "!=", False),
        ]
        if destination:
            domain.append(("destination_id", "=", destination.id))
        copies = self.env["spp.backup.job.copy"].sudo().search(domain)
        return sorted(set(copies.mapped("job_id.backup_id")), reverse=True)

    def action_backup_now(self):
        """Open the confirmation to back up this policy now."""
        self.ensure_one()
        self.env["spp.backup.engine"]._check_manager()
        if not self.active:
            raise UserError(_("Policy '%s' is archived: restore it before backing up.", self.name))
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

    def action_preview_retention(self):
        """Show, for every destination, which backups the retention rules keep and which they would delete.

        A dry run: nothing is deleted.
        """
        self.ensure_one()
        self.env["spp.backup.engine"]._check_manager()
        settings = self.env["spp.backup.engine"]._settings()
        rules = self._retention_dict() or {name: 0 for name in RETENTION_FIELDS}
        texts = []
        for destination in self.destination_ids:
            verified = self._verified_backup_ids(destination)
            try:
                storage = destination._open_storage(settings)
                report = destination._call_storage(
                    lambda storage=storage, verified=verified: prune(
                        storage,
                        self.database,
                        RetentionRules(**rules),
                        verified_ids=verified,
                        dry_run=True,
                        owner=self._backup_owner(),
                        owned_ids=self._owned_backup_ids(),
                    )
                )
            except UserError as exc:
                texts.append(_("%(dest)s: cannot be read: %(reason)s", dest=destination.name, reason=exc.args[0]))
                continue
            text = report.text()
            if not (report.keep or report.delete or report.locked):
                text += "\n  " + _("no backup of %s here yet", self.database)
            texts.append("%s\n%s" % (destination.name, text))
        if self._retention_dict() is None:
            texts.insert(0, _("Every keep rule is 0: this policy keeps all its backups and deletes nothing."))
        preview = (
            self.env["spp.backup.retention.preview"]
            ._server_mode()
            .create({"policy_id": self.id, "report": "\n\n".join(texts) or _("This policy has no destination.")})
        )
        return {
            "type": "ir.actions.act_window",
            "name": _("Retention preview"),
            "res_model": "spp.backup.retention.preview",
            "res_id": preview.id,
            "view_mode": "form",
            "target": "new",
        }
