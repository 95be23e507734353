from odoo import _
from odoo.addons.mail.controllers.thread import ThreadController
from odoo.exceptions import AccessError

from ..models.mail_message import is_evidence_model

# What the chatter of the web client posts for a person: a note ("Log note") or a message ("Send message").
PEOPLE_POST = {"message_type": ("comment",), "subtype_xmlid": (None, "mail.mt_note", "mail.mt_comment")}


class EvidenceThreadController(ThreadController):
    """Odoo 19's chatter route (/mail/message/post) posts a person's message as superuser, with the message type
    and subtype the browser sends: on backup records only a person's note or message goes through it, never a
    notification in the server's words (a "Backup failed" e-mail to the managers). Odoo 17's route posts as the
    person, where the models' own checks (models/mail_message.py) refuse the same; it never calls this method.
    """

    def _prepare_message_data(self, post_data, *, thread, **kwargs):
        # Odoo 19 also prepares an edit of a message's content here (from_create=False): its type and subtype do
        # not change then, and the models' checks keep an edit to the author's own comment.
        if is_evidence_model(thread._name) and kwargs.get("from_create", True):
            for key, allowed in PEOPLE_POST.items():
                if post_data.get(key) not in allowed:
                    raise AccessError(
                        _(
                            "Messages on backup records are evidence: you post notes and messages, not "
                            "notifications of the server."
                        )
                    )
        return super()._prepare_message_data(post_data, thread=thread, **kwargs)
