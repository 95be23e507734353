"""A scratch PostgreSQL cluster made from a base backup, replayed to a chosen second from the WAL archive.

The cluster lives in one private folder (data directory, its Unix socket, the WAL exchange, its log) and is
removed on success, on failure and on SIGTERM (the command line turns SIGTERM into an exception, and the
``with`` block stops the postmaster and removes the folder). Its postmaster is of the server's own major version,
runs as the folder's owner (``postgres`` when the engine runs as root: PostgreSQL refuses root), listens on a
Unix socket in that folder only (``listen_addresses = ''``), trusts only that socket, loads no library, archives
nothing and starts no replication. What the backed-up cluster's own configuration said is not read.

WAL reaches it through ``restore_command`` (walget.py) from the engine's WalServer, which fetches each file
from the archive, checks it against its signed entry, and fetches a few segments ahead while the postmaster
replays.
"""

import contextlib
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import threading
import time

import psycopg2

from ..core.config import PgConfig
from ..core.errors import RestoreError, VerifyError
from ..core.human import human_bytes
from . import walnames

WALGET = os.path.join(os.path.dirname(os.path.abspath(__file__)), "walget.py")
STOP_RE = re.compile(r"recovery stopping (?:before|after) .*")
REACHED_RE = re.compile(r"(?:last completed transaction was at log time .*|redo done at .*)")
PREFETCH = 4


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def owner_ids():
    """(uid, gid) the scratch postmaster runs as: this process's, or postgres's when this runs as root."""
    if os.geteuid() != 0:
        return os.geteuid(), os.getegid()
    try:
        entry = pwd.getpwnam("postgres")
    except KeyError as exc:
        raise RestoreError(
            "PostgreSQL refuses to run as root and there is no 'postgres' OS user to run the scratch cluster as: "
            "run the restore as the database server's OS user (or create that user)."
        ) from exc
    return entry.pw_uid, entry.pw_gid


def _allowed(path, uid, gid, bit):
    """Whether user ``uid`` (group ``gid``) has permission ``bit`` (1 execute, 4 read) on ``path`` and can
    reach it (execute on every folder above it)."""
    if uid == 0:
        return True
    try:
        folders = []
        parent = os.path.dirname(path)
        while parent and parent != os.path.dirname(parent):
            folders.append(parent)
            parent = os.path.dirname(parent)
        for item, want in [(path, bit)] + [(folder, 1) for folder in folders]:
            stat = os.stat(item)
            shift = 6 if stat.st_uid == uid else 3 if stat.st_gid == gid else 0
            if not (stat.st_mode >> shift) & want:
                return False
        return True
    except OSError:
        return False


def writable_by(path, uid, gid):
    """Whether user ``uid`` may add, remove or rename entries of folder ``path`` (write permission on it, and no
    sticky bit protecting others' entries)."""
    stat = os.stat(path)
    if stat.st_mode & 0o1000 and stat.st_uid != uid:
        return False  # sticky, like /tmp: it may not touch what it does not own
    return _allowed(path, uid, gid, 2)


def interpreter(owner):
    """A Python the scratch postmaster's OS user may run (walget.py needs only the standard library)."""
    candidates = [os.path.realpath(sys.executable), shutil.which("python3"), "/usr/bin/python3"]
    for path in candidates:
        if path and os.path.isfile(path) and _allowed(os.path.realpath(path), owner[0], owner[1], 1):
            return os.path.realpath(path)
    raise RestoreError(
        "No Python interpreter here may be run by the scratch cluster's OS user (for its restore_command): "
        "install python3 from the system's packages."
    )


def _conf_value(value):
    return "'%s'" % str(value).replace("'", "''")


def _shell_word(value):
    return "'%s'" % str(value).replace("'", "'\\''")


def safe_members(tar, root):
    """The members of a base backup's tar, refused as a whole if one would land outside ``root`` or is not a
    plain file, folder or link inside it."""
    root = os.path.realpath(root)
    for member in tar:
        name = member.name
        path = os.path.realpath(os.path.join(root, name))
        if name.startswith("/") or ".." in name.split("/") or not (path == root or path.startswith(root + os.sep)):
            raise VerifyError("The base backup holds a path outside its folder (%r): refused." % name)
        if not (member.isfile() or member.isdir()):
            raise VerifyError("The base backup holds %r, which is neither a file nor a folder: refused." % name)
        yield member


def extract_base(reader, folder):
    """Unpack a stored base backup (an ArtifactReader of base.tar) into ``folder``; its bytes checked to the end."""
    os.makedirs(folder, mode=0o700, exist_ok=True)
    with tarfile.open(fileobj=reader, mode="r|") as tar:
        for member in safe_members(tar, folder):
            if member.isdir():
                os.makedirs(os.path.join(folder, member.name), mode=0o700, exist_ok=True)
                continue
            path = os.path.join(folder, member.name)
            os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
            source = tar.extractfile(member)
            with open(path, "wb") as out:
                shutil.copyfileobj(source, out, 1 << 20)
            os.chmod(path, 0o600)
    reader.finish()


class WalServer(threading.Thread):
    """Serves the scratch postmaster's restore_command from the archive: every file checked against its signed
    entry before the postmaster sees it; a few segments fetched ahead while it replays.

    The exchange folder is the engine's (mode 0711); only its ``asked`` and ``ready`` folders belong to the
    postmaster's OS user. Files are fetched into folders only the engine can write and renamed into ``ready``,
    which replaces whatever name is there without following it: a link planted there leads nowhere.
    """

    def __init__(self, archive, exchange, identities, public_keys, owner, names):
        super().__init__(name="spp_backup-walserver", daemon=True)
        self.archive = archive
        self.exchange = exchange
        self.identities = identities
        self.public_keys = public_keys
        self.owner = owner
        self.names = names  # {name: partial only}
        self.newest = max((n for n in names if walnames.SEGMENT_RE.fullmatch(n)), default=None)
        self.stop = threading.Event()
        self.error = None
        self.served = []
        self.partial_served = None
        # The newest segment served, and until when its entry says the archive held everything the server wrote.
        self.newest_served = None
        self.complete_until = None
        self.ahead = {}
        for folder in ("asked", "ready", "ahead", "fetching"):
            os.makedirs(os.path.join(exchange, folder), mode=0o700, exist_ok=True)
        os.chmod(exchange, 0o711)
        if os.geteuid() == 0:
            for folder in ("asked", "ready"):
                os.chown(os.path.join(exchange, folder), *self.owner)
        self.fetching = os.path.join(exchange, "fetching")

    def _fetch(self, name, path):
        """Fetch ``name`` (the complete file, else its partial when it is the newest) into ``path``; False when
        the archive has neither."""
        partial = self.names.get(name)
        if partial is None or (partial and name != self.newest):
            return False  # a partial kept in the middle of the archive is never used
        doc = self.archive.fetch_wal(name, path, self.identities, self.public_keys, partial=partial)
        self._note(name, doc)
        return True

    def _note(self, name, doc):
        """Remember what the newest segment served says about the archive's completeness."""
        if not walnames.SEGMENT_RE.fullmatch(name) or (self.newest_served and name < self.newest_served):
            return
        self.newest_served = name
        self.complete_until = doc.get("complete_until")
        if doc.get("partial"):
            self.partial_served = name

    def _prefetch(self, name):
        try:
            timeline, segno = walnames.parse_segment(name)
        except ValueError:
            return
        for step in range(1, PREFETCH + 1):
            if self.stop.is_set() or self._asked():
                return
            following = walnames.segment_name(timeline, segno + step)
            if following in self.ahead or self.names.get(following) is not False:
                continue
            path = os.path.join(self.exchange, "ahead", following)
            try:
                doc = self.archive.fetch_wal(following, path, self.identities, self.public_keys)
            except Exception:  # fetched again when asked for, and its error told then
                return
            self.ahead[following] = (path, doc)

    def _asked(self):
        return os.listdir(os.path.join(self.exchange, "asked"))

    def _hand_over(self, temp, name):
        """The engine's file ``temp`` made the postmaster user's and renamed into ready/ as ``name``."""
        if os.geteuid() == 0:
            os.chown(temp, *self.owner)
        os.chmod(temp, 0o600)
        os.replace(temp, os.path.join(self.exchange, "ready", name))

    def serve(self, name):
        temp = os.path.join(self.fetching, "file")
        if not walnames.is_wal_file(name):
            found = False
        elif name in self.ahead:
            path, doc = self.ahead.pop(name)
            os.replace(path, temp)
            self._note(name, doc)
            found = True
        else:
            found = self._fetch(name, temp)
        if found:
            self._hand_over(temp, name)
            self.served.append(name)
        else:
            with open(temp, "wb"):
                pass
            self._hand_over(temp, name + ".none")
        os.unlink(os.path.join(self.exchange, "asked", name))
        if found and walnames.SEGMENT_RE.fullmatch(name):
            self._prefetch(name)

    def _close_exchange(self):
        with contextlib.suppress(OSError), open(os.path.join(self.exchange, "closed"), "wb"):
            pass

    def run(self):
        try:
            while not self.stop.is_set():
                asked = self._asked()
                for name in sorted(asked):
                    self.serve(name)
                if not asked:
                    self.stop.wait(0.02)
        except BaseException as exc:  # the restore reports it and stops the postmaster
            self.error = exc
            self._close_exchange()

    def close(self):
        self.stop.set()
        self._close_exchange()
        self.join(timeout=30)


class ScratchCluster:
    """One private folder holding a cluster restored from a base backup and its postmaster."""

    def __init__(self, bin_dir, major, tmp_dir=None, keep_data=None):
        self.bin_dir = bin_dir
        self.major = major
        self.owner = owner_ids()
        self.root = tempfile.mkdtemp(prefix="spp_backup_pitr_", dir=tmp_dir)
        # restore-cluster keeps the data directory (a folder of the caller's choosing); scratch removes it all.
        self.data = keep_data or os.path.join(self.root, "data")
        self.sock = os.path.join(self.root, "sock")
        self.exchange = os.path.join(self.root, "wal")
        self.log_path = os.path.join(self.root, "postmaster.log")
        self.process = None
        self.restarted = False
        self.port = free_port()
        # The folder stays the engine's: the postmaster's OS user may reach (0711) but not change it; it owns
        # the data directory, the socket folder and the exchange's asked/ready folders only.
        os.chmod(self.root, 0o711)
        for folder in (self.sock, self.exchange):
            os.makedirs(folder, mode=0o700)
        server = self.binary("postgres")
        if not _allowed(os.path.realpath(server), self.owner[0], self.owner[1], 1):
            shutil.rmtree(self.root, ignore_errors=True)
            raise RestoreError(
                "PostgreSQL's server %s cannot be run by the scratch cluster's OS user (uid %d): install it where "
                "that user can reach it (pg_bin_dir in odoo.conf's [spp_backup] section). Nothing was changed."
                % (server, self.owner[0])
            )
        for folder in [os.path.dirname(self.root)] + ([os.path.dirname(keep_data)] if keep_data else []):
            if not _allowed(folder, self.owner[0], self.owner[1], 1):
                shutil.rmtree(self.root, ignore_errors=True)
                raise RestoreError(
                    "The scratch cluster's OS user (uid %d) cannot reach %s: choose a folder it can reach with "
                    "--tmp-dir (for example /var/tmp). Nothing was changed." % (self.owner[0], folder)
                )

    def binary(self, name):
        return os.path.join(self.bin_dir, name) if self.bin_dir else shutil.which(name) or name

    def _as_owner(self):
        uid, gid = self.owner
        if os.geteuid() != 0:
            return None

        def demote():
            os.setgroups([])
            os.setgid(gid)
            os.setuid(uid)

        return demote

    def chown_all(self):
        """The data directory and the socket folder given to the postmaster's OS user (nothing else)."""
        if os.geteuid() != 0:
            return
        uid, gid = self.owner
        os.chown(self.sock, uid, gid)
        # From the leaves up, the data directory itself last: until then no folder on the way is that user's,
        # so nothing can be swapped under the walk.
        for folder, dirs, files in os.walk(self.data, topdown=False):
            for name in dirs + files:
                os.chown(os.path.join(folder, name), uid, gid, follow_symlinks=False)
        os.chown(self.data, uid, gid, follow_symlinks=False)

    def configure(self, target_time=None, fsync=False):
        """Our own configuration: the backed-up cluster's postgresql.conf, pg_hba.conf and
        postgresql.auto.conf are not read (the latter is kept aside and put back by ``restore_settings``)."""
        auto = os.path.join(self.data, "postgresql.auto.conf")
        if os.path.exists(auto):
            os.replace(auto, os.path.join(self.root, "postgresql.auto.conf.backed-up"))
        with open(auto, "w", encoding="utf-8") as handle:
            handle.write("# spp_backup: the backed-up cluster's own settings are set aside during recovery\n")
        for name in ("standby.signal", "postmaster.pid", "postmaster.opts", "backup_manifest"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(self.data, name))
        with open(os.path.join(self.data, "recovery.signal"), "w", encoding="utf-8"):
            pass
        os.makedirs(os.path.join(self.data, "pg_wal", "archive_status"), mode=0o700, exist_ok=True)
        with open(os.path.join(self.root, "hba.conf"), "w", encoding="utf-8") as handle:
            handle.write("local all all trust\n")
        with open(os.path.join(self.root, "ident.conf"), "w", encoding="utf-8"):
            pass
        walget = os.path.join(self.root, "walget.py")
        shutil.copyfile(WALGET, walget)
        command = " ".join(
            [_shell_word(interpreter(self.owner)), "-I", "-S", _shell_word(walget), _shell_word(self.exchange)]
        )
        settings = {
            "listen_addresses": "",
            "port": self.port,
            "unix_socket_directories": self.sock,
            "unix_socket_permissions": "0700",
            "hba_file": os.path.join(self.root, "hba.conf"),
            "ident_file": os.path.join(self.root, "ident.conf"),
            "restore_command": command + " %f %p",
            "recovery_target_action": "promote",
            "recovery_target_timeline": "latest",
            "hot_standby": "off",
            "archive_mode": "off",
            "max_wal_senders": 0,
            "max_replication_slots": 0,
            "shared_preload_libraries": "",
            "session_preload_libraries": "",
            "local_preload_libraries": "",
            "logging_collector": "off",
            "log_min_messages": "warning",
            "max_connections": 20,
            "fsync": "on" if fsync else "off",
            "synchronous_commit": "on" if fsync else "off",
            "log_checkpoints": "off",
        }
        if self.major >= 17:
            settings["summarize_wal"] = "off"
        if target_time:
            settings["recovery_target_time"] = target_time
            settings["recovery_target_inclusive"] = "on"
        self.conf = os.path.join(self.root, "scratch.conf")
        with open(self.conf, "w", encoding="utf-8") as handle:
            for key, value in settings.items():
                handle.write("%s = %s\n" % (key, _conf_value(value) if isinstance(value, str) else value))
        for name in ("scratch.conf", "hba.conf", "ident.conf", "walget.py"):
            os.chmod(os.path.join(self.root, name), 0o644)
        self.chown_all()

    def drop_target(self):
        """Recovery ended at the end of the archive without meeting a transaction after the target: the archive
        then holds nothing committed after it, and the end of the archive is the state at the target. Start again
        without a target: recovery goes on from its last restartpoint and promotes."""
        with open(self.conf, encoding="utf-8") as handle:
            lines = [line for line in handle if not line.startswith("recovery_target_time")]
        with open(self.conf, "w", encoding="utf-8") as handle:
            handle.writelines(lines)

    def start(self):
        log = os.fdopen(os.open(self.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600), "ab")
        try:
            self.process = subprocess.Popen(  # noqa: S603 - fixed argv, no shell
                [self.binary("postgres"), "-D", self.data, "-c", "config_file=%s" % self.conf],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                preexec_fn=self._as_owner(),  # noqa: PLW1509 - drops root before exec, nothing else
                start_new_session=True,
                cwd=self.root,
            )
        finally:
            log.close()

    def log_text(self):
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as handle:
                return handle.read()
        except OSError:
            return ""

    def pgconfig(self, user="postgres"):
        return PgConfig(host=self.sock, port=self.port, user=user, bin_dir=self.bin_dir)

    def wait_open(self, server, timeout=None, progress=None, complete_until=None):
        """Wait until recovery is over and the postmaster accepts connections (promoted); the line that says
        where recovery stopped. A RestoreError with the postmaster's words when it stops instead."""
        deadline = time.monotonic() + timeout if timeout else None
        while True:
            if server.error is not None:
                raise server.error
            code = self.process.poll()
            if code is not None:
                # Recovery replayed every WAL file and met no commit after the target. Only when the archive is
                # known to hold everything written up to the target (``complete_until()``) is its end the state
                # at the target; otherwise the WAL after the last stored file is missing, not empty.
                if self.ended_before_target() and not self.restarted and complete_until and complete_until():
                    self.restarted = True
                    self.drop_target()
                    self.start()
                    continue
                raise RestoreError(self.failure_text(code))
            try:
                conn = psycopg2.connect(
                    host=self.sock, port=self.port, user="postgres", dbname="postgres", connect_timeout=5
                )
                conn.close()
                return self._opened(server)
            except psycopg2.OperationalError as exc:
                if "does not exist" in str(exc):  # answered: recovery is over (that role or database is not there)
                    return self._opened(server)
            if deadline and time.monotonic() > deadline:
                raise RestoreError("The scratch cluster did not finish its recovery in time.")
            if progress:
                progress(len(server.served))
            time.sleep(0.1)

    def _opened(self, server):
        # A file refused while the postmaster was finishing would have ended its recovery early: never used.
        if server.error is not None:
            raise server.error
        return self.stop_line()

    def stop_line(self):
        found = STOP_RE.findall(self.log_text())
        return found[-1].strip() if found else None

    def replayed_to_line(self):
        found = REACHED_RE.findall(self.log_text())
        return found[-1].strip() if found else None

    def ended_before_target(self):
        return "recovery ended before configured recovery target was reached" in self.log_text()

    def failure_text(self, code):
        lines = [line for line in self.log_text().splitlines() if "FATAL" in line or "PANIC" in line]
        words = lines[-1].split(":", 3)[-1].strip() if lines else "exit code %s" % code
        if "recovery ended before configured recovery target was reached" in words:
            return (
                "The archive does not reach the chosen second yet: recovery replayed every WAL file stored and met "
                "no transaction after it, and the newest WAL the server wrote before it is not stored yet. Choose "
                "an earlier second, or try again once the receiver has stored the segment in progress (see "
                "'spp-backup pitr list'). Nothing was changed."
            )
        return "The scratch PostgreSQL server stopped during recovery: %s" % words

    def superuser(self, candidates=()):
        """The name of the restored cluster's bootstrap superuser, read through a role of ``candidates`` (or
        postgres) that existed in the backed-up cluster; trusted on the private socket only."""
        tried = []
        for user in [*(c for c in candidates if c), "postgres"]:
            if user in tried:
                continue
            tried.append(user)
            try:
                conn = psycopg2.connect(host=self.sock, port=self.port, user=user, dbname="template1")
            except psycopg2.OperationalError:
                continue
            try:
                with conn.cursor() as cr:
                    cr.execute("SELECT rolname FROM pg_roles WHERE oid = 10")
                    return cr.fetchone()[0]
            finally:
                conn.close()
        raise RestoreError(
            "Cannot read the scratch cluster: none of the roles %s exists in it. Give the role the worker connects "
            "with (--db-user)." % ", ".join(tried)
        )

    def shutdown(self, mode="fast"):
        """Stop the postmaster: ``fast`` (a clean shutdown, restore-cluster) or ``immediate`` (scratch)."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGINT if mode == "fast" else signal.SIGQUIT)
        try:
            self.process.wait(timeout=120 if mode == "fast" else 30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def restore_settings(self):
        """Put the backed-up cluster's postgresql.auto.conf back and drop the recovery settings (restore-cluster).
        Written without following a link someone may have left at its name."""
        saved = os.path.join(self.root, "postgresql.auto.conf.backed-up")
        auto = os.path.join(self.data, "postgresql.auto.conf")
        with contextlib.suppress(FileNotFoundError):
            os.unlink(auto)
        if not os.path.exists(saved):
            return
        with open(saved, "rb") as source:
            content = source.read()
        fd = os.open(auto, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(content)
            if os.geteuid() == 0:
                os.fchown(out.fileno(), *self.owner)

    def remove(self):
        """Stop the postmaster and every process of its session (restore_command's included), then remove the
        folder."""
        with contextlib.suppress(OSError), open(os.path.join(self.exchange, "closed"), "wb"):
            pass
        self.shutdown("immediate")
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.process.pid, signal.SIGKILL)
        for _attempt in range(5):
            shutil.rmtree(self.root, ignore_errors=True)
            if not os.path.exists(self.root):
                break
            time.sleep(0.2)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.remove()


def check_scratch_space(tmp_dir, need):
    """A RestoreError before anything is made when ``tmp_dir`` lacks ``need`` bytes."""
    where = tmp_dir or tempfile.gettempdir()
    free = shutil.disk_usage(where).free
    if free < need:
        raise RestoreError(
            "Not enough free disk space for the scratch cluster at %s: %s free, %s needed (the cluster as backed "
            "up, plus room for the WAL it replays). Free space or give another folder with --tmp-dir. Nothing "
            "was changed." % (where, human_bytes(free), human_bytes(need))
        )
