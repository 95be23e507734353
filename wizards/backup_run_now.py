from markupsafe import Markup
from odoo import _, api, fields, models
from odoo.exceptions import UserError

from ..engine.core import states
from ..models.server_fields import AllFieldsBut


class SppBackupRunNow(models.TransientModel):
    _name = "spp.backup.run.now"
    _inherit = ["spp.backup.server.fields"]
    _description = "Back up now"
    # A person chooses the policy; what the window says about it is the server's.
    _server_fields = AllFieldsBut({"policy_id"})
    _order = "id desc"

    policy_id = fields.Many2one(
        "spp.backup.policy", string="Policy", required=True, ondelete="cascade", help="The policy to back up now."
    )
    database = fields.Char(related="policy_id.database")
    description = fields.Html(string="What will be backed up", compute="_compute_description", sanitize=True)

    @api.depends("policy_id")
    def _compute_description(self):
        for wizard in self:
            policy = wizard.policy_id
            if not policy:
                wizard.description = False
                continue
            parts = [
                label
                for included, label in (
                    (policy.include_database, _("the database")),
                    (policy.include_filestore, _("the filestore")),
                    (policy.include_application, _("the application snapshot")),
                )
                if included
            ]
            where = Markup("").join(
                Markup("<li>%s: <code>%s</code></li>") % (dest.name, dest.where or "")
                for dest in policy.destination_ids
            )
            if policy.encrypt:
                safety = _("Encrypted with age to %s recipient key(s).", len(policy._recipient_lines()))
            else:
                safety = _("Not encrypted.")
            if policy.sign:
                safety += " " + _("The manifest is signed (Ed25519).")
            wizard.description = Markup("<p>%s</p><p>%s</p><ul>%s</ul><p>%s</p>") % (
                _("Back up %(what)s of database %(db)s.", what=", ".join(parts), db=policy.database),
                _("The backup set is written to:"),
                where or Markup("<li>%s</li>") % _("no destination"),
                safety,
            )

    def action_confirm(self):
        """Create a manual job for the policy, queue its run and open the job."""
        self.ensure_one()
        policy = self.policy_id
        self.env["spp.backup.engine"]._check_manager()
        self.env["spp.backup.engine"]._check_database_scope(policy.database)
        if not policy.active:
            raise UserError(_("Policy '%s' is archived: restore it before backing up.", policy.name))
        if not policy.destination_ids:
            raise UserError(_("Policy '%s' has no destination: add one before backing up.", policy.name))
        if policy._is_busy():
            running = self.env["spp.backup.job"].search(
                [("policy_id", "=", policy.id), ("state", "in", states.IN_FLIGHT)], limit=1
            )
            raise UserError(
                _(
                    "A backup of policy '%(policy)s' is already in progress (%(job)s). Wait for it to finish.",
                    policy=policy.name,
                    job=running.display_name,
                )
            )
        job = (
            self.env["spp.backup.job"]
            ._server_mode()
            .create({"policy_id": policy.id, "trigger": "manual", "user_id": self.env.user.id})
        )
        job._queue_run()
        return {
            "type": "ir.actions.act_window",
            "name": _("Backup job"),
            "res_model": "spp.backup.job",
            "res_id": job.id,
            "view_mode": "form",
            "target": "current",
        }
