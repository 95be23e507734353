import logging

from odoo import _, api, fields, models

from ..engine.core.human import human_bytes
from ..engine.core.manifest import backup_time
from ..engine.formats.catalog import list_backups

_logger = logging.getLogger(__name__)


class SppBackupBrowse(models.TransientModel):
    """Every backup set stored in a destination, of every database (also those made on other servers)."""

    _name = "spp.backup.browse"
    _inherit = "spp.backup.server.wizard"
    _description = "Browse the backups of a destination"
    _order = "id desc"

    destination_id = fields.Many2one(
        "spp.backup.destination", string="Destination", required=True, readonly=True, ondelete="cascade"
    )
    line_ids = fields.One2many("spp.backup.browse.line", "browse_id", string="Backups", readonly=True)
    summary = fields.Char(readonly=True)

    @api.model
    def _open_for(self, destination):
        """List the destination's backups (newest first) and open the list."""
        storage = destination._open_storage()
        entries = destination._call_storage(lambda: list_backups(storage, None, include_incomplete=True))
        # Only the databases this server may touch (its own, and those odoo.conf's databases setting allows).
        Engine = self.env["spp.backup.engine"]
        settings = Engine._settings()
        shown = [entry for entry in entries if Engine._database_allowed(entry.db_name, settings)]
        hidden = len(entries) - len(shown)
        entries = shown
        lines = [
            (
                0,
                0,
                {
                    "db_name": entry.db_name,
                    "backup_id": entry.backup_id,
                    "created_at": backup_time(entry.backup_id).replace(tzinfo=None),
                    "size": float(entry.size or 0),
                    "location": entry.location,
                    "is_restorable": entry.restorable,
                },
            )
            for entry in reversed(entries)
        ]
        databases = {entry.db_name for entry in entries}
        browse = self._server_create(
            {
                "destination_id": destination.id,
                "line_ids": lines,
                "summary": _(
                    "%(count)s backup(s) of %(dbs)s database(s) in %(where)s",
                    count=len(entries),
                    dbs=len(databases),
                    where=destination.where or destination.name,
                )
                + (
                    " "
                    + _(
                        "(%s backup(s) of other databases are not shown: the databases setting in the "
                        "[spp_backup] section of odoo.conf does not allow them.)",
                        hidden,
                    )
                    if hidden
                    else ""
                ),
            }
        )
        return {
            "type": "ir.actions.act_window",
            "name": _("Backups in %s", destination.name),
            "res_model": self._name,
            "res_id": browse.id,
            "view_mode": "form",
            "target": "new",
        }


class SppBackupBrowseLine(models.TransientModel):
    _name = "spp.backup.browse.line"
    _inherit = "spp.backup.server.wizard"
    _description = "A backup set found in a destination"
    _order = "created_at desc, id"

    browse_id = fields.Many2one("spp.backup.browse", required=True, ondelete="cascade", index=True)
    db_name = fields.Char(string="Database", readonly=True)
    backup_id = fields.Char(string="Backup ID", readonly=True)
    created_at = fields.Datetime(string="Made at", readonly=True)
    size = fields.Float(string="Bytes", readonly=True, digits=(20, 0))
    size_human = fields.Char(string="Size", compute="_compute_size_human")
    location = fields.Char(readonly=True)
    is_restorable = fields.Boolean(
        string="Complete", readonly=True, help="The set has its manifest: it finished and can be restored."
    )
    is_this_db = fields.Boolean(compute="_compute_is_this_db", string="Of this database")

    @api.depends("size")
    def _compute_size_human(self):
        for line in self:
            line.size_human = human_bytes(line.size or 0)

    @api.depends("db_name")
    def _compute_is_this_db(self):
        for line in self:
            line.is_this_db = line.db_name == self.env.cr.dbname

    def action_restore(self):
        """Open the restore wizard on this backup."""
        self.ensure_one()
        self._check_own()
        self.env["spp.backup.engine"]._check_restore_right()
        return self.env["spp.backup.restore.wizard"]._open_for(
            destination=self.browse_id.destination_id, db_name=self.db_name, backup_id=self.backup_id
        )
