import datetime
import logging

from markupsafe import Markup
from odoo import _, api, fields, models

from .. import compat
from .server_fields import EVERY_FIELD

_logger = logging.getLogger(__name__)

ALERT_KINDS = [
    ("job_failed", "Backup failed"),
    ("copy_failed", "A copy failed"),
    ("drill_failed", "Restore drill failed"),
    ("rpo_breach", "RPO breached"),
    ("rto_breach", "RTO breached"),
    ("no_worker", "No backup worker"),
    ("pitr", "Continuous protection"),
]

# Queued work older than this with no live worker raises an alert.
STUCK_AFTER = datetime.timedelta(minutes=5)


class SppBackupAlert(models.Model):
    """One incident of a policy: raised once, resolved when its condition clears.

    While an alert of a kind is open for a policy, the same condition raises
    nothing new: the managers get one activity and one email per incident.
    """

    _name = "spp.backup.alert"
    _inherit = ["spp.backup.server.fields"]
    _description = "Backup Alert"
    _server_fields = EVERY_FIELD
    _order = "state, opened_at desc, id desc"

    name = fields.Char(compute="_compute_name", store=True)
    policy_id = fields.Many2one("spp.backup.policy", string="Policy", required=True, ondelete="cascade", index=True)
    kind = fields.Selection(ALERT_KINDS, required=True, readonly=True)
    state = fields.Selection(
        [("open", "Open"), ("resolved", "Resolved")], default="open", required=True, readonly=True, index=True
    )
    opened_at = fields.Datetime(string="Opened", readonly=True, default=fields.Datetime.now)
    resolved_at = fields.Datetime(string="Resolved", readonly=True)
    message = fields.Text(readonly=True, help="What happened, as told to the managers.")
    resolution = fields.Text(readonly=True, help="What cleared the condition.")
    activity_ids = fields.Many2many(
        "mail.activity",
        "spp_backup_alert_activity_rel",
        "alert_id",
        "activity_id",
        string="Activities",
        readonly=True,
        help="The to-dos given to the managers for this incident (gone once marked done).",
    )

    compat.sql_constraints(
        locals(),
        [
            (
                "one_open_per_kind",
                "EXCLUDE (policy_id WITH =, kind WITH =) WHERE (state = 'open')",
                "A policy has at most one open alert of each kind.",
            ),
        ],
    )

    @api.depends("policy_id.name", "kind")
    def _compute_name(self):
        labels = dict(ALERT_KINDS)
        for alert in self:
            alert.name = "%s: %s" % (alert.policy_id.name or "", labels.get(alert.kind, alert.kind or ""))

    # ------------------------------------------------------------------ raise

    @api.model
    def _recipients(self, policy):
        """(users given the activity, partners emailed): the responsible if any, else every Backup Manager."""
        managers = compat.group_members(self.env.ref("spp_backup.group_backup_manager").sudo()).filtered(
            lambda user: user.active and not user.share
        )
        assignees = policy.user_id if policy.user_id and policy.user_id.active else managers
        return assignees, (managers | policy.user_id).partner_id

    @api.model
    def _raise(self, policy, kind, message):
        """Open an alert of ``kind`` for ``policy``, unless one is open already; returns the open alert."""
        self = self._server_mode()
        # What the alert posts and schedules is the server's, whoever's action found the problem.
        policy = self.env["spp.backup.engine"]._as_server(policy)
        open_alert = self.search([("policy_id", "=", policy.id), ("kind", "=", kind), ("state", "=", "open")])
        if open_alert:
            return open_alert[:1]
        alert = self.create({"policy_id": policy.id, "kind": kind, "message": message})
        assignees, partners = self._recipients(policy)
        activity_type = self.env.ref("spp_backup.mail_activity_type_backup_alert", raise_if_not_found=False)
        # The activity is on the policy: Odoo already names the policy wherever it shows the activity (e.g. the
        # '"<policy>: <summary>" assigned to you' email), so the summary is just what happened.
        label = dict(ALERT_KINDS)[kind]
        summary = "%s: %s" % (policy.name, label)
        activities = self.env["mail.activity"]
        for user in assignees:
            # Odoo answers False instead of an activity when its automation is switched off in the context.
            activities |= (
                policy.activity_schedule(
                    activity_type_id=activity_type.id if activity_type else False,
                    summary=label,
                    note=message,
                    user_id=user.id,
                )
                or self.env["mail.activity"]
            )
        alert.activity_ids = activities
        policy.message_post(
            subject=_("Backup alert: %s", summary),
            body=Markup("<p><strong>%s</strong></p><p>%s</p>") % (summary, message),
            partner_ids=partners.ids,
            subtype_xmlid="spp_backup.mt_policy_alert",
        )
        _logger.info("Backup alert %s opened for policy %s: %s", kind, policy.id, message)
        return alert

    @api.model
    def _check_stuck_runs(self, queued, mode):
        """One alert per policy whose work waits for a worker that is not there; resolved once work moves."""
        now = fields.Datetime.now()
        stuck = queued.filtered(lambda run: run.create_date and now - run.create_date > STUCK_AFTER)
        policies = stuck.mapped("policy_id") if mode == "none" else self.env["spp.backup.policy"]
        for policy in policies:
            self._raise(
                policy,
                "no_worker",
                _(
                    "Backups, restores or drills of policy '%s' have waited more than 5 minutes and no backup worker "
                    "is running. Start the worker service (spp-backup worker --conf <odoo.conf>, see the README), or, "
                    "without one, check the worker log in the data directory (spp_backup/worker-<db>.log).",
                    policy.name,
                ),
            )
        waiting = self.sudo().search([("kind", "=", "no_worker"), ("state", "=", "open")])
        for alert in waiting.filtered(lambda a: a.policy_id not in policies):
            self._resolve(alert.policy_id, "no_worker", _("A backup worker picked the waiting work up."))

    @api.model
    def _resolve(self, policy, kind, reason):
        """Close the open alert of ``kind`` for ``policy`` (if any) and mark its activities done."""
        alerts = self._server_mode().search(
            [("policy_id", "=", policy.id), ("kind", "=", kind), ("state", "=", "open")]
        )
        policy = self.env["spp.backup.engine"]._as_server(policy)
        for alert in alerts:
            alert.write({"state": "resolved", "resolved_at": fields.Datetime.now(), "resolution": reason})
            if alert.activity_ids.exists():
                alert.activity_ids.exists().action_feedback(feedback=reason)
            policy.message_post(
                body=_("Resolved: %(alert)s. %(reason)s", alert=alert.name, reason=reason),
                subtype_xmlid="spp_backup.mt_policy_alert_resolved",
            )
        return alerts
