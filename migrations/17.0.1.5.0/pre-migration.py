"""Policies made before the incremental filestore keep writing a full filestore archive.

New policies keep only new attachment files (the field's default); an
upgrade does not change what an existing policy writes at its destinations:
the administrator ticks *Only new files* when ready.
"""


def migrate(cr, version):
    cr.execute("ALTER TABLE spp_backup_policy ADD COLUMN IF NOT EXISTS incremental_filestore boolean")
    cr.execute("UPDATE spp_backup_policy SET incremental_filestore = false WHERE incremental_filestore IS NULL")
