"""Continuous WAL protection as the worker service runs it, configured for the server in odoo.conf::

    [spp_backup]
    signing_key_file = /etc/odoo/spp_backup_signing.pem
    pitr_destinations = /srv/backups/pitr, s3://ministry-backups/pitr
    pitr_recipients = age1...            ; optional: encrypt to these public keys
    pitr_base_backup_hours = 24          ; a base backup when the newest is older than this
    pitr_window_days = 14                ; any second of the last 14 days can be restored
    pitr_partial_seconds = 30            ; the segment in progress is stored this often (the RPO)
    pitr_standby_max_lag_seconds = 60    ; a streaming standby further behind is a problem
    pitr_standby_max_lag_bytes = 67108864

The receiver runs in a thread of the worker and is started again when it stops; a base backup is taken when
the newest is older than its schedule (and at once after a gap), and each destination is then pruned to the
window. What it does is written to the receiver's state file for ``pitr status`` and the dashboard.
"""

import datetime
import logging
import os
import threading
import time

from ..core.errors import PreflightError
from ..db import replication
from ..formats import catalog
from ..io import crypto
from ..io.storage import open_storage
from . import archive, basebackup, receiver, recover, retention

_logger = logging.getLogger("spp_backup.pitr")

CHECK_SECONDS = 60.0
# What each destination can restore to is read again this often (a listing and a few signed entries), and at
# once after a base backup.
WINDOW_SECONDS = 300.0
# After a failed base backup, the next try waits this long (it copies the whole cluster each time).
BASE_RETRY_SECONDS = 900
RECEIVER_PAUSE, RECEIVER_PAUSE_MAX = 5, 300
# A base backup older than its schedule by more than this (the time to take the one due) is a problem.
BASE_GRACE_HOURS = 1.0


def _list(value):
    return [part.strip() for part in str(value or "").replace("\n", ",").split(",") if part.strip()]


def _number(settings, key, default):
    value = settings.get(key)
    if value in (None, ""):
        return default
    try:
        return float(value)
    except ValueError:
        raise PreflightError("%s in odoo.conf's [spp_backup] section must be a number, not %r." % (key, value))


def configured_locations(settings):
    """The destinations odoo.conf's ``pitr_destinations`` names, as written there."""
    return _list(settings.get("pitr_destinations"))


def server_keys(settings, signing_key=None):
    """Every public key this server trusts for its WAL archive: its signing key's, then ``verify_key``'s (a key
    replaced since still verifies what it signed)."""
    keys = []
    if signing_key is None and settings.get("signing_key_file"):
        signing_key = crypto.load_signing_key(settings.get("signing_key_file"))
    if signing_key is not None:
        keys.append(crypto.public_key_text(signing_key.public_key()))
    return keys + crypto.public_key_list(settings.get("verify_key"))


class PitrService:
    """The receiver, the base backup schedule and the window's retention of one server."""

    def __init__(self, settings, pgc, data_dir, log=None):
        self.settings = settings
        self.pgc = pgc
        self.log = log or _logger.info
        signing_file = settings.get("signing_key_file")
        if not signing_file:
            raise PreflightError(
                "pitr_destinations is set but signing_key_file is not: the WAL archive's entries are signed."
            )
        self.signing_key = crypto.load_signing_key(signing_file)
        # Every key the server trusts (a key replaced since still verifies what it signed): retention never
        # takes a backup signed by an older key for a killed one.
        self.public_key = server_keys(settings, self.signing_key)
        self.recipients = crypto.parse_recipients(_list(settings.get("pitr_recipients")))
        self.destinations = {}
        for location in configured_locations(settings):
            config = catalog.destination_for(location, settings)[0]
            self.destinations[location] = open_storage(config, settings)
        self.base_hours = _number(settings, "pitr_base_backup_hours", 24.0)
        self.window = datetime.timedelta(days=_number(settings, "pitr_window_days", 14.0))
        self.spool = settings.get("pitr_spool") or os.path.join(data_dir or ".", "spp_backup", "wal-spool")
        self.tmp_dir = settings.get("pitr_tmp_dir") or None
        self.standby_max_seconds = _number(settings, "pitr_standby_max_lag_seconds", 60.0)
        self.standby_max_bytes = _number(settings, "pitr_standby_max_lag_bytes", 64 * 1024 * 1024)
        self.receiver = receiver.Receiver(
            pgc,
            self.destinations,
            self.spool,
            self.signing_key,
            self.recipients,
            slot=settings.get("pitr_slot") or receiver.DEFAULT_SLOT,
            partial_seconds=_number(settings, "pitr_partial_seconds", 30.0),
            log=self.log,
        )
        self.gaps_seen = 0
        # Why the receiver's thread last stopped (until it runs again), why the last base backup failed (until one
        # succeeds).
        self.receiver_error = None
        self.base_error = None
        self.retry_after = 0.0
        # Called with status() after every pass (the worker writes it into the databases it serves).
        self.report = None
        # Set to report now (after a base backup, when the receiver stopped): the reporter thread writes it.
        self.report_now = threading.Event()
        self.base_running = False
        self._windows, self._windows_due = {}, 0.0
        # One read of the windows at a time: an older read never replaces a newer one.
        self._windows_lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings, pgc, data_dir, log=None):
        """The service when odoo.conf names pitr_destinations, else None."""
        if not configured_locations(settings):
            return None
        return cls(settings, pgc, data_dir, log)

    def newest_base_age(self):
        """Hours since the newest verified base backup at any destination that answers (None: none anywhere)."""
        newest = None
        for storage in self.destinations.values():
            try:
                arch = archive.Archive(storage, self.receiver.system_id)
                docs = [doc for _id, doc, _p in arch.bases(self.public_key) if doc is not None]
            except Exception:  # that destination is down: the others say
                continue
            for doc in docs:
                moment = datetime.datetime.fromisoformat(doc["consistent_at"].replace("Z", "+00:00"))
                newest = max(newest or moment, moment)
        if newest is None:
            return None
        return (datetime.datetime.now(datetime.timezone.utc) - newest).total_seconds() / 3600.0

    def base_backup_due(self):
        if time.monotonic() < self.retry_after:
            return None
        if len(self.receiver.gaps) > self.gaps_seen:
            return "the WAL archive has a gap"
        age = self.newest_base_age()
        if age is None:
            return "there is no base backup yet"
        if age >= self.base_hours:
            return "the newest base backup is %.1f h old" % age
        return None

    def take_base_backup(self, why):
        self.log("Taking a base backup: %s" % why)
        gaps = len(self.receiver.gaps)
        self.base_running = True
        try:
            self._take_base_backup(gaps)
        finally:
            self.base_running = False

    def _take_base_backup(self, gaps):
        basebackup.take_base_backup(
            self.pgc,
            self.destinations,
            self.signing_key,
            self.recipients,
            tmp_dir=self.tmp_dir,
            spool=self.spool,
            log=self.log,
        )
        self.gaps_seen = gaps
        for storage in self.destinations.values():
            try:
                done = retention.prune(archive.Archive(storage, self.receiver.system_id), self.public_key, self.window)
                if done["failed"]:
                    self.log("Could not remove everything older than the window: %s" % "; ".join(done["failed"]))
            except Exception as exc:
                self.log("Could not prune the archive at %s: %s" % (storage.describe(), exc))

    def windows(self, force=False):
        """What each destination can restore to: {location: {ranges, gaps, problems, bases, newest_base,
        databases, error}}, times as ISO 8601 UTC; read again every WINDOW_SECONDS."""
        with self._windows_lock:
            if not force and time.monotonic() < self._windows_due:
                return self._windows
            return self._read_windows()

    def _read_windows(self):
        found = {}
        for location, storage in self.destinations.items():
            try:
                win = recover.window(archive.Archive(storage, self.receiver.system_id), self.public_key)
            except Exception as exc:  # that destination is down or refuses: said, the others still count
                found[location] = {"ranges": [], "error": str(exc) or type(exc).__name__}
                continue
            newest = win.bases[-1] if win.bases else {}
            # Every database a kept base backup holds: one dropped since the newest can still be restored to a
            # second before it was dropped.
            databases = sorted({name for doc in win.bases for name in doc.get("databases") or []})
            found[location] = {
                "ranges": [[_utc(a), _utc(b)] for a, b in win.ranges],
                "gaps": ["%s to %s (%d segment(s) missing)" % gap for gap in win.gaps],
                "problems": list(win.problems),
                "bases": len(win.bases),
                "newest_base": newest.get("consistent_at"),
                "databases": databases,
                "error": None,
            }
        # A destination that cannot restore anything yet (a base backup's WAL on its way) is read again soon.
        settled = all(win.get("ranges") for win in found.values())
        self._windows, self._windows_due = found, time.monotonic() + (WINDOW_SECONDS if settled else CHECK_SECONDS)
        return found

    def status(self):
        """What the dashboard shows and the alerts read: the receiver's state, each destination's window and
        every problem in words."""
        state = receiver.read_state(self.receiver.spool)
        problems = receiver.state_problems(state, datetime.datetime.now(datetime.timezone.utc))
        problems += [error for error in (self.receiver_error, self.base_error) if error]
        windows = self.windows()
        for location, win in sorted(windows.items()):
            if win.get("error"):
                problems.append("destination %s cannot be read: %s" % (location, win["error"]))
                continue
            if not win["ranges"]:
                problems.append("destination %s: no second can be restored from it yet" % location)
            problems += [
                "destination %s: %s" % (location, text)
                for text in win["problems"]
                # The one being written has no base.json until its last byte is stored.
                if not (self.base_running and "is not complete" in text)
            ]
            problems += ["destination %s: WAL missing from %s" % (location, text) for text in win["gaps"]]
        databases = sorted({name for win in windows.values() for name in win.get("databases") or []})
        newest = [win["newest_base"] for win in windows.values() if win.get("newest_base")]
        if newest:
            moment = datetime.datetime.fromisoformat(max(newest).replace("Z", "+00:00"))
            age = (datetime.datetime.now(datetime.timezone.utc) - moment).total_seconds() / 3600.0
            if age > self.base_hours + BASE_GRACE_HOURS:
                problems.append("the newest base backup is %.1f h old; one is due every %g h" % (age, self.base_hours))
        standbys = self.standbys(problems)
        return {
            "system_id": self.receiver.system_id,
            "server": self.pgc.describe(),
            "receiver": state,
            "destinations": windows,
            "databases": databases,
            "standbys": standbys,
            "problems": problems,
            "window_days": self.window.total_seconds() / 86400.0,
            "base_backup_hours": self.base_hours,
            "partial_seconds": self.receiver.partial_seconds,
        }

    def standbys(self, problems):
        """The server's streaming standbys (but this receiver and base backups) as dicts; those past the limits
        or not streaming added to ``problems``."""
        try:
            found = replication.standbys(self.pgc)
        except Exception as exc:  # said, not fatal: the report goes on
            problems.append("the server's standbys cannot be read: %s" % exc)
            return []
        found = [s for s in found if s.name not in (receiver.APPLICATION_NAME, basebackup.APPLICATION_NAME)]
        for standby, why in replication.lagging(found, self.standby_max_seconds, self.standby_max_bytes):
            problems.append("standby %s: %s" % (standby.name or standby.client, why))
        return [standby.as_dict() for standby in found]

    def _report(self):
        if self.report is None or not self.receiver.system_id:
            return
        try:
            self.report(self.status())
        except Exception as exc:  # the dashboard misses one pass; protection goes on
            self.log("Could not report the state of continuous protection: %s" % exc)

    def _report_every(self, stop):
        """Report every CHECK_SECONDS, and when asked (``report_now``), from a thread of its own: a base backup that
        takes an hour is no silence, and a database that is slow to write to never holds protection up."""
        while not stop.is_set():
            self.report_now.wait(CHECK_SECONDS)
            self.report_now.clear()
            if stop.is_set():
                break
            self._report()

    def run(self, stop):
        """Until ``stop`` is set: the receiver in its own thread (started again, after a pause, when it fails),
        base backups on schedule, retention."""
        thread, receiver_stop = receiver.run_in_thread(self.receiver)
        reporter = threading.Thread(target=self._report_every, args=(stop,), name="spp_backup-pitr-report", daemon=True)
        reporter.start()
        pause = RECEIVER_PAUSE
        try:
            while not stop.is_set():
                if not thread.is_alive():
                    error = thread.errors[0] if thread.errors else None
                    self.receiver_error = "the WAL receiver stopped: %s" % (error or "no detail")
                    self.log("%s; starting it again in %d s" % (self.receiver_error, pause))
                    self.report_now.set()
                    if stop.wait(pause):
                        break
                    pause = min(RECEIVER_PAUSE_MAX, pause * 2)
                    self.receiver.process = None
                    thread, receiver_stop = receiver.run_in_thread(self.receiver)
                    continue
                self.receiver_error = None
                if self.receiver.system_id:
                    try:
                        why = self.base_backup_due()
                        if why:
                            self.take_base_backup(why)
                            self.base_error = None
                            self.windows(force=True)
                            self.report_now.set()
                    except Exception as exc:  # told and tried again later; the receiver goes on
                        self.base_error = "base backup failed: %s" % exc
                        self.retry_after = time.monotonic() + BASE_RETRY_SECONDS
                        self.log("Base backup failed (tried again in %d min): %s" % (BASE_RETRY_SECONDS // 60, exc))
                        self.report_now.set()
                stop.wait(CHECK_SECONDS if self.receiver.system_id else 1.0)
        finally:
            receiver_stop.set()
            self.report_now.set()
            thread.join(120)
            reporter.join(5)


def _utc(moment):
    return moment.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def start_in_thread(service):
    """Run ``service`` in a daemon thread: (thread, stop event)."""
    stop = threading.Event()

    def target():
        try:
            service.run(stop)
        except Exception:
            _logger.exception("Continuous WAL protection stopped")

    thread = threading.Thread(target=target, name="spp_backup-pitr", daemon=True)
    thread.start()
    return thread, stop
