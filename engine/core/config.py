"""Plain configuration objects, and reading them from odoo.conf / the environment.

Per-deployment settings live in odoo.conf: the ``[options]`` section gives the
database connection and ``data_dir`` as Odoo uses them, the ``[spp_backup]``
section the engine's own settings. ``SPP_BACKUP_<KEY>`` environment variables
take precedence over ``[spp_backup]`` keys.
"""

import configparser
import dataclasses
import os
import re
from dataclasses import dataclass, field

from .errors import PreflightError

SECRET_KEY_RE = re.compile(r"(pass|secret|token|key|credential|auth|dsn)", re.I)
URL_CREDENTIALS_RE = re.compile(r"(://)[^@/\s]*@")


@dataclass
class PgConfig:
    """How to reach the PostgreSQL server; the password never leaves memory."""

    host: str | None = None
    port: int | None = None
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    maintenance_db: str = "postgres"
    bin_dir: str | None = None

    def env(self):
        """Environment for pg_dump / pg_restore: libpq variables, no argv secrets."""
        env = dict(os.environ)
        for var, value in (
            ("PGHOST", self.host),
            ("PGPORT", self.port),
            ("PGUSER", self.user),
            ("PGPASSWORD", self.password),
        ):
            if value not in (None, "", False):
                env[var] = str(value)
        return env

    def dsn_kwargs(self, dbname):
        kwargs = {"dbname": dbname}
        for key in ("host", "port", "user", "password"):
            value = getattr(self, key)
            if value not in (None, "", False):
                kwargs[key] = value
        return kwargs

    def describe(self):
        return "%s:%s" % (
            self.host or os.environ.get("PGHOST") or "local socket",
            self.port or os.environ.get("PGPORT") or 5432,
        )

    def public_dict(self):
        data = dataclasses.asdict(self)
        data.pop("password")
        return data


@dataclass
class DestinationConfig:
    """Where backups are stored: ``kind`` is ``local`` (a directory) or ``s3``.

    No credential is ever part of a destination: S3 keys come from boto3's
    chain, a named ``profile``, or odoo.conf's ``[spp_backup]`` section.
    """

    kind: str = "local"
    path: str = ""
    name: str = ""
    endpoint_url: str = ""
    region: str = ""
    bucket: str = ""
    prefix: str = ""
    storage_class: str = ""
    sse: str = ""
    sse_kms_key_id: str = ""
    addressing_style: str = ""
    profile: str = ""
    object_lock_mode: str = ""
    object_lock_days: int = 0
    part_size_mb: int = 16
    max_attempts: int = 8

    def describe(self):
        if self.name:
            return self.name
        if self.kind == "s3":
            return "s3://%s/%s" % (self.bucket, self.prefix.strip("/"))
        return self.path


@dataclass
class BackupPlan:
    """Everything one backup run needs, as plain data."""

    db_name: str
    destinations: list
    pg: PgConfig = field(default_factory=PgConfig)
    data_dir: str | None = None
    include_database: bool = True
    include_filestore: bool = True
    include_application: bool = True
    compression: str = "zstd"
    compression_level: int = 3
    threads: int = 2
    odoo_conf: str | None = None
    odoo_version: dict | None = None
    # The tables whose rows are counted into the manifest; None: every table of the database.
    main_tables: tuple | None = None
    min_free_bytes: int = 0
    lock_key: int | None = None
    label: str = ""
    # age recipients (public keys, ``age1...``); empty: no encryption.
    recipients: list = field(default_factory=list)
    # The Ed25519 signing key file (PEM); the key itself never enters a plan.
    signing_key_file: str | None = None
    # Grandfather-father-son counts (engine.core.retention.RetentionRules fields), applied
    # per destination after a successful backup; None: keep everything.
    retention: dict | None = None
    # Backups known to be verified (the newest of them is never pruned).
    verified_ids: list = field(default_factory=list)
    # Who makes this backup ({"database_uuid": ..., "policy_id": ...}), written into the manifest: retention
    # prunes only the sets of its own owner. None (the command line): the sets are nobody's in particular.
    owner: dict | None = None
    # This owner's backups made before sets recorded their owner (the ids its job records hold).
    owned_ids: list = field(default_factory=list)
    # The filestore goes into each destination's content-addressed store (engine.formats.packstore): only files the
    # store lacks are written. Needs the store key file (odoo.conf's store_key_file).
    incremental_filestore: bool = False
    store_key_file: str | None = None

    def filestore_dir(self):
        if not self.data_dir:
            return None
        return os.path.join(self.data_dir, "filestore", self.db_name)

    def to_dict(self):
        data = dataclasses.asdict(self)
        data["pg"] = self.pg.public_dict()
        data["main_tables"] = list(self.main_tables) if self.main_tables is not None else None
        return data

    @classmethod
    def from_dict(cls, data):
        if not isinstance(data, dict):
            raise PreflightError("The backup plan is not a set of settings (%s)." % type(data).__name__)
        data = dict(data)
        # Plans queued before the worker read approvals from its own database named approved folders: never trusted.
        data.pop("approved_paths", None)
        data["pg"] = PgConfig(**data.get("pg") or {})
        data["destinations"] = [DestinationConfig(**d) for d in data.get("destinations") or []]
        data["main_tables"] = tuple(data["main_tables"]) if data.get("main_tables") is not None else None
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise PreflightError("Unknown plan settings: %s" % ", ".join(sorted(unknown)))
        return cls(**data)


STORE_KEY_NAME = "store.key"


def default_data_dir():
    """Odoo's default data_dir for the current user (``~/.local/share/Odoo``)."""
    return os.path.join(os.path.expanduser("~"), ".local", "share", "Odoo")


@dataclass
class Settings:
    """odoo.conf ``[options]`` database settings plus the ``[spp_backup]`` section."""

    pg: PgConfig = field(default_factory=PgConfig)
    data_dir: str | None = None
    section: dict = field(default_factory=dict)
    options: dict = field(default_factory=dict, repr=False)

    def get(self, key, default=None):
        env = os.environ.get("SPP_BACKUP_" + key.upper())
        if env not in (None, ""):
            return env
        return self.section.get(key, default)

    def store_key_file(self, data_dir=None):
        """The incremental filestore's store key: odoo.conf's ``store_key_file``, else one in Odoo's data directory.

        The key only names packs and blobs (a restore does not need it); the file is made on the first
        incremental backup. Losing it starts a new store, it loses no backup.
        """
        named = self.get("store_key_file")
        if named:
            return named
        data_dir = data_dir or self.data_dir
        return os.path.join(data_dir, "spp_backup", STORE_KEY_NAME) if data_dir else None

    @classmethod
    def from_config(cls, conf_path=None):
        """Read odoo.conf (path given, or ``$ODOO_RC``) and the environment."""
        conf_path = conf_path or os.environ.get("ODOO_RC")
        options, section = {}, {}
        if conf_path:
            parser = configparser.RawConfigParser()
            try:
                with open(conf_path, encoding="utf-8") as handle:
                    parser.read_file(handle)
            except OSError as exc:
                raise PreflightError(
                    "Cannot read the Odoo configuration file %s: %s" % (conf_path, exc.strerror)
                ) from exc
            except configparser.Error as exc:
                raise PreflightError("The Odoo configuration file %s is not valid: %s" % (conf_path, exc)) from exc
            if parser.has_section("options"):
                options = dict(parser.items("options"))
            if parser.has_section("spp_backup"):
                section = dict(parser.items("spp_backup"))

        def opt(key):
            value = options.get(key)
            return None if value in (None, "", "False", "false") else value

        port = opt("db_port")
        pg = PgConfig(
            host=opt("db_host"),
            port=int(port) if port else None,
            user=opt("db_user"),
            password=opt("db_password"),
            bin_dir=section.get("pg_bin_dir") or None,
        )
        settings = cls(pg=pg, data_dir=opt("data_dir"), section=section, options=options)
        if settings.get("pg_bin_dir"):
            pg.bin_dir = settings.get("pg_bin_dir")
        return settings


def sanitize_options(options):
    """odoo.conf options with every password, secret, key, token and URL credential removed."""
    clean = {}
    for key, value in sorted(options.items()):
        if SECRET_KEY_RE.search(key):
            clean[key] = "<removed>"
        elif isinstance(value, str):
            clean[key] = URL_CREDENTIALS_RE.sub(r"\1<removed>@", value)
        else:
            clean[key] = value
    return clean
