"""Finding backup sets in a destination, and naming one from the command line."""

import os
from dataclasses import dataclass

from ..core.config import DestinationConfig
from ..core.errors import PreflightError, VerifyError
from ..core.manifest import MANIFEST_NAME, backup_time, is_backup_id, loads
from ..io.storage import check_location, open_storage


@dataclass
class BackupRef:
    """One backup set: a storage, a database name and a backup id."""

    storage: object
    db_name: str
    backup_id: str

    @property
    def prefix(self):
        return "%s/%s" % (self.db_name, self.backup_id)

    def key(self, name):
        return "%s/%s" % (self.prefix, name)

    def location(self):
        return self.storage.describe(self.prefix)

    def read_manifest_bytes(self):
        key = self.key(MANIFEST_NAME)
        if not self.storage.exists(key):
            raise VerifyError(
                "%s has no manifest.json: the backup is incomplete (it was interrupted or is still being written) "
                "and cannot be restored." % self.location()
            )
        return self.storage.read_bytes(key)

    def read_manifest(self):
        return loads(self.read_manifest_bytes(), where=self.storage.describe(self.key(MANIFEST_NAME)))


@dataclass
class BackupEntry:
    db_name: str
    backup_id: str
    location: str
    restorable: bool
    size: int = 0

    def as_dict(self):
        return {
            "db_name": self.db_name,
            "backup_id": self.backup_id,
            "created_at": backup_time(self.backup_id).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "location": self.location,
            "restorable": self.restorable,
            "size": self.size,
        }


def list_backups(storage, db_name=None, include_incomplete=True):
    """Backup sets under a destination, oldest first.

    Only a set whose manifest exists is restorable; an interrupted one is
    listed (for clean-up) with ``restorable=False`` when asked for.
    """
    entries = []
    databases = [db_name] if db_name else storage.list_dir("")
    for db in databases:
        if db.startswith("."):
            continue
        for backup_id in storage.list_dir(db):
            if not is_backup_id(backup_id):
                continue
            ref = BackupRef(storage, db, backup_id)
            sizes = storage.object_sizes(ref.prefix)
            restorable = MANIFEST_NAME in sizes
            if not restorable and not include_incomplete:
                continue
            entries.append(BackupEntry(db, backup_id, ref.location(), restorable, sum(sizes.values())))
    entries.sort(key=lambda e: (e.backup_id, e.db_name))
    return entries


def latest(storage, db_name):
    entries = [e for e in list_backups(storage, db_name) if e.restorable]
    if not entries:
        raise PreflightError("There is no complete backup of %r in %s." % (db_name, storage.describe()))
    return BackupRef(storage, db_name, entries[-1].backup_id)


def destination_for(location, settings=None):
    """(DestinationConfig, remainder) for a local path or an ``s3://bucket/prefix`` URL."""
    location = check_location(location)
    if location.startswith("s3://"):
        rest = location[len("s3://") :].strip("/")
        bucket, _, path = rest.partition("/")
        return DestinationConfig(kind="s3", bucket=bucket, prefix=path), path
    return DestinationConfig(kind="local", path=os.path.abspath(location)), None


def open_location(location, settings=None):
    """A storage for a destination given as a directory or ``s3://bucket/prefix``."""
    config, _ = destination_for(location, settings)
    return open_storage(config, settings)


def resolve(location, settings=None):
    """A BackupRef from ``<destination>/<db>/<backup_id>`` or ``<destination>/<db>/latest``.

    The destination is a directory or ``s3://bucket[/prefix]`` (the endpoint
    and credentials come from the environment or odoo.conf's [spp_backup]).
    """
    text = check_location(location).rstrip("/")
    is_s3 = text.startswith("s3://")
    path = text if is_s3 else os.path.abspath(text)
    parent, _, backup_id = path.rpartition("/")
    root, _, db_name = parent.rpartition("/")
    bad_root = not root or (is_s3 and not root.startswith("s3://"))
    if not db_name or bad_root or not (is_backup_id(backup_id) or backup_id == "latest"):
        raise PreflightError(
            "%r is not a backup location: give <destination>/<database>/<backup id> "
            "(for example /var/backups/odoo/mydb/20261126T030000Z-3f9a1c or s3://bucket/odoo/mydb/latest) "
            "or <destination>/<database>/latest." % location
        )
    storage = open_location(root, settings)
    if backup_id == "latest":
        return latest(storage, db_name)
    ref = BackupRef(storage, db_name, backup_id)
    if not storage.object_sizes(ref.prefix):
        raise PreflightError("No backup at %s." % ref.location())
    return ref
