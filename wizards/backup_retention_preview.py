from odoo import fields, models


class SppBackupRetentionPreview(models.TransientModel):
    _name = "spp.backup.retention.preview"
    _description = "Retention preview"
    _order = "id desc"

    policy_id = fields.Many2one(
        "spp.backup.policy", string="Policy", required=True, ondelete="cascade", help="The policy previewed."
    )
    report = fields.Text(string="What the retention rules keep and delete", readonly=True)
