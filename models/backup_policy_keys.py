from odoo import _, api, models

from ..engine import crypto


class SppBackupPolicyKeys(models.Model):
    """Key pairs made from the UI: age identities and signing keys, shown once."""

    _inherit = "spp.backup.policy"

    # ------------------------------------------------------------- key pairs

    @api.model
    def _show_secret_action(self, kind, public_key, secret, policy=None):
        """A dialog that shows a private key once.

        The key travels only in the action's context and is shown through
        computed, non-stored fields of a form that has no Save button: no
        table row ever holds it.
        """
        return {
            "type": "ir.actions.act_window",
            "name": _("New age key pair") if kind == "age" else _("New signing key pair"),
            "res_model": "spp.backup.key.show",
            "view_mode": "form",
            "views": [(self.env.ref("spp_backup.view_spp_backup_key_show_form").id, "form")],
            "target": "new",
            "context": {
                "spp_backup_key_kind": kind,
                "spp_backup_public_key": public_key,
                "spp_backup_secret": secret,
                "spp_backup_policy_name": policy.name if policy else "",
            },
        }

    @api.model
    def action_new_age_key_pair(self):
        """Make an age key pair that belongs to no policy yet, to paste into a new policy."""
        self.env["spp.backup.engine"]._check_manager()
        secret, public = crypto.generate_identity()
        return self._show_secret_action("age", public, secret)

    def action_generate_age_key(self):
        """Make an age key pair: the public key joins the recipients, the identity is shown once."""
        self.ensure_one()
        self.env["spp.backup.engine"]._check_manager()
        secret, public = crypto.generate_identity()
        recipients = (self.age_recipients or "").rstrip()
        self.write({"age_recipients": (recipients + "\n" if recipients else "") + public, "encrypt": True})
        # The server keeps the record of it (the person may have no email address to send from).
        self.env["spp.backup.engine"]._as_server(self).message_post(
            body=_(
                "%(user)s generated an age key pair; its public key %(key)s was added to the recipients. "
                "The private key was shown once and is not kept by Odoo.",
                user=self.env.user.name,
                key=public,
            )
        )
        return self._show_secret_action("age", public, secret, self)

    def action_generate_signing_key(self):
        """Make an Ed25519 key pair: the public key goes on the policy, the private key is shown once."""
        self.ensure_one()
        self.env["spp.backup.engine"]._check_manager()
        pem, public = crypto.generate_signing_key()
        self.write({"signing_public_key": public})
        # The server keeps the record of it (the person may have no email address to send from).
        self.env["spp.backup.engine"]._as_server(self).message_post(
            body=_(
                "%(user)s generated a signing key pair; the policy's signing public key is now %(key)s. "
                "The private key was shown once and is not kept by Odoo.",
                user=self.env.user.name,
                key=public,
            )
        )
        return self._show_secret_action("signing", public, pem, self)
