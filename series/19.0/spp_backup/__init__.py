# spp_backup for Odoo 19.0 (OpenSPP 2). This folder holds only what Odoo 19
# reads differently from Odoo 17: the manifest, the XML views, security and
# data, and the web assets. The Python (models, wizards, controllers, the
# engine and the tests) is the repository root's, the same for both series:
# the root is added to this package's path, so that
# ``odoo.addons.spp_backup.models`` is the root's models/ package.
import os

_root = os.path.normpath(os.path.join(os.path.dirname(os.path.realpath(__file__)), os.pardir, os.pardir, os.pardir))
if _root not in __path__:
    __path__.append(_root)

if __name__.startswith("odoo.addons."):
    from . import controllers, models, wizards  # noqa: F401, E402
