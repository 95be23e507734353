"""Storage backends: where backup sets are written and read back.

A backend stores objects under string keys ``<db_name>/<backup_id>/<file>``.
Writers are all-or-nothing: ``commit()`` makes the object visible under its
key, ``abort()`` (or an exception) leaves nothing under it.
"""

from ...core.errors import PreflightError
from .local import LocalStorage, check_location
from .s3 import MiB, S3Storage

__all__ = ["LocalStorage", "check_location", "open_storage"]


def open_storage(destination, settings=None):
    """A backend for a :class:`~engine.core.config.DestinationConfig`.

    ``settings`` (:class:`~engine.core.config.Settings`) may supply S3 keys from
    odoo.conf's ``[spp_backup]`` section (``s3_access_key_id``,
    ``s3_secret_access_key``, ``s3_profile``); boto3's own chain is used
    otherwise.
    """
    if destination.kind == "local":
        return LocalStorage(destination.path)
    if destination.kind == "s3":
        get = settings.get if settings is not None else (lambda key, default=None: default)
        return S3Storage(
            bucket=destination.bucket,
            prefix=destination.prefix,
            endpoint_url=destination.endpoint_url or get("s3_endpoint_url"),
            region=destination.region or get("s3_region"),
            profile=destination.profile or get("s3_profile"),
            access_key_id=get("s3_access_key_id"),
            secret_access_key=get("s3_secret_access_key"),
            storage_class=destination.storage_class,
            sse=destination.sse,
            sse_kms_key_id=destination.sse_kms_key_id,
            addressing_style=destination.addressing_style,
            object_lock_mode=destination.object_lock_mode,
            object_lock_days=destination.object_lock_days,
            part_size=int(destination.part_size_mb or 16) * MiB,
            max_attempts=int(destination.max_attempts or 8),
        )
    raise PreflightError("Unknown destination kind %r (supported: local, s3)" % destination.kind)


__all__ = ["LocalStorage", "open_storage"]
