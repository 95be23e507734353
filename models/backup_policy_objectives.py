import datetime

from odoo import _, api, fields, models


class SppBackupPolicyObjectives(models.Model):
    """Recovery objectives of a policy (RPO, RTO) and the alerts they and the jobs raise."""

    _inherit = "spp.backup.policy"

    # -------------------------------------------------------------- objectives

    def _good_jobs(self, limit=1):
        """The newest good backup jobs of this policy (done, with a backup, not failed verification), newest first."""
        self.ensure_one()
        return (
            self.env["spp.backup.job"]
            .sudo()
            .search(
                [
                    ("policy_id", "=", self.id),
                    ("state", "in", ("done", "partial")),
                    ("backup_id", "!=", False),
                    ("verify_state", "!=", "failed"),
                ],
                order="finished_at desc, id desc",
                limit=limit,
            )
        )

    def _recovery_point(self):
        """The newest good backup job of this policy, or an empty recordset."""
        return self._good_jobs(limit=1)

    def _rpo_verdict(self, now=None):
        """('ok', 'breached' or 'unknown', age in hours of the newest good backup or None when there is none).

        Without any good backup the RPO is unknown while the policy is younger than its RPO, and breached after.
        """
        self.ensure_one()
        now = now or fields.Datetime.now()
        limit = datetime.timedelta(hours=self.rpo_hours or 0)
        point = self._recovery_point() if self.id else self.env["spp.backup.job"]
        if point and point.finished_at:
            age = now - point.finished_at
            return ("breached" if age > limit else "ok"), round(age.total_seconds() / 3600.0, 2)
        since = self.create_date or now
        return ("breached" if now - since > limit else "unknown"), None

    def _rto_verdict(self):
        """('ok', 'breached' or 'unknown', measured restore minutes or None) from the last finished drill."""
        self.ensure_one()
        drill = self.last_drill_id
        if not drill or not drill.is_rto_measured:
            return "unknown", None
        minutes = drill.restore_seconds / 60.0
        return ("breached" if minutes > self.rto_minutes else "ok"), round(minutes, 2)

    def _check_objective_alerts(self, now=None):
        """Raise or resolve the RPO and RTO alerts of these policies as their objectives stand ``now``."""
        Alert = self.env["spp.backup.alert"]
        for policy in self:
            status, age = policy._rpo_verdict(now)
            if status == "breached" and policy.active:
                if age is None:
                    message = _(
                        "Policy '%(name)s' has no successful backup, and its RPO is %(rpo)s hours.",
                        name=policy.name,
                        rpo=policy.rpo_hours,
                    )
                else:
                    message = _(
                        "The newest good backup of policy '%(name)s' is %(age)s hours old; its RPO is %(rpo)s hours. "
                        "Backups may have stopped: check the jobs and the crons.",
                        name=policy.name,
                        age="%.1f" % age,
                        rpo=policy.rpo_hours,
                    )
                Alert._raise(policy, "rpo_breach", message)
            else:
                Alert._resolve(policy, "rpo_breach", _("The newest good backup is within the RPO again."))
            status, minutes = policy._rto_verdict()
            if status == "breached" and policy.active:
                Alert._raise(
                    policy,
                    "rto_breach",
                    _(
                        "The last drill of policy '%(name)s' took %(minutes)s minutes to restore; the RTO is "
                        "%(rto)s minutes.",
                        name=policy.name,
                        minutes="%.1f" % minutes,
                        rto=policy.rto_minutes,
                    ),
                )
            elif status == "ok" or not policy.active:
                Alert._resolve(policy, "rto_breach", _("The last drill restored within the RTO."))

    @api.model
    def _cron_check_objectives(self, now=None):
        """Check the RPO and RTO of every active policy, also when no backup runs at all."""
        self.search([("active", "=", True)])._check_objective_alerts(now)

    def _on_job_finished(self, job):
        """Alerts after a job ended: a failure opens one, a success resolves it and may clear the RPO."""
        self.ensure_one()
        Alert = self.env["spp.backup.alert"]
        if job.state == "failed":
            Alert._raise(
                self,
                "job_failed",
                _("Backup job %(job)s failed: %(reason)s", job=job.display_name, reason=job.error_message or ""),
            )
        elif job.state == "partial":
            Alert._resolve(self, "job_failed", _("Backup job %s stored at least one copy.", job.display_name))
            failed = job.copy_ids.filtered(lambda c: c.state != "ok")
            Alert._raise(
                self,
                "copy_failed",
                _(
                    "Backup job %(job)s is partly done: the copy to %(where)s failed (%(reason)s); the other copies "
                    "are stored.",
                    job=job.display_name,
                    where=", ".join(failed.mapped("destination_id.name")) or "?",
                    reason=job.error_message or "",
                ),
            )
            self._check_objective_alerts()
        elif job.state == "done":
            Alert._resolve(self, "job_failed", _("Backup job %s succeeded.", job.display_name))
            Alert._resolve(self, "copy_failed", _("Backup job %s stored every copy.", job.display_name))
            self._check_objective_alerts()

    def _on_drill_finished(self, drill):
        """Record the drill as the last one; alerts for a failed drill and for the RTO."""
        self.ensure_one()
        if not self.last_drill_id or self.last_drill_id.id < drill.id:
            self.last_drill_id = drill
        if drill != self.last_drill_id:
            return
        Alert = self.env["spp.backup.alert"]
        if drill.state == "done" and drill.is_ok:
            Alert._resolve(self, "drill_failed", _("Drill %s passed.", drill.display_name))
        else:
            Alert._raise(
                self,
                "drill_failed",
                _(
                    "The restore drill %(drill)s failed: %(reason)s",
                    drill=drill.display_name,
                    reason=drill.error_message or "",
                ),
            )
        self._check_objective_alerts()

    def action_view_alerts(self):
        self.ensure_one()
        action = self.env["ir.actions.act_window"]._for_xml_id("spp_backup.action_spp_backup_alert")
        action["domain"] = [("policy_id", "=", self.id)]
        action["context"] = {"search_default_open": 1}
        return action
