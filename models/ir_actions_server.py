from odoo import _, api, models
from odoo.exceptions import AccessError

from .server_fields import MODULE, server_mode


class IrActionsServer(models.Model):
    """The addon's scheduled actions run as the server (see server_fields.py): they record what the worker did.

    Only when Odoo runs them as their cron's user (the superuser, from the cron or its Run Manually); a person
    who runs the action itself (ir.actions.server.run over RPC) is refused: Odoo 17 checks the caller's right
    to write the model, which a Backup Manager has on policies, and Odoo 19 checks it on the superuser's copy
    of the action, which any user passes.
    """

    _inherit = "ir.actions.server"

    @api.model
    def _get_eval_context(self, action=None):
        context = super()._get_eval_context(action=action)
        if action and context.get("model") is not None and self._is_spp_backup_action(action):
            if not self.env.su:
                raise AccessError(
                    _("The backup's scheduled actions run as the server: use Run Manually on the scheduled action.")
                )
            context["model"] = server_mode(context["model"])
        return context

    @api.model
    def _is_spp_backup_action(self, action):
        """True when ``action`` is the code of one of the addon's own crons."""
        self.env.cr.execute(
            """SELECT 1 FROM ir_cron c
                 JOIN ir_model_data d ON d.model = 'ir.cron' AND d.res_id = c.id AND d.module = %s
                WHERE c.ir_actions_server_id = %s""",
            (MODULE, action.id),
        )
        return bool(self.env.cr.fetchone())
