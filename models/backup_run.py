import json
import logging

from odoo import _, api, fields, models

from ..engine import worker as engine_worker
from ..engine.human import human_duration
from .server_fields import EVERY_FIELD

_logger = logging.getLogger(__name__)

RUN_ACTIONS = [
    ("backup", "Backup"),
    ("restore", "Restore"),
    ("drill", "Restore drill"),
    ("verify", "Verification"),
]
RUN_STATES = [("queued", "Queued"), ("running", "Running"), ("done", "Done"), ("failed", "Failed")]


class SppBackupRun(models.Model):
    """One piece of work for the worker: a backup, a restore, a drill or a verification.

    Created by the server on behalf of a person who had the right (never
    through the ORM by a user: no group may create, write or delete runs);
    executed and written by the worker (engine/worker.py) directly in
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
    state = fields.Selection(RUN_STATES, default="queued", required=True, readonly=True, index=True)
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
        """A new queued run for ``record`` (created as the server; the caller checked the right)."""
        run = self.sudo().create(
            {
                "action": action,
                "plan": json.dumps(plan, sort_keys=True),
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
        return engine_worker.live_run_ids(self.env.cr, self.ids) if self.ids else set()

    # ---------------------------------------------------------------- collect

    @api.model
    def _cron_collect(self):
        """Mark dead runs failed, record every finished run on its record (one transaction each), wake workers."""
        Engine = self.env["spp.backup.engine"]
        self.env.flush_all()
        dead = engine_worker.reap_dead_runs(self.env.cr)
        if dead:
            _logger.warning("Backup runs %s had lost their worker: marked failed", dead)
            self.invalidate_model()
        Engine._commit_unless_testing()
        self.sudo().search([("state", "=", "running")])._sync_running()
        Engine._commit_unless_testing()
        for run in self.sudo().search([("state", "in", ("done", "failed")), ("is_applied", "=", False)], order="id"):
            run._apply()
            Engine._commit_unless_testing()
        Engine._check_workers()

    def _sync_running(self):
        for run in self:
            record = run._record()
            if record and record.state == "queued":
                record.write({"state": "running", "started_at": run.started_at or fields.Datetime.now()})

    def _apply(self):
        """Record this finished run on its job, restore or drill; a failure to do so is recorded, not raised."""
        self.ensure_one()
        try:
            with self.env.cr.savepoint():
                record = self._record()
                if record:
                    record._apply_run(self)
                self.write({"is_applied": True})
        except Exception as exc:  # one result that cannot be recorded must not block the others
            _logger.exception("Cannot record the result of backup run %s", self.id)
            self.invalidate_recordset()
            reason = _("The result of this run could not be recorded: %s", "%s: %s" % (type(exc).__name__, exc))
            with self.env.cr.savepoint():
                self.write({"is_applied": True, "apply_error": reason})
                record = self._record()
                if record and record.state in ("queued", "running"):
                    record.write({"state": "failed", "error_message": reason, "finished_at": fields.Datetime.now()})
        self.env["bus.bus"]._sendone(
            "spp_backup_runs", "spp_backup.run", {"id": self.id, "res_model": self.res_model, "res_id": self.res_id}
        )
