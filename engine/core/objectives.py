"""What a policy's history says about it: its state, its objectives (RPO, RTO), its last drill, its colour on the
dashboard, and which alerts its objectives call for. Pure: no I/O, no Odoo.

The Odoo layer (one copy for Odoo 17 and 19) reads the records, calls these
functions and writes their answers into its computed fields; its words (which
Odoo translates) stay with it.
"""

import datetime

# A policy whose next run is this late is "late" even when its newest backup is still within the RPO.
OVERDUE_GRACE = datetime.timedelta(hours=1)

# Dashboard colours (Odoo's colour indexes: red, orange, green).
COLOR_RED, COLOR_ORANGE, COLOR_GREEN = 1, 2, 10

OK, BREACHED, UNKNOWN = "ok", "breached", "unknown"


def rpo_verdict(now, rpo_seconds, recovery_point_at, policy_created_at):
    """(``ok``, ``breached`` or ``unknown``, age in seconds of the recovery point or None without one).

    ``recovery_point_at`` is when the newest good backup finished (None without one). Without one the RPO is
    unknown while the policy is younger than its RPO, and breached after.
    """
    limit = datetime.timedelta(seconds=rpo_seconds or 0)
    if recovery_point_at:
        age = now - recovery_point_at
        return (BREACHED if age > limit else OK), max(age.total_seconds(), 0.0)
    since = policy_created_at or now
    return (BREACHED if now - since > limit else UNKNOWN), None


def rto_verdict(rto_seconds, measured_restore_seconds):
    """(``ok``, ``breached`` or ``unknown``, seconds) from the restore time the last drill measured (or None)."""
    if measured_restore_seconds is None:
        return UNKNOWN, None
    return (BREACHED if measured_restore_seconds > (rto_seconds or 0) else OK), measured_restore_seconds


def drill_verdict(has_drill, drill_done, drill_ok):
    """``none`` (never drilled), ``passed`` (done and every check passed) or ``failed``."""
    if not has_drill:
        return "none"
    return "passed" if drill_done and drill_ok else "failed"


def policy_state(
    now,
    *,
    last_success_at,
    last_failure_at,
    success_verify_state,
    success_partial,
    rpo_hours,
    active,
    next_run,
):
    """The policy's backup state: failing, verify_failed, partial, never, late or ok.

    A failure newer than the last success makes it failing; a last success whose verification failed,
    verify_failed; a last success with a failed copy, partial; a last success older than the RPO, or an active
    policy whose next run is more than OVERDUE_GRACE behind, late.
    """
    if last_failure_at and (not last_success_at or last_failure_at >= last_success_at):
        return "failing"
    if last_success_at and success_verify_state == "failed":
        return "verify_failed"
    if last_success_at and success_partial:
        return "partial"
    if not last_success_at:
        return "never"
    if now - last_success_at > datetime.timedelta(hours=rpo_hours or 0) or (
        active and next_run and now - next_run > OVERDUE_GRACE
    ):
        return "late"
    return "ok"


def compliance_color(rpo_status, rto_status, drill, state):
    """Red when an objective is breached, the last drill failed or backups fail; orange while something is
    unknown or partly done; green when everything is met."""
    if BREACHED in (rpo_status, rto_status) or drill == "failed" or state in ("failing", "verify_failed"):
        return COLOR_RED
    if UNKNOWN in (rpo_status, rto_status) or state in ("partial", "never"):
        return COLOR_ORANGE
    return COLOR_GREEN


RAISE, RESOLVE = "raise", "resolve"


def objective_alerts(rpo_status, rto_status, active):
    """{alert kind: RAISE, RESOLVE or None (leave it as it is)} for the objectives of one policy.

    Only an active policy raises alerts; an archived one resolves what it had open. The RPO alert resolves as
    soon as the RPO is not breached; the RTO alert only when a drill measured a restore within the RTO (an RTO
    still unknown leaves it open).
    """
    rpo = RAISE if active and rpo_status == BREACHED else RESOLVE
    if active and rto_status == BREACHED:
        rto = RAISE
    elif rto_status == OK or not active:
        rto = RESOLVE
    else:
        rto = None
    return {"rpo_breach": rpo, "rto_breach": rto}
