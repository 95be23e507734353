"""A policy's state, objectives, drill verdict, colour and objective alerts, as plain functions (no Odoo).

The Odoo layer of both series computes its fields with these; the Odoo tests
(test_backup_alerts, test_backup_policy) check the same through the records.
"""

import datetime

import pytest

from engine.core import objectives as obj

NOW = datetime.datetime(2026, 12, 7, 12, 0, 0)
HOUR = datetime.timedelta(hours=1)


@pytest.mark.parametrize(
    ("point_age_hours", "expected"),
    [(0, "ok"), (23.9, "ok"), (24, "ok"), (24.01, "breached"), (100, "breached")],
)
def test_rpo_verdict_against_the_recovery_point(point_age_hours, expected):
    status, age = obj.rpo_verdict(NOW, 24 * 3600, NOW - point_age_hours * HOUR, NOW - 1000 * HOUR)
    assert status == expected
    assert age == pytest.approx(point_age_hours * 3600)


def test_rpo_without_a_backup_is_unknown_then_breached_once_the_policy_is_older_than_the_rpo():
    assert obj.rpo_verdict(NOW, 24 * 3600, None, NOW - 2 * HOUR) == ("unknown", None)
    assert obj.rpo_verdict(NOW, 24 * 3600, None, NOW - 25 * HOUR) == ("breached", None)
    assert obj.rpo_verdict(NOW, 24 * 3600, None, None) == ("unknown", None), "a policy not saved yet"


def test_rpo_age_is_never_negative_with_a_clock_behind_the_backup():
    assert obj.rpo_verdict(NOW, 3600, NOW + HOUR, None) == ("ok", 0.0)


def test_rto_verdict_from_the_measured_restore():
    assert obj.rto_verdict(3600, None) == ("unknown", None)
    assert obj.rto_verdict(3600, 3599.5) == ("ok", 3599.5)
    assert obj.rto_verdict(3600, 3600) == ("ok", 3600)
    assert obj.rto_verdict(3600, 3601) == ("breached", 3601)


def test_drill_verdict():
    assert obj.drill_verdict(False, False, False) == "none"
    assert obj.drill_verdict(True, True, True) == "passed"
    assert obj.drill_verdict(True, True, False) == "failed"
    assert obj.drill_verdict(True, False, False) == "failed", "a drill that did not finish did not pass"


def state(**given):
    values = {
        "last_success_at": NOW - HOUR,
        "last_failure_at": None,
        "success_verify_state": "ok",
        "success_partial": False,
        "rpo_hours": 24,
        "active": True,
        "next_run": NOW + HOUR,
    }
    values.update(given)
    return obj.policy_state(NOW, **values)


def test_policy_state_in_order_of_precedence():
    assert state() == "ok"
    assert state(last_success_at=None) == "never"
    assert state(last_failure_at=NOW) == "failing", "a failure newer than the success"
    assert state(last_failure_at=NOW - 2 * HOUR) == "ok", "an older failure is history"
    assert state(last_failure_at=NOW - HOUR) == "failing", "a failure at the same instant counts"
    assert state(success_verify_state="failed") == "verify_failed"
    assert state(success_verify_state="failed", last_failure_at=NOW) == "failing"
    assert state(success_partial=True) == "partial"
    assert state(last_success_at=NOW - 25 * HOUR) == "late", "older than the RPO"
    assert state(next_run=NOW - 2 * HOUR) == "late", "the next run is more than an hour behind"
    assert state(next_run=NOW - 0.5 * HOUR) == "ok", "within the grace"
    assert state(next_run=NOW - 2 * HOUR, active=False) == "ok", "an archived policy is not late for its run"


@pytest.mark.parametrize(
    ("rpo", "rto", "drill", "policy", "color"),
    [
        ("ok", "ok", "passed", "ok", obj.COLOR_GREEN),
        ("ok", "ok", "none", "late", obj.COLOR_GREEN),
        ("breached", "ok", "passed", "ok", obj.COLOR_RED),
        ("ok", "breached", "passed", "ok", obj.COLOR_RED),
        ("ok", "ok", "failed", "ok", obj.COLOR_RED),
        ("ok", "ok", "passed", "failing", obj.COLOR_RED),
        ("ok", "ok", "passed", "verify_failed", obj.COLOR_RED),
        ("unknown", "ok", "passed", "ok", obj.COLOR_ORANGE),
        ("ok", "unknown", "passed", "ok", obj.COLOR_ORANGE),
        ("ok", "ok", "passed", "partial", obj.COLOR_ORANGE),
        ("ok", "ok", "passed", "never", obj.COLOR_ORANGE),
        ("unknown", "breached", "passed", "never", obj.COLOR_RED),
    ],
)
def test_compliance_color(rpo, rto, drill, policy, color):
    assert obj.compliance_color(rpo, rto, drill, policy) == color


def test_objective_alerts():
    assert obj.objective_alerts("breached", "breached", True) == {"rpo_breach": "raise", "rto_breach": "raise"}
    assert obj.objective_alerts("ok", "ok", True) == {"rpo_breach": "resolve", "rto_breach": "resolve"}
    assert obj.objective_alerts("unknown", "unknown", True) == {"rpo_breach": "resolve", "rto_breach": None}, (
        "an RTO no drill measured leaves its alert as it is"
    )
    assert obj.objective_alerts("breached", "breached", False) == {"rpo_breach": "resolve", "rto_breach": "resolve"}, (
        "an archived policy raises nothing and resolves what it had open"
    )
