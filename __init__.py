# The engine (engine/) is plain Python and is also imported without Odoo, by
# its command line and its tests; the Odoo parts load only as an Odoo addon.
if __name__.startswith("odoo.addons."):
    from . import controllers, models, wizards  # noqa: F401
