"""The worker: executes the queued runs of Odoo's ``spp_backup_run`` table, outside Odoo's processes.

Work is a row. Odoo creates a run (plan without secrets, state ``queued``)
on behalf of a person who had the right, and notifies the channel
``spp_backup_run``. A worker

- claims the oldest queued run with ``FOR UPDATE SKIP LOCKED``, so two
  workers (two nodes) never take the same run;
- holds a session advisory lock ``(RUN_LOCK_CLASS, run id)`` while it works:
  the lock is its proof of life. Any node tells a live run from a dead one
  by looking at ``pg_locks``; no shared file, no clock comparison. When the
  worker's process or node dies, PostgreSQL drops its session (TCP
  keepalives bound the time) and the lock with it;
- writes state, progress, log and heartbeat (PostgreSQL's clock) in short
  transactions, then the result; Odoo applies each result in its own
  transaction (the worker wakes Odoo's "Backup: Collect results" cron
  through ``ir_cron_trigger``);
- marks failed every running run whose lock is gone (a dead worker's);
- holds a shared advisory lock ``(WORKER_LOCK_CLASS, mode)`` for as long as
  it serves, so Odoo knows whether a service worker is alive or whether it
  must start a one-shot worker itself (the embedded default).

The worker reads its database connection, data_dir and keys from its own
odoo.conf: a plan names no file, no password, no endpoint that the worker
would trust without checking it against the scope settings (core/scope.py).
What a plan asks is executed by service/dispatch.py; what Odoo and the
worker agree on (locks, channel, queries) is in service/protocol.py.
"""

import collections
import contextlib
import json
import logging
import os
import select
import socket
import threading
import time
import traceback

import psycopg2
import psycopg2.extensions

from ..core import scope, states
from ..core.errors import BackupError, PreflightError
from ..pitr.service import PitrService, start_in_thread
from .dispatch import execute
from .protocol import (
    BUS_CHANNEL,
    BUS_TYPE,
    CHANNEL,
    COLLECT_CRON_XMLID,
    MODE_ONESHOT,
    MODE_SERVICE,
    RUN_LOCK_CLASS,
    WORKER_LOCK_CLASS,
    approved_folders,
    reap_dead_runs,
    write_pitr_status,
)

_logger = logging.getLogger("spp_backup.worker")

HEARTBEAT_SECONDS = 10
POLL_SECONDS = 10
LOG_LINES = 200
# TCP keepalives on the worker's sessions: a dead node's sessions, and so its
# locks, go within about idle + interval * count seconds.
KEEPALIVE = {"keepalives": 1, "keepalives_idle": 10, "keepalives_interval": 5, "keepalives_count": 3}
SERVER_KEEPALIVE = "SET tcp_keepalives_idle = 10; SET tcp_keepalives_interval = 5; SET tcp_keepalives_count = 3"


# --------------------------------------------------------------------------- the database side


def connect(pg, dbname):
    """An autocommit session for the worker, with keepalives on both sides."""
    kwargs = pg.dsn_kwargs(dbname)
    try:
        conn = psycopg2.connect(connect_timeout=15, application_name="spp_backup worker", **KEEPALIVE, **kwargs)
    except psycopg2.OperationalError as exc:
        text = (str(exc).strip().splitlines() or [repr(exc)])[0]
        raise PreflightError("Cannot connect to PostgreSQL at %s (%s): %s" % (pg.describe(), dbname, text)) from exc
    conn.autocommit = True
    with conn.cursor() as cr:
        cr.execute(SERVER_KEEPALIVE)
    return conn


def has_run_table(conn):
    with conn.cursor() as cr:
        cr.execute("SELECT to_regclass('public.spp_backup_run') IS NOT NULL")
        return cr.fetchone()[0]


def notify_odoo(pg, dbname, maintenance_conn=None):
    """Wake Odoo's "Backup: Collect results" cron of ``dbname`` now (cron threads listen on ``postgres``)."""
    try:
        with contextlib.closing(connect(pg, dbname)) as conn, conn.cursor() as cr:
            cr.execute(
                """
                INSERT INTO ir_cron_trigger (cron_id, call_at, create_date, write_date)
                SELECT d.res_id, now() AT TIME ZONE 'UTC', now() AT TIME ZONE 'UTC', now() AT TIME ZONE 'UTC'
                  FROM ir_model_data d WHERE d.model = 'ir.cron' AND d.module = %s AND d.name = %s
                """,
                COLLECT_CRON_XMLID,
            )
        if maintenance_conn is not None:
            with maintenance_conn.cursor() as cr:
                cr.execute("SELECT pg_notify('cron_trigger', %s)", (dbname,))
    except (psycopg2.Error, PreflightError) as exc:  # the cron's own schedule still collects the result
        _logger.warning("Cannot wake Odoo's collect cron on %s: %s", dbname, exc)


def notify_bus(conn, maintenance_conn, dbname, payload):
    """Post a ``spp_backup.run`` notification on Odoo's bus (the open forms follow it); best effort."""
    channel = json.dumps([dbname, BUS_CHANNEL], separators=(",", ":"))
    message = json.dumps({"type": BUS_TYPE, "payload": payload}, separators=(",", ":"))
    try:
        with conn.cursor() as cr:
            cr.execute(
                "INSERT INTO bus_bus (channel, message, create_date, write_date) "
                "VALUES (%s, %s, now() AT TIME ZONE 'UTC', now() AT TIME ZONE 'UTC')",
                (channel, message),
            )
        if maintenance_conn is not None:
            with maintenance_conn.cursor() as cr:
                cr.execute("SELECT pg_notify('imbus', %s)", (json.dumps([[dbname, BUS_CHANNEL]]),))
    except psycopg2.Error as exc:
        _logger.debug("Cannot post on Odoo's bus: %s", exc)


def memory_text():
    """The worker's peak memory so far, for the run's log (Linux: /proc/self/status)."""
    values = {}
    try:
        with open("/proc/self/status", encoding="ascii") as handle:
            for line in handle:
                key, _sep, value = line.partition(":")
                if key in ("VmPeak", "VmHWM"):
                    values[key] = int(value.split()[0]) // 1024
    except (OSError, ValueError):
        return "Worker memory: not measurable here"
    return "Worker memory: peak RSS %s MiB, peak address space %s MiB" % (values.get("VmHWM"), values.get("VmPeak"))


class RunReporter:
    """Writes one run's progress, log and heartbeat into its row, in short transactions.

    Called as ``reporter(fraction, message)``, it follows the work: the progress bar and the current step
    (``progress_message``), often rewritten, never kept. ``step(message)`` appends a line to the log that
    stays: what was done (a destination checked, an artifact written, a copy stored).
    """

    def __init__(self, conn, run_id, on_write=None):
        self.conn, self.run_id = conn, run_id
        self.on_write = on_write
        self._last_bus = 0.0
        self.lock = threading.Lock()
        self.log = collections.deque(maxlen=LOG_LINES)
        self.progress, self.message = 0.0, ""
        self._last_write = 0.0
        self._stop = threading.Event()
        self._beat = threading.Thread(target=self._heartbeat, name="spp_backup-heartbeat-%d" % run_id, daemon=True)

    def start(self):
        self._beat.start()

    def stop(self):
        self._stop.set()

    def line(self, message):
        with self.lock:
            self.log.append("%s %s" % (time.strftime("%H:%M:%S", time.gmtime()), message))

    def __call__(self, fraction, message):
        with self.lock:
            if message:
                self.message = message
            self.progress = max(0.0, min(1.0, float(fraction or 0.0)))
            if time.monotonic() - self._last_write < 1.0:
                return
            self._write()

    def step(self, message):
        """A step is done: one line in the log, written now."""
        with self.lock:
            self.log.append("%s %s" % (time.strftime("%H:%M:%S", time.gmtime()), message))
            self.message = message
            self._write()

    def _write(self):
        self._last_write = time.monotonic()
        try:
            with self.conn.cursor() as cr:
                cr.execute(
                    """UPDATE spp_backup_run SET progress = %s, progress_message = %s, log = %s,
                              heartbeat_at = clock_timestamp() AT TIME ZONE 'UTC' WHERE id = %s""",
                    (round(self.progress * 100, 1), (self.message or "")[:500], "\n".join(self.log), self.run_id),
                )
        except psycopg2.Error as exc:  # progress is best effort; the result write reports for real
            _logger.warning("Cannot write the progress of run %s: %s", self.run_id, exc)
            return
        if self.on_write and time.monotonic() - self._last_bus >= 2.0:
            self._last_bus = time.monotonic()
            self.on_write()

    def flush(self):
        with self.lock:
            self._write()

    def _heartbeat(self):
        while not self._stop.wait(HEARTBEAT_SECONDS):
            self.flush()

    def text(self):
        with self.lock:
            return "\n".join(self.log)


class Worker:
    """Serves the runs of one or more databases until stopped (or, one-shot, until none is queued)."""

    def __init__(self, ctx, databases=None, once=False, poll_seconds=POLL_SECONDS, idle_seconds=3.0):
        self.ctx = ctx
        self.databases = list(databases or [])
        self.once = once
        self.poll_seconds = poll_seconds
        self.idle_seconds = idle_seconds
        self.stopping = threading.Event()
        self.conns = {}
        self.listen_conn = None
        self.host = socket.gethostname()
        self.current = None

    # -------------------------------------------------------------- connections

    def _served_databases(self):
        if self.databases:
            return self.databases
        configured = self.ctx.settings.options.get("db_name") or ""
        if configured.strip().lower() in ("", "false", "none"):
            configured = ""
        names = [name for name in configured.split(",") if name.strip()]
        if names:
            return [name.strip() for name in names]
        # Like queue_job's runner: every database with the addon installed.
        found = []
        with contextlib.closing(connect(self.ctx.pg, self.ctx.pg.maintenance_db)) as conn, conn.cursor() as cr:
            cr.execute("SELECT datname FROM pg_database WHERE datallowconn AND NOT datistemplate ORDER BY datname")
            candidates = [row[0] for row in cr.fetchall()]
        for name in candidates:
            with (
                contextlib.suppress(PreflightError, psycopg2.Error),
                contextlib.closing(connect(self.ctx.pg, name)) as conn,
            ):
                if has_run_table(conn):
                    found.append(name)
        return found

    def open(self):
        mode = MODE_ONESHOT if self.once else MODE_SERVICE
        for name in self._served_databases():
            conn = connect(self.ctx.pg, name)
            if not has_run_table(conn):
                conn.close()
                _logger.warning("Database %s has no spp_backup_run table (is spp_backup installed?): skipped", name)
                continue
            with conn.cursor() as cr:
                cr.execute("SELECT pg_advisory_lock_shared(%s, %s)", (WORKER_LOCK_CLASS, mode))
            self.conns[name] = conn
        if not self.conns:
            raise PreflightError("No database to serve: none has spp_backup installed (or none was reachable).")
        self.listen_conn = connect(self.ctx.pg, self.ctx.pg.maintenance_db)
        with self.listen_conn.cursor() as cr:
            cr.execute("LISTEN %s" % CHANNEL)
        _logger.info("Worker %s:%d serving %s", self.host, os.getpid(), ", ".join(self.conns))

    def close(self):
        for conn in list(self.conns.values()) + [self.listen_conn]:
            if conn is not None:
                with contextlib.suppress(Exception):
                    conn.close()
        self.conns = {}

    # -------------------------------------------------------------------- loop

    def serve(self):
        self.open()
        pitr = None
        if not self.once:
            # Continuous WAL protection of the server, when odoo.conf configures it (engine.pitr.service).
            service = PitrService.from_settings(self.ctx.settings, self.ctx.pg, self.ctx.data_dir)
            if service is not None:
                service.report = self.report_pitr
                pitr = start_in_thread(service)
        try:
            idle_since = time.monotonic()
            while not self.stopping.is_set():
                worked = False
                for name, conn in self.conns.items():
                    self._reap(name, conn)
                    while not self.stopping.is_set() and self.run_next(name, conn):
                        worked = True
                if worked:
                    idle_since = time.monotonic()
                    continue
                if self.once and time.monotonic() - idle_since >= self.idle_seconds:
                    return 0
                self._wait(self.idle_seconds if self.once else self.poll_seconds)
        finally:
            if pitr is not None:
                pitr[1].set()
                pitr[0].join(150)
            self.close()
        return 0

    def report_pitr(self, status):
        """Write the state of continuous protection into every database served (its own short session: this
        runs in the protection's thread)."""
        for name in list(self.conns):
            # Each database hears of the databases its scope allows only (its own, odoo.conf's databases).
            def allowed(names, served=name):
                return [n for n in names or [] if scope.database_allowed(n, served, self.ctx.settings)]

            problems = list(status.get("problems") or [])
            if status.get("destinations") and name not in (status.get("databases") or []):
                problems.append(
                    "database %s is in no base backup yet: it can be restored to a second only after the next one"
                    % name
                )
            seen = dict(
                status,
                problems=problems,
                databases=allowed(status.get("databases")),
                destinations={
                    where: dict(win, databases=allowed(win.get("databases")))
                    for where, win in (status.get("destinations") or {}).items()
                },
            )
            try:
                with contextlib.closing(connect(self.ctx.pg, name)) as conn, conn.cursor() as cr:
                    # An upgrade of the addon holds the table: this report waits a little, then gives way.
                    cr.execute("SET lock_timeout = '5s'; SET statement_timeout = '30s'")
                    write_pitr_status(cr, seen)
            except Exception as exc:  # that database misses this report; the others get theirs
                _logger.warning("Cannot record the state of continuous protection in %s: %s", name, exc)

    def _wait(self, seconds):
        conn = self.listen_conn
        if select.select([conn], [], [], seconds) != ([], [], []):
            conn.poll()
            conn.notifies.clear()

    def _reap(self, name, conn):
        try:
            with conn.cursor() as cr:
                dead = reap_dead_runs(cr)
        except psycopg2.Error as exc:
            _logger.warning("Cannot look for dead runs in %s: %s", name, exc)
            return
        if dead:
            _logger.warning("Runs %s of %s had lost their worker: marked failed", dead, name)
            notify_odoo(self.ctx.pg, name, self.listen_conn)

    def claim(self, conn):
        """(id, action, plan) of the oldest queued run, now ours and locked; or None."""
        conn.autocommit = False
        try:
            with conn.cursor() as cr:
                cr.execute(
                    "SELECT id, action, plan FROM spp_backup_run WHERE state = %s "
                    "ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED",
                    (states.QUEUED,),
                )
                row = cr.fetchone()
                if row is None:
                    conn.rollback()
                    return None
                cr.execute("SELECT pg_advisory_lock(%s, %s)", (RUN_LOCK_CLASS, row[0]))
                cr.execute(
                    """UPDATE spp_backup_run SET state = %s, worker_host = %s, worker_pid = %s,
                              started_at = clock_timestamp() AT TIME ZONE 'UTC',
                              heartbeat_at = clock_timestamp() AT TIME ZONE 'UTC',
                              progress = 0, write_date = clock_timestamp() AT TIME ZONE 'UTC'
                        WHERE id = %s""",
                    (states.RUNNING, self.host, os.getpid(), row[0]),
                )
            conn.commit()
        except BaseException:
            conn.rollback()
            raise
        finally:
            conn.autocommit = True
        return row

    def run_next(self, name, conn):
        """Claim and run one queued run of database ``name``; False when there was none."""
        claimed = self.claim(conn)
        if claimed is None:
            return False
        run_id, action, plan_text = claimed
        self.current = (name, run_id)

        def tell_forms():
            notify_bus(conn, self.listen_conn, name, {"id": run_id})

        reporter = RunReporter(conn, run_id, on_write=tell_forms)
        reporter.line("Worker %s:%d started %s run %d" % (self.host, os.getpid(), action, run_id))
        reporter.flush()
        notify_odoo(self.ctx.pg, name, self.listen_conn)
        reporter.start()
        state, result, error = states.FAILED, None, None
        try:
            plan = json.loads(plan_text or "{}")
            with conn.cursor() as cr:
                approved = approved_folders(cr)
            result, error, warnings = execute(action, plan, self.ctx, name, reporter, reporter.step, approved=approved)
            if result is not None:
                result.setdefault("warnings", list(warnings or []))
            state = states.FAILED if error else states.DONE
        except BackupError as exc:
            error = str(exc)
        except KeyboardInterrupt:
            error = "The worker was stopped while it ran this; partial work was removed."
            self.stopping.set()
        except Exception as exc:  # the traceback goes to the worker's log; the run gets a sentence
            traceback.print_exc()
            error = "Unexpected error (%s): %s" % (type(exc).__name__, exc)
        finally:
            reporter.stop()
        reporter.line(memory_text())
        if error:
            if reporter.message and not reporter.text().endswith(reporter.message):
                # Where the work was when it stopped: the step under way is no log line of its own.
                reporter.line("Was at: %s" % reporter.message)
            reporter.line("Failed: %s" % error)
        else:
            reporter.line("Done")
        self._finish(conn, run_id, state, result, error, reporter.text())
        self.current = None
        notify_odoo(self.ctx.pg, name, self.listen_conn)
        return True

    def _finish(self, conn, run_id, state, result, error, log):
        for attempt in range(5):
            try:
                with conn.cursor() as cr:
                    cr.execute(
                        """UPDATE spp_backup_run SET state = %s, result = %s, error_message = %s, log = %s,
                                  progress = CASE WHEN %s = %s THEN 100 ELSE progress END,
                                  finished_at = clock_timestamp() AT TIME ZONE 'UTC',
                                  heartbeat_at = clock_timestamp() AT TIME ZONE 'UTC',
                                  write_date = clock_timestamp() AT TIME ZONE 'UTC'
                            WHERE id = %s""",
                        (
                            state,
                            json.dumps(result, default=str) if result is not None else None,
                            error,
                            log,
                            state,
                            states.DONE,
                            run_id,
                        ),
                    )
                    cr.execute("SELECT pg_advisory_unlock(%s, %s)", (RUN_LOCK_CLASS, run_id))
                return
            except psycopg2.Error as exc:
                _logger.warning("Cannot record the end of run %s (attempt %d): %s", run_id, attempt + 1, exc)
                time.sleep(2 * (attempt + 1))
        # The session is gone: its lock went with it, so any node will mark the run failed.
