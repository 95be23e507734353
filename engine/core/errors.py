"""Errors whose message is meant for a person: say what failed and what to do."""


class BackupError(Exception):
    """A failure explained in words an administrator understands."""

    exit_code = 2


class PreflightError(BackupError):
    """A check before any work found a problem; nothing was written."""


class LockBusy(BackupError):
    """Another run of the same policy holds the lock."""


class VerifyError(BackupError):
    """Stored bytes do not match the manifest."""


class RestoreError(BackupError):
    """A restore could not be carried out."""


class UnsafeArchive(RestoreError):
    """An archive member would write outside the target or is not a plain file."""
