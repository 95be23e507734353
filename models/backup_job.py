import datetime
import logging
import os
import socket
import subprocess
import sys
import threading

from odoo import _, api, fields, models
from odoo.exceptions import UserError
from odoo.tools import config as odoo_config

from ..engine import runner
from ..engine.backup import human_bytes
from ..engine.catalog import resolve
from ..engine.errors import BackupError
from ..engine.verify import verify

_logger = logging.getLogger(__name__)

# The folder that holds the engine package: the runner is started from there.
ADDON_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# A runner that has not rewritten its status file for this long is considered
# stopped (it rewrites it every few seconds while alive).
STALE_HEARTBEAT = datetime.timedelta(minutes=10)

ARTIFACT_KINDS = ("database", "filestore", "application")
MAX_LISTED_MISSING = 500


def _utc(epoch):
    """A naive UTC datetime (as Odoo stores them) from epoch seconds, or False."""
    if not epoch:
        return False
    return datetime.datetime.fromtimestamp(float(epoch), datetime.timezone.utc).replace(tzinfo=None, microsecond=0)


def _tail(path, limit=4000):
    """The end of a text file, or an empty string when it cannot be read."""
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - limit))
            return handle.read().decode("utf-8", "replace").strip()
    except OSError:
        return ""


class SppBackupJob(models.Model):
    _name = "spp.backup.job"
    _description = "Backup Job"
    _inherit = ["mail.thread"]
    _order = "create_date desc, id desc"

    name = fields.Char(compute="_compute_name", store=True)
    policy_id = fields.Many2one(
        "spp.backup.policy", string="Policy", required=True, ondelete="restrict", index=True, tracking=True
    )
    db_name = fields.Char(string="Database name", readonly=True, help="The database this job backs up.")
    backup_id = fields.Char(string="Backup ID", readonly=True, copy=False, tracking=True)
    state = fields.Selection(
        [("queued", "Queued"), ("running", "Running"), ("done", "Done"), ("failed", "Failed")],
        default="queued",
        required=True,
        readonly=True,
        index=True,
        tracking=True,
    )
    trigger = fields.Selection(
        [("schedule", "Schedule"), ("manual", "Manual")], default="manual", required=True, readonly=True, tracking=True
    )
    user_id = fields.Many2one(
        "res.users", string="Triggered by", readonly=True, default=lambda self: self.env.user, tracking=True
    )
    started_at = fields.Datetime(string="Started", readonly=True)
    finished_at = fields.Datetime(string="Finished", readonly=True)
    duration = fields.Float(string="Duration (s)", readonly=True, digits=(16, 1))
    progress = fields.Float(string="Progress (%)", readonly=True, digits=(16, 1))
    progress_message = fields.Char(string="Current step", readonly=True)
    runner_pid = fields.Integer(string="Runner process", readonly=True, copy=False)
    runner_host = fields.Char(string="Runner host", readonly=True, copy=False)
    plan_path = fields.Char(string="Plan file", readonly=True, copy=False)
    status_path = fields.Char(string="Status file", readonly=True, copy=False)
    runner_log_path = fields.Char(string="Runner log file", readonly=True, copy=False)

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
    missing_files_count = fields.Integer(string="Missing attachment files", readonly=True)
    missing_files_text = fields.Text(string="Missing files", readonly=True)
    warnings = fields.Text(readonly=True)
    log_excerpt = fields.Text(string="Log", readonly=True)
    error_message = fields.Text(string="Error", readonly=True)

    verify_state = fields.Selection(
        [("not_verified", "Not verified"), ("ok", "Verified"), ("failed", "Verification failed")],
        string="Verification",
        default="not_verified",
        required=True,
        readonly=True,
        copy=False,
        tracking=True,
    )
    verified_at = fields.Datetime(string="Verified on", readonly=True, copy=False)
    verify_report = fields.Text(string="Verification report", readonly=True, copy=False)

    @api.depends("policy_id.name", "backup_id")
    def _compute_name(self):
        for job in self:
            job.name = "%s / %s" % (job.policy_id.name or "", job.backup_id or _("job %s", job.id or "new"))

    @api.depends("database_size", "filestore_size", "application_size", "total_size")
    def _compute_sizes_human(self):
        for job in self:
            for kind in ARTIFACT_KINDS + ("total",):
                size = job["%s_size" % kind]
                job["%s_size_human" % kind] = human_bytes(size) if size else False

    @api.model_create_multi
    def create(self, vals_list):
        policies = self.env["spp.backup.policy"].browse(
            [vals["policy_id"] for vals in vals_list if vals.get("policy_id")]
        )
        databases = {policy.id: policy.database for policy in policies}
        for vals in vals_list:
            vals.setdefault("db_name", databases.get(vals.get("policy_id")))
        jobs = super().create(vals_list)
        for job in jobs:
            job.policy_id.sudo().last_job_id = job
        return jobs

    # ------------------------------------------------------------------ runner

    def _runs_dir(self):
        """Folder of plan, status and log files: ``<data_dir>/spp_backup/runs/<db>``."""
        return os.path.join(odoo_config["data_dir"], "spp_backup", "runs", self.env.cr.dbname)

    @api.model
    def _runner_python(self):
        settings = self.env["spp.backup.policy"]._engine_settings()
        return settings.get("python") or sys.executable

    def _start_runner(self):
        """Write the plan and start the detached runner; the job becomes running.

        The plan file holds no password: the runner gets it through PGPASSWORD.
        """
        for job in self:
            if job.state != "queued":
                raise UserError(_("Job %s has already been started.", job.display_name))
            try:
                job._spawn_runner()
            except (BackupError, UserError, OSError, ValueError) as exc:
                reason = exc.args[0] if isinstance(exc, UserError) else str(exc)
                _logger.error("Backup job %s could not start: %s", job.id, reason)
                job._mark_failed(_("The backup runner could not be started: %s", reason))

    def _spawn_runner(self):
        self.ensure_one()
        plan = self.policy_id._to_engine_plan()
        folder = self._runs_dir()
        os.makedirs(folder, mode=0o700, exist_ok=True)
        base = os.path.join(folder, "job-%d" % self.id)
        plan_path, status_path, log_path = base + ".plan.json", base + ".status.json", base + ".log"
        if os.path.exists(status_path):
            os.unlink(status_path)
        runner.write_json_atomic(plan_path, plan.to_dict())
        env = dict(os.environ)
        if plan.pg.password:
            env["PGPASSWORD"] = plan.pg.password
        command = [self._runner_python(), "-m", "engine", "run", "--plan", plan_path, "--status", status_path]
        with open(log_path, "ab") as log:
            process = subprocess.Popen(  # noqa: S603 - argument list, no shell
                command,
                cwd=ADDON_DIR,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                close_fds=True,
            )
        # Reap the runner when it ends, so it does not linger as a zombie.
        threading.Thread(target=process.wait, name="spp_backup-runner-%d" % process.pid, daemon=True).start()
        self.write(
            {
                "state": "running",
                "started_at": fields.Datetime.now(),
                "runner_pid": process.pid,
                "runner_host": socket.gethostname(),
                "plan_path": plan_path,
                "status_path": status_path,
                "runner_log_path": log_path,
                "progress": 0.0,
                "progress_message": _("Runner started"),
            }
        )
        _logger.info("Backup job %s started runner pid %s for database %s", self.id, process.pid, plan.db_name)

    # ----------------------------------------------------------------- collect

    @api.model
    def _cron_collect(self):
        """Read the status of every queued or running job."""
        self.search([("state", "in", ("queued", "running"))])._collect()

    def action_refresh(self):
        self.env["spp.backup.policy"]._check_backup_manager()
        self._collect()
        return True

    def _collect(self):
        """Copy progress from the runners' status files; record results and deaths."""
        now = fields.Datetime.now()
        for job in self.filtered(lambda j: j.state in ("queued", "running")):
            status = runner.read_status(job.status_path) if job.status_path else None
            if status:
                job._apply_progress(status)
                if status.get("state") == "done":
                    job._mark_done(status)
                    continue
                if status.get("state") == "failed":
                    job._mark_failed(
                        status.get("error") or status.get("message") or _("The runner reported a failure."), status
                    )
                    continue
            reason = job._runner_death(status, now)
            if reason:
                job._mark_failed(reason, status)

    def _apply_progress(self, status):
        values = {
            "progress": round(float(status.get("progress") or 0.0) * 100, 1),
            "progress_message": (status.get("message") or "")[:500],
            "log_excerpt": "\n".join(status.get("log") or []),
        }
        if status.get("pid"):
            values["runner_pid"] = int(status["pid"])
        if status.get("host"):
            values["runner_host"] = status["host"]
        if status.get("started_at"):
            values["started_at"] = _utc(status["started_at"])
        if self.state == "queued":
            values["state"] = "running"
        self.write(values)

    def _runner_death(self, status, now):
        """Why this unfinished job is considered dead, or None while it may still be alive."""
        self.ensure_one()
        pid = (status or {}).get("pid") or self.runner_pid
        host = (status or {}).get("host") or self.runner_host
        log_hint = (" " + _("See the runner log %s.", self.runner_log_path)) if self.runner_log_path else ""
        if pid and host == socket.gethostname() and not runner.pid_alive(pid):
            return _(
                "The backup runner stopped unexpectedly (process %(pid)s is gone) before it reported a result. "
                "Nothing was marked complete; the next scheduled run will try again.%(hint)s",
                pid=pid,
                hint=log_hint,
            )
        heartbeat = _utc((status or {}).get("heartbeat"))
        if heartbeat and now - heartbeat > STALE_HEARTBEAT:
            return _(
                "The backup runner (process %(pid)s on %(host)s) has not reported since %(when)s UTC; it is considered "
                "stopped.%(hint)s",
                pid=pid,
                host=host,
                when=heartbeat,
                hint=log_hint,
            )
        if not status and self.create_date and now - self.create_date > STALE_HEARTBEAT:
            if self.state == "queued":
                return _("The backup was never started: no runner picked it up within 10 minutes.")
            return _(
                "The backup runner (process %(pid)s on %(host)s) never reported its status.%(hint)s",
                pid=pid,
                host=host,
                hint=log_hint,
            )
        return None

    def _mark_done(self, status):
        self.ensure_one()
        result = status.get("result") or {}
        summary = result.get("summary") or {}
        artifacts = result.get("artifacts") or {}
        values = {
            "state": "done",
            "progress": 100.0,
            "backup_id": result.get("backup_id"),
            "finished_at": _utc(status.get("finished_at")) or fields.Datetime.now(),
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
            "error_message": False,
        }
        missing = summary.get("missing_files") or []
        values["missing_files_count"] = len(missing)
        listed = missing[:MAX_LISTED_MISSING]
        if len(missing) > len(listed):
            listed = listed + [_("... and %s more", len(missing) - len(listed))]
        values["missing_files_text"] = "\n".join(listed)
        for kind in ARTIFACT_KINDS:
            art = artifacts.get(kind) or {}
            values["%s_size" % kind] = float(art.get("size") or 0)
            values["%s_sha256" % kind] = art.get("sha256") or False
        self.write(values)
        policy = self.policy_id.sudo()
        if not policy.last_success_at or policy.last_success_at < values["finished_at"]:
            policy.last_success_at = values["finished_at"]
        body = _(
            "Backup %(id)s done: %(size)s in %(seconds)s s.",
            id=self.backup_id,
            size=human_bytes(self.total_size),
            seconds="%.1f" % self.duration,
        )
        if self.warnings:
            body += " " + _("Warnings: %s", self.warnings)
        self.message_post(body=body)

    def _mark_failed(self, reason, status=None):
        self.ensure_one()
        finished = _utc((status or {}).get("finished_at")) or fields.Datetime.now()
        values = {"state": "failed", "error_message": reason, "finished_at": finished}
        if self.started_at:
            values["duration"] = max(0.0, (finished - self.started_at).total_seconds())
        if not (status or {}).get("log") and self.runner_log_path:
            tail = _tail(self.runner_log_path)
            if tail:
                values["log_excerpt"] = tail
        self.write(values)
        policy = self.policy_id.sudo()
        if not policy.last_failure_at or policy.last_failure_at < finished:
            policy.last_failure_at = finished
        body = _("Backup of %(db)s failed: %(reason)s", db=self.db_name, reason=reason)
        self.message_post(body=body, subtype_xmlid="spp_backup.mt_backup_failed")
        policy.message_post(
            body=_("Backup job %(job)s failed: %(reason)s", job=self.display_name, reason=reason),
            subtype_xmlid="spp_backup.mt_policy_backup_failed",
        )

    # ------------------------------------------------------------------ verify

    def action_verify(self):
        """Read every stored byte back and compare with the manifest, in each location."""
        self.env["spp.backup.policy"]._check_backup_manager()
        for job in self:
            if job.state != "done":
                raise UserError(_("Only a finished backup can be verified; job %s is not done.", job.display_name))
            locations = [line.strip() for line in (job.location or "").splitlines() if line.strip()]
            if not locations:
                raise UserError(_("Job %s does not say where its backup was stored.", job.display_name))
            texts, failures = [], []
            for location in locations:
                try:
                    report = verify(resolve(location))
                except BackupError as exc:
                    texts.append(_("Backup at %(where)s: FAILED\n  problem: %(why)s", where=location, why=exc))
                    failures.append("%s: %s" % (location, exc))
                    continue
                texts.append(report.text())
                if not report.ok:
                    parts = [
                        "%s (%s): %s" % (check.name, check.file, check.message)
                        for check in report.checks
                        if not check.ok
                    ]
                    parts += report.problems
                    failures.append("%s: %s" % (location, "; ".join(parts)))
            job.write(
                {
                    "verify_state": "failed" if failures else "ok",
                    "verified_at": fields.Datetime.now(),
                    "verify_report": "\n\n".join(texts),
                }
            )
            if failures:
                job.message_post(
                    body=_(
                        "Verification of backup %(id)s failed: %(what)s", id=job.backup_id, what=" | ".join(failures)
                    ),
                    subtype_xmlid="spp_backup.mt_verify_failed",
                )
        return True
