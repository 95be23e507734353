"""Streams: source -> zstd -> age -> SHA-256 -> destination writer(s), and back.

Memory stays bounded whatever the size: data moves in chunks of ``CHUNK``
bytes and nothing is copied to a temporary file.
"""

import contextlib
import hashlib

import zstandard

from ..core.errors import BackupError
from .crypto import AgeReader, AgeWriter

CHUNK = 1 << 20
COMPRESSIONS = ("zstd", "none")
# zstd's multi-threaded mode keeps a pool of buffers sized by the job size; its
# default at level 3 (8 MiB jobs) costs about 50 MB per compressor. 2 MiB jobs
# keep that near 15 MB at the same speed (measured on filestore-like data).
ZSTD_JOB_SIZE = 2 << 20


class FanOut:
    """Hashes the stored bytes once and hands them to every destination's writer.

    A destination whose writer fails is dropped (its upload aborted) and its
    error kept in ``failures``; the others go on. Only when every destination
    has failed does the write raise.
    """

    def __init__(self, writers, names):
        self.active = dict(zip(names, writers, strict=True))
        self.failures = {}
        self.sha256 = hashlib.sha256()
        self.size = 0

    def write(self, data):
        if not data:
            return
        self.sha256.update(data)
        self.size += len(data)
        for name, writer in list(self.active.items()):
            try:
                writer.write(data)
            except Exception as exc:
                self._drop(name, exc)
        if not self.active:
            raise self._all_failed()

    def _drop(self, name, exc):
        self.failures[name] = str(exc) if isinstance(exc, BackupError) else "%s: %s" % (type(exc).__name__, exc)
        writer = self.active.pop(name)
        with contextlib.suppress(Exception):  # the failure above is what matters
            writer.abort()

    def _all_failed(self):
        details = "; ".join("%s: %s" % item for item in self.failures.items())
        return BackupError("Writing to every destination failed: %s" % details)

    def commit(self):
        for name, writer in list(self.active.items()):
            try:
                writer.commit()
            except Exception as exc:
                self._drop(name, exc)
        if not self.active:
            raise self._all_failed()

    def abort(self):
        for writer in self.active.values():
            with contextlib.suppress(Exception):
                writer.abort()
        self.active = {}


class ArtifactWriter:
    """A file-like sink for one artifact: compresses, encrypts, hashes and stores.

    ``raw_size`` counts the bytes written in, ``size`` / ``sha256`` describe
    the stored bytes (what verify reads back).
    """

    def __init__(self, fanout, compression="zstd", level=3, threads=2, recipients=None):
        if compression not in COMPRESSIONS:
            raise ValueError("unknown compression %r" % compression)
        self.compression = compression
        self.fanout = fanout
        self.raw_size = 0
        self._encryptor = AgeWriter(fanout, recipients) if recipients else None
        self._next = self._encryptor or fanout
        self._compressor = None
        if compression == "zstd":
            params = zstandard.ZstdCompressionParameters.from_level(
                level, threads=threads, write_checksum=1, job_size=ZSTD_JOB_SIZE if threads > 0 else 0
            )
            self._compressor = zstandard.ZstdCompressor(compression_params=params).compressobj(size=-1)
        self.closed = False

    def write(self, data):
        self.raw_size += len(data)
        if self._compressor is not None:
            out = self._compressor.compress(data)
            if out:
                self._next.write(out)
        else:
            self._next.write(data)
        return len(data)

    def close(self):
        if self.closed:
            return
        self.closed = True
        if self._compressor is not None:
            self._next.write(self._compressor.flush())
            self._compressor = None  # frees the worker threads' buffers now
        if self._encryptor is not None:
            self._encryptor.close()

    def abort(self):
        self.closed = True
        self._compressor = None
        if self._encryptor is not None:
            self._encryptor.abort()

    def flush(self):
        pass

    @property
    def size(self):
        return self.fanout.size

    @property
    def sha256(self):
        return self.fanout.sha256.hexdigest()


class HashingReader:
    """Wraps a reader; hashes and counts everything read through it."""

    def __init__(self, reader):
        self.reader = reader
        self.sha256 = hashlib.sha256()
        self.size = 0

    def read(self, size=-1):
        data = self.reader.read(size)
        self.sha256.update(data)
        self.size += len(data)
        return data

    def readable(self):
        return True

    def close(self):
        self.reader.close()


class ArtifactReader:
    """Reads an artifact's original bytes back: stored -> (age) -> (zstd) -> raw.

    ``finish()`` drains the stored stream and checks its size and SHA-256
    against the manifest, so bytes changed after verification are caught.
    """

    def __init__(self, storage, key, art, identities=None):
        self.art = art
        self.raw_size = 0
        self.stored = HashingReader(storage.open_reader(key))
        source = self.stored
        self._decryptor = None
        if art.get("encryption"):
            if not identities:
                raise BackupError(
                    "%s is encrypted: give the age identity file (--identity, or identity_file in the [spp_backup] "
                    "section of odoo.conf, or SPP_BACKUP_IDENTITY_FILE)." % art["file"]
                )
            self._decryptor = AgeReader(self.stored, identities, what=art["file"])
            source = self._decryptor
        if art["compression"] == "zstd":
            self.raw = zstandard.ZstdDecompressor().stream_reader(source, read_size=CHUNK, read_across_frames=True)
        else:
            self.raw = source

    def read(self, size=-1):
        try:
            data = self.raw.read(size)
        except zstandard.ZstdError as exc:
            raise BackupError("%s is damaged: its zstd stream does not decompress (%s)." % (self.art["file"], exc))
        # Bytes not yet checked against the manifest (a restore checks the SHA-256 while it loads) cannot be
        # longer than it says, stored or unpacked: a swapped file cannot fill the disk before it is caught.
        self.raw_size += len(data)
        limit = self.art.get("raw_size")
        if self.stored.size > self.art["size"] or (limit is not None and self.raw_size > limit):
            raise BackupError(
                "%s does not match the manifest: it is longer than the manifest says (changed or damaged)."
                % self.art["file"]
            )
        return data

    def readable(self):
        return True

    def finish(self):
        while self.read(CHUNK):
            pass
        while self.stored.read(CHUNK):
            pass
        if self.stored.size != self.art["size"] or self.stored.sha256.hexdigest() != self.art["sha256"]:
            raise BackupError(
                "%s does not match the manifest (size or SHA-256 differs): its stored bytes were changed or damaged."
                % self.art["file"]
            )

    def close(self):
        if self._decryptor is not None:
            self._decryptor.close()
        self.stored.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def file_digest(reader, chunk=CHUNK):
    """SHA-256 hex digest and size of everything a reader yields."""
    hashing = HashingReader(reader)
    while hashing.read(chunk):
        pass
    return hashing.sha256.hexdigest(), hashing.size
