import logging

import psycopg2
from odoo import _, fields, models

from ..engine.core.errors import BackupError
from ..engine.db import walcheck

_logger = logging.getLogger(__name__)


class SppBackupPitrCheck(models.TransientModel):
    """What this Odoo's PostgreSQL server lacks for continuous protection, and the lines to add (``spp-backup pitr
    check``, from the web client): read only, nothing is changed."""

    _name = "spp.backup.pitr.check"
    _inherit = "spp.backup.server.wizard"
    _description = "Check the server's settings for point-in-time recovery"

    server = fields.Char(string="Server", readonly=True)
    verdict = fields.Selection(
        [("ok", "Everything is in place"), ("advice", "Advice only"), ("missing", "Something required is missing")],
        readonly=True,
    )
    report = fields.Text(string="What was found, and what to add where", readonly=True)

    def action_check(self):
        """Read the server's settings, the role's rights, a replication connection and the client tools; open the
        report (a new one: "Check again" on a report makes another)."""
        Engine = self.env["spp.backup.engine"]
        Engine._check_manager()
        pgc = Engine._pg()
        try:
            findings = walcheck.evaluate(walcheck.gather(pgc))
        except (BackupError, psycopg2.Error, OSError) as exc:
            _logger.warning("The check of continuous protection could not read the server", exc_info=True)
            values = {
                "verdict": "missing",
                "report": _("The server could not be read: %s", (str(exc).strip().splitlines() or [repr(exc)])[0]),
            }
        else:
            values = {
                "verdict": {0: "ok", 1: "advice"}.get(walcheck.exit_code(findings), "missing"),
                "report": "\n".join(walcheck.report_lines(findings, pgc.describe())),
            }
        return self.browse()._server_create(dict(values, server=pgc.describe()))._reopen()
