from odoo import _, api, models
from odoo.exceptions import AccessError
from odoo.tools import clean_context

from .. import compat
from ..models.server_fields import EVERY_FIELD


class SppBackupServerWizard(models.AbstractModel):
    """A wizard the server fills from its own records: people set only the fields ``_server_fields`` leaves out.

    RPC reaches every field of a wizard, whatever the form shows read-only; what the wizard says about a backup
    (which one, where, what the checks found) is what the server wrote. The server creates such a wizard
    (as superuser, for the person who asked: ``create_uid`` stays theirs, and a record rule keeps each person's
    wizards their own).
    """

    _name = "spp.backup.server.wizard"
    _inherit = ["spp.backup.server.fields"]
    _description = "A wizard whose facts are the server's"

    # Every field is the server's, unless a wizard names those a person sets: AllFieldsBut({...}).
    _server_fields = EVERY_FIELD

    @api.model
    def _server_create(self, values):
        """The wizard the server makes for the caller, from ``values`` alone: the ``default_*`` keys a caller may
        put in the context never fill a field of it."""
        created = self.with_context(clean_context(self.env.context))._server_mode().create(values)
        return self.browse(created.ids)

    @api.model_create_multi
    def create(self, vals_list):
        if not self._is_server():
            raise AccessError(_("This window is opened from a backup or a destination, not created directly."))
        return super().create(vals_list)

    def _window_title(self):
        """The title of this wizard's window."""
        return self._description

    def _reopen(self):
        """The action that shows this wizard again, in its window."""
        self.ensure_one()
        return {
            "type": "ir.actions.act_window",
            "name": self._window_title(),
            "res_model": self._name,
            "res_id": self.id,
            "view_mode": "form",
            "target": "new",
        }

    def _check_own(self):
        """The wizard is the caller's (record rule on create_uid): its actions, even those writing as the
        server, start here."""
        compat.check_record_access(self, "write")
