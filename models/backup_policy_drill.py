import logging

from odoo import _, api, fields, models
from odoo.exceptions import UserError

from ..engine.core import states
from ..engine.core.schedule import next_drill

_logger = logging.getLogger(__name__)


class SppBackupPolicyDrill(models.Model):
    """Restore drills of a policy: their schedule, what they drill, starting them."""

    _inherit = "spp.backup.policy"

    guarded_path_note = fields.Text(string="Restores and drills", compute="_compute_guarded_path_note")

    # ------------------------------------------------------------------ drills

    def _next_drill_slot(self, after=None):
        """The next drill time after ``after`` (now by default), or False when drills are not scheduled."""
        self.ensure_one()
        if not self.is_drill_scheduled or self.drill_interval_number <= 0:
            return False
        return next_drill(after or fields.Datetime.now(), self.drill_interval_number, self.drill_interval_type)

    def _drill_source(self):
        """(job, copy) to drill: the newest good backup's first stored copy that did not fail verification."""
        self.ensure_one()
        jobs = self._good_jobs(limit=5)
        for job in jobs:
            job._ensure_copies()
            copies = job.copy_ids.filtered(lambda c: c.state == "ok" and c.verify_state != "failed")
            if copies:
                return job, copies[0]
        return self.env["spp.backup.job"], self.env["spp.backup.job.copy"]

    def _is_drilling(self):
        self.ensure_one()
        return bool(
            self.env["spp.backup.drill"]
            .sudo()
            .search_count([("policy_id", "=", self.id), ("state", "in", states.IN_FLIGHT)], limit=1)
        )

    def _start_drill(self, trigger="manual", job=None, copy=None):
        """Create a drill and queue its run; the drill, or None when there is no backup to drill.

        The drilled copy is ``copy`` (of ``job``) when given, else the newest good backup's first copy.
        """
        self.ensure_one()
        if not copy:
            job, copy = self._drill_source()
        if not copy:
            return None
        drill = (
            self.env["spp.backup.drill"]
            ._server_mode()
            .create(
                {
                    "policy_id": self.id,
                    "job_id": job.id,
                    "copy_id": copy.id,
                    "backup_id": job.backup_id,
                    "source_location": copy.location,
                    "trigger": trigger,
                    "user_id": self.env.user.id,
                }
            )
        )
        drill._queue_run()
        return drill

    @api.model
    def _cron_run_drills(self, now=None):
        """Start a drill for every policy whose next drill has come; the restore runs by the worker."""
        now = now or fields.Datetime.now()
        # Policies that have no next drill yet (made before drills existed) start counting now.
        for policy in self.search([("is_drill_scheduled", "=", True), ("next_drill", "=", False)]):
            policy.next_drill = policy._next_drill_slot(after=now)
        due = self.search(
            [
                ("active", "=", True),
                ("is_drill_scheduled", "=", True),
                ("next_drill", "!=", False),
                ("next_drill", "<=", now),
            ]
        )
        for policy in due:
            if policy._is_drilling():
                continue
            job, copy = policy._drill_source()
            if not copy:
                # Nothing to drill yet: try again at the next run of the cron.
                continue
            policy.next_drill = policy._next_drill_slot(after=now)
            # One policy whose drill cannot even start (a backup set that breaks the code reading it) must not
            # stop the drills of the others: it is alerted, and the cron goes on.
            try:
                with self.env.cr.savepoint():
                    policy._start_drill(trigger="schedule")
            except Exception as exc:
                _logger.exception("The scheduled drill of policy %s could not start", policy.name)
                self.env["spp.backup.alert"]._raise(
                    policy,
                    "drill_failed",
                    _("The scheduled restore drill could not start: %s", exc.args[0] if exc.args else exc),
                )

    def _guarded_path_text(self):
        """What signing off means for restores and drills of this policy, in words (its form and its jobs)."""
        self.ensure_one()
        text = _(
            "Backups of this policy are not signed, so nothing proves they are this server's own: every restore "
            "and drill of them goes through the guarded path, as for a dump from outside (loaded as a role that "
            "owns only the new database, through the SQL guard, one job at a time). That is slower than a signed "
            "restore and refuses code it does not know."
        )
        if self.is_drill_scheduled:
            return (
                text
                + " "
                + _(
                    "The first unsigned backup is drilled at once, so a backup the guarded path refuses is known the "
                    "same day."
                )
            )
        return (
            text
            + " "
            + _(
                "Drills are not scheduled: a backup the guarded path refuses is only found when it is restored. "
                "Tick Scheduled drills, or press Drill now, to find out."
            )
        )

    @api.depends("sign", "is_drill_scheduled")
    def _compute_guarded_path_note(self):
        for policy in self:
            policy.guarded_path_note = policy._guarded_path_text() if not policy.sign else False

    def _drill_first_unsigned(self, job):
        """Drill ``job`` at once when it is the first successful unsigned backup of this policy, whose drills are
        scheduled; the drill or None.

        An unsigned set is restored through the guarded path, which refuses code it does not know: a set it
        refuses is then known the day the policy starts backing up, not at the first scheduled drill. A drill
        that cannot start is alerted; the backup stays recorded.
        """
        self.ensure_one()
        if not self.is_drill_scheduled or job.signing != "unsigned" or job.state not in states.SUCCEEDED:
            return None
        if not job.backup_id:
            return None
        earlier = (
            self.env["spp.backup.job"]
            .sudo()
            .search_count(
                [
                    ("policy_id", "=", self.id),
                    ("id", "!=", job.id),
                    ("signing", "=", "unsigned"),
                    ("state", "in", states.SUCCEEDED),
                ],
                limit=1,
            )
        )
        if earlier:
            return None
        if self._is_drilling():
            # One drill of a policy at a time: this one follows the drill running now, at the drill cron's next
            # pass, instead of waiting for the next slot of the schedule.
            self._server_mode().next_drill = fields.Datetime.now()
            job._server_mode().message_post(
                body=_("First unsigned backup: it is drilled once the drill running now has ended."),
                subtype_xmlid="mail.mt_note",
            )
            return None
        job._ensure_copies()
        copies = job.copy_ids.filtered(lambda c: c.state == "ok")
        if not copies:
            return None
        try:
            with self.env.cr.savepoint():
                drill = self._start_drill(trigger="first_unsigned", job=job, copy=copies[0])
        except Exception as exc:
            _logger.exception("The drill of the first unsigned backup of policy %s could not start", self.name)
            self.env["spp.backup.alert"]._raise(
                self,
                "drill_failed",
                _(
                    "The drill of the first unsigned backup could not start: %s",
                    exc.args[0] if exc.args else exc,
                ),
            )
            return None
        job.message_post(
            body=_(
                "This is the first unsigned backup of policy %(policy)s: it is drilled now through the guarded "
                "path (%(drill)s), so a backup the guarded path refuses is known today.",
                policy=self.name,
                drill=drill.display_name,
            )
        )
        return drill

    def action_drill_now(self):
        """Restore the newest good backup into a scratch database now, check it and drop it."""
        self.ensure_one()
        self.env["spp.backup.engine"]._check_manager()
        if self._is_drilling():
            raise UserError(_("A drill of policy '%s' is already running: wait for it to finish.", self.name))
        drill = self._start_drill(trigger="manual")
        if drill is None:
            raise UserError(
                _(
                    "Policy '%s' has no successful backup with a stored copy to drill: back up first.",
                    self.name,
                )
            )
        return drill._form_action()

    def action_view_drills(self):
        self.ensure_one()
        action = self.env["ir.actions.act_window"]._for_xml_id("spp_backup.action_spp_backup_drill")
        action["domain"] = [("policy_id", "=", self.id)]
        action["context"] = {"default_policy_id": self.id}
        return action
