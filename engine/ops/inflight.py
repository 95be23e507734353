"""Work that was in flight when a backup was taken, closed in the database restored from it.

A backup's snapshot holds its own job (queued or running) and run
(running), and whatever else the worker was doing then. In the restored
database no worker holds those runs: started with its crons, Odoo would
mark them failed, open a "Backup failed" alert and e-mail the managers
right after a successful recovery. The restore closes them first, with a
terminal state and the words of ``IN_FLIGHT_MESSAGE``, recorded as such,
so that Odoo neither alerts nor mails about them.
"""

from ..core import states
from ..core.human import count
from ..db import pg

IN_FLIGHT_MESSAGE = (
    "In flight when this backup was taken: closed by the restore. How it ended is recorded in the database "
    "the backup was taken from, not in this one."
)
IN_FLIGHT_STATES = states.IN_FLIGHT

_NOW = "now() AT TIME ZONE 'UTC'"
_FAILED = {"state": "'%s'" % states.FAILED, "error_message": "%(message)s", "finished_at": _NOW}
# (table, what one row is called, the column and values that say it is in flight, the values that close it).
# A column an older schema lacks is left out. Runs are marked recorded (is_applied): Odoo's collector leaves them.
_CLOSE = (
    ("spp_backup_run", "run", "state", IN_FLIGHT_STATES, dict(_FAILED, is_applied="true")),
    ("spp_backup_job", "backup job", "state", IN_FLIGHT_STATES, _FAILED),
    ("spp_backup_drill", "drill", "state", IN_FLIGHT_STATES, dict(_FAILED, verdict="'%s'" % states.FAILED)),
    ("spp_backup_restore", "restore", "state", IN_FLIGHT_STATES, _FAILED),
    # A backup job being verified: not verified, in the same words.
    (
        "spp_backup_job",
        "verification",
        "verify_state",
        (states.VERIFYING,),
        {"verify_state": "'%s'" % states.NOT_VERIFIED, "verify_report": "%(message)s"},
    ),
)


def close_in_flight(pg_config, dbname):
    """Close what was in flight in ``dbname`` when its backup was taken; {kind: rows closed} (kinds with rows)."""
    conn = pg.connect(pg_config, dbname, autocommit=False)
    try:
        with conn.cursor() as cr:
            closed = close_in_flight_rows(cr)
        conn.commit()
        return closed
    finally:
        conn.close()


def close_in_flight_rows(cr):
    """The statements of ``close_in_flight``, on the cursor ``cr`` of the restored database (not committed)."""
    closed = {}
    for table, kind, column, open_states, values in _CLOSE:
        columns = _columns(cr, table)
        if column not in columns:
            continue
        sets = ["%s = %s" % (name, value) for name, value in values.items() if name in columns]
        if "write_date" in columns:
            sets.append("write_date = %s" % _NOW)
        cr.execute(
            "UPDATE %s SET %s WHERE %s IN %%(states)s" % (table, ", ".join(sets), column),  # noqa: S608
            {"message": IN_FLIGHT_MESSAGE, "states": open_states},
        )
        if cr.rowcount:
            closed[kind] = cr.rowcount
    return closed


def _columns(cr, table):
    cr.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_schema = 'public' AND table_name = %s",
        (table,),
    )
    return {row[0] for row in cr.fetchall()}


def closed_text(closed):
    """'closed 1 backup job and 1 run that were in flight when this backup was taken', or '' for nothing."""
    if not closed:
        return ""
    parts = [count(n, kind) for kind, n in closed.items()]
    listed = parts[0] if len(parts) == 1 else "%s and %s" % (", ".join(parts[:-1]), parts[-1])
    return "closed %s that %s in flight when this backup was taken (no alert, no e-mail about them)" % (
        listed,
        "was" if sum(closed.values()) == 1 else "were",
    )
