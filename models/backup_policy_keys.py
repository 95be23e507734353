from odoo import _, api, fields, models
from odoo.exceptions import UserError, ValidationError

from ..engine.core.errors import BackupError
from ..engine.io import crypto


class SppBackupPolicyKeys(models.Model):
    """The keys of a policy: age public keys pasted in, and the server's one signing key.

    The server never makes or sees an age identity: the person who restores
    makes the key pair on the host that restores and pastes its public half.
    The signing key pair belongs to the server (odoo.conf names one file);
    a policy only says whether its backups are signed with it.
    """

    _inherit = "spp.backup.policy"

    sign = fields.Boolean(
        string="Sign",
        default=lambda self: bool(self.env["spp.backup.engine"]._settings().get("signing_key_file")),
        tracking=True,
        help="Sign every backup's manifest with the server's Ed25519 signing key (the file named by "
        "signing_key_file in odoo.conf; see Configuration > Signing key). Verification, restores and drills "
        "then refuse a backup whose signature is missing or wrong. Unticked, backups are unsigned: they verify "
        "with a warning, since nothing proves which server made them.",
    )
    signing_public_key = fields.Char(
        string="Signs with",
        compute="_compute_signing_public_key",
        help="The public half of the server's signing key, which this policy's backups are signed with.",
    )
    signing_status = fields.Char(string="Signing key", compute="_compute_signing_public_key")

    @api.model_create_multi
    def create(self, vals_list):
        for vals in vals_list:
            self._check_written_values(vals)
        return super().create(vals_list)

    def write(self, vals):
        self._check_written_values(vals)
        return super().write(vals)

    @api.model
    def _check_written_values(self, vals):
        """What a caller writes, checked before the ORM converts it: a choice that is not one, a date that is
        not one, or a private key as a recipient is a sentence, never a traceback."""
        for name, value in vals.items():
            field = self._fields.get(name)
            if field is None or value in (False, None):
                continue
            if field.type == "selection":
                if value not in [key for key, _label in field._description_selection(self.env)]:
                    raise ValidationError(_("%(value)r is not a choice of %(field)s.", value=value, field=field.string))
            elif field.type in ("date", "datetime"):
                try:
                    field.to_date(value) if field.type == "date" else field.to_datetime(value)
                except (ValueError, TypeError):
                    raise ValidationError(
                        _(
                            "%(value)r is not a valid %(kind)s for %(field)s.",
                            value=value,
                            kind=field.type,
                            field=field.string,
                        )
                    ) from None
        self._refuse_private_keys(vals)

    @api.model
    def _refuse_private_keys(self, vals):
        """A private key pasted as a recipient is refused before anything reaches the database or its log."""
        text = vals.get("age_recipients")
        if text and isinstance(text, str):
            try:
                crypto.parse_recipients([text])
            except BackupError as exc:
                if "private" in str(exc):
                    raise ValidationError(str(exc)) from None

    @api.depends("sign")
    def _compute_signing_public_key(self):
        server = self.env["spp.backup.signing.key"]._server_key()
        for policy in self:
            policy.signing_public_key = server["public_key"] if policy.sign else False
            if not policy.sign:
                policy.signing_status = _("Backups of this policy are not signed.")
            elif server["state"] == "ok":
                policy.signing_status = _("The server's signing key is ready.")
            elif server["state"] == "unset":
                policy.signing_status = _(
                    "odoo.conf names no signing key file (signing_key_file): backups of this policy fail until it "
                    "does. See Configuration > Signing key."
                )
            elif server["state"] == "missing":
                policy.signing_status = _(
                    "The server has no signing key yet: make it with 'Signing key…' before the first backup."
                )
            else:
                policy.signing_status = _("The signing key file cannot be used: %s", server["reason"])

    def action_open_signing_key(self):
        """The server's signing key dialog, from a policy's form."""
        return self.env["spp.backup.signing"].action_open()

    def _signing_key_file(self, settings):
        """The signing key file for this policy's plan; None when the policy does not sign.

        The public key it holds is recorded as one of this server's keys, whoever made the file.
        """
        self.ensure_one()
        if not self.sign:
            return None
        Keys = self.env["spp.backup.signing.key"]
        server = Keys._server_key(settings)
        if server["state"] == "unset":
            raise UserError(
                _(
                    "Policy '%s' signs its backups, but odoo.conf names no signing key file: set signing_key_file "
                    "in its [spp_backup] section (or SPP_BACKUP_SIGNING_KEY_FILE) and make the key in Backup & "
                    "Recovery > Configuration > Signing key, or untick Sign on the policy.",
                    self.name,
                )
            )
        if server["state"] == "missing":
            raise UserError(
                _(
                    "Policy '%(name)s' signs its backups, but the server's signing key %(path)s does not exist yet: "
                    "make it in Backup & Recovery > Configuration > Signing key.",
                    name=self.name,
                    path=server["path"],
                )
            )
        if server["state"] != "ok":
            raise UserError(
                _("Policy '%(name)s' cannot sign its backups: %(reason)s", name=self.name, reason=server["reason"])
            )
        Keys._remember(server["public_key"], _("found in the signing key file"))
        return server["path"]
