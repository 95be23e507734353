from odoo import _, api, models
from odoo.exceptions import AccessError

# The models whose chatter is evidence: what the server posted there stays as it posted it.
EVIDENCE_PREFIX = "spp.backup."


def _on_evidence(messages):
    return messages.sudo().filtered(lambda message: (message.model or "").startswith(EVIDENCE_PREFIX))


class MailMessage(models.Model):
    """The chatter of backup records is part of their evidence.

    Odoo lets a person change a message they are a recipient of, or one they are notified of, and any internal
    user may create that notification for themselves; a reader of a job could then rewrite "Backup verified".
    On backup records a person writes only their own words: a message they post is theirs (author, no tracking,
    none of the server's subtypes), and the only change they make afterwards is the text of their own comment.
    The server (superuser) is not limited.
    """

    _inherit = "mail.message"

    def _check_people_message(self):
        messages = _on_evidence(self)
        if not messages:
            return
        server_subtypes = set(
            self.env["ir.model.data"]
            .sudo()
            .search([("module", "=", "spp_backup"), ("model", "=", "mail.message.subtype")])
            .mapped("res_id")
        )
        partner = self.env.user.partner_id
        for message in messages:
            if message.author_id != partner or message.tracking_value_ids or message.subtype_id.id in server_subtypes:
                raise AccessError(
                    _(
                        "Messages on backup records are evidence: you may post your own notes, but not as someone "
                        "else, with tracked values or as a server notification."
                    )
                )

    @api.model_create_multi
    def create(self, vals_list):
        messages = super().create(vals_list)
        if not self.env.su:
            messages._check_people_message()
        return messages

    def write(self, vals):
        if not self.env.su:
            own_text = set(vals) <= {"body", "attachment_ids", "partner_ids"}
            partner = self.env.user.partner_id
            for message in _on_evidence(self):
                if not (own_text and message.author_id == partner and message.message_type == "comment"):
                    raise AccessError(
                        _("Messages on backup records are evidence: only the text of your own comments can change.")
                    )
        result = super().write(vals)
        if not self.env.su:
            self._check_people_message()
        return result

    def unlink(self):
        if not self.env.su:
            partner = self.env.user.partner_id
            for message in _on_evidence(self):
                if not (message.author_id == partner and message.message_type == "comment"):
                    raise AccessError(_("Messages on backup records are evidence: nobody deletes the server's."))
        return super().unlink()


class MailTrackingValue(models.Model):
    """What changed on a backup record, as the server tracked it, changes for nobody."""

    _inherit = "mail.tracking.value"

    def _check_not_evidence(self):
        if not self.env.su and _on_evidence(self.sudo().mail_message_id):
            raise AccessError(_("The tracked changes of backup records are evidence: nobody changes them."))

    @api.model_create_multi
    def create(self, vals_list):
        values = super().create(vals_list)
        values._check_not_evidence()
        return values

    def write(self, vals):
        self._check_not_evidence()
        result = super().write(vals)
        self._check_not_evidence()
        return result

    def unlink(self):
        self._check_not_evidence()
        return super().unlink()
