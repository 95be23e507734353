"""One door for the fields the server records: evidence, approvals, states, a wizard's facts.

Each model of the addon inherits ``spp.backup.server.fields`` and names its server fields in one attribute,
``_server_fields``, next to its other fields: a set of names, or ``AllFieldsBut(...)`` naming the few fields a
person sets (a wizard's options) when every other field is the server's. Fields the model computes without an
inverse are the server's as well, whatever the list says.

For every caller but the server's own code, the door

- drops server fields from the values of ``create`` (and so from ``copy()``, whose defaults end there too),
  and refuses ``create`` outright on a model whose every field is the server's;
- never takes a server field's default from the context (``default_<field>``) or from ``ir.default``, for
  anyone, the server included: a server field starts from its own code default, or from what the server gives;
- drops server fields from what an onchange receives and returns;
- refuses ``write`` on them, in words.

Who is the server: code that holds a record set made by ``server_mode()`` (the engine bridge's ``_as_server``
uses it too). Superuser rights alone do not count: a method a person may call over RPC can go through ``sudo()``
with that person's context (``default_*`` keys included) and values, and Odoo's own code (the mail gateway,
automated actions) reaches models as the superuser with values from outside. The server's mark is a context
value that no RPC can carry: an instance of a Python class of this module, bound to the user it was made for,
where XML-RPC and JSON-RPC only deliver strings, numbers, lists and dicts. A caller who puts the key in its
context gets a string or a dict there, which is not the mark; ``server_mode()`` replaces whatever the key held.
The mark counts only with superuser rights and for the same user: ``with_user(someone)`` or ``sudo(False)`` on a
record set of the server is no longer the server. Code that runs in the server's process with the right to
execute Python (a Settings administrator's server action or cron) is the server by nature and out of reach of
any such check.
"""

from odoo import _, api, models
from odoo.exceptions import AccessError
from odoo.models import MAGIC_COLUMNS

SERVER_KEY = "spp_backup_server"
MODULE = "spp_backup"


class ServerMark:
    """The server's mark in a context: made by ``server_mode()`` only, for one user."""

    __slots__ = ("uid",)

    def __init__(self, uid):
        self.uid = uid

    def __eq__(self, other):
        return isinstance(other, ServerMark) and other.uid == self.uid

    def __hash__(self):
        return hash((ServerMark, self.uid))

    def __repr__(self):
        return "<server mark for user %s>" % self.uid


class AllFieldsBut(frozenset):
    """``_server_fields`` of a model whose every field is the server's except the ones named (set by people)."""


# Every field of the model is the server's.
EVERY_FIELD = AllFieldsBut()


# What of a caller's context the server keeps when it acts: the language and time zone of its words. Nothing else
# a person sends (tracking_disable, mail_activity_automation_skip, active_test...) changes what the server records.
KEPT_CONTEXT = ("lang", "tz")


def server_mode(records):
    """``records`` as the server's own code writes them: superuser rights for the same user, the mark, and a context
    of its own."""
    records = records.sudo()
    context = {key: records.env.context[key] for key in KEPT_CONTEXT if key in records.env.context}
    context[SERVER_KEY] = ServerMark(records.env.uid)
    return records.with_context(context)


def is_server(env):
    """True when ``env`` is one the server's own code made with ``server_mode()``."""
    mark = env.context.get(SERVER_KEY)
    return env.su and isinstance(mark, ServerMark) and mark.uid == env.uid


class SppBackupServerFields(models.AbstractModel):
    """The fields a model of the addon records as the server, and the door that keeps them the server's."""

    _name = "spp.backup.server.fields"
    _description = "Fields only the backup server writes"

    # The model's server fields: names, or AllFieldsBut(the names people set). Computed fields without an
    # inverse are the server's in any case.
    _server_fields = frozenset()

    @api.model
    def _server_field_names(self):
        """The names of this model's server fields."""
        declared = self._server_fields
        names = set()
        for name, field in self._fields.items():
            if name in MAGIC_COLUMNS or field._module != MODULE:
                continue
            if isinstance(declared, AllFieldsBut):
                if name not in declared:
                    names.add(name)
            elif name in declared or (field.compute and not field.inverse):
                names.add(name)
        return names

    def _server_mode(self):
        """These records as the server's own code writes them (see ``server_mode``)."""
        return server_mode(self)

    def _is_server(self):
        return is_server(self.env)

    # ------------------------------------------------------------------- door

    @api.model_create_multi
    def create(self, vals_list):
        if not self._is_server():
            if isinstance(self._server_fields, AllFieldsBut) and not self._server_fields:
                raise AccessError(
                    _("%s: the server makes these records itself; nobody creates one.", self._description)
                )
            server = self._server_field_names()
            vals_list = [{name: value for name, value in vals.items() if name not in server} for vals in vals_list]
        return super().create(vals_list)

    def write(self, vals):
        if not self._is_server():
            given = sorted(set(vals) & self._server_field_names())
            if given:
                raise AccessError(
                    _(
                        "%(fields)s: the server records these on %(model)s itself; nobody sets them. Nothing was "
                        "changed.",
                        fields=", ".join(self._fields[name]._description_string(self.env) for name in given),
                        model=self._description,
                    )
                )
        return super().write(vals)

    def copy_data(self, default=None):
        if default and not self._is_server():
            server = self._server_field_names()
            default = {name: value for name, value in default.items() if name not in server}
        return super().copy_data(default)

    @api.model
    def default_get(self, fields_list):
        # A server field starts from its own code default only: never from a default_* key of the context (a
        # caller's, even when the server creates the record on its behalf) nor from ir.default.
        server = self._server_field_names()
        defaults = super().default_get([name for name in fields_list if name not in server])
        for name in fields_list:
            field = self._fields.get(name)
            if name in server and field.default:
                value = field.convert_to_cache(field.default(self), self, validate=False)
                defaults[name] = field.convert_to_write(value, self)
        return defaults

    def onchange(self, values, field_names, fields_spec):
        if self._is_server():
            return super().onchange(values, field_names, fields_spec)
        # What the server recorded comes from the records, never from the form; what it records is no
        # suggestion the form may send back.
        server = {name for name in self._server_field_names() if self._fields[name].store}
        values = {name: value for name, value in values.items() if name not in server}
        if field_names and not set(field_names) - server:
            return {}
        field_names = [name for name in field_names if name not in server]
        result = super().onchange(values, field_names, fields_spec)
        for name in server:
            (result.get("value") or {}).pop(name, None)
        return result
