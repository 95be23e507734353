import os

from odoo import _, api, fields, models
from odoo.exceptions import UserError, ValidationError

from ..engine.config import DestinationConfig
from ..engine.errors import BackupError
from ..engine.storage import open_storage


class SppBackupDestination(models.Model):
    _name = "spp.backup.destination"
    _description = "Backup Destination"
    _order = "name, id"

    name = fields.Char(required=True, help="A name that tells people where the backups go, e.g. 'Backup disk'.")
    active = fields.Boolean(default=True, help="Archived destinations are kept for the record but no longer offered.")
    kind = fields.Selection(
        [("local", "Local or mounted directory")],
        string="Kind",
        required=True,
        default="local",
        help="Where the backup sets are written. A local directory may be a mounted network share.",
    )
    path = fields.Char(
        string="Directory",
        help="Absolute path of the directory that receives the backup sets, one sub-folder per database. "
        "The Odoo server's user must be able to write there.",
    )
    policy_ids = fields.Many2many(
        "spp.backup.policy",
        "spp_backup_policy_destination_rel",
        "destination_id",
        "policy_id",
        string="Policies",
        readonly=True,
    )

    @api.constrains("kind", "path")
    def _check_path(self):
        for destination in self:
            if destination.kind != "local":
                continue
            if not (destination.path or "").strip():
                raise ValidationError(
                    _(
                        "Destination '%s' needs a directory: give the absolute path where backups are written.",
                        destination.name,
                    )
                )
            if not os.path.isabs(destination.path.strip()):
                raise ValidationError(
                    _(
                        "The directory of destination '%(name)s' must be an absolute path (starting with /), "
                        "not '%(path)s'.",
                        name=destination.name,
                        path=destination.path,
                    )
                )

    def _to_engine_destination(self):
        """The plain engine configuration of this destination."""
        self.ensure_one()
        return DestinationConfig(kind=self.kind, path=(self.path or "").strip(), name=self.name)

    def action_test(self):
        """Write, read back and delete a probe file; tell the user what happened."""
        self.ensure_one()
        self.env["spp.backup.policy"]._check_backup_manager()
        try:
            message = open_storage(self._to_engine_destination()).probe()
        except BackupError as exc:
            raise UserError(_("Destination '%(name)s' cannot be used: %(reason)s", name=self.name, reason=exc)) from exc
        return {
            "type": "ir.actions.client",
            "tag": "display_notification",
            "params": {
                "title": _("Destination '%s' works", self.name),
                "message": message,
                "type": "success",
                "sticky": False,
            },
        }
