"""Storage backends: where backup sets are written and read back.

A backend stores objects under string keys ``<db_name>/<backup_id>/<file>``.
Writers are all-or-nothing: ``commit()`` makes the object visible under its
key, ``abort()`` (or an exception) leaves nothing under it.
"""

from ..errors import PreflightError
from .local import LocalStorage


def open_storage(destination):
    """A backend for a :class:`~engine.config.DestinationConfig`."""
    if destination.kind == "local":
        return LocalStorage(destination.path)
    raise PreflightError("Unknown destination kind %r (supported: local)" % destination.kind)


__all__ = ["LocalStorage", "open_storage"]
