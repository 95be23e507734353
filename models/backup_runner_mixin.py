import datetime
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

_logger = logging.getLogger(__name__)

# The folder that holds the engine package: the runner is started from there.
ADDON_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# A runner that has not rewritten its status file for this long is considered
# stopped (it rewrites it every few seconds while alive).
STALE_HEARTBEAT = datetime.timedelta(minutes=10)


def _utc(epoch):
    """A naive UTC datetime (as Odoo stores them) from epoch seconds, or False."""
    if not epoch:
        return False
    return datetime.datetime.fromtimestamp(float(epoch), datetime.timezone.utc).replace(tzinfo=None, microsecond=0)


def _for_users(log):
    """A log excerpt fit for the user interface: a Python traceback becomes its final exception line."""
    if "Traceback (most recent call last)" not in (log or ""):
        return log
    kept, exception, in_traceback = [], None, False
    for line in log.splitlines():
        if line.startswith("Traceback (most recent call last)"):
            in_traceback = True
            continue
        if in_traceback:
            if not line.strip() or line[:1].isspace():
                continue
            if line.startswith(("During handling of the above exception", "The above exception was the direct")):
                continue
            exception, in_traceback = line.strip(), False
            continue
        kept.append(line)
    if exception:
        kept.append(exception)
    kept.append(_("(The details of this error are in the runner log on the server.)"))
    return "\n".join(kept).strip()


def _mtime(path):
    """The modification time of a file as a naive UTC datetime, or False."""
    try:
        return _utc(os.path.getmtime(path)) if path else False
    except OSError:
        return False


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
    # Where a model logs about its runners.
    _runner_logger = _logger

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

    def _runner_started_values(self):
        """Extra values written on this record when its runner has started."""
        return {}

    def _runner_log_name(self):
        """How the server log names this record."""
        return "%s %s" % (self._name, self.id)

    def _runner_text(self, occasion, **params):
        """What the users are told about this record's runner on ``occasion``.

        Occasions: ``already_started`` (``record``), ``cannot_start`` (``reason``),
        ``gone``, ``stale`` (``when``), ``never_picked_up``, ``never_reported``.
        """
        if occasion == "already_started":
            return _("%s has already been started.", params["record"])
        if occasion == "cannot_start":
            return _("The runner could not be started: %s", params["reason"])
        if occasion == "gone":
            return _("The runner stopped unexpectedly before it reported a result.")
        if occasion == "stale":
            return _("The runner has not reported since %(when)s UTC; it is considered stopped.", when=params["when"])
        if occasion == "never_picked_up":
            return _("The run was never started: no runner picked it up within 10 minutes.")
        return _("The runner never reported its status.")

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
        """Write the plan and start the detached runner; a failure to start fails the record, in words.

        The plan file holds no password: the runner gets it through PGPASSWORD.
        """
        for record in self:
            if record.state != "queued":
                raise UserError(record._runner_text("already_started", record=record.display_name))
            try:
                plan, password = record._runner_plan()
                record._launch_runner(plan, password)
            except (BackupError, UserError, OSError, ValueError) as exc:
                reason = exc.args[0] if isinstance(exc, UserError) else str(exc)
                record._runner_logger.error("%s could not start: %s", record._runner_log_name(), reason)
                record._mark_runner_failed(record._runner_text("cannot_start", reason=reason))

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
                **self._runner_started_values(),
                "progress": 0.0,
                "progress_message": _("Runner started"),
            }
        )
        self._runner_logger.info("%s started runner pid %s", self._runner_log_name(), process.pid)

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
                    record._set_duration(status)
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

    def _set_duration(self, status=None):
        """The duration from the start and finish times (``status``: the runner's last status, if any)."""
        for record in self:
            if record.started_at and record.finished_at:
                record.duration = max(0.0, (record.finished_at - record.started_at).total_seconds())

    def _runner_death(self, status, now):
        """(reason, technical details, finished at) when this unfinished record's runner is gone, else None.

        The reason is for the users; the details (process, log file on the
        server) go to a field shown in debug mode. A dead runner finished when
        it last reported (heartbeat), or when it last wrote its log.
        """
        self.ensure_one()
        status = status or {}
        pid = status.get("pid") or self.runner_pid
        host = status.get("host") or self.runner_host
        details = _("Runner process %(pid)s on %(host)s.", pid=pid, host=host)
        if self.runner_log_path:
            details += " " + _("Its log is %s.", self.runner_log_path)
        last_sign = _utc(status.get("heartbeat")) or _mtime(self.runner_log_path) or False
        if pid and host == socket.gethostname() and not runner.pid_alive(pid):
            reason = self._runner_text("gone")
            return reason, _("Process %(pid)s is gone.", pid=pid) + " " + details, last_sign
        heartbeat = _utc(status.get("heartbeat"))
        if heartbeat and now - heartbeat > STALE_HEARTBEAT:
            return self._runner_text("stale", when=heartbeat), details, heartbeat
        if not status and self.create_date and now - self.create_date > STALE_HEARTBEAT:
            if self.state == "queued":
                return self._runner_text("never_picked_up"), False, False
            return self._runner_text("never_reported"), details, last_sign
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
        self._set_duration(status)
        self._on_runner_failed(reason, status or {})
