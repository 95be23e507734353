import logging

from odoo import _, api, fields, models
from odoo.exceptions import UserError

from ..engine.core import states
from ..engine.core.config import DestinationConfig
from ..engine.core.errors import BackupError
from ..engine.core.human import human_duration
from ..engine.formats.catalog import BackupRef, latest
from ..engine.io.storage import open_storage
from .server_fields import EVERY_FIELD

_logger = logging.getLogger(__name__)


class SppBackupRunMixin(models.AbstractModel):
    """A record whose work is a run (``spp.backup.run``) executed by the worker.

    The record gives a plan (``_run_plan``) and records the outcome
    (``_on_run_done``, ``_on_run_failed``); everything else, from
    queueing to applying the worker's result, happens here. Every field of
    such a record is evidence: written by the server, read by people.
    """

    _name = "spp.backup.run.mixin"
    _inherit = ["spp.backup.server.fields"]
    _description = "Work done by the backup worker"
    _server_fields = EVERY_FIELD
    # People may comment on what they can read; writing stays the server's.
    _mail_post_access = "read"

    # The worker action of this model's runs.
    _run_action = None
    # Where a model logs about its runs.
    _run_logger = _logger

    state = fields.Selection(
        # "Partly done" is a backup's: some copies stored, at least one destination failed.
        list(states.WORK_STATES),
        string="Status",
        default=states.QUEUED,
        required=True,
        readonly=True,
        index=True,
        tracking=True,
    )
    user_id = fields.Many2one(
        "res.users", string="Started by", readonly=True, default=lambda self: self.env.user, tracking=True
    )
    run_id = fields.Many2one("spp.backup.run", string="Run", readonly=True, copy=False, index="btree_not_null")
    started_at = fields.Datetime(string="Started", readonly=True)
    finished_at = fields.Datetime(string="Finished", readonly=True)
    duration = fields.Float(string="Duration (s)", readonly=True, digits=(16, 1))
    duration_text = fields.Char(string="Took", compute="_compute_duration_text", help="How long it took, in words.")
    progress = fields.Float(related="run_id.progress", string="Progress (%)")
    progress_message = fields.Char(related="run_id.progress_message", string="Current step")
    log_excerpt = fields.Text(related="run_id.log", string="Log")
    heartbeat_at = fields.Datetime(related="run_id.heartbeat_at")
    worker_host = fields.Char(related="run_id.worker_host")
    worker_pid = fields.Integer(related="run_id.worker_pid")
    error_message = fields.Text(string="Error", readonly=True, copy=False)

    def message_post(self, **kwargs):
        """People comment on evidence as themselves, in plain notes: only the server posts as the server."""
        if not self.env.su:
            for key in ("author_id", "email_from", "subtype_id", "message_type", "subtype_xmlid"):
                kwargs.pop(key, None)
            kwargs.update(author_id=self.env.user.partner_id.id, message_type="comment", subtype_xmlid="mail.mt_note")
        return super().message_post(**kwargs)

    @api.depends("duration")
    def _compute_duration_text(self):
        for record in self:
            record.duration_text = human_duration(record.duration) if record.duration else False

    # ------------------------------------------------------------------ plan

    def _run_plan(self):
        """The typed plan (engine.core.plans, without secrets) of this record's run."""
        raise NotImplementedError

    def _run_action_of(self):
        """The worker action of this record's run."""
        return self._run_action

    def _run_policy(self):
        """The policy this record's run belongs to, if any."""
        return self["policy_id"] if "policy_id" in self._fields else None

    def _on_run_done(self, status):
        """Record the result of a run that ended well (``status``: state, result, error, log)."""

    def _on_run_failed(self, reason, status):
        """React to a failed run (after state and error are written)."""

    def _run_log_name(self):
        """How the server log names this record."""
        return "%s %s" % (self._name, self.id)

    def _run_text(self, occasion, **params):
        """What the users are told on ``occasion``: ``already_started`` (``record``), ``cannot_start`` (``reason``)."""
        if occasion == "already_started":
            return _("%s has already been started.", params["record"])
        return _("The work could not be queued: %s", params["reason"])

    @api.model
    def _source_ref(self, source, settings=None):
        """The engine BackupRef of a ``source`` (a plans.Source: destination, database, backup id) the server
        derived."""
        settings = settings or self.env["spp.backup.engine"]._settings()
        try:
            config = DestinationConfig(**source.destination)
            storage = open_storage(config, settings)
            if source.is_latest:
                return latest(storage, source.db_name)
            return BackupRef(storage, source.db_name, source.backup_id)
        except BackupError as exc:
            raise UserError(str(exc)) from exc
        except Exception as exc:  # storage and network trouble: a sentence here, the details in the log
            _logger.warning("Cannot open the backup source %s", source.destination, exc_info=True)
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

    # ----------------------------------------------------------------- queue

    def _queue_run(self):
        """Queue each record's run for the worker; a plan that cannot be made fails the record, in words."""
        Run = self.env["spp.backup.run"]._server_mode()
        for record in self._server_mode():
            if record.state != states.QUEUED or record.run_id:
                raise UserError(record._run_text("already_started", record=record.display_name))
            try:
                plan = record._run_plan()
            except (BackupError, UserError, OSError, ValueError) as exc:
                reason = exc.args[0] if isinstance(exc, UserError) else str(exc)
                record._run_logger.error("%s could not be queued: %s", record._run_log_name(), reason)
                Engine = self.env["spp.backup.engine"]
                Engine._as_server(record)._mark_run_failed(record._run_text("cannot_start", reason=reason))
                continue
            record.run_id = Run._queue(record._run_action_of(), plan, record, policy=record._run_policy())

    # --------------------------------------------------------------- results

    def _collect(self):
        """Record what the worker has finished for these records (as the server, whoever asks); the runs another
        transaction (the collector) is recording meanwhile."""
        runs = self.env["spp.backup.engine"]._as_server(self).mapped("run_id")
        if not runs:
            return runs
        self.env.flush_all()
        runs._reap_dead_runs()
        runs.filtered(lambda run: run.state == states.RUNNING)._sync_running()
        return runs._apply_now()

    def _apply_run(self, run):
        """Record a finished ``run`` on this record: times, state, then the model's own evidence."""
        self.ensure_one()
        if self.state not in states.IN_FLIGHT:
            return
        status = {"state": run.state, "result": run._result_data(), "error": run.error_message, "log": run.log}
        self.write({"started_at": run.started_at or self.started_at, "finished_at": run.finished_at})
        if run.state == states.DONE:
            self.write({"state": states.DONE, "error_message": False})
            self._set_duration(status)
            self._on_run_done(status)
        else:
            reason = run.error_message or _("The worker reported a failure.")
            self._mark_run_failed(reason, status, finished=run.finished_at)

    def _set_duration(self, status=None):
        """The duration from the start and finish times (``status``: the run's outcome, if any)."""
        for record in self:
            if record.started_at and record.finished_at:
                record.duration = max(0.0, (record.finished_at - record.started_at).total_seconds())

    def _apply_run_failed(self, run, reason):
        """``run`` finished but its result could not be recorded (``reason``): this record's run failed, in words."""
        self.ensure_one()
        if run == self.run_id and self.state in states.IN_FLIGHT:
            self.write({"state": states.FAILED, "error_message": reason, "finished_at": fields.Datetime.now()})

    def _mark_run_failed(self, reason, status=None, finished=None):
        self.ensure_one()
        finished = finished or fields.Datetime.now()
        self.write({"state": states.FAILED, "error_message": reason, "finished_at": finished})
        self._set_duration(status)
        self._on_run_failed(reason, status or {})

    def action_refresh(self):
        """Record what the worker has finished for this record now (the form follows the run by itself)."""
        self.env["spp.backup.engine"]._check_auditor()
        if self._collect():
            raise self.env["spp.backup.run"]._being_recorded()
        return True
