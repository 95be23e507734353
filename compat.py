"""What Odoo 17.0 and Odoo 19.0 spell differently, in one place.

The Python of this addon (models, wizards, controllers, tests) is the same on
both series; each place where the two Odoo versions need different code calls
a function here, and each branch says which version needs it. Behaviour is
never decided here: only how to ask Odoo for it.
"""

import sys

from odoo import release

SERIES = release.version_info[0]
"""The Odoo series this addon runs on: 17 or 19."""

if SERIES not in (17, 19):  # pragma: no cover - a clear refusal rather than half-working code
    raise ImportError(f"spp_backup runs on Odoo 17.0 and 19.0, not on Odoo {release.version}")


def in_test_mode(env):
    """True while Odoo's HTTP tests hand the test's cursor to every new cursor (nothing may commit then)."""
    if SERIES == 17:
        # Odoo 17: the registry keeps the test cursor.
        return env.registry.in_test_mode()
    # Odoo 19: the registry's cursor() is patched to return a TestCursor; the registry has no flag any more.
    # The module is loaded only when tests run.
    test_cursor = sys.modules.get("odoo.tests.test_cursor")
    return test_cursor is not None and isinstance(env.cr, test_cursor.TestCursor)


def sql_constraints(namespace, constraints):
    """Declare the model's SQL constraints, from its class body: ``sql_constraints(locals(), [(name, sql, message)])``.

    Odoo 17 reads the list ``_sql_constraints``; Odoo 19 ignores that list (with a warning) and reads one
    ``models.Constraint`` class attribute per constraint, named ``_<name>``.
    """
    if SERIES == 17:
        namespace["_sql_constraints"] = list(constraints)
        return
    from odoo import models  # noqa: PLC0415

    for name, definition, message in constraints:
        namespace[f"_{name}"] = models.Constraint(definition, message)


def group_members(group):
    """Everyone who has the group, given it by hand or through a group that implies it."""
    # Odoo 17 writes implied groups into res.groups.users; Odoo 19 keeps only the explicit ones in user_ids and
    # computes everyone in all_user_ids.
    return group.users if SERIES == 17 else group.all_user_ids


def check_model_access(records, operation):
    """Raise AccessError unless the user may ``operation`` records of this model (access rights, not rules)."""
    if SERIES == 17:
        # Odoo 17: check_access_rights; Odoo 19 deprecates it for has_access/check_access.
        records.check_access_rights(operation)
    else:
        records.browse().check_access(operation)


def check_record_access(records, operation):
    """Raise AccessError unless the user may ``operation`` these records (access rights and record rules)."""
    if SERIES == 17:
        records.check_access_rights(operation)
        records.check_access_rule(operation)
    else:
        records.check_access(operation)


def field_aggregator(field):
    """How a field is aggregated in grouped lists (see ``aggregator``)."""
    return field.group_operator if SERIES == 17 else field.aggregator


def aggregator(operator):
    """Field keyword arguments for how list views and reports aggregate the field: ``**aggregator("avg")``."""
    # Odoo 17: group_operator; Odoo 19: aggregator (group_operator is deprecated since Odoo 18).
    return {"group_operator" if SERIES == 17 else "aggregator": operator}


WEB_CLIENT_URL = "/web" if SERIES == 17 else "/odoo"
"""Where the web client lives (Odoo 19 moved it to /odoo; /web redirects there)."""


def form_url(model, record_id):
    """The web client's address of a record's form."""
    if SERIES == 17:
        return "/web#model=%s&id=%d&view_type=form" % (model, record_id)
    # Odoo 19: addresses are paths under /odoo.
    return "/odoo/%s/%d" % (model, record_id)


def user_form_choices(env):
    """The groups the user form offers as one selection each (without developer mode), as sets of group ids,
    seen by ``env.user``."""
    if SERIES == 17:
        # Odoo 17: one field sel_groups_<id>_<id>... per category whose groups imply each other in a line.
        import re  # noqa: PLC0415

        arch = env["res.users"].get_view(env.ref("base.view_users_form").id)["arch"]
        return [
            {int(group_id) for group_id in match.split("_")}
            for match in re.findall(r'name="sel_groups_([0-9_]+)"', arch)
        ]
    # Odoo 19: the form's group widget shows one selection per privilege of a category.
    hierarchy = env["res.groups"]._get_view_group_hierarchy()
    shown = {privilege for category in hierarchy["categories"] for privilege in category["privilege_ids"]}
    return [
        set(privilege["group_ids"])
        for privilege_id, privilege in hierarchy["privileges"].items()
        if privilege_id in shown
    ]


def message_update_params(message_id, body):
    """The parameters of the web client's /mail/message/update_content route for a new body."""
    if SERIES == 17:
        return {"message_id": message_id, "body": body, "attachment_ids": []}
    # Odoo 19: the new content comes as update_data.
    return {"message_id": message_id, "update_data": {"body": body, "attachment_ids": []}}
