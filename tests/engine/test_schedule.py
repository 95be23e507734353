"""Schedule arithmetic (next backup slot, next drill, durations in words): pure decisions, no I/O."""

import datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.human import human_duration
from engine.schedule import INTERVAL_UNITS, next_drill, next_slot

dt = datetime.datetime
AFTER = dt(2026, 11, 26, 10, 0)


# ----------------------------------------------------------------- next_slot


def test_missed_slots_run_once_and_keep_their_phase():
    """A server down for six days runs the daily backup once, at its usual 03:15, not once per missed day."""
    anchor = dt(2026, 11, 20, 3, 15)
    assert next_slot(AFTER, 1, "days", 2.0, anchor=anchor) == dt(2026, 11, 27, 3, 15)


def test_anchor_phase_wins_over_time_of_day():
    """With an anchor the slots keep the anchor's minute; time_of_day only places a schedule that has none."""
    anchor = dt(2026, 11, 26, 3, 15)
    assert next_slot(AFTER, 6, "hours", 0.0, anchor=anchor) == dt(2026, 11, 26, 15, 15)
    assert next_slot(AFTER, 1, "weeks", 2.0, anchor=dt(2026, 11, 1, 3, 0)) == dt(2026, 11, 29, 3, 0)


def test_slot_is_strictly_after():
    """A run at its planned moment plans the next slot, not the same one again."""
    slot = dt(2026, 11, 27, 3, 15)
    assert next_slot(slot, 1, "days", 0.0, anchor=slot) == dt(2026, 11, 28, 3, 15)
    assert next_slot(dt(2026, 11, 26, 2, 0), 1, "days", 2.0) == dt(2026, 11, 27, 2, 0)


def test_an_anchor_in_the_future_gives_the_first_slot_after():
    """A planned run still ahead (the schedule was edited) stays the next slot when it is the first one after."""
    anchor = dt(2026, 11, 26, 22, 0)
    assert next_slot(AFTER, 1, "days", 0.0, anchor=anchor) == anchor


@pytest.mark.parametrize(
    "number, unit, time_of_day, expected",
    [
        (1, "hours", 0.0, dt(2026, 11, 26, 11, 0)),
        (6, "hours", 2.0, dt(2026, 11, 26, 14, 0)),
        (1, "days", 2.5, dt(2026, 11, 27, 2, 30)),
        (1, "days", 23.75, dt(2026, 11, 26, 23, 45)),
        (2, "days", 9.0, dt(2026, 11, 28, 9, 0)),
        (1, "weeks", 2.0, dt(2026, 12, 3, 2, 0)),
        (1, "weeks", 12.0, dt(2026, 11, 26, 12, 0)),
    ],
)
def test_first_slot_on_the_day_of_after(number, unit, time_of_day, expected):
    """Without an anchor the slots are laid on the day of ``after`` at time_of_day, for hours, days and weeks."""
    assert next_slot(AFTER, number, unit, time_of_day) == expected


@pytest.mark.parametrize(
    "time_of_day, expected",
    [
        (None, dt(2026, 11, 27, 0, 0)),
        (0.008, dt(2026, 11, 27, 0, 0)),  # 0.48 min rounds down to 00:00
        (10.009, dt(2026, 11, 26, 10, 1)),  # 10:00.54 rounds up to 10:01
        (2.999, dt(2026, 11, 27, 3, 0)),  # 02:59.94 rounds to 03:00
        (23.9999, dt(2026, 11, 27, 0, 0)),  # rounds to 24:00, which is midnight
    ],
)
def test_time_of_day_rounds_to_the_minute(time_of_day, expected):
    """time_of_day (hours) rounds to the nearest minute, and 24:00 wraps to midnight."""
    assert next_slot(AFTER, 1, "days", time_of_day) == expected


def test_unknown_interval_unit_is_refused():
    """An interval unit the schedule does not know is an error, not a silent default."""
    with pytest.raises(KeyError):
        next_slot(AFTER, 1, "months", 0.0)


@given(
    after=st.datetimes(min_value=dt(2000, 1, 1), max_value=dt(2100, 1, 1)),
    anchor=st.datetimes(min_value=dt(2000, 1, 1), max_value=dt(2100, 1, 1)),
    number=st.integers(min_value=1, max_value=60),
    unit=st.sampled_from(sorted(INTERVAL_UNITS)),
)
def test_slot_is_the_first_of_the_anchor_grid_after(after, anchor, number, unit):
    """Whatever the anchor, the slot is on the anchor's grid, after ``after``, and no slot lies between."""
    step = INTERVAL_UNITS[unit] * number
    slot = next_slot(after, number, unit, 0.0, anchor=anchor)
    assert after < slot <= after + step
    assert (slot - anchor) % step == datetime.timedelta(0)


# ----------------------------------------------------------------- next_drill


@pytest.mark.parametrize(
    "after, number, unit, expected",
    [
        (dt(2027, 1, 31, 3, 0), 1, "months", dt(2027, 2, 28, 3, 0)),
        (dt(2028, 1, 31, 3, 0), 1, "months", dt(2028, 2, 29, 3, 0)),  # leap year
        (dt(2026, 11, 30, 3, 0), 3, "months", dt(2027, 2, 28, 3, 0)),
        (dt(2027, 3, 31, 3, 0), 1, "months", dt(2027, 4, 30, 3, 0)),
        (dt(2027, 1, 15, 3, 0), 12, "months", dt(2028, 1, 15, 3, 0)),
        (dt(2027, 1, 31, 3, 0), 1, "days", dt(2027, 2, 1, 3, 0)),
        (dt(2027, 12, 27, 3, 0), 2, "weeks", dt(2028, 1, 10, 3, 0)),
    ],
)
def test_next_drill_calendar_arithmetic(after, number, unit, expected):
    """Drills are days, weeks or calendar months later; a month end clamps to the shorter month's last day."""
    assert next_drill(after, number, unit) == expected


def test_unknown_drill_unit_is_refused():
    """A drill unit the schedule does not know is an error, not a silent default."""
    with pytest.raises(KeyError):
        next_drill(AFTER, 1, "hours")


# ------------------------------------------------------------- human_duration


@pytest.mark.parametrize(
    "seconds, text",
    [
        (None, "0.0 s"),
        (0, "0.0 s"),
        (-5, "0.0 s"),
        (2.5, "2.5 s"),
        (9.94, "9.9 s"),
        (10, "10 s"),
        (45.4, "45 s"),
        (59.4, "59 s"),
        (60, "1 min"),
        (190, "3 min 10 s"),
        (3599, "59 min 59 s"),
        (3600, "1 h"),
        (3660, "1 h 1 min"),
        (5 * 3600 + 20 * 60, "5 h 20 min"),
        (47 * 3600 + 59 * 60, "47 h 59 min"),
        (48 * 3600 - 1, "2 d"),  # 47 h 59 min 59 s rounds to 48 h
        (48 * 3600, "2 d"),
        (51 * 3600, "2 d 3 h"),
        (10 * 86400 + 1799, "10 d"),
        (10 * 86400 + 1801, "10 d 1 h"),
    ],
)
def test_human_duration_boundaries(seconds, text):
    """Seconds below 10 s keep a decimal, then whole s, min + s, h + min below two days, d + h after."""
    assert human_duration(seconds) == text
