"""The dialog that showed private keys once (spp.backup.key.show) is gone.

Odoo removes a dropped model's records at the end of the upgrade, but it
reads the model of each choice of a selection field while doing so: the
choices of the dropped model's selection field are removed here first.
"""


def migrate(cr, version):
    cr.execute(
        "SELECT s.id FROM ir_model_fields_selection s JOIN ir_model_fields f ON f.id = s.field_id "
        "WHERE f.model = 'spp.backup.key.show'"
    )
    ids = tuple(row[0] for row in cr.fetchall())
    if not ids:
        return
    cr.execute("DELETE FROM ir_model_data WHERE model = 'ir.model.fields.selection' AND res_id IN %s", [ids])
    cr.execute("DELETE FROM ir_model_fields_selection WHERE id IN %s", [ids])
