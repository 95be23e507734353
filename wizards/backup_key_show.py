from odoo import _, api, fields, models


class SppBackupKeyShow(models.TransientModel):
    """Shows a freshly made private key once.

    Every field is computed from the action's context and never stored, and
    the form has only a Close button: the private key is never written to a
    table, not even this transient model's.
    """

    _name = "spp.backup.key.show"
    _description = "New key pair"
    _order = "id desc"

    kind = fields.Selection(
        [("age", "age encryption key"), ("signing", "Ed25519 signing key")], compute="_compute_from_context"
    )
    policy_name = fields.Char(string="Policy", compute="_compute_from_context")
    public_key = fields.Text(string="Public key", compute="_compute_from_context")
    secret = fields.Text(string="Private key", compute="_compute_from_context")
    instructions = fields.Text(compute="_compute_from_context")

    def _compute_from_context(self):
        context = self.env.context
        kind = context.get("spp_backup_key_kind") if context.get("spp_backup_key_kind") in ("age", "signing") else False
        policy_name = context.get("spp_backup_policy_name") or ""
        if kind == "age":
            instructions = _(
                "Save this private key (identity) now, offline: print it or store it in a password safe, and copy it "
                "to the host that restores and drills (the file named by identity_file in the [spp_backup] section "
                "of odoo.conf there). It is shown only once and Odoo does not keep it: without it, the backups "
                "encrypted to this key cannot be read by anyone. It also works with the standalone age tool: "
                "age -d -i identity.txt file.age"
            )
            if not policy_name:
                instructions += "\n\n" + _("Paste the public key into the Recipients of the policy that uses it.")
        elif kind == "signing":
            settings = self.env["spp.backup.engine"]._settings()
            path = settings.get("signing_key_file")
            instructions = _(
                "Save this private key now to the file named by signing_key_file in the [spp_backup] section of "
                "odoo.conf (currently: %(path)s), readable only by the Odoo user (chmod 600). It is shown only once "
                "and Odoo does not keep it. Until the file holds it, backups of this policy cannot be signed and "
                "fail with a clear message; backups signed with another key fail verification.",
                path=path or _("not set"),
            )
        else:
            instructions = _("This key is no longer shown: generate a new key pair if you did not save it.")
        for wizard in self:
            wizard.kind = kind
            wizard.policy_name = policy_name
            wizard.public_key = context.get("spp_backup_public_key") if kind else False
            wizard.secret = context.get("spp_backup_secret") if kind else False
            wizard.instructions = instructions

    @api.model_create_multi
    def create(self, vals_list):
        # Nothing to keep: the form has no Save button, and the fields are not stored anyway.
        return super().create([{} for _vals in vals_list])
