from . import backup_destination, backup_job, backup_job_copy, backup_policy  # noqa: F401
