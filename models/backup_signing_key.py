import os
import shlex

from odoo import _, api, fields, models
from odoo.exceptions import UserError

from .. import compat
from ..engine.core.errors import BackupError
from ..engine.io import crypto
from .server_fields import EVERY_FIELD

# The advisory lock that serialises making the signing key (any 64-bit number of this addon's own).
SIGNING_LOCK = 0x5350_5042_4B53_4947


class SppBackupSigningKey(models.Model):
    """The public halves of the keys this server has signed backups with.

    One key pair serves the whole server: its private half is the file that
    odoo.conf names (``signing_key_file``), never a field. Each public key the
    server signs with is recorded here by the server itself (no group may
    write), so backups made before the key was replaced still verify.
    """

    _name = "spp.backup.signing.key"
    _inherit = ["spp.backup.server.fields"]
    _server_fields = EVERY_FIELD
    _description = "Signing key of this server"
    _order = "id desc"
    _rec_name = "fingerprint"

    public_key = fields.Char(string="Public key", required=True, readonly=True)
    fingerprint = fields.Char(compute="_compute_fingerprint")
    origin = fields.Char(readonly=True, help="How the server came to know this key.")
    replaced_at = fields.Datetime(
        string="Replaced on", readonly=True, help="When a new key pair took this one's place in the key file."
    )
    user_id = fields.Many2one("res.users", string="Recorded by", readonly=True)
    revoked_at = fields.Datetime(
        string="Distrusted on",
        readonly=True,
        help="From then on, no backup signed with this key verifies on this server (the key may have leaked).",
    )
    revoked_by_id = fields.Many2one("res.users", string="Distrusted by", readonly=True)

    compat.sql_constraints(
        locals(), [("public_key_unique", "unique(public_key)", "This signing key is recorded already.")]
    )

    @api.depends("public_key")
    def _compute_fingerprint(self):
        for key in self:
            key.fingerprint = crypto.fingerprint(key.public_key)

    @api.model
    def _server_key(self, settings=None):
        """What the signing key file odoo.conf names holds: a dict with ``path``, ``state`` and ``public_key``.

        ``state`` is ``unset`` (odoo.conf names no file), ``missing`` (no file there yet), ``invalid`` (a
        file that is not a readable Ed25519 key; ``reason`` says why) or ``ok``.
        """
        settings = settings or self.env["spp.backup.engine"]._settings()
        path = settings.get("signing_key_file")
        if not path:
            return {"path": None, "state": "unset", "public_key": None, "reason": None}
        path = os.path.abspath(os.path.expanduser(path))
        if not os.path.lexists(path):
            return {"path": path, "state": "missing", "public_key": None, "reason": None}
        try:
            key = crypto.load_signing_key(path)
        except BackupError as exc:
            return {"path": path, "state": "invalid", "public_key": None, "reason": str(exc)}
        return {"path": path, "state": "ok", "public_key": crypto.public_key_text(key.public_key()), "reason": None}

    @api.model
    def _trusted(self):
        """The public keys of the server's records that nobody distrusted."""
        return self.sudo().search([("revoked_at", "=", False)]).mapped("public_key")

    def action_distrust(self):
        """Stop trusting a key this server signed with before (it may have leaked): its backups fail to verify."""
        self.env["spp.backup.engine"]._check_manager()
        current = self._server_key().get("public_key")
        for key in self.sudo():
            if key.public_key == current:
                raise UserError(
                    _(
                        "Key %s is the one in the signing key file: replace the signing key first, then distrust "
                        "this one.",
                        key.fingerprint,
                    )
                )
        if not self:
            raise UserError(_("Choose the signing key to distrust."))
        newly = self._server_mode().filtered(lambda key: not key.revoked_at)
        if not newly:
            return True  # distrusted already: nothing changes, nothing is announced
        newly.write({"revoked_at": fields.Datetime.now(), "revoked_by_id": self.env.uid})
        policies = self.env["spp.backup.policy"].sudo().search([("sign", "=", True)])
        body = _(
            "%(user)s distrusted the signing key(s) %(keys)s: backups signed with them no longer verify here.",
            user=self.env.user.name,
            keys=", ".join(newly.mapped("public_key")),
        )
        for policy in self.env["spp.backup.engine"]._as_server(policies):
            policy.message_post(body=body)
        return True

    @api.model
    def _remember(self, public_key, origin, replaced=False):
        """Record ``public_key`` as one this server signs (or signed) with; the server's own write."""
        crypto.load_public_key(public_key)
        Keys = self._server_mode()
        known = Keys.search([("public_key", "=", public_key)], limit=1)
        values = {"replaced_at": fields.Datetime.now()} if replaced else {}
        if known:
            if values and not known.replaced_at:
                known.write(values)
            return known
        return Keys.create(dict(values, public_key=public_key, origin=origin, user_id=self.env.user.id))

    @api.model
    def _make_command(self, path, exists):
        """The shell commands that make the key file on the server, for when Odoo itself cannot write it."""
        quoted = shlex.quote(path)
        lines = []
        if exists:
            lines.append("mv %s %s.replaced" % (quoted, quoted))
        lines.append("spp-backup keys signing --out %s" % quoted)
        lines.append("chown <user Odoo runs as> %s" % quoted)
        return "\n".join(lines)


class SppBackupSigning(models.TransientModel):
    """The server's signing key pair, as a Backup Manager sees and makes it.

    Every field is computed from the key file and the recorded public keys;
    the private key is written by the server straight into the file and is
    never a field, a message or part of an action.
    """

    _name = "spp.backup.signing"
    _inherit = ["spp.backup.server.fields"]
    _description = "Signing key of this server"
    _server_fields = EVERY_FIELD

    key_file = fields.Char(string="Key file", compute="_compute_key", help="signing_key_file in odoo.conf")
    state = fields.Selection(
        [
            ("unset", "No key file named in odoo.conf"),
            ("missing", "Not made yet"),
            ("invalid", "Unreadable"),
            ("ok", "Ready"),
        ],
        compute="_compute_key",
    )
    public_key = fields.Char(string="Public key", compute="_compute_key")
    problem = fields.Char(compute="_compute_key")
    command = fields.Text(
        compute="_compute_key", help="What to run on the server when the Odoo user cannot write the key file."
    )
    policy_ids = fields.Many2many("spp.backup.policy", string="Policies that sign with it", compute="_compute_key")
    known_key_ids = fields.Many2many(
        "spp.backup.signing.key", string="Keys backups are verified with", compute="_compute_key"
    )
    verify_key_set = fields.Boolean(compute="_compute_key")
    opened_public_key = fields.Char(
        readonly=True, help="The key the file held when the dialog was opened: a replacement replaces that one only."
    )

    @api.model_create_multi
    def create(self, vals_list):
        # Nothing a caller sends is kept: the dialog records only what the server saw when it opened.
        compat.check_model_access(self, "create")
        opened = self.env["spp.backup.signing.key"]._server_key().get("public_key") or False
        created = super(SppBackupSigning, self._server_mode()).create(
            [{"opened_public_key": opened} for _v in vals_list]
        )
        return self.browse(created.ids)

    def _compute_key(self):
        Keys = self.env["spp.backup.signing.key"]
        server = Keys._server_key()
        verify_key = self.env["spp.backup.engine"]._settings().get("verify_key")
        policies = self.env["spp.backup.policy"].search([("sign", "=", True)])
        for wizard in self:
            wizard.key_file = server["path"]
            wizard.state = server["state"]
            wizard.public_key = server["public_key"]
            wizard.problem = server["reason"]
            wizard.command = (
                Keys._make_command(server["path"], server["state"] != "missing") if server["path"] else False
            )
            wizard.policy_ids = policies
            wizard.known_key_ids = Keys.sudo().search([])
            wizard.verify_key_set = bool(verify_key)

    @api.model
    def action_open(self):
        """Open the dialog on a saved record, so the web client reads what the server computes."""
        self.env["spp.backup.engine"]._check_manager()
        wizard = self.create({})
        return {
            "type": "ir.actions.act_window",
            "name": _("Signing key of this server"),
            "res_model": self._name,
            "res_id": wizard.id,
            "view_mode": "form",
            "views": [(self.env.ref("spp_backup.view_spp_backup_signing_form").id, "form")],
            "target": "new",
        }

    def action_make_key(self):
        """Make the server's key pair in the file odoo.conf names (or replace the one there)."""
        self.env["spp.backup.engine"]._check_manager()
        if len(self) != 1 or self.create_uid != self.env.user:
            raise UserError(_("Open Backup & Recovery > Configuration > Signing key again, and make the key there."))
        Keys = self.env["spp.backup.signing.key"]
        # One maker at a time, on every Odoo worker: the file and its record change together.
        self.env.cr.execute("SELECT pg_advisory_xact_lock(%s)", [SIGNING_LOCK])
        server = Keys._server_key()
        if (server["public_key"] or False) != (self.opened_public_key or False):
            raise UserError(
                _("The signing key changed since this dialog was opened: close it and open it again to see it.")
            )
        if self.env["spp.backup.engine"]._settings().get("verify_key"):
            raise UserError(
                _(
                    "odoo.conf sets verify_key, so it decides which keys signatures are checked with: a key made "
                    "here would make new backups fail verification. On the server, make the new key with "
                    "'spp-backup keys signing --out <new file>', add its public key to verify_key (keys separated "
                    "by spaces keep old backups verifiable), put the file in place of %s and restart Odoo.",
                    server["path"] or "signing_key_file",
                )
            )
        if server["state"] == "unset":
            raise UserError(
                _(
                    "odoo.conf names no signing key file. Add signing_key_file = /etc/odoo/spp_backup/signing.pem "
                    "(a folder only Odoo's user can read) to its [spp_backup] section, restart Odoo, and make the "
                    "key here."
                )
            )
        path = server["path"]
        if server["state"] == "invalid":
            raise UserError(
                _(
                    "The signing key file %(path)s is not a usable key (%(reason)s). It is left as it is: move it "
                    "aside on the server (or put the right key there), then make the key here.",
                    path=path,
                    reason=server["reason"],
                )
            )
        replace = server["state"] == "ok"
        if server["state"] == "ok":
            Keys._remember(server["public_key"], _("was the server's key until it was replaced"), replaced=True)
        try:
            public = crypto.write_signing_key(path, replace=replace)
        except OSError as exc:
            raise UserError(
                _(
                    "Odoo cannot write the signing key file %(path)s: %(reason)s. Make it on the server, as the "
                    "user Odoo runs as (or as root, then give it to that user), with:\n%(command)s",
                    path=path,
                    reason=exc.strerror or exc,
                    command=Keys._make_command(path, replace),
                )
            ) from exc
        Keys._remember(public, _("made from Odoo by %s", self.env.user.name))
        policies = self.env["spp.backup.policy"].sudo().search([("sign", "=", True)])
        if replace:
            body = _(
                "%(user)s replaced the server's signing key: backups are signed from now on with %(new)s. Backups "
                "signed with the previous key %(old)s still verify on this server.",
                user=self.env.user.name,
                new=public,
                old=server["public_key"] or _("(unreadable)"),
            )
        else:
            body = _(
                "%(user)s made the server's signing key: backups are signed with %(new)s.",
                user=self.env.user.name,
                new=public,
            )
        # The server keeps the record (the person may have no email address to send from).
        for policy in self.env["spp.backup.engine"]._as_server(policies):
            policy.message_post(body=body)
        return self.action_open()
