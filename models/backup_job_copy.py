import dataclasses
import os

from odoo import _, fields, models
from odoo.exceptions import UserError

from ..engine.core import plans
from ..engine.core.config import DestinationConfig
from .server_fields import EVERY_FIELD


class SppBackupJobCopy(models.Model):
    _name = "spp.backup.job.copy"
    _inherit = ["spp.backup.server.fields"]
    _description = "Backup Copy"
    _order = "job_id desc, sequence, id"
    _server_fields = EVERY_FIELD

    job_id = fields.Many2one("spp.backup.job", string="Job", required=True, ondelete="cascade", index=True)
    sequence = fields.Integer(default=10, help="Position of the destination in the policy when the backup ran.")
    destination_id = fields.Many2one(
        "spp.backup.destination",
        string="Destination",
        ondelete="set null",
        index="btree_not_null",
        help="The destination this copy was written to (empty if it was deleted since).",
    )
    destination_label = fields.Char(string="Written to", readonly=True, help="The destination as the worker named it.")
    location = fields.Char(readonly=True, help="Where this copy of the backup set is stored.")
    state = fields.Selection(
        [("ok", "Stored"), ("failed", "Failed"), ("pruned", "Pruned by retention")],
        string="Status",
        required=True,
        default="ok",
        readonly=True,
    )
    pruned_at = fields.Datetime(string="Pruned on", readonly=True, help="When retention deleted this copy.")
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

    def _engine_source(self):
        """The worker's ``source`` for this copy: its own storage (from the location), database and backup id."""
        self.ensure_one()
        job = self.job_id
        location = (self.location or "").rstrip("/")
        if not location or not job.backup_id:
            raise UserError(_("This copy has no stored location to read the backup from."))
        if location.startswith("s3://"):
            parts = location[len("s3://") :].split("/")
            if len(parts) < 3:
                raise UserError(_("%s is not the location of a backup set.", location))
            destination = self.destination_id
            base = (
                destination._to_engine_destination()
                if destination and destination.kind == "s3"
                else DestinationConfig(kind="s3", name=self.destination_label or "")
            )
            config = dataclasses.replace(base, bucket=parts[0], prefix="/".join(parts[1:-2]))
            db_name, backup_id = parts[-2], parts[-1]
        else:
            root, backup_id = os.path.split(location)
            root, db_name = os.path.split(root)
            config = DestinationConfig(
                kind="local", path=root, name=self.destination_id.name or self.destination_label or root
            )
        if backup_id != job.backup_id:
            raise UserError(_("The location %(where)s does not hold backup %(id)s.", where=location, id=job.backup_id))
        return plans.Source(destination=dataclasses.asdict(config), db_name=db_name, backup_id=backup_id)

    def action_restore(self):
        """Open the restore wizard on this copy."""
        self.ensure_one()
        self.env["spp.backup.engine"]._check_restore_right()
        if self.state != "ok":
            raise UserError(_("This copy was not stored: it cannot be restored."))
        return self.env["spp.backup.restore.wizard"]._open_for(copy=self)
