# The door for server fields, the engine bridge and the run mixin come first: the other models use them.
from . import server_fields  # noqa: F401  isort: skip
from . import backup_engine  # noqa: F401  isort: skip
from . import backup_run_mixin  # noqa: F401  isort: skip
from . import (  # noqa: F401
    backup_alert,
    backup_destination,
    backup_drill,
    backup_drill_check,
    backup_job,
    backup_job_copy,
    backup_pitr,
    backup_policy,
    backup_policy_drill,
    backup_policy_keys,
    backup_policy_objectives,
    backup_restore,
    backup_run,
    backup_signing_key,
    ir_actions_server,
    mail_message,
)
