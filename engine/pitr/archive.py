"""The WAL archive and base backups of one PostgreSQL server at a destination.

Layout, under the destination (a folder name no database can have, so the catalog never lists it)::

    .pitr/<system id>/wal/<segment>.zst[.age]            a completed WAL segment, as stored
    .pitr/<system id>/wal/<segment>.json                 its signed entry (written after the segment)
    .pitr/<system id>/wal/<segment>.partial.zst[.age]    the newest segment so far, replaced as it grows
    .pitr/<system id>/base/<backup id>/base.tar.zst[.age], backup_manifest.zst[.age], base.json

Every entry and every base backup's ``base.json`` carries an Ed25519 signature of its own content: a restore
reads nothing whose entry does not verify with the server's public key, and checks the bytes it reads against
the entry's SHA-256s (stored and original). The system id (pg_control's) keeps two servers apart; the signed
entries name it too, so a segment moved from another server's folder is refused.
"""

import base64
import contextlib
import hashlib
import json
import os

from .. import ENGINE_VERSION
from ..core import manifest as mf
from ..core.errors import BackupError, VerifyError
from ..io import crypto
from ..io.stream import CHUNK, ArtifactReader, ArtifactWriter, FanOut
from . import walnames

ROOT = ".pitr"
FORMAT = 1
ENTRY_SUFFIX = ".json"
PARTIAL = ".partial"


def server_prefix(system_id):
    return "%s/%s" % (ROOT, system_id)


def wal_prefix(system_id):
    return "%s/wal" % server_prefix(system_id)


def base_prefix(system_id, backup_id=None):
    prefix = "%s/base" % server_prefix(system_id)
    return "%s/%s" % (prefix, backup_id) if backup_id else prefix


def stored_file(name, compression, encrypted):
    return name + mf.COMPRESSION_SUFFIX[compression] + (".age" if encrypted else "")


# ----------------------------------------------------------------- signed documents


def signed_bytes(doc, signing_key):
    """``doc`` as stored: its canonical JSON under "doc", the Ed25519 signature of exactly those bytes beside it."""
    body = mf.dumps(doc)
    signature = crypto.sign(body, signing_key).decode("ascii").strip()
    return json.dumps({"doc": base64.b64encode(body).decode("ascii"), "signature": signature}, indent=1).encode()


def open_signed(data, public_keys, where):
    """The document of ``signed_bytes`` output once its signature verifies with one of ``public_keys``."""
    try:
        wrapper = json.loads(data.decode("utf-8"))
        body = base64.b64decode(wrapper["doc"], validate=True)
        signature = wrapper["signature"]
    except (UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise VerifyError("%s is not a signed entry of this engine." % where) from exc
    try:
        if not isinstance(signature, str):
            raise VerifyError("its signature is not text")
        crypto.check_signature(body, signature, public_keys)
    except VerifyError as exc:
        raise VerifyError("%s: %s" % (where, str(exc).replace("The manifest's signature", "its signature"))) from exc
    try:
        doc = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise VerifyError("%s is not valid JSON." % where) from exc
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise VerifyError("%s is not in a format this engine reads." % where)
    return doc


# ----------------------------------------------------------------- writing


class Stored:
    """What ``store_stream`` wrote: the stored object's description (for ArtifactReader) and the original's
    SHA-256; ``failures``: {destination: error} of those it could not be written to."""

    def __init__(self, art, raw_sha256, failures):
        self.art = art
        self.raw_sha256 = raw_sha256
        self.failures = failures


class StoreSink:
    """A file-like that compresses, encrypts and checksums what is written once and writes it to every storage
    of ``storages`` ({destination name: storage}) under ``key_of(stored file name)``; ``result()`` once it is
    closed. A destination that fails is left out (named in ``failures``); a BackupError when none is left."""

    def __init__(self, storages, key_of, name, recipients, level=3, threads=0, compression="zstd"):
        encrypted = bool(recipients)
        self.file = stored_file(name, compression, encrypted)
        self.recipients = list(recipients or [])
        self.compression = compression
        writers, names, self.failures = [], [], {}
        for dest, storage in storages.items():
            try:
                writers.append(storage.open_writer(key_of(self.file)))
                names.append(dest)
            except Exception as exc:
                self.failures[dest] = str(exc)
        if not writers:
            raise BackupError(
                "No destination could be written: %s" % "; ".join("%s: %s" % i for i in self.failures.items())
            )
        self.fanout = FanOut(writers, names)
        self.sink = ArtifactWriter(self.fanout, compression, level, threads, self.recipients or None)
        self.raw = hashlib.sha256()

    def write(self, data):
        self.raw.update(data)
        return self.sink.write(data)

    def flush(self):
        pass

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.sink.close()
            self.fanout.commit()
        else:
            self.sink.abort()
            self.fanout.abort()

    def result(self):
        self.failures.update(self.fanout.failures)
        art = {
            "file": self.file,
            "size": self.sink.size,
            "sha256": self.sink.sha256,
            "raw_size": self.sink.raw_size,
            "compression": self.compression,
            "encryption": {
                "format": "age",
                "recipients": [crypto.recipient_fingerprint(r) for r in self.recipients],
            }
            if self.recipients
            else None,
        }
        return Stored(art, self.raw.hexdigest(), self.failures)


def store_stream(storages, key_of, name, source, recipients, level=3, threads=0, compression="zstd"):
    """``source`` (a file object) read to its end into a StoreSink; its Stored result."""
    with StoreSink(storages, key_of, name, recipients, level, threads, compression) as sink:
        while True:
            chunk = source.read(CHUNK)
            if not chunk:
                break
            sink.write(chunk)
    return sink.result()


def write_small(storages, key, data):
    """``data`` to every storage of ``storages`` not already failed; {destination: error} of those that failed."""
    failures = {}
    for dest, storage in storages.items():
        try:
            with storage.open_writer(key) as writer:
                writer.write(data)
        except Exception as exc:
            failures[dest] = str(exc)
    return failures


def wal_entry(system_id, name, stored, received_at, segment_size, partial=False, complete_until=None):
    """A WAL file's entry. ``complete_until``: the newest moment (the server's clock) before which the server had
    written nothing this file and the ones before it do not hold (None: not known, the receiver was catching
    up)."""
    return {
        "complete_until": complete_until,
        "format": FORMAT,
        "engine": ENGINE_VERSION,
        "kind": "wal",
        "system_id": str(system_id),
        "name": name,
        "partial": bool(partial),
        "segment_size": segment_size,
        "received_at": received_at,
        "raw_sha256": stored.raw_sha256,
        "stored": stored.art,
    }


# ----------------------------------------------------------------- reading


class Archive:
    """One destination's view of a server's WAL archive and base backups."""

    def __init__(self, storage, system_id):
        self.storage = storage
        self.system_id = str(system_id)

    def describe(self):
        return self.storage.describe(server_prefix(self.system_id))

    def wal_names(self):
        """{name: has a partial only} of the WAL files whose signed entry is stored (names, not yet verified)."""
        names = {}
        for item in self.storage.list_dir(wal_prefix(self.system_id)):
            if not item.endswith(ENTRY_SUFFIX):
                continue
            stem = item[: -len(ENTRY_SUFFIX)]
            if stem.endswith(PARTIAL):
                stem = stem[: -len(PARTIAL)]
                if walnames.SEGMENT_RE.fullmatch(stem):
                    names.setdefault(stem, True)
            elif walnames.is_wal_file(stem):
                names[stem] = False
        return names

    def entry(self, name, public_keys, partial=False):
        """The verified entry of WAL file ``name`` (its partial one with ``partial``)."""
        file = name + (PARTIAL if partial else "") + ENTRY_SUFFIX
        key = "%s/%s" % (wal_prefix(self.system_id), file)
        try:
            data = self.storage.read_bytes(key)
        except FileNotFoundError as exc:
            raise VerifyError("WAL file %s is not in the archive at %s." % (name, self.describe())) from exc
        doc = open_signed(data, public_keys, "The archive's entry %s" % file)
        if doc.get("kind") != "wal" or doc.get("name") != name or bool(doc.get("partial")) != partial:
            raise VerifyError("The archive's entry %s describes another file (%s)." % (file, doc.get("name")))
        if doc.get("system_id") != self.system_id:
            raise VerifyError(
                "The archive's entry %s belongs to another server (system id %s, not %s)."
                % (file, doc.get("system_id"), self.system_id)
            )
        return doc

    def fetch_wal(self, name, out_path, identities, public_keys, partial=False):
        """Write WAL file ``name`` to ``out_path`` once its entry verifies and every byte matches it; the entry.
        Nothing is left at ``out_path`` when a check fails."""
        doc = self.entry(name, public_keys, partial)
        art = doc["stored"]
        key = "%s/%s" % (wal_prefix(self.system_id), art["file"])
        raw = hashlib.sha256()
        try:
            with ArtifactReader(self.storage, key, art, identities) as reader, open(out_path, "wb") as out:
                while True:
                    chunk = reader.read(CHUNK)
                    if not chunk:
                        break
                    raw.update(chunk)
                    out.write(chunk)
                reader.finish()
            if raw.hexdigest() != doc["raw_sha256"]:
                raise VerifyError("WAL file %s does not match its signed entry: it was changed." % name)
        except FileNotFoundError as exc:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(out_path)
            raise VerifyError("WAL file %s has an entry but no stored bytes at %s." % (name, self.describe())) from exc
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(out_path)
            raise
        return doc

    def base_ids(self):
        return [b for b in self.storage.list_dir(base_prefix(self.system_id)) if mf.is_backup_id(b)]

    def base(self, backup_id, public_keys):
        """The verified base.json of base backup ``backup_id``, or a VerifyError."""
        key = "%s/base.json" % base_prefix(self.system_id, backup_id)
        try:
            data = self.storage.read_bytes(key)
        except FileNotFoundError as exc:
            raise VerifyError("Base backup %s is not complete (no base.json)." % backup_id) from exc
        doc = open_signed(data, public_keys, "Base backup %s's base.json" % backup_id)
        if doc.get("kind") != "base" or doc.get("backup_id") != backup_id or doc.get("system_id") != self.system_id:
            raise VerifyError("Base backup %s's base.json describes another backup." % backup_id)
        return doc

    def bases(self, public_keys):
        """[(backup id, doc or None, problem or None)] of every base backup, oldest first."""
        found = []
        for backup_id in sorted(self.base_ids()):
            try:
                found.append((backup_id, self.base(backup_id, public_keys), None))
            except VerifyError as exc:
                found.append((backup_id, None, str(exc)))
        return found

    def open_base_artifact(self, doc, kind, identities):
        art = doc["artifacts"][kind]
        return ArtifactReader(
            self.storage, "%s/%s" % (base_prefix(self.system_id, doc["backup_id"]), art["file"]), art, identities
        )


def servers(storage):
    """The system ids of the servers archived at a destination."""
    return [name for name in storage.list_dir(ROOT) if name.isdigit()]
