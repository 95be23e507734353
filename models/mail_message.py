import datetime
import logging

from odoo import _, api, fields, models
from odoo.exceptions import AccessError

_logger = logging.getLogger(__name__)

# The models whose chatter is evidence: what the server posted there stays as it posted it.
EVIDENCE_PREFIX = "spp.backup."

# What a person's message on a backup record may be: a comment (a note or a message), or the notice Odoo sends
# an assignee of a to-do (never shown in the chatter).
PEOPLE_MESSAGE_TYPES = ("comment", "user_notification")
# A person's message is dated when it is made (Odoo's default), give or take a slow request.
DATE_SLACK = datetime.timedelta(minutes=10)


def is_evidence_model(name):
    return (name or "").startswith(EVIDENCE_PREFIX)


def _on_evidence(messages):
    return messages.sudo().filtered(lambda message: is_evidence_model(message.model))


def _is_own_comment(message, env):
    """A comment by the current user: the only message on a backup record a person may change or delete."""
    return message.sudo().author_id == env.user.partner_id and message.message_type == "comment"


def _refuse(self, reason):
    """Refuse a change to the messages of a backup record; ``self`` is the model refusing it (Odoo's ``_``
    takes the language from the caller's ``self``)."""
    raise AccessError(_("Messages on backup records are evidence: %s", reason))


class MailMessage(models.Model):
    """The chatter of backup records is part of their evidence.

    Odoo lets a person change a message they are a recipient of, or one they are notified of, and any internal
    user may create that notification for themselves; a reader of a job could then rewrite "Backup verified".
    On backup records a person writes only their own words: a message they make is theirs (their author, a
    comment dated now, no guest author, no tracking, none of the server's subtypes), and the only change they
    make afterwards is the text of their own comment. The server (superuser) is not limited; the ways Odoo
    itself turns superuser on a person's behalf (the mass-mail composer, incoming e-mail, editing a message's
    content, tracking values given to a new message) are closed for backup records below.
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
        now = fields.Datetime.now()
        for message in messages:
            if message.author_id != partner or message.author_guest_id:
                _refuse(self, _("you post as yourself, not as someone else."))
            if message.message_type not in PEOPLE_MESSAGE_TYPES or message.subtype_id.id in server_subtypes:
                _refuse(self, _("you post notes and messages, not notifications of the server."))
            if message.tracking_value_ids:
                _refuse(self, _("tracked changes are the server's."))
            if message.date and abs(message.date - now) > DATE_SLACK:
                _refuse(self, _("a message is dated when it is posted."))

    @api.model_create_multi
    def create(self, vals_list):
        if not self.env.su and any(vals.get("tracking_value_ids") for vals in vals_list):
            # Odoo applies these commands as superuser: a person could move or delete the server's tracked changes.
            raise AccessError(_("Tracked changes are recorded by the server, not given with a message."))
        messages = super().create(vals_list)
        if not self.env.su:
            messages._check_people_message()
        return messages

    def write(self, vals):
        if not self.env.su:
            own_text = set(vals) <= {"body", "attachment_ids", "partner_ids"}
            for message in _on_evidence(self):
                if not (own_text and _is_own_comment(message, self.env)):
                    _refuse(self, _("only the text of your own comments can change."))
        result = super().write(vals)
        if not self.env.su:
            self._check_people_message()
        return result

    def unlink(self):
        if not self.env.su:
            for message in _on_evidence(self):
                if not _is_own_comment(message, self.env):
                    _refuse(self, _("nobody deletes the server's."))
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


class MailThread(models.AbstractModel):
    _inherit = "mail.thread"

    def _message_update_content(self, message, *args, **kwargs):
        """On backup records only the author edits a comment (Odoo also lets administrators, as superuser)."""
        if is_evidence_model(self._name) and not self.env.su and not _is_own_comment(message, self.env):
            _refuse(self, _("only the text of your own comments can change."))
        # Odoo 17 takes the body by position, Odoo 19 by keyword only: passed on as given.
        return super()._message_update_content(message, *args, **kwargs)

    def _routing_check_route(self, message, message_dict, route, raise_exception=True):
        """Incoming e-mail is never posted on a backup record: Odoo posts it as superuser, in the name of
        whoever the From line claims."""
        if is_evidence_model(route[0]):
            _logger.warning(
                "Incoming e-mail %s routed to %s is dropped: backup records take no e-mail",
                message_dict.get("message_id"),
                route[0],
            )
            return ()
        return super()._routing_check_route(message, message_dict, route, raise_exception=raise_exception)


class MailComposer(models.TransientModel):
    _inherit = "mail.compose.message"

    def _action_send_mail(self, auto_commit=False):
        """The mass-mail composer writes its e-mails (and their messages) as superuser: not on backup records."""
        if not self.env.su and any(
            wizard.composition_mode == "mass_mail" and is_evidence_model(wizard.model) for wizard in self
        ):
            raise AccessError(_("Backup records are not mailed in bulk: post a note on the record instead."))
        return super()._action_send_mail(auto_commit=auto_commit)
