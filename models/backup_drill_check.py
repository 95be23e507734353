from odoo import fields, models

from .server_fields import EVERY_FIELD


class SppBackupDrillCheck(models.Model):
    _name = "spp.backup.drill.check"
    _description = "Restore Drill Check"
    _inherit = ["spp.backup.server.fields"]
    _order = "drill_id, sequence, id"
    _server_fields = EVERY_FIELD

    drill_id = fields.Many2one("spp.backup.drill", string="Drill", required=True, ondelete="cascade", index=True)
    sequence = fields.Integer(default=10, help="Order in which the drill ran its checks.")
    name = fields.Char(string="Check", required=True, readonly=True)
    is_ok = fields.Boolean(string="Passed", readonly=True)
    detail = fields.Text(readonly=True)
