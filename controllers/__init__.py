from . import mail_thread, metrics  # noqa: F401
