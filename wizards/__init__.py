from . import backup_run_now  # noqa: F401
