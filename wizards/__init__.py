from . import server_wizard  # noqa: F401  isort: skip
from . import backup_restore  # noqa: F401  isort: skip  (its restore target serves the point-in-time wizard)
from . import (  # noqa: F401
    backup_browse,
    backup_pitr_check,
    backup_pitr_restore,
    backup_retention_preview,
    backup_run_now,
)
