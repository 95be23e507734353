"""A content-addressed store of filestore files, kept per database, destination and set of recipients.

Odoo writes each attachment once, named by the SHA-1 of its content
(``<2 hex>/<sha1>``), and never changes it. A backup therefore stores only
the files the destination's store does not hold yet, in packs of a few tens
of MiB (few large objects for S3, not millions of small ones)::

    <db>/.store-<store id>/config.json         what the store is (plain JSON)
    <db>/.store-<store id>/packs/<xx>/<name>   blobs back to back
    <db>/.store-<store id>/index/<name>.json   where each blob is (plain JSON)

A **blob** is one file, compressed with zstd (one frame) and, when the store
is encrypted, encrypted with age to the store's recipients (one age stream
per blob, so one blob can be read alone). An **index** object, written after
its packs are complete, lists for each new blob its keyed id, pack, offset,
stored length, the SHA-256 of the stored bytes and the file's size. Every
set that uses the store writes ``store.json`` in its own folder: the store
id and the packs it references; the set's encrypted file list (an ordinary
artifact) names each file with its keyed blob id.

Names never reveal Odoo's SHA-1s: the store id and blob ids are HMAC-SHA256
of the server's store key (a file odoo.conf names), and pack names are
random. The server cannot decrypt its own file lists (it holds no age
identity), so the plain index objects and ``store.json`` are what it needs
for deduplication and garbage collection; they hold keyed ids, offsets and
sizes only.

Restoring needs no store key: the file list gives each path's keyed id, the
index its bytes; ``age -d`` and ``zstd -d`` of a blob's byte range give the
file back (see the README's format section).
"""

import contextlib
import hashlib
import hmac
import io
import json
import os
import re
import secrets
import sqlite3
import tempfile
import time

import zstandard

from ..core.errors import BackupError, PreflightError, VerifyError
from ..io import crypto
from . import filestore
from .filestore import ODOO_NAME

STORE_FORMAT = 1
PACK_TARGET = 32 << 20
SMALL_BLOB = 4 << 20  # blobs up to this size are compressed and encrypted in memory
CHUNK = 1 << 20
STORE_SET_NAME = "store.json"
# An index object lists at most this many blobs (about 0.4 MiB of JSON): a reader parses one object at a time,
# about 0.5 KB of memory per blob, so a restore's memory does not grow with the number of files. No more than
# INDEX_MAX_BYTES of an object is read (a larger one is refused): the most a destination's object can cost is
# about 11 MB, and the objects of stores written before (up to 20,000 blobs, about 3.6 MiB) still fit.
INDEX_BLOBS = 2000
INDEX_MAX_BYTES = 4 << 20
STORE_DIR = re.compile(r"^\.store-[0-9a-f]{16}$")


def load_store_key(path, create=False):
    """The store key (32 bytes) from the file odoo.conf names; made (mode 0600) when ``create`` and absent."""
    if not path:
        raise PreflightError(
            "An incremental filestore needs a store key: set store_key_file in the [spp_backup] section of odoo.conf "
            "(the server makes the file on the first backup)."
        )
    path = os.path.abspath(os.path.expanduser(path))
    if create and not os.path.lexists(path):
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        with contextlib.suppress(FileExistsError):
            crypto.write_secret_file(path, secrets.token_hex(32) + "\n")
    try:
        with open(path, encoding="ascii") as handle:
            text = handle.read().strip()
        key = bytes.fromhex(text)
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise PreflightError("Cannot read the store key file %s: it must hold 64 hex digits." % path) from exc
    if len(key) != 32:
        raise PreflightError("The store key file %s must hold 64 hex digits (32 bytes)." % path)
    return key


def _keyed(key, *parts):
    message = b"\0".join(part.encode("utf-8") if isinstance(part, str) else part for part in parts)
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def store_id(key, database_uuid, recipients):
    """The store of one database of one server for one set of recipients (fingerprints, any order)."""
    return _keyed(key, b"store", database_uuid or "", ",".join(sorted(recipients or [])) or "plain")[:16]


def lock_key(sid):
    """The PostgreSQL advisory lock of a store (on its database): writers hold it shared while they add to the
    store, the collector exclusively while it removes packs."""
    return (0x5350 << 48) | int(sid[:12], 16)


def blob_id(key, rel, size, mtime_ns=None, named=True):
    """The keyed id of a filestore file.

    A file named by its SHA-1, as Odoo names them, is the same file whenever its name and size are: it is never
    read again once stored. Any other file, and one whose content turned out not to match its name
    (``named=False``), also counts its modification time.
    """
    if named and ODOO_NAME.match(rel):
        return _keyed(key, b"blob", rel, str(size))[:32]
    return _keyed(key, b"blob", rel, str(size), str(mtime_ns or 0))[:32]


class PackStore:
    """One store at one destination (``storage``), under ``<db_name>/.store-<id>``."""

    def __init__(self, storage, db_name, sid, recipients=None, encrypted=None):
        self.storage = storage
        self.db_name = db_name
        self.sid = sid
        self.prefix = "%s/.store-%s" % (db_name, sid)
        self.recipients = recipients or []
        self.encrypted = bool(self.recipients) if encrypted is None else encrypted
        self._index = None

    def key(self, *parts):
        return "/".join((self.prefix,) + parts)

    def pack_key(self, name):
        return self.key("packs", name[:2], name)

    # ----------------------------------------------------------- config

    def ensure_config(self, fingerprints):
        """Write the store's config.json on first use; refuse a store made for other recipients."""
        config_key = self.key("config.json")
        if self.storage.exists(config_key):
            config = json.loads(self.storage.read_bytes(config_key))
            if config.get("format") != STORE_FORMAT:
                raise PreflightError("The store %s has format %r, not %d." % (self.prefix, config.get("format"), 1))
            if sorted(config.get("recipients") or []) != sorted(fingerprints or []):
                raise PreflightError("The store %s was made for other age recipients." % self.prefix)
            return config
        config = {
            "format": STORE_FORMAT,
            "store_id": self.sid,
            "encrypted": self.encrypted,
            "recipients": sorted(fingerprints or []),
            "compression": "zstd",
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        with self.storage.open_writer(config_key) as writer:
            writer.write(json.dumps(config, indent=1, sort_keys=True).encode() + b"\n")
        return config

    # ------------------------------------------------------------ index

    def index_names(self):
        return sorted(name[:-5] for name in self.storage.list_dir(self.key("index")) if name.endswith(".json"))

    def read_index(self, name):
        key = self.key("index", name + ".json")
        chunks, length = [], 0
        with self.storage.open_reader(key) as reader:
            while length <= INDEX_MAX_BYTES:
                data = reader.read(min(CHUNK, INDEX_MAX_BYTES + 1 - length))
                if not data:
                    break
                chunks.append(data)
                length += len(data)
        if length > INDEX_MAX_BYTES:
            raise VerifyError(
                "The store's index %s is over %d bytes, more than an index object may be." % (name, INDEX_MAX_BYTES)
            )
        try:
            return json.loads(b"".join(chunks))
        except ValueError as exc:
            raise VerifyError("The store's index %s is damaged: it is not JSON." % name) from exc

    def index(self):
        """The store's blobs in an on-disk table (memory stays flat however many there are)."""
        if self._index is None:
            self._index = BlobIndex()
            for name in self.index_names():
                self._index.add_index(name, self.read_index(name))
        return self._index

    def close(self):
        if self._index is not None:
            self._index.close()
            self._index = None

    # ------------------------------------------------------------ reading

    def decode(self, stored, entry, identities, what):
        """A small blob's stored bytes back to the file's bytes, checked against the index."""
        if hashlib.sha256(stored).hexdigest() != entry["sha256"]:
            raise VerifyError("a blob in pack %s is damaged (its SHA-256 differs from the index)." % what)
        data = stored
        if self.encrypted:
            if not identities:
                raise BackupError("The filestore store is encrypted: give the age identity file.")
            data = crypto.decrypt_bytes(stored, identities, "a blob in pack %s" % what)
        try:
            data = zstandard.ZstdDecompressor().decompress(data, max_output_size=max(1, entry["size"]))
        except zstandard.ZstdError as exc:
            raise VerifyError("a blob in pack %s does not decompress (%s)." % (what, exc)) from exc
        if len(data) != entry["size"]:
            raise VerifyError("a blob in pack %s has %d bytes, the index says %d." % (what, len(data), entry["size"]))
        return data

    def extract_pack(self, pack, entries, identities, open_target):
        """Write each of ``entries`` (of one pack) to ``open_target(entry)``, reading the pack once in offset order.

        Small blobs are decoded in memory, large ones streamed, so memory stays flat. Each blob's stored
        SHA-256 and size are checked; a damaged blob raises VerifyError naming the pack (the caller writes
        into a staging folder, so nothing half-restored is used).
        """
        entries = sorted(entries, key=lambda e: e["offset"])
        try:
            reader = self.storage.open_reader(self.pack_key(pack))
        except FileNotFoundError as exc:
            raise VerifyError("pack %s is missing from the store." % pack) from exc
        with reader:
            position = 0
            for entry in entries:
                _skip(reader, entry["offset"] - position, pack)
                position = entry["offset"] + entry["length"]
                with open_target(entry) as target:
                    # In memory only when both the stored and the restored bytes are small: a compressible
                    # file of any size, or an index that lies about sizes, is streamed with bounded memory.
                    if entry["length"] <= SMALL_BLOB and entry["size"] <= SMALL_BLOB:
                        target.write(self.decode(_read_exact(reader, entry["length"], pack), entry, identities, pack))
                    else:
                        self._stream_out(reader, entry, identities, pack, target)

    def _stream_out(self, reader, entry, identities, pack, target):
        hashing = _Bounded(reader, entry["length"], pack)
        source = hashing
        decryptor = None
        if self.encrypted:
            if not identities:
                raise BackupError("The filestore store is encrypted: give the age identity file.")
            decryptor = source = crypto.AgeReader(hashing, identities, what="a blob in pack %s" % pack)
        written = 0
        try:
            stream = zstandard.ZstdDecompressor().stream_reader(source, read_size=CHUNK)
            for data in iter(lambda: stream.read(CHUNK), b""):
                written += len(data)
                if written > entry["size"]:
                    raise VerifyError("a blob in pack %s holds more than the index says: refused." % pack)
                target.write(data)
            # Read the age file to its end, so its last chunk is authenticated too; nothing may follow the frame.
            if decryptor is not None and decryptor.read(CHUNK):
                raise VerifyError("a blob in pack %s holds more than its zstd frame: refused." % pack)
            while hashing.read(CHUNK):
                pass
        except zstandard.ZstdError as exc:
            raise VerifyError("a blob in pack %s does not decompress (%s)." % (pack, exc)) from exc
        finally:
            if decryptor is not None:
                decryptor.close()
        if hashing.sha256.hexdigest() != entry["sha256"] or written != entry["size"]:
            raise VerifyError("a blob in pack %s is damaged (its SHA-256 or size differs from the index)." % pack)

    def read_files(self, entries, identities=None):
        """``{blob id: bytes}`` of a few blobs (small files), for checks and tests."""
        by_pack, out = {}, {}
        for entry in entries:
            by_pack.setdefault(entry["pack"], []).append(entry)

        class Target(io.BytesIO):
            def __init__(self, entry):
                super().__init__()
                self.entry = entry

            def close(self):
                out[self.entry["id"]] = self.getvalue()
                super().close()

        for pack, items in by_pack.items():
            self.extract_pack(pack, items, identities, Target)
        return out

    # ------------------------------------------------------------ checking

    def check(self, packs, deep=False, identities=None):
        """Problems of the packs a set references: each present, of its size, and (deep) every blob intact."""
        problems = []
        index = self.index()
        for pack in sorted(packs):
            info = index.pack(pack)
            if info is None:
                problems.append("pack %s is in no index of the store" % pack)
                continue
            key = self.pack_key(pack)
            if not self.storage.exists(key):
                problems.append("pack %s is missing from the store" % pack)
                continue
            size = self.storage.size(key)
            if size != info["size"]:
                problems.append(
                    "pack %s has %d bytes, the index says %d (truncated or changed)" % (pack, size, info["size"])
                )
                continue
            if deep:
                digest = hashlib.sha256()
                with self.storage.open_reader(key) as reader:
                    for data in iter(lambda reader=reader: reader.read(CHUNK), b""):
                        digest.update(data)
                if digest.hexdigest() != info["sha256"]:
                    problems.append("pack %s is damaged (its SHA-256 differs from the index)" % pack)
                    continue
                if identities or not self.encrypted:
                    try:
                        self.extract_pack(pack, index.blobs_in(pack), identities, lambda _entry: _Discard())
                    except BackupError as exc:
                        problems.append(str(exc))
        return problems

    # ------------------------------------------------------------ garbage

    def collect(self, referenced, locked_until=None, dry_run=False):
        """Delete packs no set references, then index entries that point at them; a report dict.

        ``referenced``: every pack named by the ``store.json`` of a set still at the destination. The caller
        holds the store's lock, so no backup writes to the store meanwhile. Packs under Object Lock stay.
        """
        index = self.index()
        stored = {name for name in self._stored_packs()}
        indexed = set(index.pack_names())
        unreferenced = sorted((stored | indexed) - set(referenced))
        deleted, kept_locked, freed = [], [], 0
        now = time.time()
        for pack in unreferenced:
            key = self.pack_key(pack)
            until = locked_until(key) if locked_until else None
            if until is not None and hasattr(until, "timestamp"):
                until = until.timestamp()
            if until and until > now:
                kept_locked.append(pack)
                continue
            size = self.storage.size(key) if pack in stored else 0
            if not dry_run and pack in stored:
                self.storage.delete(key)
            deleted.append(pack)
            freed += size
        if deleted and not dry_run:
            self._rewrite_index(set(deleted))
        return {"deleted": deleted, "kept_locked": kept_locked, "freed_bytes": freed}

    def _stored_packs(self):
        for sub in self.storage.list_dir(self.key("packs")):
            for name in self.storage.list_dir(self.key("packs", sub)):
                if re.match(r"^[0-9a-f]{32}$", name):
                    yield name

    def _rewrite_index(self, gone):
        """One index object with what is left, written before the old ones are removed."""
        old = self.index_names()
        stamp = "%s-%s" % (time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()), secrets.token_hex(4))
        batch = IndexBatch(self, stamp)
        for name in old:
            data = self.read_index(name)
            for blob in data["blobs"]:
                if blob[1] not in gone:
                    batch.add(blob, data["packs"][blob[1]])
        batch.flush()
        for old_name in old:
            self.storage.delete(self.key("index", old_name + ".json"))
        self.close()


class IndexBatch:
    """Writes index objects of at most INDEX_BLOBS blobs, each naming only the packs its blobs are in."""

    def __init__(self, store, stamp, on_written=None):
        self.store, self.stamp, self.on_written = store, stamp, on_written
        self.blobs, self.packs, self.count = [], {}, 0

    def add(self, blob, pack_info):
        self.blobs.append(blob)
        self.packs[blob[1]] = pack_info
        if len(self.blobs) >= INDEX_BLOBS:
            self.flush()

    def flush(self):
        if not self.blobs:
            return
        self.count += 1
        name = "%s-%04d" % (self.stamp, self.count)
        data = {"format": STORE_FORMAT, "packs": self.packs, "blobs": self.blobs}
        with self.store.storage.open_writer(self.store.key("index", name + ".json")) as writer:
            writer.write(json.dumps(data, separators=(",", ":")).encode())
        if self.on_written is not None:
            self.on_written(name, data)
        self.blobs, self.packs = [], {}


class BlobIndex:
    """keyed blob id -> (pack, offset, length, sha256, size), in a temporary SQLite file."""

    def __init__(self):
        handle, self.path = tempfile.mkstemp(prefix="spp_backup_index_", suffix=".sqlite")
        os.close(handle)
        self.db = sqlite3.connect(self.path)
        self.db.execute("PRAGMA journal_mode = OFF")
        self.db.execute("PRAGMA synchronous = OFF")
        # Bounded page caches (main and the temporary tables of a restore): memory stays the same whatever the
        # number of files; the pages beyond are read back from the file, which the OS caches.
        self.db.execute("PRAGMA cache_size = -1024")
        self.db.execute("PRAGMA temp.cache_size = -1024")
        # A blob may be placed more than once: stored again after its pack was lost, or (a hostile destination)
        # placed elsewhere by a planted index object. Deduplication trusts a blob placed once only; a set reads
        # its blobs from the packs its store.json names, and checks every file's content.
        self.db.execute(
            "CREATE TABLE blob (id TEXT, pack TEXT, offset INTEGER, length INTEGER, sha256 TEXT, size INTEGER, "
            "UNIQUE (id, pack, offset, length, sha256, size))"
        )
        self.db.execute("CREATE INDEX blob_id ON blob (id)")
        self.db.execute("CREATE INDEX blob_pack ON blob (pack)")
        self.db.execute("CREATE TABLE pack (name TEXT PRIMARY KEY, size INTEGER, sha256 TEXT)")

    def add_index(self, name, data):
        """Load one index object, refusing one that is not what a backup writes (it comes from storage)."""
        _check_index(name, data)
        self.db.executemany(
            "INSERT OR REPLACE INTO pack VALUES (?, ?, ?)",
            [(name, info["size"], info["sha256"]) for name, info in data.get("packs", {}).items()],
        )
        self.db.executemany("INSERT OR IGNORE INTO blob VALUES (?, ?, ?, ?, ?, ?)", data.get("blobs", []))

    def get(self, bid, present=None):
        """Where a blob is, for deduplication: its one placement in a pack that exists (``present(pack)``);
        None when unknown, or when it is placed twice in existing packs (not what a backup writes)."""
        rows = self.db.execute("SELECT pack, offset, length, sha256, size FROM blob WHERE id = ?", (bid,)).fetchall()
        if present is not None:
            rows = [row for row in rows if present(row[0])]
        return _entry(bid, rows[0]) if len(rows) == 1 else None

    def in_packs(self, bid, packs):
        """Where a set finds a blob: its first placement in one of the set's packs (then checked by content)."""
        for row in self.db.execute(
            "SELECT pack, offset, length, sha256, size FROM blob WHERE id = ? ORDER BY rowid", (bid,)
        ):
            if row[0] in packs:
                return _entry(bid, row)
        return None

    def pack(self, name):
        row = self.db.execute("SELECT size, sha256 FROM pack WHERE name = ?", (name,)).fetchone()
        return {"size": row[0], "sha256": row[1]} if row else None

    def pack_names(self):
        return [row[0] for row in self.db.execute("SELECT name FROM pack")]

    def blobs_in(self, pack):
        rows = self.db.execute("SELECT id, pack, offset, length, sha256, size FROM blob WHERE pack = ?", (pack,))
        return [_entry(row[0], row[1:]) for row in rows]

    def close(self):
        self.db.close()
        with contextlib.suppress(OSError):
            os.unlink(self.path)


PACK_NAME = re.compile(r"^[0-9a-f]{32}$")
SHA256 = re.compile(r"^[0-9a-f]{64}$")


def _check_index(name, data):
    def fail(what):
        raise VerifyError("The store's index %s is damaged: %s." % (name, what))

    if not isinstance(data, dict) or not isinstance(data.get("packs", {}), dict):
        fail("not an index object")
    for pack, info in data.get("packs", {}).items():
        if not PACK_NAME.match(str(pack)) or not isinstance(info, dict):
            fail("a pack is not named as packs are")
        if not isinstance(info.get("size"), int) or info["size"] < 0 or not SHA256.match(str(info.get("sha256"))):
            fail("pack %s has no valid size and SHA-256" % pack)
    for blob in data.get("blobs", []):
        if not (isinstance(blob, list) and len(blob) == 6):
            fail("a blob entry is not [id, pack, offset, length, sha256, size]")
        bid, pack, offset, length, sha256, size = blob
        if not (isinstance(bid, str) and PACK_NAME.match(str(pack)) and SHA256.match(str(sha256))):
            fail("a blob entry names no valid pack or SHA-256")
        if not all(isinstance(v, int) and v >= 0 for v in (offset, length, size)):
            fail("a blob entry has a negative or missing offset, length or size")


def _entry(bid, row):
    return {"id": bid, "pack": row[0], "offset": row[1], "length": row[2], "sha256": row[3], "size": row[4]}


class _Discard:
    def write(self, data):
        return len(data)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


class _Bounded:
    """The next ``length`` bytes of a reader, hashed as they pass."""

    def __init__(self, reader, length, what):
        self.reader, self.left, self.what = reader, length, what
        self.sha256 = hashlib.sha256()

    def read(self, size=-1):
        if self.left <= 0:
            return b""
        size = self.left if size is None or size < 0 else min(size, self.left)
        data = self.reader.read(size)
        if not data:
            raise VerifyError("pack %s is truncated." % self.what)
        self.left -= len(data)
        self.sha256.update(data)
        return data

    def readable(self):
        return True


def _skip(reader, count, what):
    while count > 0:
        data = reader.read(min(CHUNK, count))
        if not data:
            raise VerifyError("pack %s is truncated." % what)
        count -= len(data)


def _read_exact(reader, length, what):
    parts, left = [], length
    while left > 0:
        data = reader.read(min(CHUNK, left))
        if not data:
            raise VerifyError("pack %s is truncated." % what)
        parts.append(data)
        left -= len(data)
    return b"".join(parts)


class StoreWriter:
    """Adds files to a store during one backup: packs new blobs, remembers which packs the set uses."""

    def __init__(self, store, store_key, recipients, level=3):
        self.store = store
        self.key = store_key
        self.recipients = recipients
        self.compressor = zstandard.ZstdCompressor(level=level, write_checksum=True)
        self.used_packs = set()
        self.new_blobs_count = 0
        self.new_packs = {}
        self.new_bytes = 0
        self.new_files = 0
        self._new_ids = {}
        self._pack = None
        self._present = {}  # pack -> does it exist at the destination (checked once per pack)
        self._pending = []  # new blobs of packs not yet complete
        self._batch = None
        # Files named like Odoo's whose content does not match the name (damaged on disk): stored as found,
        # under an id of their own, so that the restore gives back what the filestore held.
        self.misnamed = set()
        self.start("%s-%s" % (time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()), secrets.token_hex(4)))

    def add(self, rel, path, size, mtime_ns, named=True):
        """Store the file at ``path`` unless the store has it; its keyed blob id.

        A new file named like Odoo's is checked against its name as it is read; when it does not match, it
        is stored under the id of an unnamed file and ``rel`` joins ``misnamed`` (the caller then adds it
        again with ``named=False`` everywhere, and lists its SHA-256).
        """
        bid = blob_id(self.key, rel, size, mtime_ns, named)
        checked = named and ODOO_NAME.match(rel)
        misnamed_bid = blob_id(self.key, rel, size, mtime_ns, named=False) if checked else None
        pack = self._known(bid)
        if pack is None and checked:
            # Found damaged on an earlier night and unchanged since: the copy kept then, not read again.
            pack = self._known(misnamed_bid)
            if pack is not None:
                self.misnamed.add(rel)
                bid = misnamed_bid
        if pack is not None:
            self.used_packs.add(pack)
            return bid
        stored_as = self._append(bid, path, size, rel.rsplit("/", 1)[1] if checked else None, misnamed_bid)
        if stored_as != bid:
            self.misnamed.add(rel)
        return stored_as

    def _known(self, bid):
        """The pack that holds blob ``bid`` already (indexed in a pack that exists, or new in this backup)."""
        # A placement in a pack that is gone does not count: the file is stored again.
        known = self.store.index().get(bid, self._pack_present)
        if known is not None:
            return known["pack"]
        return self._new_ids.get(bid)

    def _pack_present(self, pack):
        if pack not in self._present:
            self._present[pack] = self.store.storage.exists(self.store.pack_key(pack))
        return self._present[pack]

    def _encode(self, path, sha1=None):
        with open(path, "rb") as handle:
            data = handle.read()
        if sha1 is not None:
            sha1.update(data)
        compressed = self.compressor.compress(data)
        if self.recipients:
            compressed = crypto._pyrage().encrypt(compressed, self.recipients)
        return compressed, len(data)

    def _append(self, bid, path, size, expected_sha1=None, misnamed_bid=None):
        """Pack the file; the id it is indexed under: ``misnamed_bid`` when its SHA-1 is not ``expected_sha1``."""
        if self._pack is None:
            self._open_pack()
        name, writer, state = self._pack
        sha1 = hashlib.sha1() if expected_sha1 else None  # noqa: S324 - Odoo's own naming
        if size <= SMALL_BLOB:
            stored, raw = self._encode(path, sha1)
            writer.write(stored)
            sha = hashlib.sha256(stored).hexdigest()
            state["hash"].update(stored)
            length = len(stored)
        else:
            length, sha, raw = self._stream(path, writer, state, sha1)
        if sha1 is not None and sha1.hexdigest() != expected_sha1:
            bid = misnamed_bid
        self._pending.append([bid, name, state["offset"], length, sha, raw])
        self._new_ids[bid] = name
        state["offset"] += length
        self.used_packs.add(name)
        self.new_bytes += length
        self.new_files += 1
        if state["offset"] >= PACK_TARGET:
            self._close_pack()
        return bid

    def _stream(self, path, writer, state, sha1=None):
        """A large file, streamed: zstd (one frame) then age, into the pack."""
        blob_hash = hashlib.sha256()
        counted = {"length": 0}

        class Sink:
            def write(self, data):
                writer.write(data)
                blob_hash.update(data)
                state["hash"].update(data)
                counted["length"] += len(data)
                return len(data)

        sink = Sink()
        encryptor = crypto.AgeWriter(sink, self.recipients) if self.recipients else None
        target = encryptor or sink
        raw = 0
        compressor = self.compressor.compressobj()
        with open(path, "rb") as handle:
            for data in iter(lambda: handle.read(CHUNK), b""):
                raw += len(data)
                if sha1 is not None:
                    sha1.update(data)
                out = compressor.compress(data)
                if out:
                    target.write(out)
        target.write(compressor.flush())
        if encryptor is not None:
            encryptor.close()
        return counted["length"], blob_hash.hexdigest(), raw

    def _open_pack(self):
        name = secrets.token_hex(16)
        writer = self.store.storage.open_writer(self.store.pack_key(name))
        self._pack = (name, writer, {"offset": 0, "hash": hashlib.sha256()})

    def _close_pack(self):
        """Commit the pack, then index its blobs (an index names only complete packs)."""
        name, writer, state = self._pack
        self._pack = None
        writer.commit()
        info = {"size": state["offset"], "sha256": state["hash"].hexdigest()}
        self.new_packs[name] = info
        self._present[name] = True
        for blob in self._pending:
            self._batch.add(blob, info)
        self.new_blobs_count += len(self._pending)
        self._pending = []

    def start(self, stamp):
        """Name this writer's index objects (``<stamp>-<n>``)."""

        def written(name, data):
            self.store.index().add_index(name, data)
            for blob in data["blobs"]:
                self._new_ids.pop(blob[0], None)  # found in the index from now on

        self._batch = IndexBatch(self.store, stamp, written)
        return self

    def finish(self, backup_id):
        """Complete the last pack and write the index of the new blobs; the set's store.json as a dict."""
        if self._pack is not None:
            self._close_pack()
        self._batch.flush()
        return {
            "format": STORE_FORMAT,
            "store": self.store.sid,
            "encrypted": self.store.encrypted,
            "packs": sorted(self.used_packs),
            "new_files": self.new_files,
            "new_bytes": self.new_bytes,
        }

    def abort(self):
        if self._pack is not None:
            _name, writer, _state = self._pack
            self._pack = None
            with contextlib.suppress(Exception):
                writer.abort()


def file_list_line(rel, size, bid, sha256=None):
    """One line of a set's file list (an encrypted artifact, covered by the signed manifest): path, size,
    keyed blob id and, for a file not named by its SHA-1 as Odoo names them, the SHA-256 of its content. A
    restore checks every file against its name or that SHA-256, so bytes swapped in the store (whose index
    anyone who can write the destination can rewrite) are refused."""
    item = {"p": rel, "s": size, "b": bid}
    if sha256:
        item["h"] = sha256
    return json.dumps(item, separators=(",", ":")).encode() + b"\n"


def read_file_list(reader):
    """``(rel, size, blob id)`` from a file list's lines, as ``file_list_line`` wrote them."""
    pending = b""
    while True:
        data = reader.read(CHUNK)
        lines = (pending + data).split(b"\n")
        pending = lines.pop() if data else b""
        for line in lines:
            if not line.strip():
                continue
            try:
                item = json.loads(line)
                rel, size, bid, digest = item["p"], item["s"], item["b"], item.get("h")
            except (ValueError, KeyError, TypeError, AttributeError) as exc:
                raise VerifyError("The filestore's file list is damaged: a line is not an entry.") from exc
            if not (isinstance(rel, str) and isinstance(size, int) and isinstance(bid, str)):
                raise VerifyError("The filestore's file list is damaged: an entry has the wrong types.")
            if digest is not None and not SHA256.match(str(digest)):
                raise VerifyError("The filestore's file list is damaged: an entry's SHA-256 is not one.")
            yield rel, size, bid, digest
        if not data:
            return


def store_of(ref, manifest):
    """The store a backup set's filestore is kept in (at the set's own destination), from its manifest."""
    info = (manifest.get("filestore") or {}).get("store") or {}
    sid = info.get("id") or ""
    if not re.fullmatch(r"[0-9a-f]{16}", sid):
        raise VerifyError("The manifest names no valid filestore store (%r)." % sid[:40])
    return PackStore(ref.storage, ref.db_name, sid, encrypted=bool(info.get("encrypted")))


def read_set_info(ref):
    """The set's store.json: the store and the packs the set references."""
    try:
        data = json.loads(ref.storage.read_bytes(ref.key(STORE_SET_NAME)))
    except BackupError:
        raise
    except Exception as exc:
        raise VerifyError("%s of the set cannot be read: %s" % (STORE_SET_NAME, exc)) from exc
    packs = data.get("packs")
    if not isinstance(packs, list) or not all(isinstance(p, str) and re.fullmatch(r"[0-9a-f]{32}", p) for p in packs):
        raise VerifyError("%s of the set does not list packs by name." % STORE_SET_NAME)
    return data


def extract_store(list_reader, store, identities, target, packs, cancel=None, on_file=None):
    """Restore the files a set's file list names from its store into the new folder ``target``.

    Every path is checked as an archive member is (no absolute path, no '..', no folder leading outside, no
    name twice) before anything is written for it; a blob missing from the store, damaged or truncated
    raises naming it, and the partly written folder is removed. Packs are read once each, in offset order.
    Returns filestore.FilestoreStats.
    """
    stats = filestore.FilestoreStats()
    filestore.new_private_folder(target)
    index = store.index()
    try:
        db = index.db
        db.execute("DROP TABLE IF EXISTS wanted")
        db.execute("DROP TABLE IF EXISTS setpack")
        db.execute("CREATE TEMP TABLE setpack (name TEXT PRIMARY KEY)")
        db.executemany("INSERT OR IGNORE INTO setpack VALUES (?)", [(name,) for name in packs])
        db.execute("CREATE TEMP TABLE wanted (rel TEXT PRIMARY KEY, id TEXT, size INTEGER, h TEXT)")
        for rel, size, bid, digest in read_file_list(list_reader):
            filestore.safe_parts(rel, "file list entry")
            try:
                db.execute("INSERT INTO wanted VALUES (?, ?, ?, ?)", (rel, bid, size, digest))
            except sqlite3.IntegrityError as exc:
                raise filestore.UnsafeArchive("Refused file list entry %r: it appears twice." % rel) from exc
        # Each file's blob: its first placement in one of the set's packs.
        placed = (
            "FROM wanted w LEFT JOIN blob b ON b.rowid = (SELECT min(x.rowid) FROM blob x JOIN setpack s "
            "ON s.name = x.pack WHERE x.id = w.id)"
        )
        missing = db.execute("SELECT w.rel %s WHERE b.id IS NULL ORDER BY w.rel LIMIT 5" % placed).fetchall()
        if missing:
            raise VerifyError(
                "The filestore store lacks the bytes of %s: the store is incomplete (a pack was removed)."
                % ", ".join(row[0] for row in missing)
            )
        wrong = db.execute("SELECT w.rel %s WHERE b.size <> w.size ORDER BY w.rel LIMIT 5" % placed).fetchall()
        if wrong:
            raise VerifyError(
                "The filestore store's index gives other sizes than the backup's file list for %s: the store "
                "was changed." % ", ".join(row[0] for row in wrong)
            )
        rows = db.execute(
            "SELECT w.rel, b.id, b.pack, b.offset, b.length, b.sha256, b.size, w.h %s ORDER BY b.pack, b.offset, "
            "w.rel" % placed
        )
        # A blob named twice (the same content under two names) is written once, then copied; only those
        # blobs' first paths are remembered.
        twice = {row[0] for row in db.execute("SELECT id FROM wanted GROUP BY id HAVING count(*) > 1")}
        copies = []
        current, batch, seen = None, [], {}

        def flush(pack, entries):
            written = {}

            def open_target(entry):
                if cancel is not None and cancel.is_set():
                    raise BackupError("The filestore restore was stopped.")
                path, handle = filestore.open_new_file(target, entry["rel"], "file list entry")
                if entry["id"] in twice:
                    written[entry["id"]] = path
                stats.files += 1
                stats.bytes += entry["size"]
                if on_file is not None:
                    try:
                        on_file(stats)
                    except BaseException:
                        handle.close()
                        raise
                return _CheckedFile(handle, entry["rel"], entry["h"])

            store.extract_pack(pack, entries, identities, open_target)
            seen.update(written)

        for rel, bid, pack, offset, length, sha256, size, digest in rows:
            entry = {"rel": rel, "id": bid, "pack": pack, "offset": offset, "length": length, "sha256": sha256}
            entry.update(size=size, h=digest)
            if pack != current:
                if batch:
                    flush(current, batch)
                current, batch = pack, []
            if any(item["id"] == bid for item in batch[-1:]) or bid in seen:
                copies.append((rel, bid, digest))
                continue
            batch.append(entry)
        if batch:
            flush(current, batch)
        for rel, bid, digest in copies:
            path, handle = filestore.open_new_file(target, rel, "file list entry")
            with _CheckedFile(handle, rel, digest) as checked, open(seen[bid], "rb") as source:
                for data in iter(lambda source=source: source.read(CHUNK), b""):
                    checked.write(data)
            stats.files += 1
        db.execute("DROP TABLE wanted")
        db.execute("DROP TABLE setpack")
    except BaseException:
        import shutil

        shutil.rmtree(target, ignore_errors=True)
        raise
    return stats


class _CheckedFile:
    """A restored file, checked as it is written against what the signed file list says it is: its SHA-1
    name (Odoo's) or the SHA-256 the list gives; on close, a mismatch raises and nothing is swapped in."""

    def __init__(self, handle, rel, sha256=None):
        self.handle, self.rel = handle, rel
        if sha256:
            self.expected, self.digest = sha256, hashlib.sha256()
        elif ODOO_NAME.match(rel):
            self.expected, self.digest = rel.rsplit("/", 1)[1], hashlib.sha1()  # noqa: S324 - Odoo's own naming
        else:
            self.expected, self.digest = None, None

    def write(self, data):
        if self.digest is not None:
            self.digest.update(data)
        return self.handle.write(data)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        self.handle.close()
        if exc_type is None and self.digest is not None and self.digest.hexdigest() != self.expected:
            raise VerifyError(
                "The restored file %s does not match the backup's file list (its content hash differs): the "
                "store was changed." % self.rel
            )
        return False


def _set_references(storage, db_name, name, sid):
    """The packs of store ``sid`` that set folder ``name`` uses; an error when it names the store in its
    manifest but its store.json is gone (its packs cannot be told: collect nothing)."""
    key = "%s/%s/%s" % (db_name, name, STORE_SET_NAME)
    if storage.exists(key):
        info = json.loads(storage.read_bytes(key))
        return set(info.get("packs") or []) if info.get("store") == sid else set()
    manifest_key = "%s/%s/manifest.json" % (db_name, name)
    if storage.exists(manifest_key):
        store = (json.loads(storage.read_bytes(manifest_key)).get("filestore") or {}).get("store") or {}
        if store.get("id") == sid:
            raise VerifyError("its manifest keeps the filestore in this store, but its store.json is missing")
    return set()


def collect_destination(storage, db_name, try_lock=None):
    """Collect every store of ``db_name`` at a destination: packs that no set there references go.

    The references are the ``store.json`` of every set folder of the database, finished or not, of any owner
    (a store is shared by the policies of one database and set of recipients). ``try_lock(sid)`` takes the
    store's lock exclusively (a context manager yielding False when a backup is writing to the store: then
    that store waits for the next run). Returns one report per store.
    """
    stores = [name[len(".store-") :] for name in storage.list_dir(db_name) if STORE_DIR.match(name)]
    reports = []
    for sid in stores:
        lock = try_lock(sid) if try_lock else contextlib.nullcontext(True)
        with lock as held:
            if not held:
                reports.append({"store": sid, "skipped": "a backup is writing to it"})
                continue
            # The sets are listed under the lock: a backup that counted on a pack has written its store.json.
            referenced, problems = set(), []
            for name in storage.list_dir(db_name):
                if name.startswith("."):
                    continue
                try:
                    info = _set_references(storage, db_name, name, sid)
                except Exception as exc:
                    problems.append("%s: %s" % (name, exc))
                    continue
                referenced.update(info)
            if problems:
                # A set whose references cannot be read might need any pack: collect nothing.
                reports.append({"store": sid, "skipped": "unreadable store.json: %s" % "; ".join(problems)})
                continue
            store = PackStore(storage, db_name, sid)
            try:
                report = store.collect(referenced, locked_until=getattr(storage, "locked_until", None))
            finally:
                store.close()
            report["store"] = sid
            reports.append(report)
    return reports
