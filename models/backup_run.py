import json
import logging

import psycopg2
from odoo import _, api, fields, models
from odoo.exceptions import UserError
from odoo.service.model import PG_CONCURRENCY_ERRORS_TO_RETRY

from ..engine.core import plans, states
from ..engine.core.human import human_duration
from ..engine.service import protocol as run_protocol
from .server_fields import EVERY_FIELD

_logger = logging.getLogger(__name__)

RUN_ACTIONS = [
    (plans.BACKUP, "Backup"),
    (plans.RESTORE, "Restore"),
    (plans.DRILL, "Restore drill"),
    (plans.VERIFY, "Verification"),
    (plans.PITR_RESTORE, "Restore to a second"),
    (plans.PITR_DRILL, "Drill to a second"),
]
# How many times the collector looks for dead runs on a new snapshot when a run changed under the previous one.
REAP_ATTEMPTS = 5


def is_concurrency_error(exc):
    """True for PostgreSQL's "another transaction got there first" (serialization failure, deadlock, lock)."""
    return isinstance(exc, psycopg2.OperationalError) and exc.pgcode in PG_CONCURRENCY_ERRORS_TO_RETRY


class SppBackupRun(models.Model):
    """One piece of work for the worker: a backup, a restore, a drill or a verification.

    Created by the server on behalf of a person who had the right (never
    through the ORM by a user: no group may create, write or delete runs);
    executed and written by the worker (engine/service/worker.py) directly in
    PostgreSQL; applied to its job, restore or drill by Odoo's "Backup:
    Collect results" cron, one run per transaction.
    """

    _name = "spp.backup.run"
    _inherit = ["spp.backup.server.fields"]
    _description = "Backup Run"
    _server_fields = EVERY_FIELD
    _order = "id desc"

    name = fields.Char(compute="_compute_name")
    action = fields.Selection(RUN_ACTIONS, required=True, readonly=True, index=True)
    state = fields.Selection(list(states.RUN_STATES), default=states.QUEUED, required=True, readonly=True, index=True)
    plan = fields.Text(readonly=True, help="What the worker is asked to do (no secrets).")
    res_model = fields.Char(string="Record model", readonly=True, index=True)
    res_id = fields.Many2oneReference(string="Record", model_field="res_model", readonly=True, index=True)
    policy_id = fields.Many2one("spp.backup.policy", string="Policy", readonly=True, ondelete="set null", index=True)
    user_id = fields.Many2one("res.users", string="Asked by", readonly=True, ondelete="set null")
    progress = fields.Float(string="Progress (%)", readonly=True, digits=(16, 1))
    progress_message = fields.Char(string="Current step", readonly=True)
    log = fields.Text(readonly=True)
    heartbeat_at = fields.Datetime(string="Last sign of life", readonly=True)
    started_at = fields.Datetime(string="Started", readonly=True)
    finished_at = fields.Datetime(string="Finished", readonly=True)
    worker_host = fields.Char(string="Worker host", readonly=True)
    worker_pid = fields.Integer(string="Worker process", readonly=True)
    result = fields.Text(readonly=True, help="The worker's result (JSON).")
    error_message = fields.Text(string="Error", readonly=True)
    is_applied = fields.Boolean(
        string="Recorded", readonly=True, index=True, help="Odoo has recorded the result on its job, restore or drill."
    )
    apply_error = fields.Text(string="Recording error", readonly=True)
    duration_text = fields.Char(string="Duration", compute="_compute_duration_text")

    @api.depends("action", "res_model", "res_id")
    def _compute_name(self):
        labels = dict(RUN_ACTIONS)
        for run in self:
            run.name = _("%(action)s run %(id)s", action=labels.get(run.action, run.action), id=run.id or "")

    @api.depends("started_at", "finished_at")
    def _compute_duration_text(self):
        now = fields.Datetime.now()
        for run in self:
            if not run.started_at:
                run.duration_text = False
                continue
            run.duration_text = human_duration(((run.finished_at or now) - run.started_at).total_seconds())

    # ------------------------------------------------------------------ queue

    @api.model
    def _queue(self, action, plan, record, policy=None):
        """A new queued run for ``record`` (created as the server; the caller checked the right).

        ``plan``: the typed plan of ``action`` (engine.core.plans), stored as the JSON the worker reads back.
        """
        run = self.sudo().create(
            {
                "action": action,
                "plan": json.dumps(plans.plan_to_dict(action, plan), sort_keys=True),
                "res_model": record._name,
                "res_id": record.id,
                "policy_id": policy.id if policy else False,
                "user_id": self.env.uid,
            }
        )
        self.env["spp.backup.engine"]._after_commit_wake_worker()
        return run

    def _json(self, name):
        """The JSON field ``name`` (plan or result) as data; {} when empty or not JSON."""
        self.ensure_one()
        try:
            return json.loads(self[name]) if self[name] else {}
        except ValueError:
            return {}

    def _plan_data(self):
        return self._json("plan")

    def _plan(self):
        """The typed plan of this run (engine.core.plans), as the worker reads it."""
        self.ensure_one()
        return plans.plan_from_dict(self.action, self._plan_data())

    def _result_data(self):
        return self._json("result")

    def _record(self):
        """The job, restore or drill this run works for (as the server), or an empty recordset."""
        self.ensure_one()
        if not self.res_model or self.res_model not in self.env or not self.res_id:
            return None
        return self.env[self.res_model].sudo().browse(self.res_id).exists()

    # ------------------------------------------------------------------- live

    def _live_ids(self):
        """Ids among these runs whose worker holds its lock (alive, on any node)."""
        return run_protocol.live_run_ids(self.env.cr, self.ids) if self.ids else set()

    # ---------------------------------------------------------------- collect

    @api.model
    def _cron_collect(self):
        """Mark dead runs failed, record every finished run on its record (one transaction each), wake workers."""
        Engine = self.env["spp.backup.engine"]
        self.env.flush_all()
        Engine._commit_unless_testing()
        for _attempt in range(REAP_ATTEMPTS):
            dead = self._reap_dead_runs()
            if dead is not None:
                break
            # A run changed after this transaction's snapshot: look again on a new one.
            Engine._commit_unless_testing()
        if dead:
            _logger.warning("Backup runs %s had lost their worker: marked failed", dead)
        Engine._commit_unless_testing()
        self.sudo().search([("state", "=", states.RUNNING)])._sync_running()
        Engine._commit_unless_testing()
        for run in self.sudo().search([("state", "in", states.FINISHED), ("is_applied", "=", False)], order="id"):
            run._apply()
            Engine._commit_unless_testing()
        Engine._check_workers()

    @api.model
    def _reap_dead_runs(self):
        """Mark failed the running runs whose worker is gone; their ids, or None when a run changed meanwhile.

        Odoo's transactions are REPEATABLE READ: a run its worker finished
        after this transaction's snapshot cannot be updated in it (a
        serialization failure). Nothing is then changed and None says so:
        that run is not dead, and the next snapshot shows it finished.
        """
        try:
            with self.env.cr.savepoint(flush=False):
                # A serialization failure is expected here, not an error of the query: Odoo does not log it.
                dead = run_protocol.reap_dead_runs(self.env.cr, log_exceptions=False)
        except psycopg2.OperationalError as exc:
            if not is_concurrency_error(exc):
                raise
            _logger.info("A backup run changed while dead runs were looked for: looking again")
            return None
        if dead:
            self.invalidate_model()
        return dead

    def _sync_running(self):
        for run in self:
            record = run._record()
            # A wizard's check has no state of its own to follow.
            if not record or "state" not in record._fields or record.state != states.QUEUED:
                continue
            try:
                with self.env.cr.savepoint():
                    # The record's row first, quietly: a write that met a concurrent one would log an ERROR.
                    self.env.cr.execute(
                        'SELECT 1 FROM "%s" WHERE id = %%s FOR UPDATE SKIP LOCKED' % record._table,  # the model's table
                        (record.id,),
                        log_exceptions=False,
                    )
                    if not self.env.cr.fetchone():
                        continue
                    record.write({"state": states.RUNNING, "started_at": run.started_at or fields.Datetime.now()})
            except psycopg2.OperationalError as exc:
                if not is_concurrency_error(exc):
                    raise
                # Another transaction is writing the same record: the next pass or refresh shows it running.

    def _lock_for_recording(self):
        """Take this run's row lock: True when this transaction may record it (finished, not recorded yet).

        False while another transaction holds the lock (it is recording the
        run now) and once the run is recorded. A run another transaction
        recorded after this one's snapshot raises a serialization failure.
        """
        self.ensure_one()
        self.env.cr.execute(
            "SELECT is_applied, state FROM spp_backup_run WHERE id = %s FOR UPDATE SKIP LOCKED",
            (self.id,),
            log_exceptions=False,
        )
        row = self.env.cr.fetchone()
        return bool(row) and not row[0] and row[1] in states.FINISHED

    def _apply(self):
        """Record this finished run on its job, restore, drill or wizard, under the run's row lock.

        True when this transaction recorded it, False when another one is
        recording it or has recorded it (nothing was changed here). A result
        that cannot be recorded is recorded as such on the run, in words
        (``apply_error``, the run failed), and on its record as far as the
        record has the fields for it; it is not tried again.
        """
        self.ensure_one()
        try:
            with self.env.cr.savepoint():
                if not self._lock_for_recording():
                    return False
                self._record_on_target()
        except psycopg2.OperationalError as exc:
            if not is_concurrency_error(exc):
                raise
            self.env.invalidate_all()
            return False
        self.env["bus.bus"]._sendone(
            run_protocol.BUS_CHANNEL,
            run_protocol.BUS_TYPE,
            {"id": self.id, "res_model": self.res_model, "res_id": self.res_id},
        )
        return True

    def _record_on_target(self):
        try:
            with self.env.cr.savepoint():
                record = self._record()
                if record:
                    record._apply_run(self)
                self.write({"is_applied": True, "apply_error": False})
        except Exception as exc:  # one result that cannot be recorded must not block the others
            if is_concurrency_error(exc):
                raise
            _logger.exception("Cannot record the result of backup run %s", self.id)
            self.env.invalidate_all()
            reason = _("The result of this run could not be recorded: %s", "%s: %s" % (type(exc).__name__, exc))
            self.write({"is_applied": True, "apply_error": reason, "state": states.FAILED})
            record = self._record()
            if not record or not hasattr(record, "_apply_run_failed"):
                return
            try:
                with self.env.cr.savepoint():
                    record._apply_run_failed(self, reason)
            except Exception as again:
                if is_concurrency_error(again):
                    raise
                _logger.exception("Cannot mark %s %s as failed after run %s", record._name, record.id, self.id)

    def _apply_now(self):
        """Record these finished runs now (a person's Refresh); the runs another transaction is recording now."""
        busy = self.browse()
        for run in self:
            if run.state in states.FINISHED and not run.is_applied and not run._apply():
                run.invalidate_recordset()
                if not run.is_applied:
                    busy |= run
        return busy

    @api.model
    def _being_recorded(self):
        """What a person who pressed Refresh is told while the collector records the same result."""
        return UserError(_("The result of this work is being recorded right now: refresh in a moment to see it."))
