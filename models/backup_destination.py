import dataclasses
import logging
import os
import re

from odoo import _, api, fields, models
from odoo.exceptions import UserError, ValidationError

from ..engine.core import plans, scope
from ..engine.core.config import DestinationConfig
from ..engine.core.errors import BackupError
from ..engine.core.manifest import is_backup_id
from ..engine.db import pg as engine_pg
from ..engine.io.storage import check_location, open_storage

_logger = logging.getLogger(__name__)

# S3 bucket names: 3 to 63 lower-case letters, digits, dots and hyphens.
BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]$")

CREDENTIALS_HELP = (
    "S3 keys are never stored in Odoo: they come from the server's environment (AWS_ACCESS_KEY_ID and "
    "AWS_SECRET_ACCESS_KEY, or an instance role), from a named profile in the server's AWS credentials file, "
    "or from s3_access_key_id and s3_secret_access_key in the [spp_backup] section of odoo.conf."
)


class SppBackupDestination(models.Model):
    _name = "spp.backup.destination"
    _inherit = ["spp.backup.server.fields"]
    _description = "Backup Destination"
    _order = "name, id"
    # The approval of a folder in use before backup_roots existed is the server's (at upgrade); policies choose
    # their destinations on the policy, where its checks run.
    _server_fields = frozenset({"is_path_approved", "approved_path", "policy_ids"})

    name = fields.Char(required=True, help="A name that tells people where the backups go, e.g. 'Backup disk'.")
    active = fields.Boolean(default=True, help="Archived destinations are kept for the record but no longer offered.")
    kind = fields.Selection(
        [("local", "Local or mounted directory"), ("s3", "S3-compatible object storage")],
        string="Kind",
        required=True,
        default="local",
        help="Where the backup sets are written: a directory of this server (it may be a mounted network share), "
        "or a bucket of an S3-compatible object store (AWS S3, MinIO, Ceph, Wasabi, ...).",
    )
    path = fields.Char(
        string="Directory",
        help="Absolute path of an existing directory that receives the backup sets, one sub-folder per database. "
        "It must lie under one of the folders that backup_roots in the [spp_backup] section of odoo.conf allows "
        "(by default <data_dir>/backups), and the Odoo server's user must be able to write there.",
    )
    endpoint_url = fields.Char(
        string="Endpoint URL",
        help="URL of the S3 service, e.g. https://minio.example.org:9000; it must be one of the endpoints that "
        "s3_endpoints in the [spp_backup] section of odoo.conf allows. Leave empty for AWS S3 (or for "
        "s3_endpoint_url from that section).",
    )
    region = fields.Char(
        help="Region of the bucket, e.g. eu-west-1. Leave empty to use s3_region from odoo.conf or the "
        "server's AWS configuration."
    )
    bucket = fields.Char(help="Name of the bucket that receives the backup sets. It must exist already.")
    prefix = fields.Char(
        help="Folder inside the bucket under which backup sets are written, e.g. 'odoo/production'. "
        "Leave empty to write at the top of the bucket."
    )
    storage_class = fields.Char(
        string="Storage class",
        help="S3 storage class of the stored objects, e.g. STANDARD_IA or GLACIER_IR. Leave empty for the "
        "bucket's default (STANDARD on AWS). Classes that need a restore before reading (GLACIER, DEEP_ARCHIVE) "
        "cannot be verified or restored directly.",
    )
    sse = fields.Selection(
        [("none", "None"), ("AES256", "S3-managed keys (AES256)"), ("aws:kms", "KMS key (aws:kms)")],
        string="Server-side encryption",
        default="none",
        required=True,
        help="Ask the object store to encrypt the stored objects at rest. This comes on top of the policy's own "
        "age encryption, which the object store cannot undo.",
    )
    sse_kms_key_id = fields.Char(
        string="KMS key ID",
        help="ID or ARN of the KMS key used with server-side encryption 'aws:kms'. Leave empty for the "
        "account's default S3 KMS key.",
    )
    addressing_style = fields.Selection(
        [("auto", "Automatic"), ("path", "Path (endpoint/bucket)"), ("virtual", "Virtual host (bucket.endpoint)")],
        string="Addressing style",
        default="auto",
        required=True,
        help="How the bucket appears in request URLs. Most self-hosted services (MinIO, Ceph) need 'Path'; "
        "AWS works with 'Automatic'.",
    )
    profile = fields.Char(
        string="Credentials profile",
        help="Name of a profile in the server's AWS credentials file (~/.aws/credentials of the Odoo user) that "
        "holds the keys for this bucket. Leave empty to use the environment or odoo.conf. " + CREDENTIALS_HELP,
    )
    object_lock_mode = fields.Selection(
        [("none", "Off"), ("governance", "Governance"), ("compliance", "Compliance")],
        string="Object Lock",
        default="none",
        required=True,
        help="Write every object under S3 Object Lock, so that nobody (compliance) or only privileged users "
        "(governance) can delete or overwrite it before the retention days have passed: protection against "
        "ransomware and mistakes. The bucket must have been created with Object Lock enabled.",
    )
    object_lock_days = fields.Integer(
        string="Object Lock days",
        default=0,
        help="How many days each stored object stays locked. Retention never deletes a backup that is still locked.",
    )
    part_size_mb = fields.Integer(
        string="Upload part size (MiB)",
        default=16,
        help="Size of each part of the multipart uploads, from 5 to 5120 MiB. Larger parts mean fewer requests; "
        "memory use stays bounded whatever the size of the backup.",
    )
    is_path_approved = fields.Boolean(
        string="Approved at upgrade",
        readonly=True,
        copy=False,
        help="This folder was in use before backup_roots existed and stays usable; add it (or its parent) to "
        "backup_roots in the [spp_backup] section of odoo.conf.",
    )
    approved_path = fields.Char(string="Approved folder", readonly=True, copy=False)
    where = fields.Char(string="Where", compute="_compute_where", help="The directory or the S3 bucket and prefix.")
    policy_ids = fields.Many2many(
        "spp.backup.policy",
        "spp_backup_policy_destination_rel",
        "destination_id",
        "policy_id",
        string="Policies",
        readonly=True,
    )

    @api.depends("kind", "path", "bucket", "prefix", "endpoint_url")
    def _compute_where(self):
        for destination in self:
            if destination.kind == "s3":
                where = "s3://%s" % (destination.bucket or "?")
                prefix = (destination.prefix or "").strip("/")
                if prefix:
                    where += "/" + prefix
                if destination.endpoint_url:
                    where += " (%s)" % destination.endpoint_url
                destination.where = where
            else:
                destination.where = destination.path or False

    # ------------------------------------------------------------------ checks

    @api.constrains("kind", "path")
    def _check_path(self):
        for destination in self:
            if destination.kind != "local":
                continue
            if not (destination.path or "").strip():
                raise ValidationError(
                    _(
                        "Destination '%s' needs a directory: give the absolute path where backups are written.",
                        destination.name,
                    )
                )
            try:
                check_location(destination.path)
            except BackupError as exc:
                raise ValidationError(
                    _("The directory of destination '%(name)s': %(reason)s", name=destination.name, reason=exc)
                ) from exc
            destination._check_scope()

    def _check_scope(self):
        """A ValidationError in words when this destination lies outside what odoo.conf allows."""
        self.ensure_one()
        Engine = self.env["spp.backup.engine"]
        try:
            scope.check_destination(
                self._to_engine_destination(), Engine._settings(), Engine._data_dir(), self._approved_paths()
            )
        except BackupError as exc:
            raise ValidationError(_("Destination '%(name)s': %(reason)s", name=self.name, reason=exc)) from exc

    def _approved_paths(self):
        """Folders approved at upgrade (in use before backup_roots existed), still usable."""
        return [dest.approved_path for dest in self.sudo() if dest.is_path_approved and dest.approved_path]

    @api.model
    def _approve_existing_folders(self):
        """At upgrade: local destinations whose folder exists stay usable, with a warning to add it to backup_roots."""
        Engine = self.env["spp.backup.engine"]
        settings, data_dir = Engine._settings(), Engine._data_dir()
        approved = self.browse()
        for dest in self._server_mode().with_context(active_test=False).search([("kind", "=", "local")]):
            path = (dest.path or "").strip()
            if not path or not os.path.isdir(path) or scope.local_path_allowed(path, settings, data_dir):
                continue
            dest.write({"is_path_approved": True, "approved_path": path})
            approved |= dest
            _logger.warning(
                "Backup destination %s (%s) lies outside backup_roots; it stays usable because it existed before the "
                "upgrade. Add it to backup_roots in the [spp_backup] section of odoo.conf.",
                dest.name,
                path,
            )
        return approved

    @api.model
    def _source_of(self, copy=None, destination=None, db_name=None, backup_id=None):
        """The worker's ``source`` of a backup set: a stored copy, or a destination with a database and backup id.

        Derived by the server from its own records, never taken from what a person typed as a location.
        """
        if copy:
            return copy.sudo()._engine_source()
        if not destination:
            raise UserError(_("Choose the destination that holds the backup."))
        destination = destination.sudo()
        try:
            engine_pg.check_db_name(db_name)
        except BackupError as exc:
            raise UserError(str(exc)) from exc
        if backup_id != "latest" and not is_backup_id(backup_id):
            raise UserError(_("%s is not a backup id (they read like 20261126T030000Z-3f9a1c).", backup_id))
        self.env["spp.backup.engine"]._check_database_scope(db_name, what="read the backups of")
        return plans.Source(
            destination=dataclasses.asdict(destination._to_engine_destination()), db_name=db_name, backup_id=backup_id
        )

    @api.constrains("kind", "bucket", "prefix", "endpoint_url", "part_size_mb", "sse", "sse_kms_key_id")
    def _check_s3(self):
        for destination in self.filtered(lambda d: d.kind == "s3"):
            bucket = (destination.bucket or "").strip()
            if not bucket:
                raise ValidationError(
                    _("S3 destination '%s' needs a bucket: give the name of an existing bucket.", destination.name)
                )
            if not BUCKET_RE.match(bucket) or ".." in bucket:
                raise ValidationError(
                    _(
                        "'%(bucket)s' is not a valid S3 bucket name (destination '%(name)s'): use 3 to 63 lower-case "
                        "letters, digits, dots and hyphens, starting and ending with a letter or digit.",
                        bucket=bucket,
                        name=destination.name,
                    )
                )
            parts = [part for part in (destination.prefix or "").split("/") if part]
            if any(part in (".", "..") for part in parts):
                raise ValidationError(
                    _("The prefix of destination '%s' cannot contain '.' or '..' folders.", destination.name)
                )
            endpoint = (destination.endpoint_url or "").strip()
            if endpoint and not re.match(r"^https?://[^\s/]+", endpoint):
                raise ValidationError(
                    _(
                        "The endpoint URL of destination '%(name)s' must start with https:// (or http://), "
                        "e.g. https://minio.example.org:9000, not '%(url)s'.",
                        name=destination.name,
                        url=endpoint,
                    )
                )
            if endpoint and "@" in endpoint.split("//", 1)[1].split("/", 1)[0]:
                raise ValidationError(
                    _(
                        "The endpoint URL of destination '%s' must not contain credentials. %s",
                        destination.name,
                        CREDENTIALS_HELP,
                    )
                )
            destination._check_scope()
            if not 5 <= destination.part_size_mb <= 5120:
                raise ValidationError(
                    _(
                        "The upload part size of destination '%s' must be between 5 and 5120 MiB (S3's limits).",
                        destination.name,
                    )
                )
            if destination.sse_kms_key_id and destination.sse != "aws:kms":
                raise ValidationError(
                    _(
                        "Destination '%s' names a KMS key but its server-side encryption is not 'aws:kms': "
                        "choose 'KMS key (aws:kms)' or clear the KMS key ID.",
                        destination.name,
                    )
                )

    @api.constrains("kind", "object_lock_mode", "object_lock_days")
    def _check_object_lock(self):
        for destination in self:
            if destination.object_lock_days < 0:
                raise ValidationError(_("Destination '%s': Object Lock days cannot be negative.", destination.name))
            if destination.object_lock_mode != "none":
                if destination.kind != "s3":
                    raise ValidationError(
                        _("Destination '%s': Object Lock exists only for S3 destinations.", destination.name)
                    )
                if destination.object_lock_days < 1:
                    raise ValidationError(
                        _(
                            "Destination '%s' uses Object Lock: set how many days objects stay locked (at least 1).",
                            destination.name,
                        )
                    )

    @api.constrains("kind")
    def _check_policies_encrypt(self):
        # A local destination turned into S3 must respect its policies' offsite rule.
        self.policy_ids._check_offsite_encryption()

    # ------------------------------------------------------------------ engine

    def _to_engine_destination(self):
        """The plain engine configuration of this destination (never a credential)."""
        self.ensure_one()
        if self.kind == "s3":
            return DestinationConfig(
                kind="s3",
                name=self.name,
                endpoint_url=(self.endpoint_url or "").strip(),
                region=(self.region or "").strip(),
                bucket=(self.bucket or "").strip(),
                prefix=(self.prefix or "").strip().strip("/"),
                storage_class=(self.storage_class or "").strip(),
                sse="" if self.sse == "none" else self.sse,
                sse_kms_key_id=(self.sse_kms_key_id or "").strip() if self.sse == "aws:kms" else "",
                addressing_style="" if self.addressing_style == "auto" else self.addressing_style,
                profile=(self.profile or "").strip(),
                object_lock_mode="" if self.object_lock_mode == "none" else self.object_lock_mode,
                object_lock_days=self.object_lock_days if self.object_lock_mode != "none" else 0,
                part_size_mb=self.part_size_mb or 16,
            )
        return DestinationConfig(kind=self.kind, path=(self.path or "").strip(), name=self.name)

    def _open_storage(self, settings=None):
        """The engine storage of this destination; a UserError in words when it cannot be opened."""
        self.ensure_one()
        settings = settings or self.env["spp.backup.engine"]._settings()
        return self._call_storage(lambda: open_storage(self._to_engine_destination(), settings))

    def _call_storage(self, work):
        """Run ``work()``; turn any failure into a UserError that names this destination."""
        self.ensure_one()
        try:
            return work()
        except BackupError as exc:
            reason = str(exc)
        except Exception as exc:  # boto3, OS and network errors: a sentence for the user, details in the log
            _logger.warning("Destination %s (id %s) failed: %s", self.name, self.id, exc, exc_info=True)
            reason = "%s: %s" % (type(exc).__name__, exc)
        raise UserError(_("Destination '%(name)s' cannot be used: %(reason)s", name=self.name, reason=reason))

    def action_test(self):
        """Write, read back and delete a probe; say what happened (for S3, whether Object Lock is available)."""
        self.ensure_one()
        Engine = self.env["spp.backup.engine"]
        Engine._check_manager()
        settings = Engine._settings()
        self._check_scope()
        storage = self._open_storage(settings)
        message = self._call_storage(storage.probe)
        return {
            "type": "ir.actions.client",
            "tag": "display_notification",
            "params": {
                "title": _("Destination '%s' works", self.name),
                "message": message,
                "type": "success",
                "sticky": False,
            },
        }

    def action_browse_backups(self):
        """List every backup set stored here, of every database (also those written by other servers)."""
        self.ensure_one()
        if not (self.env.user.has_group("spp_backup.group_backup_restore") or self.env.su):
            self.env["spp.backup.engine"]._check_manager()
        return self.env["spp.backup.browse"]._open_for(self)
