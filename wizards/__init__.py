from . import (  # noqa: F401
    backup_browse,
    backup_restore,
    backup_retention_preview,
    backup_run_now,
)
