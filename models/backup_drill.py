from markupsafe import Markup
from odoo import _, api, fields, models

from ..engine.core import plans, states
from ..engine.core.human import human_duration


class SppBackupDrill(models.Model):
    """A restore drill: a backup restored into a scratch database, checked, measured and dropped; or, with
    ``pitr_server_id``, the policy's database restored to a second of the WAL archive's window."""

    _name = "spp.backup.drill"
    _description = "Restore Drill"
    _inherit = ["spp.backup.run.mixin", "mail.thread"]
    _order = "create_date desc, id desc"
    _run_action = "drill"

    name = fields.Char(compute="_compute_name", store=True)
    policy_id = fields.Many2one(
        "spp.backup.policy", string="Policy", required=True, readonly=True, ondelete="restrict", index=True
    )
    job_id = fields.Many2one(
        "spp.backup.job", string="Backup job", readonly=True, ondelete="set null", index="btree_not_null"
    )
    copy_id = fields.Many2one("spp.backup.job.copy", string="Copy", readonly=True, ondelete="set null")
    backup_id = fields.Char(string="Backup ID", readonly=True, tracking=True)
    source_location = fields.Char(string="Drilled copy", readonly=True, help="Where the backup set was read.")
    trigger = fields.Selection(
        [("schedule", "Schedule"), ("manual", "Manual"), ("first_unsigned", "First unsigned backup")],
        default="manual",
        required=True,
        readonly=True,
    )
    scratch_db = fields.Char(string="Scratch database", readonly=True)
    is_ok = fields.Boolean(string="Passed", readonly=True, help="Every check passed and the scratch copy was dropped.")
    check_ids = fields.One2many("spp.backup.drill.check", "drill_id", string="Checks", readonly=True)
    restore_seconds = fields.Float(
        string="Measured RTO (s)", readonly=True, digits=(16, 1), help="How long the restore itself took."
    )
    is_rto_measured = fields.Boolean(
        string="RTO measured", readonly=True, help="The restore itself completed, so its time was measured."
    )
    total_seconds = fields.Float(string="Drill total (s)", readonly=True, digits=(16, 1))
    is_cleaned_up = fields.Boolean(
        string="Cleaned up", readonly=True, help="The scratch database and its filestore were dropped."
    )
    report = fields.Text(string="Drill report", readonly=True)
    pitr_server_id = fields.Many2one(
        "spp.backup.pitr.server", string="Protected server", readonly=True, ondelete="set null"
    )
    verdict = fields.Selection(
        [("passed", "Passed"), ("failed", "Failed"), ("pending", "Not finished")],
        compute="_compute_verdict",
        store=True,
        help="Passed: every check passed and the scratch copy was dropped.",
    )
    restore_time = fields.Char(string="Restore time (RTO)", compute="_compute_times")
    total_time = fields.Char(string="Drill took", compute="_compute_times")

    @api.depends("state", "is_ok")
    def _compute_verdict(self):
        for drill in self:
            if drill.state == states.DONE and drill.is_ok:
                drill.verdict = "passed"
            elif drill.state in states.FINISHED:
                drill.verdict = "failed"
            else:
                drill.verdict = "pending"

    @api.depends("restore_seconds", "total_seconds", "is_rto_measured", "state")
    def _compute_times(self):
        for drill in self:
            drill.restore_time = human_duration(drill.restore_seconds) if drill.is_rto_measured else False
            drill.total_time = human_duration(drill.total_seconds) if drill.state in states.FINISHED else False

    @api.depends("policy_id.name", "backup_id", "pitr_server_id")
    def _compute_name(self):
        for drill in self:
            if drill.pitr_server_id:
                drill.name = _("Drill of %s to a second", drill.policy_id.name or "")
            else:
                drill.name = _(
                    "Drill of %(policy)s / %(backup)s",
                    policy=drill.policy_id.name or "",
                    backup=drill.backup_id or "?",
                )

    def _form_action(self):
        """The action that opens this drill's form."""
        self.ensure_one()
        return {
            "type": "ir.actions.act_window",
            "name": _("Restore drill"),
            "res_model": "spp.backup.drill",
            "res_id": self.id,
            "view_mode": "form",
            "target": "current",
        }

    # ------------------------------------------------------------------ run

    def _run_action_of(self):
        return plans.PITR_DRILL if self.pitr_server_id else plans.DRILL

    def _run_plan(self):
        self.ensure_one()
        Engine = self.env["spp.backup.engine"]
        if self.pitr_server_id:
            return plans.PitrDrillPlan(
                location=self.source_location,
                db_name=self.policy_id.database,
                system_id=self.pitr_server_id.sudo().system_id,
                neutralize_modules=Engine._neutralize_by_module(),
            )
        source = self.env["spp.backup.destination"]._source_of(copy=self.copy_id)
        manifest = self._read_manifest(self._source_ref(source))
        return plans.DrillPlan(
            source=source,
            public_key=Engine._trusted_public_key(),
            unsigned_ok=Engine._unsigned_ok(self.policy_id),
            neutralize_sql=Engine._neutralize_queries(manifest.get("modules") or {}),
            jobs=1,
        )

    def _record_result(self, result):
        self.ensure_one()
        checks = result.get("checks") or []
        self.check_ids.unlink()
        if self.pitr_server_id and result.get("backup_id"):
            self.backup_id = result["backup_id"]  # the base backup the drill started from
        self.write(
            {
                "scratch_db": result.get("scratch_db") or False,
                "is_ok": bool(result.get("ok")),
                "restore_seconds": result.get("restore_seconds") or 0.0,
                "is_rto_measured": result.get("restore_seconds") is not None,
                "total_seconds": float(result.get("total_seconds") or 0.0),
                "is_cleaned_up": bool(result.get("cleaned_up")),
                "check_ids": [
                    (
                        0,
                        0,
                        {
                            "sequence": index,
                            "name": check.get("name") or "?",
                            "is_ok": bool(check.get("ok")),
                            "detail": check.get("detail") or False,
                        },
                    )
                    for index, check in enumerate(checks, 1)
                ],
                "report": self._report_text(result),
            }
        )

    @api.model
    def _report_text(self, result):
        """The drill's evidence in words, as kept on the record."""
        lines = [
            _("Backup %(backup)s from %(where)s", backup=result.get("backup_id"), where=result.get("source")),
            _("Result: %s", _("PASSED") if result.get("ok") else _("FAILED")),
        ]
        if result.get("restore_seconds") is not None:
            lines.append(_("Restore took %s (the measured RTO)", human_duration(result["restore_seconds"])))
        for check in result.get("checks") or []:
            verdict = "ok  " if check.get("ok") else "FAIL"
            lines.append("  %-22s %s  %s" % (check.get("name"), verdict, check.get("detail") or ""))
        if result.get("error"):
            lines.append(_("Error: %s", result["error"]))
        if result.get("cleaned_up"):
            lines.append(_("Scratch database %s: dropped", result.get("scratch_db")))
        else:
            lines.append(_("Scratch database %s: NOT dropped, drop it by hand", result.get("scratch_db")))
        return "\n".join(lines)

    def _on_run_done(self, status):
        self._record_result(status.get("result") or {})
        if not self.is_ok:
            # A finished drill that reports a failed check is a failed drill.
            reason = _("The drill reported a failed check.")
            self.write({"state": states.FAILED, "error_message": reason})
            return self._on_run_failed(reason, {})
        self.message_post(
            body=_(
                "Drill of backup %(backup)s passed: restored in %(took)s, every check passed, scratch "
                "database dropped.",
                backup=self.backup_id,
                took=human_duration(self.restore_seconds),
            ),
        )
        self.policy_id.sudo()._on_drill_finished(self)

    def _on_run_failed(self, reason, status):
        if status.get("result"):
            self._record_result(status["result"])
        failed = self.check_ids.filtered(lambda check: not check.is_ok)
        body = Markup("<p>%s</p>") % _(
            "Drill of backup %(backup)s failed: %(reason)s", backup=self.backup_id, reason=reason
        )
        if failed:
            body += Markup("<ul>%s</ul>") % Markup("").join(
                Markup("<li>%s: %s</li>") % (check.name, check.detail or "") for check in failed
            )
        if self.scratch_db and self.report and not self.is_cleaned_up:
            body += Markup("<p>%s</p>") % _(
                "The scratch database %s could not be dropped: drop it by hand.", self.scratch_db
            )
        self.message_post(body=body, subtype_xmlid="spp_backup.mt_drill_failed")
        self.policy_id.sudo()._on_drill_finished(self)
