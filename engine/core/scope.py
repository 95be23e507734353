"""What this server may touch: databases, local folders and S3 endpoints, as odoo.conf allows.

Odoo's layer checks these before it accepts a setting, and the worker checks
them again before it runs a plan, so a record written past the first check
still cannot make the worker back up another database, write outside the
allowed folders or send a backup to an endpoint nobody approved.

Settings (``[spp_backup]`` of odoo.conf, or ``SPP_BACKUP_<KEY>``):

- ``databases``: a regular expression of the database names a policy, a
  restore, a drill or a browse may name besides the database it lives in
  (for example ``prod|staging`` or ``openspp_.*``). It must match the whole
  name (``prod`` allows ``prod``, not ``prod2``), and only a valid database
  name is matched at all. Empty: only that database.
- ``backup_roots``: the folders under which local destinations may lie,
  separated by commas or new lines. Default: ``<data_dir>/backups``.
- ``s3_endpoints``: the S3 endpoint URLs a destination may name, separated
  by commas or new lines. An empty endpoint (AWS's own) is always allowed.
- ``s3_buckets``: the buckets a destination may name, separated by commas or
  new lines. Empty: any bucket of an allowed endpoint (the server's
  credentials decide); set it, or a Backup Manager may send backups to a
  bucket someone else reads.
- ``allow_unencrypted_offsite``: ``true`` lets a policy that does not
  encrypt write to S3 (its own tick is needed too). Default: never.
"""

import os
import re

from .errors import PreflightError

# Never a target of a restore or an import, whatever the settings say.
SYSTEM_DATABASES = ("postgres", "template0", "template1")
# Odoo's rule for database names, which also keeps them safe as folder names: letters, digits, '_', '-' and '.',
# a letter or digit first, at most 63 characters (PostgreSQL's limit).
DB_NAME_RE = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]*")


def is_database_name(name):
    """True when ``name`` is a database name Odoo would make (nothing before or after it, no new line)."""
    return isinstance(name, str) and len(name) <= 63 and DB_NAME_RE.fullmatch(name) is not None


def _items(value):
    return [item.strip() for item in re.split(r"[,\n]", value or "") if item.strip()]


def database_pattern(settings):
    """The compiled ``databases`` expression, or None when only the serving database is allowed.

    It is matched against the whole name (``fullmatch``): a pattern written ``^acc_big$`` does not let
    ``acc_big`` followed by a new line through, as ``re.search`` does (``$`` matches before a final new line).
    """
    text = (settings.get("databases") or "").strip()
    if not text:
        return None
    try:
        return re.compile(text)
    except re.error as exc:
        raise PreflightError(
            "The databases setting in the [spp_backup] section of odoo.conf is not a valid regular expression "
            "(%s): %s" % (text, exc)
        ) from exc


def database_allowed(name, serving_db, settings):
    """True when ``name`` is a valid database name and the serving database or matched, whole, by the
    ``databases`` setting."""
    if not is_database_name(name):
        return False
    if name == serving_db:
        return True
    pattern = database_pattern(settings)
    return bool(pattern and pattern.fullmatch(name)) and name not in SYSTEM_DATABASES


def check_database(name, serving_db, settings, what="back up"):
    """Raise a PreflightError in words when ``name`` is outside this server's scope."""
    if not is_database_name(name):
        raise PreflightError(
            "%r is not a database name (letters, digits, '_', '-' or '.', starting with a letter or digit, at most "
            "63 characters): this server may not %s it." % (name, what)
        )
    if not database_allowed(name, serving_db, settings):
        raise PreflightError(
            "Database %r is not this Odoo's database (%s), and the databases setting in the [spp_backup] section "
            "of odoo.conf does not allow it: this server may not %s it. To allow it, add it there, for example "
            "databases = ^%s$." % (name, serving_db, what, re.escape(name or ""))
        )


def check_target_database(name, serving_db, settings, replace=True):
    """A restore or import target: never a system database; an existing one (replaced) only within the scope.

    A new database (``replace`` false: the restore refuses a name that exists) touches nothing that was there.
    """
    if name in SYSTEM_DATABASES:
        raise PreflightError("%r is a system database of PostgreSQL: it is never a restore target." % name)
    if replace:
        check_database(name, serving_db, settings, what="replace")


def backup_roots(settings, data_dir):
    """The folders (real paths) local destinations may lie under."""
    roots = _items(settings.get("backup_roots"))
    if not roots and data_dir:
        roots = [os.path.join(data_dir, "backups")]
    return [os.path.realpath(root) for root in roots if os.path.isabs(root)]


def _under(path, root):
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def local_path_allowed(path, settings, data_dir, approved=()):
    """True when ``path`` (absolute) lies under a backup root, or is one of the ``approved`` folders."""
    if not path or not os.path.isabs(path):
        return False
    real = os.path.realpath(path)
    if any(_under(real, os.path.realpath(folder)) for folder in approved if folder):
        return True
    return any(_under(real, root) for root in backup_roots(settings, data_dir))


def check_local_path(path, settings, data_dir, approved=()):
    if not path or not os.path.isabs(path):
        raise PreflightError("A local destination must be an absolute folder path, not %r." % (path,))
    if not local_path_allowed(path, settings, data_dir, approved):
        roots = backup_roots(settings, data_dir)
        raise PreflightError(
            "The folder %s is outside the folders this server may write backups to (%s). Choose a folder under "
            "one of them, or add its parent to backup_roots in the [spp_backup] section of odoo.conf."
            % (path, ", ".join(roots) or "none configured")
        )


def s3_endpoints(settings):
    return [url.rstrip("/") for url in _items(settings.get("s3_endpoints"))]


def check_s3_endpoint(url, settings):
    if not url:
        return
    if url.rstrip("/") not in s3_endpoints(settings):
        raise PreflightError(
            "The S3 endpoint %s is not among the endpoints this server may use: add it to s3_endpoints in the "
            "[spp_backup] section of odoo.conf." % url
        )


def check_s3_bucket(bucket, settings):
    allowed = _items(settings.get("s3_buckets"))
    if allowed and bucket not in allowed:
        raise PreflightError(
            "The S3 bucket %s is not among the buckets this server may write backups to (%s): add it to "
            "s3_buckets in the [spp_backup] section of odoo.conf." % (bucket, ", ".join(allowed))
        )


def unencrypted_offsite_allowed(settings):
    return (settings.get("allow_unencrypted_offsite") or "").strip().lower() in ("1", "true", "yes", "on")


def check_offsite_encryption(encrypted, destinations, settings):
    """Backups leave the server (to S3) readable only when odoo.conf says they may."""
    if encrypted or unencrypted_offsite_allowed(settings):
        return
    if any(config.kind == "s3" for config in destinations):
        raise PreflightError(
            "This backup is not encrypted and would be copied to S3: encrypt it, or, if the data may leave this "
            "server readable, set allow_unencrypted_offsite = true in the [spp_backup] section of odoo.conf."
        )


def check_destination(config, settings, data_dir, approved=()):
    """A DestinationConfig within this server's scope, or a PreflightError in words."""
    if config.kind == "local":
        check_local_path(config.path, settings, data_dir, approved)
    elif config.kind == "s3":
        check_s3_endpoint(config.endpoint_url, settings)
        check_s3_bucket(config.bucket, settings)
    else:
        raise PreflightError("Unknown destination kind %r." % (config.kind,))
