from odoo import fields, models


class SppBackupDrillCheck(models.Model):
    _name = "spp.backup.drill.check"
    _description = "Restore Drill Check"
    _order = "drill_id, sequence, id"

    drill_id = fields.Many2one("spp.backup.drill", string="Drill", required=True, ondelete="cascade", index=True)
    sequence = fields.Integer(default=10, help="Order in which the drill ran its checks.")
    name = fields.Char(string="Check", required=True, readonly=True)
    is_ok = fields.Boolean(string="Passed", readonly=True)
    detail = fields.Text(readonly=True)
