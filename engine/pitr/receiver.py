"""The WAL receiver: ``pg_receivewal`` on a physical replication slot of its own, supervised, and the shipping of
what it writes to the destinations.

``pg_receivewal`` writes the server's WAL into a spool folder as it is written: the segment in progress as
``<name>.partial``, renamed ``<name>`` once complete. The receiver

- creates the slot on first use (``--create-slot --if-not-exists``), so the server keeps the WAL not yet
  received while the receiver is down (bounded by the server's ``max_slot_wal_keep_size``);
- starts ``pg_receivewal`` and starts it again when it stops (1 s, then up to 60 s apart), remembering why it
  stopped; a slot the server invalidated ("has already been removed") is a gap: it is said, and the slot is
  made again so that streaming goes on (a base backup is then needed to cover the gap);
- ships every completed segment and history file once (compressed, encrypted, checksummed, with its signed
  entry) to every destination, then removes it from the spool; a destination that fails gets it on a later
  pass, the spool keeps it meanwhile;
- ships the segment in progress every ``partial_seconds`` when it grew, under ``<name>.partial``: the newest
  seconds are in the archive without waiting for a 16 MiB segment to fill;
- writes its state (running, restarts, the last error, WAL position of the server and of the archive, the
  seconds the archive is behind) to ``receiver.json`` in the spool, for the dashboard and ``pitr status``.

It runs asynchronously: the server never waits for it (never list it in ``synchronous_standby_names``: a dead
receiver would stop every commit).
"""

import contextlib
import datetime
import json
import os
import re
import subprocess
import threading
import time

import psycopg2

from ..core.errors import BackupError, PreflightError
from ..db import pg
from ..db.walcheck import MIN_MAJOR, identify_system
from ..io.storage.local import make_private_dirs
from . import archive, walnames

APPLICATION_NAME = "spp_backup_receiver"
DEFAULT_SLOT = "spp_backup"
STATE_FILE = "receiver.json"
# Samples of the server's position kept (one per pass): a few hours at the default pass of a second.
SAMPLES_KEPT = 20000
SLOT_RE = re.compile(r"[a-z0-9_]{1,63}")
TORN_PARTIAL_RE = re.compile(r'"([0-9A-F]{24}\.partial)" has \d+ bytes, should be 0 or \d+')
LOST_SLOT_WORDS = ("has already been removed", "can no longer get changes from replication slot", "invalidated")


def conninfo(pgc, application_name):
    """A libpq connection string for the replication tools (no password: it travels in PGPASSWORD)."""
    parts = {"application_name": application_name}
    for key in ("host", "port", "user"):
        value = getattr(pgc, key)
        if value not in (None, ""):
            parts[key] = value
    return " ".join("%s='%s'" % (k, str(v).replace("\\", "\\\\").replace("'", "\\'")) for k, v in parts.items())


def check_slot_name(slot):
    if not SLOT_RE.fullmatch(slot or ""):
        raise PreflightError(
            "%r is not a usable replication slot name: lower-case letters, digits and '_', at most 63." % (slot,)
        )


def iso_of(timestamp):
    return datetime.datetime.fromtimestamp(timestamp, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def now_iso():
    return iso_of(time.time())


class Receiver:
    """Supervises pg_receivewal and ships its WAL; ``run(stop)`` until the ``stop`` event is set."""

    def __init__(
        self,
        pgc,
        destinations,
        spool,
        signing_key,
        recipients=(),
        slot=DEFAULT_SLOT,
        partial_seconds=30.0,
        poll_seconds=1.0,
        log=None,
    ):
        check_slot_name(slot)
        if signing_key is None:
            raise PreflightError(
                "Continuous WAL protection signs every entry of its archive: set signing_key_file in odoo.conf's "
                "[spp_backup] section (or pass --sign-key)."
            )
        if not destinations:
            raise PreflightError("Continuous WAL protection needs at least one destination.")
        self.pgc = pgc
        self.destinations = dict(destinations)  # {name: storage}
        self.spool = os.path.abspath(spool)
        self.signing_key = signing_key
        self.recipients = list(recipients)
        self.slot = slot
        self.partial_seconds = partial_seconds
        self.poll_seconds = poll_seconds
        self.log = log or (lambda message: None)
        self.process = None
        self.restarts = 0
        self.backoff = 1.0
        self.next_start = 0.0
        self.last_error = None
        self.gaps = []
        self.pending = {}  # name -> destinations still to write it to
        self.partial_shipped = {}  # name -> (size, mtime) of the partial last shipped
        self.last_partial = 0.0
        self.shipped = {"name": None, "at": None, "lsn": None, "complete_until": None}
        self.samples = []  # (server time, WAL position), oldest first
        self.server_lsn = None
        self.failures = {}
        self.system_id = None
        self.segment_size = walnames.DEFAULT_SEGMENT_SIZE
        self._stderr_path = os.path.join(self.spool, "pg_receivewal.log")

    # ------------------------------------------------------------ setup

    def prepare(self):
        make_private_dirs(self.spool)
        self.system_id, _timeline, _pos = identify_system(self.pgc)
        with pg.cursor(self.pgc, self.pgc.maintenance_db) as cr:
            cr.execute("SELECT setting::bigint FROM pg_settings WHERE name = 'wal_segment_size'")
            self.segment_size = int(cr.fetchone()[0])
            major = cr.connection.server_version // 10000
        if major < MIN_MAJOR:
            raise PreflightError(
                "Continuous WAL protection needs PostgreSQL %d or later (its pg_receivewal resumes from the slot's "
                "position); the server at %s runs %d. Nightly backups are not affected."
                % (MIN_MAJOR, self.pgc.describe(), major)
            )
        for name, storage in self.destinations.items():
            try:
                storage.probe()
            except Exception as exc:
                self.failures[name] = str(exc)
        self.tool = pg.tool(self.pgc, "pg_receivewal")
        self._create_slot()
        self.log(
            "Receiving the WAL of server %s (system id %s) on slot %s into %s"
            % (self.pgc.describe(), self.system_id, self.slot, self.spool)
        )

    def _run_tool(self, *args):
        return subprocess.run(  # noqa: S603 - fixed argv, no shell
            [self.tool, "-d", conninfo(self.pgc, APPLICATION_NAME), "-S", self.slot, *args],
            env=self.pgc.env(),
            capture_output=True,
            text=True,
            timeout=120,
        )

    def _create_slot(self):
        done = self._run_tool("--create-slot", "--if-not-exists")
        if done.returncode != 0:
            raise PreflightError(
                "Cannot create the replication slot %s: %s" % (self.slot, pg.last_lines(done.stderr) or "no detail")
            )

    # ------------------------------------------------------------ the process

    def _start(self):
        self._stderr = open(self._stderr_path, "ab")  # noqa: SIM115 - kept while the process runs
        # What this run writes, and only that, says why it stopped.
        self._stderr_offset = self._stderr.tell()
        self.process = subprocess.Popen(  # noqa: S603 - fixed argv, no shell
            [
                self.tool,
                "-d",
                conninfo(self.pgc, APPLICATION_NAME),
                "-S",
                self.slot,
                "-D",
                self.spool,
                "--no-loop",
                "--no-password",
                "--status-interval",
                "5",
            ],
            env=self.pgc.env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=self._stderr,
            start_new_session=True,
        )
        self.started_at = time.monotonic()

    def _stderr_tail(self):
        try:
            with open(self._stderr_path, "rb") as handle:
                size = os.path.getsize(self._stderr_path)
                handle.seek(max(getattr(self, "_stderr_offset", 0), size - 4096))
                return handle.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def supervise(self):
        """Start pg_receivewal when it is not running (at most as often as the backoff allows)."""
        if self.process is not None and self.process.poll() is None:
            if time.monotonic() - self.started_at > 60:
                self.backoff = 1.0
            return
        if self.process is not None:
            code = self.process.returncode
            self._stderr.close()
            tail = pg.last_lines(self._stderr_tail(), 2)
            self.last_error = "pg_receivewal stopped (exit code %s): %s" % (code, tail or "no detail")
            self.log(self.last_error)
            self.process = None
            self.restarts += 1
            self.next_start = time.monotonic() + self.backoff
            self.backoff = min(60.0, self.backoff * 2)
            if any(words in tail for words in LOST_SLOT_WORDS):
                self._heal_lost_slot(tail)
            torn = TORN_PARTIAL_RE.search(tail)
            if torn:
                # Killed while it made the file (it fills it with zeros before writing WAL into it): the slot
                # still holds that WAL on the server, so it is received again into a new file.
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(os.path.join(self.spool, torn.group(1)))
                self.log("Removed %s, left unfinished by a killed pg_receivewal" % torn.group(1))
                self.next_start = time.monotonic()
        if time.monotonic() >= self.next_start:
            self._start()

    def _heal_lost_slot(self, why):
        """The server removed WAL the slot needed: that WAL is gone for good. Say so, and stream again from a
        new slot (only a base backup taken now covers what follows)."""
        self.gaps.append({"at": now_iso(), "why": why})
        self.log("GAP in the WAL archive: %s. Making the slot again; take a base backup now." % why)
        with contextlib.suppress(Exception):
            self._run_tool("--drop-slot")
        # What was received and not stored yet goes first; then the slot starts afresh.
        with contextlib.suppress(Exception):
            self.ship(force_partial=True)
        for name in os.listdir(self.spool):
            if name.endswith(archive.PARTIAL):
                os.unlink(os.path.join(self.spool, name))
        self._create_slot()

    def stop_process(self):
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process is not None:
            self._stderr.close()
        self.process = None

    # ------------------------------------------------------------ shipping

    def ship(self, force_partial=False):
        """Ship completed WAL files, then the segment in progress when it is due; True when something was
        shipped."""
        shipped = False
        self._sample_server()
        for name in sorted(os.listdir(self.spool)):
            if walnames.is_wal_file(name):
                shipped |= self._ship_complete(name)
        due = force_partial or time.monotonic() - self.last_partial >= self.partial_seconds
        if due:
            self.last_partial = time.monotonic()
            for name in sorted(os.listdir(self.spool)):
                if name.endswith(archive.PARTIAL) and walnames.SEGMENT_RE.fullmatch(name[: -len(archive.PARTIAL)]):
                    shipped |= self._ship_partial(name[: -len(archive.PARTIAL)])
        return shipped

    def complete_until(self, position):
        """The newest moment (the server's clock) at which the server had written nothing past ``position``:
        an archive holding everything up to ``position`` holds every WAL record written before it. None when
        no sample shows it (the receiver is catching up)."""
        fitting = [moment for moment, lsn in self.samples if lsn <= position]
        return max(fitting) if fitting else None

    def _storages(self, names):
        return {name: self.destinations[name] for name in names}

    def _ship_complete(self, name):
        path = os.path.join(self.spool, name)
        remaining = self.pending.setdefault(name, set(self.destinations))
        until = None
        if walnames.SEGMENT_RE.fullmatch(name):
            _tli, segno = walnames.parse_segment(name, self.segment_size)
            until = self.complete_until((segno + 1) * self.segment_size)
        ok = self._write(name, path, remaining, until, partial=False)
        if remaining:
            return ok
        del self.pending[name]
        os.unlink(path)
        self.partial_shipped.pop(name, None)
        for storage in self.destinations.values():
            # The partial of a completed segment is no longer needed; what cannot be removed now is harmless.
            prefix = archive.wal_prefix(self.system_id)
            with contextlib.suppress(Exception):
                for file in storage.list_dir(prefix):
                    if file.startswith(name + archive.PARTIAL + "."):
                        storage.delete("%s/%s" % (prefix, file))
        if walnames.SEGMENT_RE.fullmatch(name):
            self.shipped.update(name=name, at=now_iso(), complete_until=until)
        self.log("Archived WAL %s" % name)
        return True

    def _ship_partial(self, name):
        path = os.path.join(self.spool, name + archive.PARTIAL)
        try:
            stat = os.stat(path)
        except FileNotFoundError:
            return False
        # What pg_receivewal reported written before the file is read is in what is stored.
        received = self._received_position()
        until = self.complete_until(walnames.parse_lsn(received)) if received else None
        signature = (stat.st_size, stat.st_mtime_ns)
        if self.partial_shipped.get(name) == signature:
            if until is not None:
                self.shipped["complete_until"] = until
            return False
        remaining = set(self.destinations)
        self._write(name, path, remaining, until, partial=True)
        if not remaining:
            self.partial_shipped[name] = signature
            self.shipped.update(name=name + archive.PARTIAL, at=now_iso(), lsn=received, complete_until=until)
        return not remaining

    def _write(self, name, path, remaining, complete_until, partial):
        """Write one WAL file to the destinations in ``remaining`` (removed from it as each succeeds)."""
        stem = name + (archive.PARTIAL if partial else "")
        prefix = archive.wal_prefix(self.system_id)
        try:
            with open(path, "rb") as source:
                stored = archive.store_stream(
                    self._storages(remaining), lambda file: "%s/%s" % (prefix, file), stem, source, self.recipients
                )
        except (OSError, BackupError) as exc:
            for dest in remaining:
                self.failures[dest] = "cannot write WAL %s: %s" % (stem, exc)
            return False
        entry = archive.wal_entry(self.system_id, name, stored, now_iso(), self.segment_size, partial, complete_until)
        data = archive.signed_bytes(entry, self.signing_key)
        written = set(remaining) - set(stored.failures)
        failures = archive.write_small(self._storages(written), "%s/%s%s" % (prefix, stem, archive.ENTRY_SUFFIX), data)
        for dest in written - set(failures):
            remaining.discard(dest)
            self.failures.pop(dest, None)
        for dest, error in {**stored.failures, **failures}.items():
            self.failures[dest] = "cannot write WAL %s: %s" % (stem, error)
        return not remaining

    # ------------------------------------------------------------ positions and state

    def _rows(self, statement, params=()):
        """The rows of one query on the server, or None when it does not answer (the receiver goes on)."""
        try:
            with pg.cursor(self.pgc, self.pgc.maintenance_db) as cr:
                cr.execute(statement, params)
                return cr.fetchall()
        except (PreflightError, psycopg2.Error):
            return None

    def _sample_server(self):
        """(the server's clock, its WAL write position) kept for complete_until, a few hours' worth."""
        rows = self._rows(
            "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), "
            "pg_current_wal_lsn()::text"
        )
        if not rows:
            self.server_lsn = None
            return
        moment, self.server_lsn = rows[0]
        self.samples.append((moment, walnames.parse_lsn(self.server_lsn)))
        if len(self.samples) > SAMPLES_KEPT:
            del self.samples[: len(self.samples) - SAMPLES_KEPT]

    def _received_position(self):
        """Where pg_receivewal has written to, as the server saw it last (pg_stat_replication)."""
        rows = self._rows(
            "SELECT write_lsn::text FROM pg_stat_replication WHERE application_name = %s "
            "ORDER BY backend_start DESC LIMIT 1",
            (APPLICATION_NAME,),
        )
        return rows[0][0] if rows else None

    def slot_state(self):
        """(wal_status, bytes of WAL the slot holds back on the server), ("missing", None) without the slot, or
        (None, None) when the server does not answer."""
        rows = self._rows(
            "SELECT wal_status, pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint "
            "FROM pg_replication_slots WHERE slot_name = %s",
            (self.slot,),
        )
        if rows is None:
            return None, None
        return tuple(rows[0]) if rows else ("missing", None)

    def state(self):
        wal_status, retained = self.slot_state()
        received = self._received_position()
        server = self.server_lsn
        lag = None
        if received and server:
            lag = max(0, walnames.parse_lsn(server) - walnames.parse_lsn(received))
        return {
            "system_id": self.system_id,
            "server": self.pgc.describe(),
            "slot": self.slot,
            "slot_status": wal_status,
            "slot_retained_bytes": retained,
            "receiving": self.process is not None and self.process.poll() is None,
            "restarts": self.restarts,
            "last_error": self.last_error,
            "server_lsn": server,
            "received_lsn": received,
            "receive_lag_bytes": lag,
            "newest_archived": self.shipped,
            "archive_behind_seconds": self._behind_seconds(),
            "waiting_in_spool": sorted(self.pending),
            "destination_errors": dict(self.failures),
            "gaps": self.gaps,
            "updated_at": now_iso(),
        }

    def _behind_seconds(self):
        until = self.shipped.get("complete_until")
        if not until or not self.samples:
            return None
        newest = datetime.datetime.fromisoformat(self.samples[-1][0].replace("Z", "+00:00"))
        return round(
            max(0.0, (newest - datetime.datetime.fromisoformat(until.replace("Z", "+00:00"))).total_seconds()), 1
        )

    def write_state(self):
        data = json.dumps(self.state(), indent=1, sort_keys=True).encode()
        temp = os.path.join(self.spool, ".%s.new" % STATE_FILE)
        with open(temp, "wb") as handle:
            handle.write(data)
        os.replace(temp, os.path.join(self.spool, STATE_FILE))

    # ------------------------------------------------------------ the loop

    def run(self, stop):
        """Receive and ship until ``stop`` (a threading.Event) is set; then stop pg_receivewal and ship what it
        wrote, the segment in progress included."""
        self.prepare()
        try:
            while not stop.is_set():
                self.supervise()
                self.ship()
                self.write_state()
                stop.wait(self.poll_seconds)
        finally:
            self.stop_process()
            with contextlib.suppress(Exception):
                self.ship(force_partial=True)
                self.write_state()


# The worker writes its state every pass: older than this, it is not running.
STATE_STALE_SECONDS = 120


def state_problems(state, now, max_behind_seconds=300.0):
    """What is wrong with continuous protection, from the receiver's state (``read_state``), in words. Pure."""
    if state is None:
        return ["the receiver has written no state: it has never run with this spool folder"]
    problems = []
    updated = datetime.datetime.fromisoformat(state["updated_at"].replace("Z", "+00:00"))
    age = (now - updated).total_seconds()
    if age > STATE_STALE_SECONDS:
        problems.append("the receiver has not written its state for %d s: is the worker running?" % age)
    elif not state.get("receiving"):
        problems.append("pg_receivewal is not running: %s" % (state.get("last_error") or "no detail"))
    behind = state.get("archive_behind_seconds")
    if behind is None:
        problems.append("the archive does not yet vouch for any recent second (catching up, or nothing stored)")
    elif behind > max_behind_seconds:
        problems.append("the archive is %.0f s behind the server (limit %.0f s)" % (behind, max_behind_seconds))
    slot = state.get("slot_status")
    if slot in ("lost", "unreserved", "missing"):
        problems.append("the replication slot is %s: WAL the archive lacks may be gone (a gap)" % slot)
    elif slot == "extended":
        problems.append(
            "the slot holds %s of WAL on the database server beyond max_wal_size: set max_slot_wal_keep_size "
            "so that a stuck receiver cannot fill its disk" % state.get("slot_retained_bytes")
        )
    problems += ["a gap in the WAL archive since %s: %s" % (gap["at"], gap["why"]) for gap in state.get("gaps") or []]
    problems += ["destination %s: %s" % item for item in sorted((state.get("destination_errors") or {}).items())]
    return problems


def read_state(spool):
    """The receiver's last written state, or None."""
    try:
        with open(os.path.join(spool, STATE_FILE), encoding="utf-8") as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return None


def run_in_thread(receiver):
    """Start ``receiver.run`` in a thread: (thread, stop event)."""
    stop = threading.Event()
    errors = []

    def target():
        try:
            receiver.run(stop)
        except BaseException as exc:  # kept for the caller
            errors.append(exc)

    thread = threading.Thread(target=target, name="spp_backup-receiver", daemon=True)
    thread.errors = errors
    thread.start()
    return thread, stop
