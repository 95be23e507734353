# The runner mixin comes first: the restore and drill models inherit it.
from . import backup_runner_mixin  # noqa: F401  isort: skip
from . import (  # noqa: F401
    backup_alert,
    backup_destination,
    backup_drill,
    backup_drill_check,
    backup_job,
    backup_job_copy,
    backup_policy,
    backup_restore,
)
