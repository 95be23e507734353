"""The backup set's manifest: format, ids, validation (pure, no I/O)."""

import datetime
import json
import re
import secrets

from .. import MANIFEST_FORMAT
from .errors import VerifyError

MANIFEST_NAME = "manifest.json"
# A backup id: the UTC time the set was started and 3 random bytes in hex (20261126T030000Z-3f9a1c). Every engine
# since the first wrote exactly this, and the catalog lists only sets whose name matches it: Odoo, the catalog,
# retention and the manifest check all ask is_backup_id, never a pattern of their own.
BACKUP_ID_RE = re.compile(r"\d{8}T\d{6}Z-[0-9a-f]{6}")
ARTIFACT_BASE = {
    "database": "database.dump",
    "filestore": "filestore.tar",
    "application": "application.json",
    # The file list of a filestore kept in the destination's store (JSON lines: path, size, keyed blob id).
    "filelist": "filestore.list",
    # An encrypted set's filestore evidence by name (attachment files missing, vanished, unreadable, links
    # skipped): Odoo's names are SHA-1s of the files, so they are sealed with the artifacts, never in plain JSON.
    "names": "filestore.names.json",
}
COMPRESSION_SUFFIX = {"zstd": ".zst", "none": ""}
# Written first into a set whose plan names an owner: an unfinished set (no manifest yet, or never) still says
# whose it is, so that only its own policy's retention cleans it up.
OWNER_NAME = "owner.json"
REQUIRED_KEYS = ("format", "backup_id", "db_name", "created_at", "finished_at", "artifacts")
ARTIFACT_KEYS = ("file", "size", "sha256", "compression")


def new_backup_id(now=None):
    now = now or datetime.datetime.now(datetime.timezone.utc)
    return "%s-%s" % (now.strftime("%Y%m%dT%H%M%SZ"), secrets.token_hex(3))


def backup_time(backup_id):
    """The UTC datetime encoded in a backup id."""
    return datetime.datetime.strptime(backup_id[:16], "%Y%m%dT%H%M%SZ").replace(tzinfo=datetime.timezone.utc)


def is_backup_id(value):
    """True for a backup id as the engine makes them (new_backup_id), whole; False for anything else."""
    return isinstance(value, str) and bool(BACKUP_ID_RE.fullmatch(value))


def artifact_file(kind, compression, encrypted=False):
    return ARTIFACT_BASE[kind] + COMPRESSION_SUFFIX[compression] + (".age" if encrypted else "")


def filestore_artifact(artifacts):
    """(kind, artifact) of a set's filestore: its archive, or its file list in the store; (None, None)."""
    for kind in ("filestore", "filelist"):
        if kind in (artifacts or {}):
            return kind, artifacts[kind]
    return None, None


def filestore_bytes(manifest):
    """What a set's filestore takes once restored: the archive's raw size, or the files the store keeps."""
    kind, art = filestore_artifact(manifest.get("artifacts"))
    if kind == "filelist":
        return int((manifest.get("filestore") or {}).get("bytes") or 0)
    return int((art or {}).get("raw_size", (art or {}).get("size", 0)) or 0)


def utc_iso(ts=None):
    moment = (
        datetime.datetime.fromtimestamp(ts, datetime.timezone.utc)
        if ts
        else datetime.datetime.now(datetime.timezone.utc)
    )
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def dumps(manifest):
    return (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode("utf-8")


def loads(data, where="manifest.json"):
    """Parse and validate a manifest; raise VerifyError with what is wrong."""
    try:
        manifest = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise VerifyError("%s is not valid JSON: %s" % (where, exc)) from exc
    problems = validate(manifest)
    if problems:
        raise VerifyError("%s is not a valid spp_backup manifest: %s" % (where, "; ".join(problems)))
    return manifest


def validate(manifest):
    """A list of problems with a manifest's shape (empty when it is valid)."""
    if not isinstance(manifest, dict):
        return ["it is not a JSON object"]
    problems = ["missing key %r" % key for key in REQUIRED_KEYS if key not in manifest]
    if problems:
        return problems
    if manifest["format"] != MANIFEST_FORMAT:
        problems.append(
            "format version %r is not supported (this engine reads %d)" % (manifest["format"], MANIFEST_FORMAT)
        )
    if not is_backup_id(manifest["backup_id"]):
        problems.append("backup_id %r is malformed" % manifest["backup_id"])
    artifacts = manifest["artifacts"]
    if not isinstance(artifacts, dict) or not artifacts:
        problems.append("artifacts must be a non-empty object")
        return problems
    for name, art in artifacts.items():
        if name not in ARTIFACT_BASE:
            problems.append("unknown artifact %r" % name)
            continue
        if not isinstance(art, dict):
            problems.append("artifact %r is not an object" % name)
            continue
        missing = [key for key in ARTIFACT_KEYS if key not in art]
        if missing:
            problems.append("artifact %r lacks %s" % (name, ", ".join(missing)))
            continue
        encryption = art.get("encryption")
        if encryption is not None and not (isinstance(encryption, dict) and encryption.get("format") == "age"):
            problems.append("artifact %r has unknown encryption %r" % (name, encryption))
        if art["compression"] not in COMPRESSION_SUFFIX:
            problems.append("artifact %r has unknown compression %r" % (name, art["compression"]))
        elif art["file"] != artifact_file(name, art["compression"], bool(encryption)):
            problems.append("artifact %r names file %r" % (name, art["file"]))
        if not _count_value(art["size"]):
            problems.append("artifact %r has a bad size" % name)
        if "raw_size" in art and not _count_value(art["raw_size"]):
            problems.append("artifact %r has a bad raw_size" % name)
        if not (isinstance(art["sha256"], str) and re.fullmatch(r"[0-9a-f]{64}", art["sha256"])):
            problems.append("artifact %r has a bad sha256" % name)
    if "filestore" in artifacts and "filelist" in artifacts:
        problems.append("it lists both a filestore archive and a file list (a backup writes one or the other)")
    problems += _field_problems(manifest)
    filestore = manifest.get("filestore")
    if filestore is not None:
        if not isinstance(filestore, dict):
            problems.append("filestore is not an object")
        else:
            problems += [
                "filestore %s is not a count" % key
                for key in ("files", "bytes")
                if key in filestore and not _count_value(filestore[key])
            ]
    return problems


def _is_text(value):
    return isinstance(value, str)


def _database_ok(value):
    if not isinstance(value, dict):
        return False
    if any(value.get(key) is not None and not _is_text(value[key]) for key in ("encoding", "collate", "ctype")):
        return False
    counts = value.get("row_counts")
    return counts is None or (
        isinstance(counts, dict) and all(_is_text(k) and _count_value(x) for k, x in counts.items())
    )


# The fields besides the artifacts that the engine and Odoo read from a manifest, and the shape each must have:
# a hostile manifest gets a sentence here, never a TypeError where it is used.
FIELD_SHAPES = (
    ("db_name", "a name", _is_text),
    ("created_at", "a time", _is_text),
    ("finished_at", "a time", _is_text),
    ("version", "a version", lambda v: v is None or _is_text(v)),
    ("major_version", "a version", lambda v: v is None or _is_text(v)),
    (
        "modules",
        "an object of module names and versions",
        lambda v: isinstance(v, dict) and all(_is_text(k) and (x is None or _is_text(x)) for k, x in v.items()),
    ),
    ("warnings", "a list of sentences", lambda v: isinstance(v, list) and all(_is_text(x) for x in v)),
    ("database", "an object of its encoding, collation and row counts", _database_ok),
    ("source", "an object", lambda v: isinstance(v, dict)),
)


def _field_problems(manifest):
    return [
        "%s is not %s" % (key, what)
        for key, what, ok in FIELD_SHAPES
        if key in manifest and manifest[key] is not None and not ok(manifest[key])
    ]


def _count_value(value):
    """A size or count as the engine writes it: a whole number, not negative (not a boolean)."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


NAME_LISTS = ("missing", "vanished", "unreadable", "skipped_links")
# A names artifact holds lists of relative paths: far below this unless something is wrong with it.
MAX_NAMES_BYTES = 64 * 1024 * 1024


def filestore_names(names, sealed):
    """The manifest's filestore evidence by name: counts always, the names themselves only when not ``sealed``."""
    section = {}
    for key in NAME_LISTS:
        section[key] = [] if sealed else list(names.get(key) or [])
        section["%s_count" % key] = len(names.get(key) or [])
    return section


def parse_names(data, where):
    """The lists of a names artifact, validated (a hostile one gets a VerifyError, not a TypeError)."""
    try:
        names = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise VerifyError("%s is not valid JSON: %s" % (where, exc)) from exc
    if not isinstance(names, dict) or not all(
        isinstance(names.get(key, []), list) and all(isinstance(item, str) for item in names.get(key, []))
        for key in NAME_LISTS
    ):
        raise VerifyError("%s is not a list of filestore names" % where)
    return {key: names.get(key, []) for key in NAME_LISTS}


def summary(manifest, names=None):
    """The figures an administrator looks at, for job records and reports.

    ``names``: the filestore's evidence by name when the manifest keeps it sealed (the run that wrote it).
    """
    database = manifest.get("database") or {}
    filestore = dict(manifest.get("filestore") or {})
    if names is not None:
        filestore["missing"] = names.get("missing") or []
    return {
        "backup_id": manifest.get("backup_id"),
        "db_name": manifest.get("db_name"),
        "created_at": manifest.get("created_at"),
        "version": manifest.get("version"),
        "module_count": len(manifest.get("modules") or {}),
        "row_counts": database.get("row_counts") or {},
        "filestore_files": filestore.get("files", 0),
        "filestore_bytes": filestore.get("bytes", 0),
        "missing_files": filestore.get("missing") or [],
        "artifacts": {
            name: {"file": art["file"], "size": art["size"], "sha256": art["sha256"]}
            for name, art in (manifest.get("artifacts") or {}).items()
        },
    }
