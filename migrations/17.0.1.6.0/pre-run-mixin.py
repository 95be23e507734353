"""The mixin of records whose work is a run is spp.backup.run.mixin (it was spp.backup.runner.mixin).

Renamed in the registry before the module loads, as Odoo renames a model:
left under its old name, the abstract model's entries would be deleted at
the end of the upgrade, and deleting its selection field needs the model,
which no longer exists under that name.
"""

OLD, NEW = "spp.backup.runner.mixin", "spp.backup.run.mixin"
OLD_XMLID, NEW_XMLID = "spp_backup_runner_mixin", "spp_backup_run_mixin"


def migrate(cr, version):
    cr.execute("SELECT 1 FROM ir_model WHERE model = %s", (NEW,))
    if cr.fetchone():
        return
    cr.execute("UPDATE ir_model SET model = %s WHERE model = %s", (NEW, OLD))
    cr.execute("UPDATE ir_model_fields SET model = %s WHERE model = %s", (NEW, OLD))
    cr.execute("UPDATE ir_model_fields SET relation = %s WHERE relation = %s", (NEW, OLD))
    cr.execute(
        """UPDATE ir_model_data SET name = replace(name, %s, %s)
            WHERE module = 'spp_backup' AND model IN ('ir.model', 'ir.model.fields', 'ir.model.fields.selection')
              AND name LIKE %s""",
        (OLD_XMLID, NEW_XMLID, "%" + OLD_XMLID + "%"),
    )
