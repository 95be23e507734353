from . import (  # noqa: F401
    backup_browse,
    backup_key_show,
    backup_restore,
    backup_retention_preview,
    backup_run_now,
)
