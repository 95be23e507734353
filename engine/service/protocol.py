"""The run protocol: what Odoo and the worker agree on in the serving database.

Work is a row of ``spp_backup_run``; the worker (service/worker.py) claims it,
holds the run's advisory lock while it works and writes the result; Odoo
queues runs, wakes the worker on ``CHANNEL``, tells live runs from dead ones
by their locks and knows from the workers' locks whether one serves. Both
sides import these names and queries from here, never their own copies;
the states a run goes through are core/states.py's, its plans core/plans.py's.
"""

import json

from ..core.states import FAILED, RUNNING

RUN_LOCK_CLASS = 0x5350  # pg_advisory_lock(RUN_LOCK_CLASS, run_id) while a run is worked on
WORKER_LOCK_CLASS = 0x5351  # pg_advisory_lock_shared(WORKER_LOCK_CLASS, mode) while a worker serves
MODE_SERVICE, MODE_ONESHOT = 0, 1
CHANNEL = "spp_backup_run"
COLLECT_CRON_XMLID = ("spp_backup", "ir_cron_spp_backup_collect")

# The live run form (static/src/js/run_live.js) listens on this bus channel for notifications of this type.
BUS_CHANNEL = "spp_backup_runs"
BUS_TYPE = "spp_backup.run"

DEAD_RUN_MESSAGE = (
    "The worker that ran this stopped before it reported a result (its process or its server died, or it "
    "lost its database connection). Nothing was marked complete."
)

# An advisory lock of class %s, held (granted) in this database: pg_locks rows as ``l``.
LIVE_LOCK_WHERE = """l.locktype = 'advisory' AND l.granted AND l.classid = %s AND l.objsubid = 2
       AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())"""


def approved_folders(cr):
    """The local folders the server approved at upgrade (in use before backup_roots existed).

    Read from the destinations of the serving database, whose approval only the server writes (Odoo refuses
    it to everyone else); an empty list where the table or the columns do not exist.
    """
    cr.execute(
        """SELECT count(*) FROM information_schema.columns
            WHERE table_schema = current_schema() AND table_name = 'spp_backup_destination'
              AND column_name IN ('is_path_approved', 'approved_path')"""
    )
    if cr.fetchone()[0] != 2:
        return []
    cr.execute(
        """SELECT DISTINCT approved_path FROM spp_backup_destination
            WHERE is_path_approved AND kind = 'local' AND COALESCE(approved_path, '') <> ''
            ORDER BY approved_path"""
    )
    return [row[0] for row in cr.fetchall()]


def reap_dead_runs(cr, **execute):
    """Fail every running run whose worker's lock is gone (on any node); their ids.

    ``cr``: a cursor; ``execute``: keyword arguments of its ``execute`` (Odoo's cursor: ``log_exceptions``).
    """
    cr.execute(
        """
        UPDATE spp_backup_run r
           SET state = %s, error_message = %s, finished_at = now() AT TIME ZONE 'UTC',
               write_date = now() AT TIME ZONE 'UTC'
         WHERE r.state = %s
           AND NOT EXISTS (SELECT 1 FROM pg_locks l WHERE """
        + LIVE_LOCK_WHERE
        + """ AND l.objid = r.id)
     RETURNING r.id""",
        (FAILED, DEAD_RUN_MESSAGE, RUNNING, RUN_LOCK_CLASS),
        **execute,
    )
    return [row[0] for row in cr.fetchall()]


def live_run_ids(cr, run_ids):
    """The ids among ``run_ids`` whose worker holds its lock."""
    cr.execute(
        "SELECT l.objid FROM pg_locks l WHERE " + LIVE_LOCK_WHERE + " AND l.objid = ANY(%s)",
        (RUN_LOCK_CLASS, [int(i) for i in run_ids]),
    )
    return {int(row[0]) for row in cr.fetchall()}


def live_worker_modes(cr):
    """The modes (MODE_SERVICE, MODE_ONESHOT) of the workers serving this database now."""
    cr.execute("SELECT DISTINCT l.objid FROM pg_locks l WHERE " + LIVE_LOCK_WHERE, (WORKER_LOCK_CLASS,))
    return {int(row[0]) for row in cr.fetchall()}


# The state of continuous WAL protection (engine.pitr.service.PitrService.status), one row per PostgreSQL server,
# written by the worker that runs it into every database it serves; Odoo reads it (spp.backup.pitr.server).
PITR_TABLE = "spp_backup_pitr_server"


def _window_bounds(status):
    starts, ends = [], []
    for win in (status.get("destinations") or {}).values():
        for start, end in win.get("ranges") or []:
            starts.append(start)
            ends.append(end)
    return (min(starts) if starts else None), (max(ends) if ends else None)


def write_pitr_status(cr, status):
    """Record ``status`` in this database's table of continuous protection (upsert by system id, reported at the
    database server's clock); False when the table does not exist (spp_backup not installed or too old)."""
    cr.execute("SELECT to_regclass(%s) IS NOT NULL", ("public." + PITR_TABLE,))
    if not cr.fetchone()[0]:
        return False
    receiver = status.get("receiver") or {}
    start, end = _window_bounds(status)
    values = {
        "system_id": str(status["system_id"]),
        "name": status.get("server") or str(status["system_id"]),
        "receiving": bool(receiver.get("receiving")),
        "behind_seconds": receiver.get("archive_behind_seconds"),
        "receive_lag_bytes": receiver.get("receive_lag_bytes"),
        "slot_status": receiver.get("slot_status"),
        "slot_retained_bytes": receiver.get("slot_retained_bytes"),
        "window_start": start,
        "window_end": end,
        "problems": "\n".join(status.get("problems") or []) or None,
        "status_json": json.dumps(status, sort_keys=True, default=str),
    }
    columns = list(values)
    cr.execute(
        "INSERT INTO " + PITR_TABLE + " (" + ", ".join(columns) + ", reported_at, create_date, write_date) "
        "VALUES (" + ", ".join(["%s"] * len(columns)) + ", now() AT TIME ZONE 'UTC', now() AT TIME ZONE 'UTC', "
        "now() AT TIME ZONE 'UTC') ON CONFLICT (system_id) DO UPDATE SET "
        + ", ".join("%s = EXCLUDED.%s" % (c, c) for c in columns[1:])
        + ", reported_at = EXCLUDED.reported_at, write_date = EXCLUDED.write_date",
        [values[c] for c in columns],
    )
    return True
