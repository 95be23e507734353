from odoo import _, api, fields, models

from ..engine.core import objectives, states
from ..engine.core.human import human_duration


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
                    ("state", "in", states.SUCCEEDED),
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

    # The objectives are configured in hours (RPO) and minutes (RTO); everything else about them is in seconds,
    # and people read both, targets and measures, as durations in words (engine.core.human.human_duration).

    def _rpo_seconds(self):
        """The RPO target in seconds."""
        return (self.rpo_hours or 0.0) * 3600.0

    def _rto_seconds(self):
        """The RTO target in seconds."""
        return (self.rto_minutes or 0) * 60.0

    def _rpo_verdict(self, now=None):
        """('ok', 'breached' or 'unknown', seconds since the newest good backup finished, or None without one).

        Without any good backup the RPO is unknown while the policy is younger than its RPO, and breached after.
        """
        self.ensure_one()
        point = self._recovery_point() if self.id else self.env["spp.backup.job"]
        return objectives.rpo_verdict(
            now or fields.Datetime.now(), self._rpo_seconds(), point.finished_at or None, self.create_date
        )

    def _rto_verdict(self):
        """('ok', 'breached' or 'unknown', seconds the last drill's restore took, or None) from the last drill."""
        self.ensure_one()
        drill = self.last_drill_id
        measured = drill.restore_seconds if drill and drill.is_rto_measured else None
        return objectives.rto_verdict(self._rto_seconds(), measured)

    def _objectives(self, now=None):
        """The objectives ``now``: {field: value} of the verdicts, the measures (s) and their words, and the
        sentences of the alerts (``rpo_alert``, ``rto_alert``)."""
        self.ensure_one()
        rpo, rto = human_duration(self._rpo_seconds()), human_duration(self._rto_seconds())
        rpo_status, age = self._rpo_verdict(now)
        rto_status, restored = self._rto_verdict()
        texts = {
            "rpo_status": rpo_status,
            "rto_status": rto_status,
            "rpo_age_seconds": age or 0.0,
            "rto_measured_seconds": restored or 0.0,
            "rpo_target_text": rpo,
            "rto_target_text": rto,
        }
        if age is None:
            texts["rpo_text"] = _("no good backup yet (target %s)", rpo)
            texts["rpo_alert"] = _(
                "Policy '%(name)s' has no successful backup, and its RPO is %(rpo)s.", name=self.name, rpo=rpo
            )
        else:
            texts["rpo_text"] = _("newest good backup %(age)s old (target %(rpo)s)", age=human_duration(age), rpo=rpo)
            texts["rpo_alert"] = _(
                "The newest good backup of policy '%(name)s' is %(age)s old; its RPO is %(rpo)s. "
                "Backups may have stopped: check the jobs and the crons.",
                name=self.name,
                age=human_duration(age),
                rpo=rpo,
            )
        if restored is None:
            texts["rto_text"] = _("no drill has measured it yet (target %s)", rto)
            texts["rto_alert"] = False
        else:
            texts["rto_text"] = _(
                "last drill restored in %(time)s (target %(rto)s)", time=human_duration(restored), rto=rto
            )
            texts["rto_alert"] = _(
                "The last drill of policy '%(name)s' restored in %(time)s; its RTO is %(rto)s.",
                name=self.name,
                time=human_duration(restored),
                rto=rto,
            )
        return texts

    def _check_objective_alerts(self, now=None):
        """Raise or resolve the RPO and RTO alerts of these policies as their objectives stand ``now``."""
        Alert = self.env["spp.backup.alert"]
        for policy in self:
            texts = policy._objectives(now)
            wanted = objectives.objective_alerts(texts["rpo_status"], texts["rto_status"], policy.active)
            if wanted["rpo_breach"] == objectives.RAISE:
                Alert._raise(policy, "rpo_breach", texts["rpo_alert"])
            elif wanted["rpo_breach"] == objectives.RESOLVE:
                Alert._resolve(
                    policy, "rpo_breach", _("The newest good backup is within the RPO again: %s.", texts["rpo_text"])
                )
            if wanted["rto_breach"] == objectives.RAISE:
                Alert._raise(policy, "rto_breach", texts["rto_alert"])
            elif wanted["rto_breach"] == objectives.RESOLVE:
                Alert._resolve(
                    policy, "rto_breach", _("The last drill restored within the RTO: %s.", texts["rto_text"])
                )

    @api.model
    def _cron_check_objectives(self, now=None):
        """Check the RPO and RTO of every active policy, also when no backup runs at all, and the continuous
        protection of the server."""
        self.search([("active", "=", True)])._check_objective_alerts(now)
        self.env["spp.backup.pitr.server"]._check_alerts(now)

    def _on_job_finished(self, job):
        """Alerts after a job ended: a failure opens one, a success resolves it and may clear the RPO."""
        self.ensure_one()
        Alert = self.env["spp.backup.alert"]
        if job.state == states.FAILED:
            Alert._raise(
                self,
                "job_failed",
                _("Backup job %(job)s failed: %(reason)s", job=job.display_name, reason=job.error_message or ""),
            )
        elif job.state == states.PARTIAL:
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
        elif job.state == states.DONE:
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
        if drill.state == states.DONE and drill.is_ok:
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
