from odoo import fields, models

from ..models.server_fields import EVERY_FIELD


class SppBackupRetentionPreview(models.TransientModel):
    _name = "spp.backup.retention.preview"
    _inherit = ["spp.backup.server.fields"]
    _description = "Retention preview"
    _order = "id desc"
    # The server writes the preview of a policy it read (action_preview_retention); people only read it.
    _server_fields = EVERY_FIELD

    policy_id = fields.Many2one(
        "spp.backup.policy", string="Policy", required=True, ondelete="cascade", help="The policy previewed."
    )
    report = fields.Text(string="What the retention rules keep and delete", readonly=True)
