from odoo import fields, models


class SppBackupJobCopy(models.Model):
    _name = "spp.backup.job.copy"
    _description = "Backup Copy"
    _order = "job_id desc, sequence, id"

    job_id = fields.Many2one("spp.backup.job", string="Job", required=True, ondelete="cascade", index=True)
    sequence = fields.Integer(default=10, help="Position of the destination in the policy when the backup ran.")
    destination_id = fields.Many2one(
        "spp.backup.destination",
        string="Destination",
        ondelete="set null",
        index="btree_not_null",
        help="The destination this copy was written to (empty if it was deleted since).",
    )
    destination_label = fields.Char(string="Written to", readonly=True, help="The destination as the runner named it.")
    location = fields.Char(readonly=True, help="Where this copy of the backup set is stored.")
    state = fields.Selection(
        [("ok", "Stored"), ("failed", "Failed")], string="Status", required=True, default="ok", readonly=True
    )
    error = fields.Text(readonly=True, help="Why this copy could not be written.")
    verify_state = fields.Selection(
        [("not_verified", "Not verified"), ("ok", "Verified"), ("failed", "Verification failed")],
        string="Verification",
        default="not_verified",
        required=True,
        readonly=True,
    )
    signature = fields.Char(readonly=True, help="The verdict on the manifest's signature at the last verification.")
    verified_at = fields.Datetime(string="Verified on", readonly=True)
    verify_report = fields.Text(string="Verification report", readonly=True)
