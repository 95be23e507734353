"""spp_backup engine: backup, verify and restore of an Odoo database and filestore.

Pure Python: it never imports Odoo, so the same package runs inside Odoo
(``odoo.addons.spp_backup.engine``) and on its own (``python3 -m engine``)
when Odoo is down.
"""

ENGINE_VERSION = "1.0.0"
MANIFEST_FORMAT = 1
