from odoo import _, api, fields, models
from odoo.exceptions import UserError

from ..engine.core import scope
from ..engine.core.errors import BackupError
from ..engine.db import pg
from ..models.server_fields import AllFieldsBut


class SppBackupPitrRestoreWizard(models.TransientModel):
    """Restore one database of a protected server as it was at a chosen second, into a new name or in place of
    a database (typed), from the WAL archive the worker keeps."""

    _name = "spp.backup.pitr.restore.wizard"
    _inherit = ["spp.backup.server.wizard", "spp.backup.restore.target"]
    _description = "Restore a database to a second"

    server_id = fields.Many2one("spp.backup.pitr.server", string="Server", readonly=True, ondelete="cascade")
    window_text = fields.Text(related="server_id.window_text", string="Restorable seconds")
    location = fields.Selection(
        selection="_location_selection",
        string="Archive",
        groups="spp_backup.group_backup_restore",
        help="The destination whose WAL archive is read (odoo.conf's pitr_destinations).",
    )
    source_db_name = fields.Selection(
        selection="_database_selection",
        string="Database",
        groups="spp_backup.group_backup_restore",
        help="The database to take back in time: one of those the server's base backups hold.",
    )
    to_time = fields.Datetime(
        string="As it was at",
        help="The second to restore to, in your time zone: the database holds every transaction committed before "
        "that second began (hh:mm:ss.000) and none after. It must lie inside the restorable seconds shown.",
    )

    # People choose the archive, the database, the second and the target; the server found the rest.
    _server_fields = AllFieldsBut(
        {
            "location",
            "source_db_name",
            "to_time",
            "target_mode",
            "target_db",
            "confirm_db_name",
            "include_filestore",
            "neutralize",
            "new_uuid",
        }
    )

    def _server_of(self):
        return self.server_id.sudo()

    @api.model
    def _location_selection(self):
        servers = self.env["spp.backup.pitr.server"].sudo().search([])
        return [(where, where) for where in sorted({w for server in servers for w in server._locations()})]

    @api.model
    def _database_selection(self):
        servers = self.env["spp.backup.pitr.server"].sudo().search([])
        return [(name, name) for name in sorted({n for server in servers for n in server._databases()})]

    @api.model
    def _open_for(self, server):
        """The wizard for ``server`` (a spp.backup.pitr.server), with the newest restorable second filled in."""
        self.env["spp.backup.engine"]._check_restore_right()
        server = server.sudo()
        locations = server._locations()
        location = locations[0] if locations else False
        ranges = server._ranges(location) if location else []
        databases = server._databases()
        if not databases or not location:
            raise UserError(
                _(
                    "The worker's report of server %s names no restorable database yet: wait for its first base "
                    "backup.",
                    server.name,
                )
            )
        db_name = self.env.cr.dbname if self.env.cr.dbname in databases else databases[0]
        values = {
            "server_id": server.id,
            "location": location,
            "source_db_name": db_name,
            # _ranges() gives whole seconds already.
            "to_time": ranges[-1][1] if ranges else False,
            "target_db": self._suggest_name(db_name),
        }
        wizard = self._server_create(values)
        return wizard._reopen()

    def _window_title(self):
        return _("Restore a database to a second")

    @api.onchange("source_db_name")
    def _onchange_source_db_name(self):
        if self.target_mode == "new" and self.source_db_name:
            self.target_db = self._suggest_name(self.source_db_name)

    # ---------------------------------------------------------------- checks

    def _time_check(self):
        """The chosen second against what the archive at the chosen destination last reported it can reach."""
        self.ensure_one()
        server = self._server_of()
        if not self.location or self.location not in server._locations():
            raise UserError(_("Choose the archive to restore from among those the server reports."))
        if not self.source_db_name or self.source_db_name not in server._databases():
            raise UserError(_("Choose the database among those the server's base backups hold."))
        if not self.to_time:
            raise UserError(_("Choose the second to restore to."))
        ranges = server._ranges(self.location)
        if not any(start <= self.to_time <= end for start, end in ranges):
            shown = "; ".join(
                _("%(start)s to %(end)s", start=server._local(start), end=server._local(end)) for start, end in ranges
            )
            raise UserError(
                _(
                    "%(when)s is not a second the archive at %(where)s can restore to. It can restore to: %(shown)s. "
                    "Nothing was changed.",
                    when=server._local(self.to_time),
                    where=self.location,
                    shown=shown or _("nothing yet"),
                )
            )

    def action_run(self):
        """Queue the restore for the worker after the checks (the restore right, the typed name to replace, the
        second inside the window); opens the restore record."""
        self.ensure_one()
        self._check_own()
        Engine = self.env["spp.backup.engine"]
        Engine._check_restore_right()
        self._check_confirmation()
        self._time_check()
        try:
            scope.check_database(self.source_db_name, self.env.cr.dbname, Engine._settings(), "read the backups of")
            pg.check_db_name(self.source_db_name)
        except BackupError as exc:
            raise UserError(str(exc)) from exc
        check = self._target_check()
        if not check.ok:
            raise UserError(_("The restore cannot start: %s", check.detail))
        server = self._server_of()
        when = server._local(self.to_time)
        return self._start_restore(
            {
                "source_db_name": self.source_db_name,
                "source_location": self.location,
                "pitr_server_id": server.id,
                "to_time": self.to_time,
                "include_filestore": self.include_filestore,
                "check_report": _(
                    "%(db)s as it was at %(when)s, from the WAL archive at %(where)s (%(window)s)",
                    db=self.source_db_name,
                    when=when,
                    where=self.location,
                    window=server.window_text or "",
                ),
            },
            _("%(db)s as it was at %(when)s", db=self.source_db_name, when=when),
        )
