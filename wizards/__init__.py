from . import backup_key_show, backup_retention_preview, backup_run_now  # noqa: F401
