"""A directory on a local (or mounted) file system."""

import contextlib
import os
import re
import shutil
import uuid

from ...core.errors import PreflightError

CHUNK = 1 << 20


def make_private_dirs(path, sync=True):
    """Create ``path`` and missing parents with mode 0700, fsyncing each new entry's parent (``sync``)."""
    missing = []
    probe = path
    while not os.path.isdir(probe):
        missing.append(probe)
        parent = os.path.dirname(probe)
        if parent == probe:
            break
        probe = parent
    for folder in reversed(missing):
        try:
            os.mkdir(folder, 0o700)
        except FileExistsError:
            if not os.path.isdir(folder):
                raise
            continue
        if sync:
            fsync_dir(os.path.dirname(folder))


class LocalWriter:
    """Writes to ``.<name>.partial`` (mode 0600) then fsyncs and renames into place.

    Backups hold the whole database: files are readable by their owner only.
    """

    def __init__(self, path):
        self.path = path
        directory = os.path.dirname(path)
        make_private_dirs(directory)
        self.partial = os.path.join(directory, "." + os.path.basename(path) + ".partial")
        fd = os.open(self.partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0), 0o600)
        self._file = os.fdopen(fd, "wb")

    def write(self, data):
        self._file.write(data)

    def commit(self):
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        os.replace(self.partial, self.path)
        fsync_dir(os.path.dirname(self.path))

    def abort(self):
        if not self._file.closed:
            self._file.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.partial)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None:
            self.abort()
        elif not self._file.closed:
            self.commit()


def fsync_dir(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


SCHEME_RE = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:")


def check_location(text):
    """``text`` as a destination: ``s3://…`` as it is, a local folder only as an absolute path (``~`` expanded)."""
    text = (text or "").strip()
    if text.startswith("s3://"):
        return text
    if SCHEME_RE.match(text):
        raise PreflightError(
            "%r is not a destination this engine can use: a destination is an absolute folder (for example "
            "/var/backups/odoo) or s3://bucket/prefix; http, ftp and other URLs are not supported." % text
        )
    path = os.path.expanduser(text)
    if not os.path.isabs(path):
        raise PreflightError(
            "%r is a relative path: give the destination as an absolute folder (for example /var/backups/odoo) "
            "or as s3://bucket/prefix." % text
        )
    return path


class LocalStorage:
    kind = "local"

    def __init__(self, root):
        if not root:
            raise PreflightError("The destination has no directory set.")
        self.root = os.path.abspath(check_location(root))

    def describe(self, key=""):
        return os.path.join(self.root, key) if key else self.root

    def _path(self, key):
        parts = [p for p in key.split("/") if p]
        if any(p in (".", "..") for p in parts):
            raise ValueError("invalid storage key %r" % key)
        return os.path.join(self.root, *parts)

    def open_writer(self, key):
        return LocalWriter(self._path(key))

    def open_reader(self, key):
        return open(self._path(key), "rb")  # noqa: SIM115 - the caller closes it

    def read_bytes(self, key):
        with self.open_reader(key) as handle:
            return handle.read()

    def exists(self, key):
        return os.path.isfile(self._path(key))

    def size(self, key):
        return os.path.getsize(self._path(key))

    def delete(self, key):
        os.unlink(self._path(key))

    def list_dir(self, prefix=""):
        """Names directly under ``prefix`` (directories and files)."""
        try:
            return sorted(os.listdir(self._path(prefix)))
        except (FileNotFoundError, NotADirectoryError):
            return []

    def object_sizes(self, prefix):
        """{name: size} of the files directly under ``prefix``."""
        sizes = {}
        try:
            entries = list(os.scandir(self._path(prefix)))
        except (FileNotFoundError, NotADirectoryError):
            return sizes
        for entry in entries:
            if entry.is_file(follow_symlinks=False):
                sizes[entry.name] = entry.stat(follow_symlinks=False).st_size
        return sizes

    def remove_tree(self, prefix):
        shutil.rmtree(self._path(prefix), ignore_errors=True)

    def remove_partials(self, prefix):
        """Remove the ``.<name>.partial`` files writers left under ``prefix`` (the caller knows none is
        writing); how many."""
        removed = 0
        for folder, _dirs, files in os.walk(self._path(prefix)):
            for name in files:
                if name.startswith(".") and name.endswith(".partial"):
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(os.path.join(folder, name))
                        removed += 1
        return removed

    def free_bytes(self):
        path = self.root
        while not os.path.exists(path):
            parent = os.path.dirname(path)
            if parent == path:
                return None
            path = parent
        return shutil.disk_usage(path).free

    def probe(self):
        """Write, read back and delete a probe file; raise with what failed."""
        key = ".spp_backup_probe_%s" % uuid.uuid4().hex
        payload = os.urandom(64)
        if not os.path.isdir(self.root):
            raise PreflightError(
                "The folder %s does not exist. Create it (or mount the disk that holds it) and test again: "
                "it is not created here, so that an unmounted disk does not fill the server's own." % self.root
            )
        step = "write a file in %s" % self.root
        try:
            step = "write a file in %s" % self.root
            with self.open_writer(key) as writer:
                writer.write(payload)
            step = "read back the probe file in %s" % self.root
            if self.read_bytes(key) != payload:
                raise PreflightError("The probe file read back from %s differs from what was written." % self.root)
            step = "delete the probe file in %s" % self.root
            self.delete(key)
        except OSError as exc:
            raise PreflightError("Cannot %s: %s." % (step, exc.strerror or exc)) from exc
        return "Wrote, read back and deleted a probe file in %s." % self.root
