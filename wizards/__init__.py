from . import server_wizard  # noqa: F401  isort: skip
from . import (  # noqa: F401
    backup_browse,
    backup_restore,
    backup_retention_preview,
    backup_run_now,
)
