"""Odoo's filestore: ``<data_dir>/filestore/<db>/<2 hex>/<sha1>``, as a tar stream.

Archiving streams every regular file under the database's filestore folder
into a tar written to any file-like sink. Extraction refuses members that
could write outside the target (absolute paths, ``..``), links, devices and
anything but regular files and folders.
"""

import contextlib
import errno
import fcntl
import gzip
import hashlib
import mmap
import os
import posixpath
import re
import shutil
import tarfile
import threading
import time
import zlib
from dataclasses import dataclass, field

from ..core.errors import RestoreError, UnsafeArchive
from ..io.storage.local import make_private_dirs

CHUNK = 1 << 20
# How Odoo names a stored attachment: the SHA-1 of its content, under a folder of its first two hex digits.
ODOO_NAME = re.compile(r"^([0-9a-f]{2})/(\1[0-9a-f]{38})$")


class _Position:
    """A write-only file-like that counts what passes, for tarfile's ``tell()``."""

    def __init__(self, sink):
        self.sink = sink
        self.position = 0

    def write(self, data):
        self.sink.write(data)
        self.position += len(data)
        return len(data)

    def tell(self):
        return self.position


@dataclass
class FilestoreStats:
    files: int = 0
    bytes: int = 0
    vanished: list = field(default_factory=list)
    skipped: list = field(default_factory=list)
    unreadable: list = field(default_factory=list)
    # Files named by a SHA-1 their content does not have (damaged on disk), kept as found.
    misnamed: list = field(default_factory=list)


def iter_files(root, unreadable=None):
    """Relative POSIX paths of regular files under ``root``, sorted, links skipped.

    Yields ``(rel, entry)``; ``entry`` is None for a symbolic link. A folder
    that cannot be listed is appended to ``unreadable``.
    """
    stack = [""]
    while stack:
        rel = stack.pop()
        path = os.path.join(root, rel) if rel else root
        try:
            entries = sorted(os.scandir(path), key=lambda e: e.name, reverse=True)
        except FileNotFoundError:
            continue
        except OSError as exc:
            if unreadable is not None:
                unreadable.append("%s/ (%s)" % (rel or ".", exc.strerror or exc))
            continue
        for entry in entries:
            child = posixpath.join(rel, entry.name) if rel else entry.name
            if entry.is_symlink():
                yield child, None
            elif entry.is_dir(follow_symlinks=False):
                stack.append(child)
            elif entry.is_file(follow_symlinks=False):
                yield child, entry


def _readable_files(root, stats):
    """``(rel, path, open handle)`` of the regular files under ``root`` (none when it is no folder).

    Links are skipped into ``stats.skipped``; a file that vanished (Odoo's garbage collector) or cannot be
    read is noted in ``stats`` and left out.
    """
    if not os.path.isdir(root):
        return
    for rel, entry in iter_files(root, stats.unreadable):
        if entry is None:
            stats.skipped.append(rel)
            continue
        path = os.path.join(root, rel)
        try:
            handle = open(path, "rb")  # noqa: SIM115
        except FileNotFoundError:
            stats.vanished.append(rel)
            continue
        except OSError as exc:
            stats.unreadable.append("%s (%s)" % (rel, exc.strerror or exc))
            continue
        yield rel, path, handle


def write_tar(root, sink, on_file=None, on_archived=None):
    """Stream the files under ``root`` as a tar into ``sink``; returns stats.

    A file that disappears while it is archived (Odoo's garbage collector
    may remove unreferenced files) is recorded in ``vanished``, one that
    cannot be read in ``unreadable``: evidence, not a crash. ``on_archived``
    is called with the relative name of every archived file.
    """
    stats = FilestoreStats()
    # A plain (not stream-mode) TarFile over a counting writer: stream mode with a
    # large buffer re-copies its buffer on every 16 KiB write. Members are dropped
    # from tarfile's list as they go, so memory does not grow with the file count.
    with tarfile.TarFile(fileobj=_Position(sink), mode="w", format=tarfile.PAX_FORMAT, copybufsize=CHUNK) as tar:
        for rel, _path, handle in _readable_files(root, stats):
            with handle:
                st = os.fstat(handle.fileno())
                info = tarfile.TarInfo(rel)
                info.size = st.st_size
                info.mtime = int(st.st_mtime)
                info.mode = st.st_mode & 0o777
                info.type = tarfile.REGTYPE
                tar.addfile(info, handle)
            tar.members.clear()
            _count(stats, rel, st.st_size, on_archived, on_file)
    return stats


def write_store(root, writers, sink, line_of, on_file=None, on_archived=None):
    """Add every file under ``root`` to the stores of ``writers`` and its line to the file list ``sink``.

    ``writers`` maps a destination name to its packstore.StoreWriter; a destination whose store fails is
    dropped from it, its error returned in ``failed`` (the others go on). ``line_of(rel, size, blob_id)``
    makes a file list line. Files vanish or cannot be read as in ``write_tar``.
    """
    stats, failed = FilestoreStats(), {}
    for rel, path, handle in _readable_files(root, stats):
        with handle:
            st = os.fstat(handle.fileno())
            # A file not named by its content gets the SHA-256 of it in the (signed) file list.
            digest = None if ODOO_NAME.match(rel) else _sha256_of(handle)
        blob = _add_to_stores(writers, failed, rel, path, st)
        if blob is not None and any(rel in writer.misnamed for writer in writers.values()):
            # Its content does not match its SHA-1 name (damaged on disk): every store keeps it as found, under
            # an id of its own, and the list gives its SHA-256, so the restore gives back what was there.
            stats.misnamed.append(rel)
            with open(path, "rb") as again:
                digest = _sha256_of(again)
            blob = _add_to_stores(writers, failed, rel, path, st, named=False)
        if blob is None and writers:
            stats.vanished.append(rel)
            continue
        if not writers:
            break
        sink.write(line_of(rel, st.st_size, blob, digest))
        _count(stats, rel, st.st_size, on_archived, on_file)
    return stats, failed


def _add_to_stores(writers, failed, rel, path, st, named=True):
    """Add one file to every store; its blob id, or None when it vanished. A failing store is dropped."""
    blob = None
    for name, writer in list(writers.items()):
        try:
            blob = writer.add(rel, path, st.st_size, st.st_mtime_ns, named)
        except FileNotFoundError:
            return None  # vanished since it was opened: no store holds it, no line names it
        except Exception as exc:
            failed[name] = "cannot write to its filestore store: %s" % exc
            writers.pop(name).abort()
    return blob


def _sha256_of(handle):
    digest = hashlib.sha256()
    for data in iter(lambda: handle.read(CHUNK), b""):
        digest.update(data)
    return digest.hexdigest()


def _count(stats, rel, size, on_archived, on_file):
    """One more file backed up: counted, and told to whoever listens."""
    stats.files += 1
    stats.bytes += size
    if on_archived is not None:
        on_archived(rel)
    if on_file is not None:
        on_file(stats)


def new_private_folder(path):
    """Make the new folder ``path`` (it must not exist) and its missing parents, readable by their owner only.

    What a restore, an import or an export writes holds the database's files in clear: like a backup's own
    files, folders are 0700 and files 0600. Odoo, running as the same user, reads and writes them.
    """
    make_private_dirs(os.path.dirname(path), sync=False)
    os.mkdir(path, 0o700)


def open_new_file(target, name, what="archive member", mode=0o600):
    """A new file ``name`` (relative, checked) under the folder ``target``, opened for writing: (its path, a
    :class:`NewFile`).

    Refuses absolute names, '..', a folder that resolves outside ``target`` (a link planted in it) and a name
    that exists already: a hostile archive or file list cannot write anywhere else or twice.
    """
    parts = safe_parts(name, what)
    if not parts:
        raise UnsafeArchive("Refused %s %r: empty name." % (what, name))
    path = os.path.join(target, *parts)
    parent = os.path.dirname(path)
    make_folder(parent, what, name)
    if os.path.realpath(parent) != os.path.join(os.path.realpath(target), *parts[:-1]):
        raise UnsafeArchive("Refused %s %r: its folder resolves outside the target." % (what, name))
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(path, flags, mode)
    except OSError as exc:
        if exc.errno == errno.EEXIST:
            raise UnsafeArchive("Refused %s %r: it appears twice." % (what, name)) from exc
        raise
    return path, NewFile(fd)


def make_folder(path, what, name):
    """``path`` and its missing parents made readable by their owner only (0700), where a file of the archive
    standing in the way is refused by name."""
    try:
        make_private_dirs(path, sync=False)
    except (FileExistsError, NotADirectoryError) as exc:
        message = "Refused %s %r: a file of the archive stands where its folder goes." % (what, name)
        raise UnsafeArchive(message) from exc


# Direct I/O wants the memory, the offset and the length of each write aligned to the device's logical block
# (512 or 4096 bytes); a page-aligned buffer of CHUNK bytes and 4096-byte lengths suit both.
DIRECT_ALIGN = 4096
_buffers = threading.local()


def _free_buffers():
    """This thread's buffers that no open file holds."""
    if not hasattr(_buffers, "free"):
        _buffers.free = []
    return _buffers.free


def _take_buffer():
    """A page-aligned buffer of CHUNK bytes: one this thread used before, or a new one."""
    free = _free_buffers()
    return free.pop() if free else mmap.mmap(-1, CHUNK, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)


class NewFile:
    """A restored file being written, past the page cache (``O_DIRECT``) where the filesystem takes it.

    Writing gigabytes of attachments through the page cache costs the kernel CPU for every new page (on a
    virtual machine whose free memory goes back to its host, about 3 CPU seconds per GB, measured) on the
    cores the database restore running beside it needs, and pushes the database server's cache out. Bytes
    are gathered in a page-aligned buffer of CHUNK bytes (one per open file, reused) and written in whole
    blocks; the last part block of a file goes through the page cache, and so does everything from the first
    direct write the kernel refuses (a filesystem without direct writes, or an offset a short write left
    unaligned). Durability is the caller's (the restore syncs before it swaps anything in).
    """

    def __init__(self, fd):
        self.fd = fd
        self.filled = 0
        self.buffer = self.view = None
        try:
            self.direct = _set_direct(fd, True)
            if self.direct:
                self.buffer = _take_buffer()
                self.view = memoryview(self.buffer)
        except BaseException:
            os.close(fd)
            self.fd = -1
            raise

    def write(self, data):
        data = memoryview(data).cast("B")
        done = 0
        while self.direct and done < len(data):
            take = min(len(data) - done, CHUNK - self.filled)
            self.view[self.filled : self.filled + take] = data[done : done + take]
            self.filled += take
            done += take
            if self.filled == CHUNK:
                self._drain(CHUNK)
        if done < len(data):  # through the page cache (nothing is left in the buffer then)
            _write_all(self.fd, data[done:])
        return len(data)

    def _drain(self, length):
        """Write the buffer's first ``length`` bytes (whole blocks) and keep the rest at its start; once a
        direct write is refused, all that is buffered goes through the page cache."""
        done = 0
        try:
            while done < length:
                try:
                    done += os.write(self.fd, self.view[done:length])
                except OSError as exc:
                    if exc.errno != errno.EINVAL or not self.direct:
                        raise
                    self.direct = _set_direct(self.fd, False)
                    length = self.filled
        except BaseException:
            self.filled = 0  # the file is incomplete and its caller removes it: close() writes nothing more
            raise
        rest = self.filled - length
        if rest:
            self.view[:rest] = self.view[length : self.filled]
        self.filled = rest

    def close(self):
        if self.fd < 0:
            return
        try:
            if self.direct and self.filled >= DIRECT_ALIGN:
                self._drain(self.filled - self.filled % DIRECT_ALIGN)
            if self.direct:
                # The last part block through the page cache; and the open file (a duplicated descriptor's
                # too) is left without O_DIRECT.
                self.direct = _set_direct(self.fd, False)
            if self.filled:
                self._drain(self.filled)
        finally:
            os.close(self.fd)
            self.fd = -1
            if self.buffer is not None:
                _free_buffers().append(self.buffer)
                self.buffer = self.view = None

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None:
            self.filled = 0  # an incomplete file: nothing more is written, the error in flight stays the error
        self.close()
        return False

    def __del__(self):
        if getattr(self, "fd", -1) >= 0:
            with contextlib.suppress(OSError):
                os.close(self.fd)


def _set_direct(fd, on):
    """Turn ``O_DIRECT`` on or off for ``fd``; whether it is on (False where the filesystem refuses it)."""
    flag = getattr(os, "O_DIRECT", 0)
    if not flag:
        return False
    flags = fcntl.fcntl(fd, fcntl.F_GETFL)
    try:
        fcntl.fcntl(fd, fcntl.F_SETFL, (flags | flag) if on else (flags & ~flag))
    except OSError:
        return False
    return on


def _write_all(fd, data):
    data = memoryview(data).cast("B")
    done = 0
    while done < len(data):
        done += os.write(fd, data[done:])


def safe_parts(name, what="archive member"):
    """The path parts of an archive member's name; refuse absolute paths, '..' and NUL bytes."""
    if "\x00" in name:
        raise UnsafeArchive("Refused %s %r: a NUL byte in its name." % (what, name))
    if name.startswith("/") or name.startswith("\\") or (len(name) > 1 and name[1] == ":"):
        raise UnsafeArchive("Refused %s %r: absolute path." % (what, name))
    parts = [p for p in name.replace("\\", "/").split("/") if p not in ("", ".")]
    if ".." in parts:
        raise UnsafeArchive("Refused %s %r: it climbs out of the target with '..'." % (what, name))
    return parts


def check_member(member):
    """Refuse a tar member that is not a plain relative file or folder."""
    name = member.name
    parts = safe_parts(name)
    if member.issym() or member.islnk():
        raise UnsafeArchive("Refused archive member %r: links are not allowed (%s)." % (name, member.linkname))
    if not (member.isreg() or member.isdir()) or member.issparse():
        raise UnsafeArchive(
            "Refused archive member %r: devices, pipes, sparse files and other special files are not allowed." % name
        )
    if not parts and not member.isdir():  # a folder named '.' or './' is the archive's own top (tar -C dir .)
        raise UnsafeArchive("Refused archive member %r: empty name." % name)
    return parts


class _Forward:
    """A stream seen as a file that seeks only forward, for tarfile's header parsing.

    tarfile's stream mode reads through a 10 KiB buffer that it copies at each
    read; here headers are parsed by tarfile itself and a member's bytes are
    read straight from the stream, in large blocks. Every read is whole (or
    ends the stream), so a short read from a decompressor is never taken for
    the end of the archive.
    """

    def __init__(self, source):
        self.source = source
        self.position = 0

    def read(self, size=-1):
        if size is None or size < 0:
            raise UnsafeArchive("Refused the archive: an unbounded read was asked of it.")
        if size > CHUNK:
            # Member bytes are read in blocks of CHUNK at most: only tarfile's parsing of a pax or GNU
            # long-name header asks more, all at once, and a hostile one could ask for the whole archive.
            raise UnsafeArchive("Refused the archive: a member header of more than %d bytes." % CHUNK)
        parts = []
        while size > 0:
            data = self.source.read(size)
            if not data:
                break
            parts.append(data)
            size -= len(data)
        data = parts[0] if len(parts) == 1 else b"".join(parts)
        self.position += len(data)
        return data

    def tell(self):
        return self.position

    def seek(self, offset, whence=os.SEEK_SET):
        if whence == os.SEEK_CUR:
            offset += self.position
        elif whence != os.SEEK_SET:
            raise UnsafeArchive("Refused the archive: it is read as a stream, from its start to its end.")
        if offset < self.position:
            raise UnsafeArchive("Refused the archive: a member points back into bytes already read.")
        while self.position < offset and self.read(min(CHUNK, offset - self.position)):
            pass
        return self.position


# Extended headers (pax, GNU long names) in a row before one member; the engine's archives use at most one.
MAX_EXTENDED_HEADERS = 8
_EXTENDED = (tarfile.XHDTYPE, tarfile.SOLARIS_XHDTYPE, tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK)


class _CheckedInfo(tarfile.TarInfo):
    """tarfile's header parsing, with what a hostile archive could make of it refused as it is met.

    A global pax header is kept by tarfile for the rest of the archive and copied into every later member:
    thousands of them, each under the 1 MiB header limit, held gigabytes (2.5 GB for a 7 MB file,
    measured). A chain of extended headers is parsed by recursion, one level per header: thousands of them
    ended in a RecursionError. The engine writes neither.
    """

    def _proc_member(self, tar):
        if self.type == tarfile.XGLTYPE:
            raise UnsafeArchive("Refused the archive: it holds a global pax header, which the engine never writes.")
        if self.type in _EXTENDED:
            tar.spp_extended = getattr(tar, "spp_extended", 0) + 1
            if tar.spp_extended > MAX_EXTENDED_HEADERS:
                raise UnsafeArchive(
                    "Refused the archive: more than %d extended headers in a row before one member."
                    % MAX_EXTENDED_HEADERS
                )
        else:
            tar.spp_extended = 0
        return super()._proc_member(tar)


def iter_tar(source):
    """The members of a tar stream, each checked (``check_member``) before it is yielded.

    Yields ``(member, parts, blocks)``: ``blocks`` is None for a folder, else a
    function that yields the member's bytes in blocks of at most CHUNK; the
    archive ends early ("unexpected end of data") if they are not all there.
    Nothing is kept from one member to the next, whatever their number.
    """
    stream = _Forward(source)

    def blocks_of(member):
        def blocks():
            stream.seek(member.offset_data)
            left = member.size
            while left:
                data = stream.read(min(CHUNK, left))
                if not data:
                    raise tarfile.ReadError("unexpected end of data")
                left -= len(data)
                yield data

        return blocks

    with tarfile.TarFile(fileobj=stream, mode="r", tarinfo=_CheckedInfo) as tar:
        for member in tar:
            tar.members.clear()
            parts = check_member(member)
            yield member, parts, (None if member.isdir() else blocks_of(member))


def extract_tar(source, target, on_file=None, cancel=None, inside=None):
    """Extract a tar stream into the new folder ``target``; returns stats.

    ``target`` must not exist. Members are checked one by one before anything
    is written for them; on a refused member the partly written folder is
    removed, so nothing is left behind and nothing was written outside it.
    ``cancel`` (a threading.Event) stops the extraction between two files.
    ``inside(member, parts)`` (a :class:`FolderInArchive`) gives the parts a
    member has under ``target``, or None to pass it by.
    """
    stats = FilestoreStats()
    new_private_folder(target)
    try:
        for member, parts, blocks in iter_tar(source):
            if cancel is not None and cancel.is_set():
                raise RestoreError("The filestore restore was stopped.")
            if inside is not None:
                parts = inside(member, parts)
                if parts is None:
                    continue
            if blocks is None:
                make_folder(os.path.join(target, *parts), "archive member", member.name)
                continue
            path, out = open_new_file(target, "/".join(parts))
            with out:
                for data in blocks():
                    out.write(data)
            with contextlib.suppress(OSError):
                os.utime(path, (time.time(), member.mtime))
            stats.files += 1
            stats.bytes += member.size
            if on_file is not None:
                on_file(stats)
    except BaseException:
        shutil.rmtree(target, ignore_errors=True)
        raise
    return stats


class FolderInArchive:
    """Where the files of one filestore folder sit in a tar made elsewhere, learnt from its first file.

    OpenSPP 2's backup script archives the folder itself (``tar -czf ... -C <data_dir>/filestore <db>``: members
    ``<db>/ab/<sha1>``); others archive its content (``./ab/<sha1>``) or start higher (``filestore/<db>/...``).
    Odoo keeps a file at ``<2 hex>/<sha1>`` (its garbage collector's marks at ``checklist/<2 hex>/<sha1>``), so
    what stands before that in the first file's name is the folder, taken off every member's name. A member
    outside that folder is refused: the archive is not one database's filestore. Folders met before the first
    file are passed by (those a file needs are made for it).
    """

    def __init__(self):
        self.prefix = None

    def __call__(self, member, parts):
        if self.prefix is None:
            if member.isdir():
                return None
            self.prefix = self._learn(member.name, parts)
        size = len(self.prefix)
        if parts[:size] != self.prefix:
            raise UnsafeArchive(
                "Refused archive member %r: it is outside the filestore folder %r the archive's first file is in."
                % (member.name, "/".join(self.prefix) or ".")
            )
        return parts[size:] or None

    @staticmethod
    def _learn(name, parts):
        if len(parts) < 2 or not ODOO_NAME.match("/".join(parts[-2:])):
            raise RestoreError(
                "The archive's first file %r is not where Odoo keeps a filestore's files (<2 hex digits>/<SHA-1>): "
                "it is not an archive of a filestore folder." % name
            )
        at = len(parts) - 2
        if at and parts[at - 1] == "checklist":
            at -= 1
        return parts[:at]


class _Gunzip:
    """The decompressed bytes of a gzip file, read as a stream; a damaged or cut stream is said in words."""

    def __init__(self, handle, path):
        self.path = path
        self.gz = gzip.GzipFile(fileobj=handle, mode="rb")

    def read(self, size):
        try:
            return self.gz.read(size)
        except (OSError, EOFError, zlib.error) as exc:
            raise RestoreError(
                "The filestore archive %s is damaged or cut short: its gzip stream cannot be read to its end (%s)."
                % (self.path, exc)
            ) from exc


@contextlib.contextmanager
def open_tar_gz(path):
    """The filestore ``.tar.gz`` at ``path`` (as OpenSPP 2's backup script writes it), opened for
    :func:`extract_folder_tar`; a sentence when it cannot be read or is no gzip file."""
    try:
        handle = open(path, "rb")  # noqa: SIM115
    except OSError as exc:
        raise RestoreError("Cannot read the filestore archive %s: %s." % (path, exc.strerror or exc)) from exc
    with handle:
        head = handle.read(512)
        if not head.startswith(b"\x1f\x8b"):
            what = "an uncompressed tar" if head[257:262] == b"ustar" else "not a gzip file"
            raise RestoreError(
                "The filestore archive %s is %s: it must be a .tar.gz (tar -czf), as OpenSPP 2's backup script "
                "writes it." % (path, what)
            )
        handle.seek(0)
        yield _Gunzip(handle, path)


def extract_folder_tar(source, target, path):
    """Extract the filestore folder a tar stream from elsewhere holds (see :class:`FolderInArchive`) into the new
    folder ``target``; returns stats. ``path`` names the archive in sentences."""
    try:
        return extract_tar(source, target, inside=FolderInArchive())
    except tarfile.TarError as exc:
        raise RestoreError("The filestore archive %s is not a whole tar archive (%s)." % (path, exc)) from exc
