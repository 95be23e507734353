import dataclasses
import logging
import os
import shutil

from odoo import _, api, fields, models, release
from odoo.exceptions import UserError
from odoo.modules.module import get_module_path

from ..engine.core import plans, scope, states
from ..engine.core.errors import BackupError
from ..engine.core.human import human_bytes
from ..engine.core.manifest import filestore_artifact, filestore_bytes
from ..engine.db import pg
from ..models.server_fields import AllFieldsBut

_logger = logging.getLogger(__name__)


@dataclasses.dataclass
class Check:
    name: str
    ok: bool
    detail: str


def _free_space(path):
    """(existing folder, free bytes) for ``path`` or its nearest existing parent."""
    while path and not os.path.exists(path):
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    path = path or "/"
    return path, shutil.disk_usage(path).free


class SppBackupRestoreTarget(models.AbstractModel):
    """Where a restore goes and how (a new name or the typed replace, neutralize, new identity, the filestore):
    the options and the checks the restore wizard and the point-in-time restore wizard share."""

    _name = "spp.backup.restore.target"
    _inherit = ["spp.backup.server.fields"]
    _description = "Restore target"

    target_mode = fields.Selection(
        [("new", "Restore into a new database"), ("replace", "Replace an existing database")],
        string="Target",
        default="new",
        required=True,
        help="A new database (side by side, the safe default) or an existing one, which is then renamed aside "
        "(kept, closed to connections), not dropped.",
    )
    target_db = fields.Char(
        string="Database name",
        required=True,
        help="The database the backup is restored into. For a new database: a name that does not exist yet. "
        "To replace a database: the name of the existing database, which you choose; nothing is filled in for you. "
        "Letters, digits, '_', '-' and '.'.",
    )
    confirm_db_name = fields.Char(
        string="Type the database name to confirm",
        help="Replacing a database needs its name typed here exactly, as a guard against replacing the wrong one.",
    )
    is_current_db = fields.Boolean(compute="_compute_is_current_db", string="Replaces this Odoo's database")
    current_db = fields.Char(compute="_compute_is_current_db", string="This Odoo's database")
    include_filestore = fields.Boolean(
        string="Restore the filestore",
        default=True,
        help="Also restore the attachment files into the filestore of the target database. Without them, "
        "documents and images stored as files are missing in the restored database.",
    )
    neutralize = fields.Boolean(
        string="Neutralize",
        default=True,
        help="Switch off outgoing and incoming mail servers, scheduled actions and other integrations in the "
        "restored database (Odoo's own neutralization), so a copy never sends mail or runs jobs as production. "
        "Choosing to replace a database unticks it, since the restored database then takes the place of the "
        "original and must keep working as it did; tick it again if the replaced database is a test copy.",
    )
    new_uuid = fields.Boolean(
        string="New database UUID",
        default=True,
        help="Give the restored database its own database.uuid and secret, as Odoo's database manager does for "
        "a copy. Leave it off when the restored database takes the place of the original: choosing to replace a "
        "database unticks it.",
    )

    @api.depends("target_db", "target_mode")
    def _compute_is_current_db(self):
        for wizard in self:
            wizard.current_db = self.env.cr.dbname
            wizard.is_current_db = wizard.target_mode == "replace" and wizard.target_db == self.env.cr.dbname

    @api.onchange("target_mode")
    def _onchange_target_mode(self):
        if self.target_mode == "replace":
            # The restored database takes the place of the original: no neutralization, same UUID (the form
            # says so). The database to replace is left for the user to name, never guessed.
            self.new_uuid = False
            self.neutralize = False
            self.target_db = False
        else:
            self.new_uuid = True
            self.neutralize = True
            self.target_db = self._suggest_name(self.source_db_name)
        self.confirm_db_name = False

    @api.model
    def _database_exists(self, name):
        """Whether database ``name`` exists now (asked on a connection of its own, outside this transaction)."""
        if not name:
            return False
        try:
            return pg.database_exists(self.env["spp.backup.engine"]._pg(), name)
        except BackupError as exc:
            raise UserError(_("The database server cannot be asked which databases exist: %s", exc)) from exc

    @api.model
    def _suggest_name(self, db_name):
        """``<db>_restored_<date>``, with a counter when that database exists already."""
        base = "%s_restored_%s" % (db_name or "database", fields.Date.context_today(self).strftime("%Y%m%d"))
        base = base[:60]
        name, counter = base, 2
        while self._database_exists(name):
            name, counter = "%s_%d" % (base, counter), counter + 1
        return name

    def _target_check(self):
        name = (self.target_db or "").strip()
        try:
            pg.check_db_name(name)
        except BackupError as exc:
            return Check(_("target"), False, str(exc))
        if name in scope.SYSTEM_DATABASES:
            return Check(_("target"), False, _("%s is a PostgreSQL system database: choose another name.", name))
        try:
            self.env["spp.backup.engine"]._check_target_scope(name, replace=self.target_mode == "replace")
        except UserError as exc:
            return Check(_("target"), False, exc.args[0])
        exists = self._database_exists(name)
        if self.target_mode == "new":
            if exists:
                return Check(
                    _("target"),
                    False,
                    _("Database %s exists already: choose a new name, or choose to replace it.", name),
                )
            folder = os.path.join(self.env["spp.backup.engine"]._data_dir(), "filestore", name)
            if self.include_filestore and os.path.lexists(folder):
                return Check(
                    _("target"),
                    False,
                    _("A filestore folder for %s exists already: choose another name.", name),
                )
            return Check(_("target"), True, _("new database %s", name))
        if not exists:
            return Check(
                _("target"), False, _("There is no database %s to replace: choose a new database instead.", name)
            )
        if name == self.env.cr.dbname:
            return Check(
                _("target"),
                True,
                _(
                    "replaces %s, the database of this Odoo: it is renamed aside and every user is disconnected",
                    name,
                ),
            )
        return Check(_("target"), True, _("replaces %s, which is renamed aside (kept, not dropped)", name))

    def _check_confirmation(self):
        self.ensure_one()
        if self.target_mode != "replace":
            return
        if (self.confirm_db_name or "") != (self.target_db or ""):
            raise UserError(
                _(
                    "To replace database %s, type its name exactly in the confirmation field. Nothing was changed.",
                    self.target_db,
                )
            )

    def _free_target(self):
        """The target's name, once no restore into it is in progress."""
        target = (self.target_db or "").strip()
        busy = (
            self.env["spp.backup.restore"]
            .sudo()
            .search([("target_db", "=", target), ("state", "in", states.IN_FLIGHT)], limit=1)
        )
        if busy:
            raise UserError(_("A restore into %s is already in progress: wait for it to finish.", target))
        return target

    def _start_restore(self, values, started):
        """The restore record (the server's) of ``values`` and this target's options, ``started`` (what was
        started, in words) posted on it, its run queued; the action that opens it."""
        target = self._free_target()
        replace = self.target_mode == "replace"
        restore = (
            self.env["spp.backup.restore"]
            ._server_mode()
            .create(
                dict(
                    {
                        "target_db": target,
                        "is_replace": replace,
                        "is_current_db": replace and target == self.env.cr.dbname,
                        "neutralize": self.neutralize,
                        "new_uuid": self.new_uuid,
                        "user_id": self.env.user.id,
                    },
                    **values,
                )
            )
        )
        self.env["spp.backup.engine"]._as_server(restore).message_post(
            body=_(
                "%(user)s started restoring %(what)s into %(db)s%(mode)s.",
                user=self.env.user.name,
                what=started,
                db=target,
                mode=_(" (replacing it)") if replace else "",
            )
        )
        restore._queue_run()
        return {
            "type": "ir.actions.act_window",
            "name": _("Restore"),
            "res_model": "spp.backup.restore",
            "res_id": restore.id,
            "view_mode": "form",
            "target": "current",
        }


class SppBackupRestoreWizard(models.TransientModel):
    """Restore one backup set: choose the target and options, check, then run by the worker."""

    _name = "spp.backup.restore.wizard"
    _inherit = ["spp.backup.server.wizard", "spp.backup.restore.target"]
    _description = "Restore a backup"
    _order = "id desc"

    step = fields.Selection(
        [("options", "Options"), ("checking", "Checking"), ("checked", "Checked")],
        default="options",
        required=True,
        readonly=True,
    )
    check_run_id = fields.Many2one("spp.backup.run", string="Check run", readonly=True, ondelete="set null")
    copy_id = fields.Many2one("spp.backup.job.copy", string="Copy", readonly=True, ondelete="cascade")
    job_id = fields.Many2one("spp.backup.job", string="Backup job", readonly=True, ondelete="cascade")
    policy_id = fields.Many2one("spp.backup.policy", string="Policy", readonly=True, ondelete="cascade")
    destination_id = fields.Many2one("spp.backup.destination", string="Destination", readonly=True, ondelete="cascade")
    source_location = fields.Char(string="Backup", readonly=True)
    source_db_name = fields.Char(string="Backed-up database", readonly=True)
    backup_id = fields.Char(string="Backup ID", readonly=True)
    manifest_summary = fields.Text(string="What the backup holds", readonly=True)
    has_filestore = fields.Boolean(readonly=True)
    public_key = fields.Char(
        string="Signing public key",
        help="Ed25519 public key (base64) the backup's signature is checked against when this server knows none "
        "for it. The server's own keys (its signing key and the ones it signed with before, or verify_key in "
        "odoo.conf) always come first and cannot be replaced here. With a key, a backup whose signature is "
        "missing or wrong is refused.",
    )
    check_report = fields.Text(string="Checks", readonly=True)
    is_check_ok = fields.Boolean(string="Checks passed", readonly=True)

    # What a person chooses in the form. Everything else (which backup, its job and policy, the checks and their
    # report) the server derives from the records it opened the wizard on, and writes itself.
    _server_fields = AllFieldsBut(
        {"target_mode", "target_db", "confirm_db_name", "include_filestore", "neutralize", "new_uuid", "public_key"}
    )

    def write(self, vals):
        options = self._server_fields - {"confirm_db_name"}  # what a person sets, but the typed confirmation
        if not self._is_server() and set(vals) & options:
            # A changed option makes the checks stale: they run again before the restore may start.
            super().write(vals)
            return self._server_mode().write({"step": "options", "is_check_ok": False, "check_report": False})
        return super().write(vals)

    @api.onchange("target_mode", "target_db", "include_filestore", "neutralize", "new_uuid", "public_key")
    def _onchange_reset_checks(self):
        self.step = "options"
        self.is_check_ok = False
        self.check_report = False

    # ------------------------------------------------------------------ open

    @api.model
    def _open_for(self, copy=None, destination=None, db_name=None, backup_id=None):
        """Create the wizard for a job's copy, or for a backup of a destination, and open it."""
        self.env["spp.backup.engine"]._check_restore_right()
        Destination = self.env["spp.backup.destination"]
        values = {}
        if copy:
            policy = copy.job_id.policy_id
            values.update(
                copy_id=copy.id,
                job_id=copy.job_id.id,
                policy_id=policy.id,
                destination_id=copy.destination_id.id,
                source_location=copy.location,
            )
        else:
            policy = self.env["spp.backup.policy"].search(
                [("database", "=", db_name), ("destination_ids", "in", destination.ids)], limit=1
            )
            values.update(destination_id=destination.id, policy_id=policy.id)
        source = Destination._source_of(copy=copy, destination=destination, db_name=db_name, backup_id=backup_id)
        ref = self.env["spp.backup.restore"]._source_ref(source)
        manifest = self.env["spp.backup.restore"]._read_manifest(ref)
        has_filestore = bool(filestore_artifact(manifest["artifacts"])[0])
        values.update(
            source_location=values.get("source_location") or ref.location(),
            source_db_name=source.db_name,
            backup_id=ref.backup_id,
            manifest_summary=self._manifest_summary(manifest),
            has_filestore=has_filestore,
            include_filestore=has_filestore,
            target_db=self._suggest_name(source.db_name),
        )
        # Created by the server from the records above; the wizard still belongs to the person (create_uid).
        wizard = self._server_create(values)
        return wizard._reopen()

    def _window_title(self):
        return _("Restore backup %s", self.backup_id)

    @api.model
    def _manifest_summary(self, manifest):
        artifacts = manifest.get("artifacts") or {}
        lines = [
            _(
                "Database %(db)s, backup %(id)s, made at %(when)s",
                db=manifest.get("db_name"),
                id=manifest.get("backup_id"),
                when=manifest.get("created_at"),
            ),
            _(
                "Odoo %(version)s, %(count)s installed modules",
                version=manifest.get("version") or "?",
                count=len(manifest.get("modules") or {}),
            ),
        ]
        for name in ("database", "filestore", "filelist", "application"):
            art = artifacts.get(name)
            if not art:
                continue
            encrypted = _(" (encrypted)") if art.get("encryption") else ""
            if name == "filelist":
                lines.append(
                    _(
                        "filestore: %(files)s files, %(size)s, in the destination's store%(encrypted)s",
                        files=int((manifest.get("filestore") or {}).get("files") or 0),
                        size=human_bytes(filestore_bytes(manifest)),
                        encrypted=encrypted,
                    )
                )
            else:
                lines.append("%s: %s%s" % (name, human_bytes(art.get("size") or 0), encrypted))
        return "\n".join(lines)

    # ---------------------------------------------------------------- checks

    def _source(self):
        """The backup this wizard restores, as the server derives it from its records (never typed)."""
        self.ensure_one()
        return self.env["spp.backup.destination"]._source_of(
            copy=self.copy_id, destination=self.destination_id, db_name=self.source_db_name, backup_id=self.backup_id
        )

    def _server_policies(self):
        """The policies that could have made this backup, found by the server from the copy or the destination."""
        self.ensure_one()
        if self.copy_id:
            return self.copy_id.sudo().job_id.policy_id
        return (
            self.env["spp.backup.policy"]
            .sudo()
            .with_context(active_test=False)
            .search([("database", "=", self.source_db_name), ("destination_ids", "in", self.destination_id.ids)])
        )

    def _unsigned_ok(self):
        """An unsigned backup passes only when the server has keys and the backup's policies do not sign: a key
        typed in the wizard always requires a signature."""
        Engine = self.env["spp.backup.engine"]
        return bool(Engine._trusted_public_key()) and Engine._unsigned_ok(self._server_policies())

    def _effective_public_key(self):
        """This server's trusted keys (verify_key in odoo.conf, else its own signing keys); else the one typed.

        The wizard's key field is what a person may write: it never replaces the server's keys.
        """
        self.ensure_one()
        server_keys = self.env["spp.backup.engine"]._trusted_public_key()
        typed = (self.public_key or "").strip()
        return server_keys or ([typed] if typed else None)

    def _collect_checks(self):
        """The quick pre-checks of this restore (the worker verifies every stored byte), as a list of Check."""
        self.ensure_one()
        checks = []
        settings = self.env["spp.backup.engine"]._settings()
        Restore = self.env["spp.backup.restore"]
        try:
            ref = Restore._source_ref(self._source(), settings)
            manifest = Restore._read_manifest(ref)
        except UserError as exc:
            return [Check(_("backup"), False, exc.args[0])]
        artifacts = manifest.get("artifacts") or {}
        if "database" not in artifacts:
            checks.append(Check(_("backup"), False, _("This backup holds no database dump.")))
        checks.append(self._version_check(manifest))
        checks.append(self._modules_check(manifest))
        checks.append(self._space_check(manifest))
        checks.append(self._identity_check(manifest, settings))
        checks.append(self._target_check())
        return checks

    @api.model
    def _verify_checks(self, report, public_key, unsigned_ok=False):
        """Signature and checksums, from the worker's verification report of every stored byte.

        ``unsigned_ok``: the backup's policy does not sign, so an unsigned backup passes (with what it means).
        """
        if report.get("error") or not report.get("manifest"):
            return [Check(_("checksums"), False, report.get("error") or report.get("failure") or "?")]
        problems = list(report.get("problems") or [])
        signature = report.get("signature") or "?"
        if public_key:
            signature_ok = signature.startswith("valid") or (unsigned_ok and signature.startswith("unsigned"))
            detail = signature
            if signature.startswith("unsigned") and signature_ok:
                detail = _("unsigned: its policy does not sign, so nothing proves which server made it")
            if not signature_ok and problems:
                detail = "%s: %s" % (signature, problems.pop(0))
        else:
            signature_ok = signature != "BAD"
            detail = _("%s (no public key known: the signature was not checked)", signature)
        checks = report.get("checks") or []
        bad = ["%s: %s" % (check["name"], check["message"]) for check in checks if not check["ok"]]
        return [
            Check(_("signature"), signature_ok, detail),
            Check(
                _("checksums"),
                not bad and not problems,
                "; ".join(bad + problems) or _("%s artifacts match the manifest (size and SHA-256)", len(checks)),
            ),
        ]

    @api.model
    def _version_check(self, manifest):
        found = manifest.get("major_version")
        if not found:
            return Check(_("odoo version"), False, _("The backup does not say which Odoo version made it."))
        if found != release.major_version:
            return Check(
                _("odoo version"),
                False,
                _(
                    "The backup was made with Odoo %(found)s and this server runs Odoo %(here)s: restore it on an "
                    "Odoo %(found)s server.",
                    found=found,
                    here=release.major_version,
                ),
            )
        return Check(_("odoo version"), True, _("Odoo %s, as this server", found))

    @api.model
    def _modules_check(self, manifest):
        modules = sorted(manifest.get("modules") or {})
        missing = [name for name in modules if not get_module_path(name, display_warning=False)]
        if missing:
            return Check(
                _("modules"),
                False,
                _(
                    "%(count)s module(s) of the backup are not on this server's addons path: %(names)s. Install "
                    "them first, or the restored database cannot start.",
                    count=len(missing),
                    names=", ".join(missing[:20]) + (" ..." if len(missing) > 20 else ""),
                ),
            )
        return Check(_("modules"), True, _("all %s modules of the backup are on the addons path", len(modules)))

    def _space_check(self, manifest):
        if not (self.include_filestore and filestore_artifact(manifest.get("artifacts"))[0]):
            return Check(_("disk space"), True, _("no filestore to restore"))
        need = filestore_bytes(manifest)
        where, free = _free_space(os.path.join(self.env["spp.backup.engine"]._data_dir(), "filestore"))
        if free < need:
            return Check(
                _("disk space"),
                False,
                _(
                    "%(free)s free at %(where)s, the filestore needs %(need)s: free some space first.",
                    free=human_bytes(free),
                    where=where,
                    need=human_bytes(need),
                ),
            )
        return Check(
            _("disk space"),
            True,
            _(
                "%(free)s free at %(where)s, the filestore needs %(need)s",
                free=human_bytes(free),
                where=where,
                need=human_bytes(need),
            ),
        )

    @api.model
    def _identity_check(self, manifest, settings):
        encrypted = any(art.get("encryption") for art in (manifest.get("artifacts") or {}).values())
        if not encrypted:
            return Check(_("decryption"), True, _("the backup is not encrypted"))
        path = settings.get("identity_file")
        if not path:
            return Check(
                _("decryption"),
                False,
                _(
                    "The backup is encrypted and no age identity is configured on this server: set identity_file "
                    "in the [spp_backup] section of odoo.conf (or SPP_BACKUP_IDENTITY_FILE)."
                ),
            )
        if not os.access(path, os.R_OK):
            return Check(_("decryption"), False, _("The identity file configured in odoo.conf cannot be read."))
        return Check(_("decryption"), True, _("encrypted; the identity file configured on this server is readable"))

    @api.model
    def _checks_text(self, checks):
        return "\n".join(
            "%-14s %s  %s" % (check.name, "ok  " if check.ok else "FAIL", check.detail) for check in checks
        )

    def action_check(self):
        """Run the quick pre-checks now and have the worker read the whole backup back (signature, checksums)."""
        self.ensure_one()
        self._check_own()
        self.env["spp.backup.engine"]._check_restore_right()
        checks = self._collect_checks()
        plan = plans.VerifyPlan(
            sources=[dataclasses.replace(self._source(), label=self.source_location)],
            public_key=self._effective_public_key(),
            unsigned_ok=self._unsigned_ok(),
            deep=False,
        )
        run = self.env["spp.backup.run"]._server_mode()._queue(plans.VERIFY, plan, self, policy=self.policy_id)
        self._server_mode().write(
            {
                "step": "checking",
                "check_run_id": run.id,
                "check_report": self._checks_text(checks)
                + "\n"
                + _("signature and checksums: being read back by the worker..."),
                "is_check_ok": False,
            }
        )
        return self._reopen()

    @api.model
    def _checked_plan(self, run):
        """The verification plan of the check run ``run``; None when it is not one (a plan nobody can read)."""
        if not run or run.action != plans.VERIFY:
            return None
        try:
            return run._plan()
        except BackupError:
            return None

    def _apply_run(self, run):
        """The worker's verification of this wizard's backup: the checks are complete."""
        self.ensure_one()
        if run != self.check_run_id:
            return
        plan = run._plan()
        checks = self._verify_checks(self._check_report_of(run), plan.public_key, plan.unsigned_ok)
        checks += self._collect_checks()
        self.write(
            {
                "step": "checked",
                "check_report": self._checks_text(checks),
                "is_check_ok": all(check.ok for check in checks),
            }
        )

    def _apply_run_failed(self, run, reason):
        """The verification of this wizard's backup could not be recorded: the checks say so, and did not pass."""
        self.ensure_one()
        if run == self.check_run_id:
            self.write({"step": "checked", "is_check_ok": False, "check_report": reason})

    @api.model
    def _check_report_of(self, run):
        reports = run._result_data().get("reports") or []
        return reports[0] if reports else {"error": run.error_message or _("the backup was not read back")}

    def action_refresh_check(self):
        """Show the checks once the worker has read the backup back."""
        self.ensure_one()
        self._check_own()
        self.env["spp.backup.engine"]._check_restore_right()
        if self.env["spp.backup.engine"]._as_server(self.check_run_id)._apply_now():
            raise self.env["spp.backup.run"]._being_recorded()
        return self._reopen()

    def action_back(self):
        """Back to the options."""
        self.ensure_one()
        self._check_own()
        self._server_mode().write(
            {"step": "options", "is_check_ok": False, "check_report": False, "check_run_id": False}
        )
        return self._reopen()

    # ------------------------------------------------------------------- run

    def action_run(self):
        """Start the restore by the worker, after the server-side checks; opens the restore record.

        The restore right and, to replace a database, the typed name are
        checked here, whoever calls this method.
        """
        self.ensure_one()
        self._check_own()
        Engine = self.env["spp.backup.engine"]
        Engine._check_restore_right()
        self._check_confirmation()
        run = self.check_run_id.sudo()
        source = self._source()
        key = self._effective_public_key()
        checked = self._checked_plan(run)
        if (
            self.step != "checked"
            or not self.is_check_ok
            or run.state != states.DONE
            or run.res_model != self._name
            or run.res_id != self.id
            or checked is None
            or checked.public_key != key
            or bool(checked.unsigned_ok) != self._unsigned_ok()
            or [dataclasses.replace(s, label=None) for s in checked.sources] != [source]
            or not all(check.ok for check in self._verify_checks(self._check_report_of(run), key, self._unsigned_ok()))
        ):
            raise UserError(_("Run the checks first (Check), and restore only when they all pass."))
        # The quick checks again, on the server, as things stand now; the worker verifies the backup again.
        failed = [check for check in self._collect_checks() if not check.ok]
        if failed:
            raise UserError(
                _("The restore cannot start:\n%s", "\n".join("%s: %s" % (c.name, c.detail) for c in failed))
            )
        Engine._check_target_scope(self.target_db.strip(), replace=self.target_mode == "replace")
        return self._start_restore(
            {
                "policy_id": self.policy_id.id,
                "job_id": self.job_id.id,
                "copy_id": self.copy_id.id,
                "destination_id": self.destination_id.id,
                "source_db_name": source.db_name,
                "backup_id": self.backup_id,
                "source_location": self.source_location,
                "include_filestore": self.include_filestore and self.has_filestore,
                "public_key": "\n".join(key or []) or False,
                "unsigned_ok": self._unsigned_ok(),
                "check_report": self.check_report,
            },
            _("backup %s", self.backup_id),
        )
