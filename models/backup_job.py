import dataclasses
import logging

from odoo import _, api, fields, models
from odoo.exceptions import UserError

from .. import compat
from ..engine.core import plans, states
from ..engine.core.errors import BackupError
from ..engine.core.human import human_bytes, human_duration
from ..engine.core.manifest import filestore_artifact
from ..engine.formats.catalog import BackupRef, resolve
from ..engine.io.storage import open_storage
from ..engine.ops.prune import PruneReport

_logger = logging.getLogger(__name__)

ARTIFACT_KINDS = ("database", "filestore", "application")
MAX_LISTED_MISSING = 500


class SppBackupJob(models.Model):
    _name = "spp.backup.job"
    _description = "Backup Job"
    _inherit = ["spp.backup.run.mixin", "mail.thread"]
    _order = "create_date desc, id desc"
    _run_action = "backup"
    _run_logger = _logger

    name = fields.Char(compute="_compute_name", store=True)
    policy_id = fields.Many2one(
        "spp.backup.policy", string="Policy", required=True, ondelete="restrict", index=True, tracking=True
    )
    db_name = fields.Char(string="Database name", readonly=True, help="The database this job backs up.")
    backup_id = fields.Char(string="Backup ID", readonly=True, copy=False)
    trigger = fields.Selection(
        [("schedule", "Schedule"), ("manual", "Manual")], default="manual", required=True, readonly=True, tracking=True
    )
    # The run fields come from the mixin; these differ from it.
    user_id = fields.Many2one(string="Triggered by")
    duration = fields.Float(**compat.aggregator("avg"))
    plan_destination_ids = fields.Char(
        string="Destinations in plan order", readonly=True, copy=False, help="Ids of the destinations, as run."
    )
    signing = fields.Selection(
        [("signed", "Signed"), ("unsigned", "Not signed")],
        string="Signature",
        readonly=True,
        copy=False,
        help="Whether the policy signed this backup when it was queued (empty: a job from before this was kept).",
    )
    guarded_path_note = fields.Text(string="Restores and drills", compute="_compute_guarded_path_note")

    # Sizes are stored as floats: PostgreSQL integers stop at 2 GiB.
    database_size = fields.Float(string="Database dump size (bytes)", readonly=True, digits=(20, 0))
    database_sha256 = fields.Char(string="Database dump SHA-256", readonly=True)
    filestore_size = fields.Float(string="Filestore archive size (bytes)", readonly=True, digits=(20, 0))
    filestore_sha256 = fields.Char(string="Filestore archive SHA-256", readonly=True)
    application_size = fields.Float(string="Application snapshot size (bytes)", readonly=True, digits=(20, 0))
    application_sha256 = fields.Char(string="Application snapshot SHA-256", readonly=True)
    total_size = fields.Float(string="Total size (bytes)", readonly=True, digits=(20, 0))
    total_size_human = fields.Char(string="Total size", compute="_compute_sizes_human")
    database_size_human = fields.Char(string="Database dump", compute="_compute_sizes_human")
    filestore_size_human = fields.Char(string="Filestore archive", compute="_compute_sizes_human")
    application_size_human = fields.Char(string="Application snapshot", compute="_compute_sizes_human")
    location = fields.Text(string="Stored at", readonly=True, help="Where the backup set was written, one per line.")

    odoo_version = fields.Char(string="Odoo version", readonly=True)
    module_count = fields.Integer(string="Installed modules", readonly=True)
    row_counts_text = fields.Text(string="Row counts", readonly=True)
    filestore_files = fields.Integer(string="Filestore files", readonly=True)
    filestore_bytes = fields.Float(string="Filestore bytes", readonly=True, digits=(20, 0))
    filestore_bytes_human = fields.Char(string="Filestore size", compute="_compute_sizes_human")
    missing_files_count = fields.Integer(string="Missing attachment files", readonly=True)
    missing_files_text = fields.Text(string="Missing files", readonly=True)
    warnings = fields.Text(readonly=True)
    copy_ids = fields.One2many("spp.backup.job.copy", "job_id", string="Copies", readonly=True, copy=False)
    has_stored_copy = fields.Boolean(compute="_compute_has_stored_copy", string="Has a stored copy")
    retention_report = fields.Text(
        string="Retention", readonly=True, copy=False, help="What retention kept and deleted after this backup."
    )

    verify_state = fields.Selection(
        [
            (states.NOT_VERIFIED, "Not verified"),
            (states.VERIFYING, "Verifying"),
            (states.VERIFIED, "Verified"),
            (states.FAILED, "Verification failed"),
        ],
        string="Verification",
        default=states.NOT_VERIFIED,
        required=True,
        readonly=True,
        copy=False,
        tracking=True,
    )
    verify_run_id = fields.Many2one("spp.backup.run", string="Verification run", readonly=True, copy=False)
    verified_at = fields.Datetime(string="Verified on", readonly=True, copy=False)
    verify_report = fields.Text(string="Verification report", readonly=True, copy=False)

    @api.depends("policy_id.name", "backup_id")
    def _compute_name(self):
        for job in self:
            job.name = "%s / %s" % (job.policy_id.name or "", job.backup_id or _("job %s", job.id or "new"))

    @api.depends("database_size", "filestore_size", "application_size", "total_size", "filestore_bytes")
    def _compute_sizes_human(self):
        for job in self:
            for kind in ARTIFACT_KINDS + ("total",):
                size = job["%s_size" % kind]
                job["%s_size_human" % kind] = human_bytes(size) if size else False
            job.filestore_bytes_human = human_bytes(job.filestore_bytes) if job.backup_id else False

    @api.depends("location", "copy_ids.state")
    def _compute_has_stored_copy(self):
        for job in self:
            # Jobs recorded before copies had records fall back on their location text.
            job.has_stored_copy = bool(job.backup_id) and (
                any(copy.state == "ok" for copy in job.copy_ids)
                or (not job.copy_ids and bool((job.location or "").strip()))
            )

    @api.depends("signing", "policy_id.is_drill_scheduled")
    def _compute_guarded_path_note(self):
        for job in self:
            unsigned = job.signing == "unsigned" and job.policy_id
            job.guarded_path_note = job.policy_id.sudo()._guarded_path_text() if unsigned else False

    @api.model_create_multi
    def create(self, vals_list):
        policies = self.env["spp.backup.policy"].browse(
            [vals["policy_id"] for vals in vals_list if vals.get("policy_id")]
        )
        databases = {policy.id: policy.database for policy in policies}
        signing = {policy.id: "signed" if policy.sign else "unsigned" for policy in policies.sudo()}
        for vals in vals_list:
            vals.setdefault("db_name", databases.get(vals.get("policy_id")))
            vals.setdefault("signing", signing.get(vals.get("policy_id")))
        jobs = super().create(vals_list)
        for job in jobs:
            job.policy_id.sudo().last_job_id = job
        return jobs

    # ------------------------------------------------------------------ run

    def _run_plan(self):
        # The worker checks each destination against odoo.conf and the approvals the server recorded, itself.
        return self.policy_id._to_engine_plan()

    def _queue_run(self):
        for job in self:
            job.plan_destination_ids = ",".join(str(dest.id) for dest in job.policy_id.destination_ids)
        return super()._queue_run()

    def _run_log_name(self):
        return "Backup job %s" % self.id

    def _run_text(self, occasion, **params):
        if occasion == "already_started":
            return _("Job %s has already been started.", params["record"])
        return _("The backup could not be started: %s", params["reason"])

    @api.model
    def _cron_collect(self):
        """Kept for the cron of installations made before runs existed: the runs' collector."""
        self.env["spp.backup.run"]._cron_collect()

    def _apply_run(self, run):
        if run.action == "verify":
            return self._apply_verify(run)
        return super()._apply_run(run)

    def _apply_run_failed(self, run, reason):
        if run.action == "verify":
            if run == self.verify_run_id and self.verify_state == states.VERIFYING:
                self.write(
                    {"verify_state": states.FAILED, "verified_at": fields.Datetime.now(), "verify_report": reason}
                )
            return
        super()._apply_run_failed(run, reason)

    def _set_duration(self, status=None):
        # The worker's result carries the backup's own duration.
        if not (status or {}).get("result"):
            super(SppBackupJob, self.filtered(lambda job: job.state not in states.SUCCEEDED))._set_duration(status)

    def _record_result(self, status):
        """Store the evidence of the worker's result: sizes, SHA-256s, summary, copies, retention."""
        self.ensure_one()
        result = status.get("result") or {}
        summary = result.get("summary") or {}
        artifacts = result.get("artifacts") or {}
        values = {
            "backup_id": result.get("backup_id"),
            "duration": float(result.get("duration") or 0.0),
            "location": "\n".join(result.get("locations") or []),
            "total_size": float(sum(int(art.get("size") or 0) for art in artifacts.values())),
            "odoo_version": summary.get("version"),
            "module_count": int(summary.get("module_count") or 0),
            "row_counts_text": "\n".join(
                "%s: %s" % (table, count) for table, count in sorted((summary.get("row_counts") or {}).items())
            ),
            "filestore_files": int(summary.get("filestore_files") or 0),
            "filestore_bytes": float(summary.get("filestore_bytes") or 0),
            "warnings": "\n".join(result.get("warnings") or []),
            "retention_report": self._retention_text(result.get("retention")),
        }
        missing = summary.get("missing_files") or []
        values["missing_files_count"] = int(summary.get("missing_count") or 0) or len(missing)
        listed = missing[:MAX_LISTED_MISSING]
        if values["missing_files_count"] > len(listed):
            listed = listed + [_("... and %s more", values["missing_files_count"] - len(listed))]
        values["missing_files_text"] = "\n".join(listed)
        for kind in ARTIFACT_KINDS:
            # A filestore kept in the destination's store: the set holds its file list (the new files' bytes
            # are in the store, counted in the job's log).
            art = (filestore_artifact(artifacts)[1] if kind == "filestore" else artifacts.get(kind)) or {}
            values["%s_size" % kind] = float(art.get("size") or 0)
            values["%s_sha256" % kind] = art.get("sha256") or False
        self.write(values)
        self._record_copies(result)
        self._mark_pruned(result.get("retention"))

    def _planned_destinations(self):
        """The destinations of the plan, in the plan's order (those still existing, False for the others)."""
        self.ensure_one()
        ids = [int(part) for part in (self.plan_destination_ids or "").split(",") if part.strip().isdigit()]
        existing = self.env["spp.backup.destination"].with_context(active_test=False).browse(ids).exists()
        return [existing.browse(dest_id) if dest_id in existing.ids else False for dest_id in ids]

    def _record_copies(self, result):
        """One copy record per destination of the plan, matched by position."""
        self.ensure_one()
        copies = result.get("copies")
        if copies is None:
            copies = [{"location": where, "ok": True, "error": None} for where in result.get("locations") or []]
        destinations = self._planned_destinations()
        if len(destinations) != len(copies):
            destinations = [False] * len(copies)
        self.copy_ids.unlink()
        self.env["spp.backup.job.copy"].create(
            [
                {
                    "job_id": self.id,
                    "sequence": index,
                    "destination_id": destination.id if destination else False,
                    "destination_label": copy.get("destination") or (destination.name if destination else False),
                    "location": copy.get("location"),
                    "state": "ok" if copy.get("ok") else "failed",
                    "error": copy.get("error") or False,
                }
                for index, (copy, destination) in enumerate(zip(copies, destinations, strict=True), 1)
            ]
        )

    def _mark_pruned(self, reports):
        """The copies retention just deleted (of this policy's older jobs) say so: no Restore, no Verify."""
        self.ensure_one()
        now = fields.Datetime.now()
        for report in reports or []:
            deleted = set(report.get("deleted") or [])
            where = (report.get("destination") or "").rstrip("/")
            if not deleted or not where:
                continue
            copies = self.env["spp.backup.job.copy"].search(
                [
                    ("job_id.policy_id", "=", self.policy_id.id),
                    ("job_id.backup_id", "in", sorted(deleted)),
                    ("state", "=", "ok"),
                ]
            )
            copies.filtered(lambda c, where=where: (c.location or "").startswith(where + "/")).write(
                {"state": "pruned", "pruned_at": now}
            )

    def _no_copy_text(self):
        """Why this job offers nothing to verify or restore, in words."""
        self.ensure_one()
        pruned = self.copy_ids.filtered(lambda c: c.state == "pruned")
        if pruned and not self.copy_ids.filtered(lambda c: c.state == "ok"):
            return _(
                "Backup %(id)s was pruned by retention at every destination (%(when)s): nothing of it is left.",
                id=self.backup_id,
                when=max(pruned.mapped("pruned_at")),
            )
        return _("Job %s has no stored copy.", self.display_name)

    @api.model
    def _retention_text(self, reports):
        """The retention outcome in words, from the worker's prune reports."""
        if not reports:
            return False
        known = {field.name for field in dataclasses.fields(PruneReport)}
        texts = []
        for data in reports:
            report = PruneReport(**{key: value for key, value in (data or {}).items() if key in known})
            texts.append(report.text())
        return "\n\n".join(texts)

    def _on_run_done(self, status):
        self._record_result(status)
        policy = self.policy_id.sudo()
        if not policy.last_success_at or policy.last_success_at <= self.finished_at:
            policy.write({"last_success_at": self.finished_at, "last_success_job_id": self.id})
        body = _(
            "Backup %(id)s done: %(size)s in %(took)s.",
            id=self.backup_id,
            size=human_bytes(self.total_size),
            took=human_duration(self.duration),
        )
        if self.warnings:
            body += " " + _("Warnings: %s", self.warnings)
        self.message_post(body=body)
        policy._on_job_finished(self)
        policy._drill_first_unsigned(self)

    def _on_run_failed(self, reason, status):
        result = status.get("result") or {}
        if status.get("state") == states.FAILED and any(copy.get("ok") for copy in result.get("copies") or []):
            return self._on_partly_done(status)
        finished = self.finished_at
        policy = self.policy_id.sudo()
        if not policy.last_failure_at or policy.last_failure_at < finished:
            policy.last_failure_at = finished
        body = _("Backup of %(db)s failed: %(reason)s", db=self.db_name, reason=reason)
        self.message_post(body=body, subtype_xmlid="spp_backup.mt_backup_failed")
        policy.message_post(
            body=_("Backup job %(job)s failed: %(reason)s", job=self.display_name, reason=reason),
            subtype_xmlid="spp_backup.mt_policy_backup_failed",
        )
        policy._on_job_finished(self)

    def _on_partly_done(self, status):
        """Some copies are stored, others failed: the job is partly done; the stored ones count for the RPO."""
        self.write({"state": states.PARTIAL})
        self._record_result(status)
        policy = self.policy_id.sudo()
        if not policy.last_success_at or policy.last_success_at <= self.finished_at:
            policy.write({"last_success_at": self.finished_at, "last_success_job_id": self.id})
        copies = (status.get("result") or {}).get("copies") or []
        failed = "; ".join("%s: %s" % (c.get("destination"), c.get("error")) for c in copies if not c.get("ok"))
        stored = ", ".join(c.get("location") or c.get("destination") for c in copies if c.get("ok"))
        self.message_post(
            body=_(
                "Backup %(id)s partly done: stored at %(stored)s; failed: %(failed)s",
                id=self.backup_id,
                stored=stored,
                failed=failed,
            ),
            subtype_xmlid="spp_backup.mt_backup_failed",
        )
        policy._on_job_finished(self)
        policy._drill_first_unsigned(self)

    def action_restore(self):
        """Open the restore wizard on this job's first stored copy."""
        self.ensure_one()
        self.env["spp.backup.engine"]._check_restore_right()
        self._ensure_copies()
        copies = self.copy_ids.filtered(lambda c: c.state == "ok")
        if self.state not in states.SUCCEEDED or not self.backup_id or not copies:
            raise UserError(self._no_copy_text())
        return copies[0].action_restore()

    # ------------------------------------------------------------------ verify

    def _copy_ref(self, copy, settings):
        """A BackupRef to read ``copy`` back from its own storage (from the bucket for S3)."""
        self.ensure_one()
        location = (copy.location or "").rstrip("/")
        if location.startswith("s3://") and copy.destination_id.kind == "s3":
            # The destination gives endpoint, region, profile; the location says where this copy is.
            parts = location[len("s3://") :].split("/")
            if len(parts) < 3:
                raise BackupError("%r is not the location of a backup set." % location)
            bucket, prefix = parts[0], "/".join(parts[1:-2])
            config = dataclasses.replace(copy.destination_id._to_engine_destination(), bucket=bucket, prefix=prefix)
            return BackupRef(open_storage(config, settings), parts[-2], parts[-1])
        return resolve(location, settings)

    def _ensure_copies(self):
        """Jobs recorded before copies existed: one copy per stored location."""
        for job in self._server_mode().filtered(lambda j: not j.copy_ids and (j.location or "").strip()):
            job._record_copies({"locations": [line.strip() for line in job.location.splitlines() if line.strip()]})

    def action_verify(self):
        """Have the worker read every stored copy back from its own storage and check it.

        Each copy is checked against its manifest and signature; with an age
        identity on the worker's host (identity_file in its odoo.conf), the
        artifacts are also decrypted and decompressed to their end.
        """
        self.env["spp.backup.engine"]._check_manager()
        for job in self._server_mode():
            job._ensure_copies()
            copies = job.copy_ids.filtered(lambda c: c.state == "ok")
            if not job.backup_id or not copies:
                raise UserError(job._no_copy_text())
            if job.verify_run_id.state in states.IN_FLIGHT:
                raise UserError(_("Job %s is being verified already: wait for the result.", job.display_name))
            sources = [dataclasses.replace(copy._engine_source(), label=copy.location) for copy in copies]
            Engine = self.env["spp.backup.engine"]
            plan = plans.VerifyPlan(
                sources=sources,
                public_key=Engine._trusted_public_key(),
                unsigned_ok=Engine._unsigned_ok(job.policy_id),
                deep=True,
            )
            run = job.env["spp.backup.run"]._queue(plans.VERIFY, plan, job, policy=job.policy_id)
            job.write({"verify_run_id": run.id, "verify_state": states.VERIFYING})
        return True

    def _apply_verify(self, run):
        """Record a finished verification run on the job and on each verified copy."""
        self.ensure_one()
        now = run.finished_at or fields.Datetime.now()
        copies = self.copy_ids.filtered(lambda c: c.state == "ok")
        reports = run._result_data().get("reports") or []
        if run.state != states.DONE or len(reports) != len(copies):
            reason = run.error_message or _("the verification did not report on every copy")
            self.write({"verify_state": states.FAILED, "verified_at": now, "verify_report": reason})
            self.message_post(
                body=_("Verification of backup %(id)s failed: %(what)s", id=self.backup_id, what=reason),
                subtype_xmlid="spp_backup.mt_verify_failed",
            )
            return
        texts, failures = [], []
        for copy, report in zip(copies, reports, strict=True):
            text, failure = self._verify_text(copy, report)
            copy.write(
                {
                    "verify_state": states.FAILED if failure else states.VERIFIED,
                    "verified_at": now,
                    "verify_report": text,
                    "signature": report.get("signature") or False,
                }
            )
            texts.append(text)
            if failure:
                failures.append("%s: %s" % (copy.location, failure))
        self.write(
            {
                "verify_state": states.FAILED if failures else states.VERIFIED,
                "verified_at": now,
                "verify_report": "\n\n".join(texts),
            }
        )
        if failures:
            self.message_post(
                body=_("Verification of backup %(id)s failed: %(what)s", id=self.backup_id, what=" | ".join(failures)),
                subtype_xmlid="spp_backup.mt_verify_failed",
            )

    @api.model
    def _verify_text(self, copy, report):
        """(report text, failure sentence or None) of one copy's verification report from the worker."""
        if report.get("error"):
            why = report["error"]
            return _("Backup at %(where)s: FAILED\n  problem: %(why)s", where=copy.location, why=why), why
        text = report.get("text") or ""
        if report.get("encrypted") and report.get("deep"):
            text += "\n  " + _("deep check: every artifact was decrypted and decompressed to its end")
        elif report.get("encrypted"):
            text += "\n  " + _(
                "the encrypted artifacts were checked but not decrypted: set identity_file in the [spp_backup] "
                "section of the worker's odoo.conf on a host that may hold the private key for a deep check"
            )
        if report.get("ok"):
            return text, None
        parts = list(report.get("problems") or []) + [
            "%s (%s): %s" % (check["name"], check.get("file"), check["message"])
            for check in report.get("checks") or []
            if not check["ok"]
        ]
        return text, "; ".join(parts) or report.get("failure") or _("verification failed")
