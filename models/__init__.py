from . import backup_destination, backup_job, backup_policy  # noqa: F401
