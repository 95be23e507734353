import json

from markupsafe import Markup
from odoo import _, api, fields, models, release
from odoo.exceptions import UserError


class SppBackupRestore(models.Model):
    """One restore of a backup set, started from the restore wizard and run by the detached runner."""

    _name = "spp.backup.restore"
    _description = "Backup Restore"
    _inherit = ["spp.backup.runner.mixin", "mail.thread"]
    _order = "create_date desc, id desc"
    _runner_prefix = "restore"

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
    source_json = fields.Text(
        string="Source (engine)", readonly=True, help="The destination, database and backup id given to the runner."
    )
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
    public_key = fields.Char(string="Signing public key", readonly=True)
    neutralize_sql = fields.Text(
        string="Neutralization statements",
        readonly=True,
        help="Odoo's neutralization SQL of the backed-up modules found on this server (JSON list), run on the copy.",
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

    @api.depends("backup_id", "target_db")
    def _compute_name(self):
        for restore in self:
            restore.name = _("%(backup)s into %(db)s", backup=restore.backup_id or "?", db=restore.target_db or "?")

    # ------------------------------------------------------------------ runner

    def _runner_plan(self):
        self.ensure_one()
        settings, pg, rcfile = self._engine_context()
        options = {
            "target_db": self.target_db,
            "data_dir": self.env["spp.backup.policy"]._data_dir(),
            "replace": self.is_replace,
            "include_filestore": self.include_filestore,
            "new_uuid": self.new_uuid,
            "neutralize": self.neutralize,
            "neutralize_sql": json.loads(self.neutralize_sql or "[]") if self.neutralize else [],
            "jobs": 1,
            "public_key": self.public_key or None,
            "expected_major_version": release.major_version,
        }
        plan = {
            "action": "restore",
            "odoo_conf": rcfile,
            "pg": pg.public_dict(),
            "source": json.loads(self.source_json),
            "options": options,
        }
        return plan, pg.password

    def _on_runner_done(self, status):
        result = status.get("result") or {}
        seconds = result.get("seconds") or {}
        aside = result.get("renamed_aside") or {}
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
        body = Markup("<p>%s</p>") % _(
            "Backup %(backup)s was restored into database %(db)s in %(seconds)s s (signature: %(signature)s).",
            backup=self.backup_id,
            db=self.target_db,
            seconds="%.1f" % self.restore_seconds,
            signature=self.signature or _("not checked"),
        )
        if self.replaced_db_aside:
            body += Markup("<p>%s</p>") % _(
                "The previous database is kept as %s, closed to connections. Drop it once the restored one is "
                "confirmed good.",
                self.replaced_db_aside,
            )
        self.message_post(body=body, subtype_xmlid="spp_backup.mt_restore_done")

    def _on_runner_failed(self, reason, status):
        self.message_post(
            body=_("The restore into %(db)s failed: %(reason)s", db=self.target_db, reason=reason),
            subtype_xmlid="spp_backup.mt_restore_failed",
        )

    # ----------------------------------------------------------------- actions

    def action_refresh(self):
        """Read the runner's progress now."""
        self.env["spp.backup.policy"]._check_restore_right()
        self._collect()
        return True

    def unlink(self):
        if any(restore.state in ("queued", "running") for restore in self):
            raise UserError(_("A restore in progress cannot be deleted: wait for it to finish."))
        return super().unlink()
