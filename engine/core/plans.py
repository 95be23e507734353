"""The plans Odoo gives the worker: one typed definition per action, built and read only through these classes.

Odoo makes a plan with the class's constructor and stores ``to_dict()`` as JSON in the run row
(``spp_backup_run.plan``); the worker reads it back with ``from_dict`` (``plan_from_dict``), which refuses
keys it does not know, so a misspelt or smuggled setting is refused in words instead of being ignored.
Plans hold no secrets and nothing the worker decides for itself: how it connects, its data_dir, its keys and
identities, the folders the server approved and code a person accepted are the worker's own (service/dispatch.py).

A run queued by an older version still executes: the keys older versions wrote and no longer use
(``LEGACY_KEYS``) are dropped when read, never honoured.
"""

import dataclasses
from dataclasses import dataclass, field

from .config import BackupPlan
from .errors import PreflightError

BACKUP, RESTORE, DRILL, VERIFY = "backup", "restore", "drill", "verify"
PITR_RESTORE, PITR_DRILL = "pitr_restore", "pitr_drill"
ACTIONS = (BACKUP, RESTORE, DRILL, VERIFY, PITR_RESTORE, PITR_DRILL)


def checked_keys(cls, data, what):
    """``data`` (a plan's JSON object) as keyword arguments of the dataclass ``cls``: the keys older versions
    wrote dropped, unknown and missing keys refused in words (PreflightError)."""
    if not isinstance(data, dict):
        raise PreflightError("The %s is not a set of settings (%s)." % (what, type(data).__name__))
    data = {key: value for key, value in data.items() if key not in getattr(cls, "LEGACY_KEYS", ())}
    own = sorted(set(data) & set(getattr(cls, "WORKER_OWN", ())))
    if own:
        raise PreflightError(
            "The %s names %s: that is this worker's own to decide (code from outside is accepted only by a "
            "person on the command line, --accept-code), never a plan's." % (what, ", ".join(own))
        )
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise PreflightError("Unknown %s settings: %s" % (what, ", ".join(unknown)))
    required = {
        f.name
        for f in dataclasses.fields(cls)
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    }
    missing = sorted(required - set(data))
    if missing:
        raise PreflightError("The %s lacks %s." % (what, ", ".join(missing)))
    return data


@dataclass
class Source:
    """A backup set to read: the destination holding it (DestinationConfig fields), its database and its id
    (None or "latest": the newest set of that database); ``label`` names it in a verification's report."""

    destination: dict
    db_name: str
    backup_id: str | None = None
    label: str | None = None
    # Plans queued before the worker read approvals from its own database named approved folders here.
    LEGACY_KEYS = ("approved_paths",)

    def to_dict(self):
        data = dataclasses.asdict(self)
        if self.label is None:
            del data["label"]
        return data

    @classmethod
    def from_dict(cls, data):
        source = cls(**checked_keys(cls, data, "backup source"))
        if not isinstance(source.destination, dict):
            raise PreflightError("The backup source names no destination.")
        return source

    @property
    def is_latest(self):
        return self.backup_id in (None, "", "latest")


@dataclass
class RestoreRequest:
    """What a restore plan may ask of the restore (engine.ops.restore.RestoreOptions, less what is the worker's)."""

    target_db: str
    replace: bool = False
    include_database: bool = True
    include_filestore: bool = True
    new_uuid: bool = False
    neutralize: bool = False
    neutralize_sql: list = field(default_factory=list)
    jobs: int = 1
    tmp_dir: str | None = None
    public_key: str | list | None = None
    require_signature: bool = False
    expected_major_version: str | None = None
    # The target's name typed again: needed to replace a database an Odoo server is using.
    confirm_name: str | None = None
    # Whether an unsigned backup passes is RestorePlan.unsigned_ok, the server's decision; the rest is the worker's.
    WORKER_OWN = ("accepted_code", "allow_unsigned", "data_dir", "identities", "on_loaded", "pg", "settings")

    def to_dict(self):
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data):
        return cls(**checked_keys(cls, data, "restore's options"))


@dataclass
class RestorePlan:
    """Restore one backup set into a database; ``unsigned_ok``: the backup's policy does not sign, so an unsigned
    set passes (the server's decision, written by Odoo)."""

    source: Source
    options: RestoreRequest
    unsigned_ok: bool = False

    def to_dict(self):
        return {"source": self.source.to_dict(), "options": self.options.to_dict(), "unsigned_ok": self.unsigned_ok}

    @classmethod
    def from_dict(cls, data):
        data = checked_keys(cls, data, "restore plan")
        return cls(
            source=Source.from_dict(data["source"]),
            options=RestoreRequest.from_dict(data["options"]),
            unsigned_ok=bool(data.get("unsigned_ok")),
        )


@dataclass
class DrillPlan:
    """Restore one backup set into a scratch database, check it, measure the time, drop it."""

    source: Source
    public_key: str | list | None = None
    unsigned_ok: bool = False
    neutralize_sql: list = field(default_factory=list)
    jobs: int = 1

    def to_dict(self):
        return dict(dataclasses.asdict(self), source=self.source.to_dict())

    @classmethod
    def from_dict(cls, data):
        data = checked_keys(cls, data, "drill plan")
        return cls(**dict(data, source=Source.from_dict(data["source"])))


@dataclass
class VerifyPlan:
    """Read each source back and check it (manifest, signature, checksums; ``deep``: decrypt to the end too)."""

    sources: list = field(default_factory=list)
    public_key: str | list | None = None
    unsigned_ok: bool = False
    deep: bool = False

    def to_dict(self):
        return dict(dataclasses.asdict(self), sources=[source.to_dict() for source in self.sources])

    @classmethod
    def from_dict(cls, data):
        data = checked_keys(cls, data, "verification plan")
        if not isinstance(data.get("sources", []), list):
            raise PreflightError("The verification plan's sources are not a list.")
        return cls(**dict(data, sources=[Source.from_dict(source) for source in data.get("sources") or []]))


@dataclass
class PitrRestorePlan:
    """Restore one database as it was at one second (``to_time``, ISO 8601 UTC) from the WAL archive at
    ``location``, one of the worker's own ``pitr_destinations``; the options as a restore's."""

    location: str
    db_name: str
    to_time: str
    options: RestoreRequest
    # The server whose archive it is (a destination may hold the archives of several).
    system_id: str | None = None
    # {module: [SQL]}: each module's neutralization; those installed in the copy at that second are run.
    neutralize_modules: dict = field(default_factory=dict)

    def to_dict(self):
        return dict(dataclasses.asdict(self), options=self.options.to_dict())

    @classmethod
    def from_dict(cls, data):
        data = checked_keys(cls, data, "point-in-time restore plan")
        return cls(**dict(data, options=RestoreRequest.from_dict(data["options"])))


@dataclass
class PitrDrillPlan:
    """Restore one database to a second of the window (``to_time``, ISO 8601 UTC; None: a random one) from the WAL
    archive at ``location`` (one of the worker's ``pitr_destinations``) into a scratch database, check it, drop
    it."""

    location: str
    db_name: str
    to_time: str | None = None
    system_id: str | None = None
    neutralize_modules: dict = field(default_factory=dict)

    def to_dict(self):
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data):
        return cls(**checked_keys(cls, data, "point-in-time drill plan"))


PLAN_TYPES = {
    BACKUP: BackupPlan,
    RESTORE: RestorePlan,
    DRILL: DrillPlan,
    VERIFY: VerifyPlan,
    PITR_RESTORE: PitrRestorePlan,
    PITR_DRILL: PitrDrillPlan,
}


def plan_type(action):
    """The plan class of ``action``; a PreflightError in words for an action no worker knows."""
    if action not in PLAN_TYPES:
        raise PreflightError("Unknown run action %r." % (action,))
    return PLAN_TYPES[action]


def plan_to_dict(action, plan):
    """The JSON object of ``plan``, a plan of ``action``'s type (anything else is a programming error)."""
    if not isinstance(plan, plan_type(action)):
        raise TypeError("A %s run needs a %s, not %s." % (action, plan_type(action).__name__, type(plan).__name__))
    return plan.to_dict()


def plan_from_dict(action, data):
    """The typed plan of ``action`` from its JSON object (as stored in the run row, old versions' included)."""
    return plan_type(action).from_dict(data)
