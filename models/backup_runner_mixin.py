import logging
import os
import socket
import subprocess
import threading

from odoo import _, api, fields, models
from odoo.exceptions import UserError
from odoo.tools import config as odoo_config

from ..engine import runner
from ..engine.catalog import BackupRef, latest
from ..engine.config import DestinationConfig
from ..engine.errors import BackupError
from ..engine.storage import open_storage
from .backup_job import ADDON_DIR, STALE_HEARTBEAT, _for_users, _mtime, _tail, _utc

_logger = logging.getLogger(__name__)


class SppBackupRunnerMixin(models.AbstractModel):
    """A record whose work is done by the detached runner (``python3 -m engine run``).

    The record writes a plan, starts the runner in its own session and
    returns; the collect cron reads the status file back, and marks the
    record failed when its runner died. Models using it give a plan
    (``_runner_plan``) and record the outcome (``_on_runner_done``,
    ``_on_runner_failed``).
    """

    _name = "spp.backup.runner.mixin"
    _description = "Work done by the backup runner"

    # Prefix of the plan, status and log files of this model's runs.
    _runner_prefix = "run"

    state = fields.Selection(
        [("queued", "Queued"), ("running", "Running"), ("done", "Done"), ("failed", "Failed")],
        string="Status",
        default="queued",
        required=True,
        readonly=True,
        index=True,
        tracking=True,
    )
    user_id = fields.Many2one(
        "res.users", string="Started by", readonly=True, default=lambda self: self.env.user, tracking=True
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
    log_excerpt = fields.Text(string="Log", readonly=True, copy=False)
    error_message = fields.Text(string="Error", readonly=True, copy=False)
    error_details = fields.Text(
        string="Technical details",
        readonly=True,
        copy=False,
        help="Server-side details of a failure (process, log file), for the administrator of the server.",
    )

    # ------------------------------------------------------------------ plan

    def _runner_plan(self):
        """(plan dict without secrets, database password or None) for this record's run."""
        raise NotImplementedError

    def _on_runner_done(self, status):
        """Record the result of a run that ended well."""

    def _on_runner_failed(self, reason, status):
        """React to a failed run (after state, error and log are written)."""

    @api.model
    def _engine_context(self):
        """(settings, PgConfig with password, odoo.conf path or None) of this server."""
        Policy = self.env["spp.backup.policy"]
        settings = Policy._engine_settings()
        rcfile = odoo_config.rcfile
        return settings, Policy._engine_pg(settings), rcfile if rcfile and os.path.isfile(rcfile) else None

    @api.model
    def _source_ref(self, source, settings=None):
        """The engine BackupRef of a plan's ``source`` (destination config, database, backup id)."""
        settings = settings or self.env["spp.backup.policy"]._engine_settings()
        try:
            storage = open_storage(DestinationConfig(**source["destination"]), settings)
            if source.get("backup_id") in (None, "", "latest"):
                return latest(storage, source["db_name"])
            return BackupRef(storage, source["db_name"], source["backup_id"])
        except BackupError as exc:
            raise UserError(str(exc)) from exc
        except Exception as exc:  # storage and network trouble: a sentence here, the details in the log
            _logger.warning("Cannot open the backup source %s", source.get("destination"), exc_info=True)
            raise UserError(_("The backup cannot be read: %s", "%s: %s" % (type(exc).__name__, exc))) from exc

    @api.model
    def _read_manifest(self, ref):
        """The manifest of ``ref``; a UserError in words when it cannot be read."""
        try:
            return ref.read_manifest()
        except BackupError as exc:
            raise UserError(str(exc)) from exc
        except Exception as exc:
            _logger.warning("Cannot read the manifest of %s", ref.location(), exc_info=True)
            raise UserError(_("The backup cannot be read: %s", "%s: %s" % (type(exc).__name__, exc))) from exc

    # ---------------------------------------------------------------- runner

    def _start_runner(self):
        """Write the plan and start the detached runner; a failure to start fails the record, in words."""
        for record in self:
            if record.state != "queued":
                raise UserError(_("%s has already been started.", record.display_name))
            try:
                plan, password = record._runner_plan()
                record._launch_runner(plan, password)
            except (BackupError, UserError, OSError, ValueError) as exc:
                reason = exc.args[0] if isinstance(exc, UserError) else str(exc)
                _logger.error("%s %s could not start: %s", record._name, record.id, reason)
                record._mark_runner_failed(_("The runner could not be started: %s", reason))

    def _launch_runner(self, plan, password=None):
        self.ensure_one()
        folder = self.env["spp.backup.job"]._runs_dir()
        os.makedirs(folder, mode=0o700, exist_ok=True)
        base = os.path.join(folder, "%s-%d" % (self._runner_prefix, self.id))
        plan_path, status_path, log_path = base + ".plan.json", base + ".status.json", base + ".log"
        if os.path.exists(status_path):
            os.unlink(status_path)
        runner.write_json_atomic(plan_path, plan)
        env = dict(os.environ)
        if password:
            env["PGPASSWORD"] = password
        command = [
            self.env["spp.backup.job"]._runner_python(),
            "-m",
            "engine",
            "run",
            "--plan",
            plan_path,
            "--status",
            status_path,
        ]
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
        _logger.info("%s %s started runner pid %s", self._name, self.id, process.pid)

    # --------------------------------------------------------------- collect

    @api.model
    def _cron_collect(self):
        """Read the status of every queued or running record."""
        self.search([("state", "in", ("queued", "running"))])._collect()

    def _collect(self):
        """Copy progress from the runners' status files; record results and deaths."""
        now = fields.Datetime.now()
        for record in self.filtered(lambda r: r.state in ("queued", "running")):
            status = runner.read_status(record.status_path) if record.status_path else None
            if status:
                record._apply_progress(status)
                if status.get("state") == "done":
                    record.write(
                        {
                            "state": "done",
                            "progress": 100.0,
                            "finished_at": _utc(status.get("finished_at")) or now,
                            "error_message": False,
                        }
                    )
                    record._set_duration()
                    record._on_runner_done(status)
                    continue
                if status.get("state") == "failed":
                    reason = status.get("error") or status.get("message") or _("The runner reported a failure.")
                    record._mark_runner_failed(reason, status)
                    continue
            death = record._runner_death(status, now)
            if death:
                reason, details, finished = death
                record._mark_runner_failed(reason, status, details=details, finished=finished)

    def _apply_progress(self, status):
        values = {
            "progress": round(float(status.get("progress") or 0.0) * 100, 1),
            "progress_message": (status.get("message") or "")[:500],
            "log_excerpt": _for_users("\n".join(status.get("log") or [])),
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

    def _set_duration(self):
        for record in self:
            if record.started_at and record.finished_at:
                record.duration = max(0.0, (record.finished_at - record.started_at).total_seconds())

    def _runner_death(self, status, now):
        """(reason, technical details, finished at) when this unfinished record's runner is gone, else None."""
        self.ensure_one()
        status = status or {}
        pid = status.get("pid") or self.runner_pid
        host = status.get("host") or self.runner_host
        details = _("Runner process %(pid)s on %(host)s.", pid=pid, host=host)
        if self.runner_log_path:
            details += " " + _("Its log is %s.", self.runner_log_path)
        last_sign = _utc(status.get("heartbeat")) or _mtime(self.runner_log_path) or False
        if pid and host == socket.gethostname() and not runner.pid_alive(pid):
            reason = _("The runner stopped unexpectedly before it reported a result.")
            return reason, _("Process %(pid)s is gone.", pid=pid) + " " + details, last_sign
        heartbeat = _utc(status.get("heartbeat"))
        if heartbeat and now - heartbeat > STALE_HEARTBEAT:
            reason = _("The runner has not reported since %(when)s UTC; it is considered stopped.", when=heartbeat)
            return reason, details, heartbeat
        if not status and self.create_date and now - self.create_date > STALE_HEARTBEAT:
            if self.state == "queued":
                return _("The run was never started: no runner picked it up within 10 minutes."), False, False
            return _("The runner never reported its status."), details, last_sign
        return None

    def _mark_runner_failed(self, reason, status=None, details=None, finished=None):
        self.ensure_one()
        finished = finished or _utc((status or {}).get("finished_at")) or fields.Datetime.now()
        values = {"state": "failed", "error_message": reason, "finished_at": finished}
        if details:
            values["error_details"] = details
        if not (status or {}).get("log") and self.runner_log_path:
            tail = _tail(self.runner_log_path)
            if tail:
                values["log_excerpt"] = _for_users(tail)
        self.write(values)
        self._set_duration()
        self._on_runner_failed(reason, status or {})
