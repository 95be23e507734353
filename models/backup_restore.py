import datetime

from markupsafe import Markup
from odoo import _, api, fields, models, release

from ..engine.core import plans
from ..engine.core.human import human_duration
from ..engine.ops import inflight


class SppBackupRestore(models.Model):
    """One restore of a backup set, or of a database as it was at one second (``to_time``: from the WAL archive of
    continuous protection), started from a restore wizard and run by the worker."""

    _name = "spp.backup.restore"
    _description = "Backup Restore"
    _inherit = ["spp.backup.run.mixin", "mail.thread"]
    _order = "create_date desc, id desc"
    _run_action = "restore"

    name = fields.Char(compute="_compute_name", store=True)
    policy_id = fields.Many2one(
        "spp.backup.policy", string="Policy", readonly=True, ondelete="set null", index="btree_not_null"
    )
    job_id = fields.Many2one(
        "spp.backup.job", string="Backup job", readonly=True, ondelete="set null", index="btree_not_null"
    )
    copy_id = fields.Many2one("spp.backup.job.copy", string="Copy", readonly=True, ondelete="set null")
    destination_id = fields.Many2one(
        "spp.backup.destination", string="Destination", readonly=True, ondelete="set null", tracking=True
    )
    source_db_name = fields.Char(string="Backed-up database", readonly=True, tracking=True)
    backup_id = fields.Char(string="Backup ID", readonly=True, tracking=True)
    source_location = fields.Char(string="Restored from", readonly=True, help="Where the backup set was read.")
    target_db = fields.Char(string="Target database", readonly=True, required=True, tracking=True)
    is_replace = fields.Boolean(
        string="Replaces an existing database",
        readonly=True,
        tracking=True,
        help="The target existed and was renamed aside (not dropped) before the backup took its place.",
    )
    is_current_db = fields.Boolean(
        string="Replaces this Odoo's database", readonly=True, help="The target was the database of this Odoo."
    )
    include_filestore = fields.Boolean(string="Filestore", readonly=True)
    neutralize = fields.Boolean(string="Neutralized", readonly=True)
    new_uuid = fields.Boolean(string="New database UUID", readonly=True)
    unsigned_ok = fields.Boolean(
        string="Unsigned accepted",
        readonly=True,
        help="The backup's policy does not sign: an unsigned backup was accepted, with a warning.",
    )
    public_key = fields.Text(
        string="Signing public keys", readonly=True, help="The keys the backup's signature was checked against."
    )
    replaced_db_aside = fields.Char(
        string="Previous database kept as",
        readonly=True,
        help="The name the replaced database was renamed to; it is closed to connections, not dropped.",
    )
    replaced_filestore_aside = fields.Char(string="Previous filestore kept at", readonly=True)
    filestore_path = fields.Char(string="Filestore restored to", readonly=True)
    filestore_files = fields.Integer(string="Filestore files", readonly=True)
    signature = fields.Char(string="Signature", readonly=True)
    verify_seconds = fields.Float(string="Verification (s)", readonly=True, digits=(16, 1))
    database_seconds = fields.Float(string="Database restore (s)", readonly=True, digits=(16, 1))
    filestore_seconds = fields.Float(string="Filestore restore (s)", readonly=True, digits=(16, 1))
    restore_seconds = fields.Float(string="Restore time (s)", readonly=True, digits=(16, 1))
    warnings = fields.Text(readonly=True)
    check_report = fields.Text(string="Pre-checks", readonly=True, help="The checks shown before the restore ran.")
    # A restore to a second (point-in-time recovery).
    pitr_server_id = fields.Many2one(
        "spp.backup.pitr.server", string="Protected server", readonly=True, ondelete="set null"
    )
    to_time = fields.Datetime(string="As it was at", readonly=True, tracking=True)
    pitr_base_backup = fields.Char(string="Base backup", readonly=True)
    pitr_wal = fields.Char(string="WAL replayed", readonly=True)
    pitr_reached = fields.Text(
        string="Recovery stopped",
        readonly=True,
        help="PostgreSQL's own words on where recovery stopped (the first transaction after the chosen second).",
    )

    @api.depends("backup_id", "target_db", "to_time", "source_db_name")
    def _compute_name(self):
        for restore in self:
            if restore.to_time:
                restore.name = _(
                    "%(origin)s at %(when)s UTC into %(db)s",
                    origin=restore.source_db_name or "?",
                    when=restore.to_time,
                    db=restore.target_db or "?",
                )
            else:
                restore.name = _("%(backup)s into %(db)s", backup=restore.backup_id or "?", db=restore.target_db or "?")

    # ------------------------------------------------------------------ run

    def _run_action_of(self):
        return plans.PITR_RESTORE if self.to_time else plans.RESTORE

    def _run_plan(self):
        """The restore as the worker runs it; the source and the neutralization SQL are the server's own."""
        self.ensure_one()
        Engine = self.env["spp.backup.engine"]
        if self.to_time:
            options = plans.RestoreRequest(
                target_db=self.target_db,
                replace=self.is_replace,
                include_filestore=self.include_filestore,
                new_uuid=self.new_uuid,
                neutralize=self.neutralize,
                confirm_name=self.target_db if self.is_replace else None,
            )
            moment = self.to_time.replace(tzinfo=datetime.timezone.utc)
            return plans.PitrRestorePlan(
                location=self.source_location,
                db_name=self.source_db_name,
                to_time=moment.strftime("%Y-%m-%dT%H:%M:%SZ"),
                options=options,
                system_id=self.pitr_server_id.sudo().system_id or None,
                # The modules installed in the copy at that second decide which of these run.
                neutralize_modules=Engine._neutralize_by_module() if self.neutralize else {},
            )
        source = self.env["spp.backup.destination"]._source_of(
            copy=self.copy_id, destination=self.destination_id, db_name=self.source_db_name, backup_id=self.backup_id
        )
        neutralize_sql = []
        if self.neutralize:
            manifest = self._read_manifest(self._source_ref(source))
            neutralize_sql = Engine._neutralize_queries(manifest.get("modules") or {})
        options = plans.RestoreRequest(
            target_db=self.target_db,
            replace=self.is_replace,
            include_filestore=self.include_filestore,
            new_uuid=self.new_uuid,
            neutralize=self.neutralize,
            neutralize_sql=neutralize_sql,
            jobs=1,
            public_key=(self.public_key or "").split() or None,
            expected_major_version=release.major_version,
            # The wizard had the target's name typed before it accepted a replace (_check_confirmation).
            confirm_name=self.target_db if self.is_replace else None,
        )
        return plans.RestorePlan(source=source, options=options, unsigned_ok=self.unsigned_ok)

    def _on_run_done(self, status):
        result = status.get("result") or {}
        seconds = result.get("seconds") or {}
        aside = result.get("renamed_aside") or {}
        if self.to_time:
            self.write(
                {
                    "pitr_base_backup": " + ".join(result.get("base_chain") or [])
                    or result.get("base_backup")
                    or False,
                    "pitr_wal": "%s to %s (%d files%s)"
                    % (
                        result.get("wal_first") or "-",
                        result.get("wal_last") or "-",
                        int(result.get("wal_files") or 0),
                        ", the newest in progress" if result.get("partial_used") else "",
                    ),
                    "pitr_reached": result.get("reached")
                    or _("Replayed everything received: nothing was committed after that second."),
                }
            )
        self.write(
            {
                "replaced_db_aside": aside.get("database") or False,
                "replaced_filestore_aside": aside.get("filestore") or False,
                "filestore_path": result.get("filestore_path") or False,
                "filestore_files": int(result.get("filestore_files") or 0),
                "signature": result.get("signature") or False,
                "verify_seconds": float(seconds.get("verify") or 0.0),
                "database_seconds": float(seconds.get("database") or 0.0),
                "filestore_seconds": float(seconds.get("filestore") or 0.0),
                "restore_seconds": float(result.get("duration") or 0.0),
                "warnings": "\n".join(result.get("warnings") or []) or False,
            }
        )
        if self.to_time:
            body = Markup("<p>%s</p>") % _(
                "Database %(origin)s as it was at %(when)s UTC was restored into %(db)s in %(took)s, from base "
                "backup %(base)s and WAL %(wal)s. %(reached)s",
                origin=self.source_db_name,
                when=self.to_time,
                db=self.target_db,
                took=human_duration(self.restore_seconds),
                base=self.pitr_base_backup,
                wal=self.pitr_wal,
                reached=self.pitr_reached,
            )
        else:
            body = Markup("<p>%s</p>") % _(
                "Backup %(backup)s was restored into database %(db)s in %(took)s (signature: %(signature)s).",
                backup=self.backup_id,
                db=self.target_db,
                took=human_duration(self.restore_seconds),
                signature=self.signature or _("not checked"),
            )
        closed = inflight.closed_text(result.get("in_flight_closed"))
        if closed:
            body += Markup("<p>%s</p>") % _("In the restored database: %s.", closed)
        if self.replaced_db_aside:
            body += Markup("<p>%s</p>") % _(
                "The previous database is kept as %s, closed to connections. Drop it once the restored one is "
                "confirmed good.",
                self.replaced_db_aside,
            )
        self.message_post(body=body, subtype_xmlid="spp_backup.mt_restore_done")

    def _on_run_failed(self, reason, status):
        self.message_post(
            body=_("The restore into %(db)s failed: %(reason)s", db=self.target_db, reason=reason),
            subtype_xmlid="spp_backup.mt_restore_failed",
        )
