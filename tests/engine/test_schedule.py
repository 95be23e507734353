"""Schedule arithmetic (next backup slot, next drill, durations in words): pure decisions, no I/O."""

import datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.core.human import human_duration
from engine.core.schedule import INTERVAL_UNITS, next_drill, next_slot, schedule_anchor, time_zone, to_local, to_utc

dt = datetime.datetime
AFTER = dt(2026, 11, 26, 10, 0)


def successive_slots(moment, count, *schedule, **options):
    """The ``count`` slots of a schedule after ``moment``, each one found from the one before."""
    slots = []
    for _ in range(count):
        moment = next_slot(moment, *schedule, **options)
        slots.append(moment)
    return slots


# ----------------------------------------------------------------- next_slot


def test_missed_slots_run_once():
    """A server down for six days runs the daily backup once, at the next 03:15, not once per missed day."""
    assert next_slot(AFTER, 1, "days", 3.25) == dt(2026, 11, 27, 3, 15)


def test_slot_is_strictly_after():
    """A run at its planned moment plans the next slot, not the same one again."""
    slot = dt(2026, 11, 27, 3, 15)
    assert next_slot(slot, 1, "days", 3.25) == dt(2026, 11, 28, 3, 15)
    assert next_slot(dt(2026, 11, 26, 2, 0), 1, "days", 2.0) == dt(2026, 11, 27, 2, 0)


def test_a_run_moved_by_hand_moves_nothing_after_it():
    """The slot after any moment comes from the schedule alone: a next run set to 05:47 is followed by 02:30."""
    moved = dt(2026, 11, 26, 5, 47)
    assert next_slot(moved, 1, "days", 2.5, tz="Africa/Nairobi") == dt(2026, 11, 26, 23, 30)
    assert next_slot(moved, 1, "days", 2.5, tz="Africa/Nairobi") == next_slot(
        dt(2026, 11, 26, 0, 0), 1, "days", 2.5, tz="Africa/Nairobi"
    )


@pytest.mark.parametrize(
    "number, unit, time_of_day, expected",
    [
        (1, "hours", 0.0, dt(2026, 11, 26, 11, 0)),
        (6, "hours", 2.0, dt(2026, 11, 26, 14, 0)),
        (1, "days", 2.5, dt(2026, 11, 27, 2, 30)),
        (1, "days", 23.75, dt(2026, 11, 26, 23, 45)),
        (1, "weeks", 2.0, dt(2026, 12, 3, 2, 0)),
        (1, "weeks", 12.0, dt(2026, 11, 26, 12, 0)),
    ],
)
def test_first_slot_without_anchor(number, unit, time_of_day, expected):
    """Without an anchor the schedule is laid on the day of ``after`` (a Thursday), for hours, days and weeks."""
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
    with pytest.raises(ValueError, match="at least 1"):
        next_slot(AFTER, 0, "days", 0.0)


def test_unknown_time_zone_is_refused():
    """A time zone name the system does not know is refused with the expected form, not read as UTC."""
    with pytest.raises(ValueError, match="Africa/Nairobi"):
        next_slot(AFTER, 1, "days", 2.0, tz="Mars/Olympus_Mons")


# ------------------------------------------------------------ time zones, DST


def test_local_time_of_day_in_a_zone_without_dst():
    """02:30 in Nairobi (UTC+3) is 23:30 UTC the day before; every 6 hours from 02:00 there is 23, 5, 11, 17 UTC."""
    assert next_slot(AFTER, 1, "days", 2.5, tz="Africa/Nairobi") == dt(2026, 11, 26, 23, 30)
    assert successive_slots(dt(2026, 11, 26, 22, 0), 5, 6, "hours", 2.0, tz="Africa/Nairobi") == [
        dt(2026, 11, 26, 23),
        dt(2026, 11, 27, 5),
        dt(2026, 11, 27, 11),
        dt(2026, 11, 27, 17),
        dt(2026, 11, 27, 23),
    ]


def test_berlin_one_oclock_follows_summer_time():
    """Daily 01:00 in Berlin is 00:00 UTC in winter and 23:00 UTC the day before in summer."""
    assert next_slot(dt(2026, 1, 14, 12, 0), 1, "days", 1.0, tz="Europe/Berlin") == dt(2026, 1, 15, 0, 0)
    assert next_slot(dt(2026, 7, 14, 12, 0), 1, "days", 1.0, tz="Europe/Berlin") == dt(2026, 7, 14, 23, 0)


def test_spring_forward_runs_at_the_end_of_the_gap():
    """Berlin skips 02:00-03:00 on 2026-03-29: daily 02:30 runs at 03:00 local (01:00 UTC), then 02:30 CEST."""
    day_before = next_slot(dt(2026, 3, 27, 12, 0), 1, "days", 2.5, tz="Europe/Berlin")
    assert day_before == dt(2026, 3, 28, 1, 30)  # 02:30 CET
    gap_day = next_slot(day_before, 1, "days", 2.5, tz="Europe/Berlin")
    assert gap_day == dt(2026, 3, 29, 1, 0)  # 03:00 CEST, the first instant after the gap
    assert next_slot(gap_day, 1, "days", 2.5, tz="Europe/Berlin") == dt(2026, 3, 30, 0, 30)  # 02:30 CEST


def test_fall_back_runs_once_at_the_first_occurrence():
    """Berlin shows 02:00-03:00 twice on 2026-10-25: daily 02:30 runs once, at 02:30 CEST (00:30 UTC)."""
    slots = successive_slots(dt(2026, 10, 24, 12, 0), 3, 1, "days", 2.5, tz="Europe/Berlin")
    assert slots == [dt(2026, 10, 25, 0, 30), dt(2026, 10, 26, 1, 30), dt(2026, 10, 27, 1, 30)]


def test_hourly_across_both_changes():
    """Every hour in Berlin: the skipped hour runs once, at 03:00; the repeated hour runs once, not twice."""
    spring = successive_slots(dt(2026, 3, 28, 23, 30), 4, 1, "hours", 0.0, tz="Europe/Berlin")
    # 01:00 CET; 02:00 (skipped) and 03:00 CEST are one instant, 01:00 UTC; then 04:00 and 05:00 CEST
    assert spring == [dt(2026, 3, 29, 0, 0), dt(2026, 3, 29, 1, 0), dt(2026, 3, 29, 2, 0), dt(2026, 3, 29, 3, 0)]
    autumn = successive_slots(dt(2026, 10, 24, 23, 30), 3, 1, "hours", 0.0, tz="Europe/Berlin")
    # 02:00 CEST (00:00 UTC), 03:00 CET (02:00 UTC): the second 02:00 (01:00 UTC) is not a slot
    assert autumn == [dt(2026, 10, 25, 0, 0), dt(2026, 10, 25, 2, 0), dt(2026, 10, 25, 3, 0)]


def test_new_york_changes():
    """New York, 2026: 02:30 on March 8 does not exist (runs 03:00 EDT); 01:30 on November 1 runs once, in EDT."""
    assert next_slot(dt(2026, 3, 6, 12, 0), 1, "days", 2.5, tz="America/New_York") == dt(2026, 3, 7, 7, 30)
    assert next_slot(dt(2026, 3, 7, 7, 30), 1, "days", 2.5, tz="America/New_York") == dt(2026, 3, 8, 7, 0)
    assert next_slot(dt(2026, 3, 8, 7, 0), 1, "days", 2.5, tz="America/New_York") == dt(2026, 3, 9, 6, 30)
    first = next_slot(dt(2026, 10, 31, 12, 0), 1, "days", 1.5, tz="America/New_York")
    assert first == dt(2026, 11, 1, 5, 30)  # 01:30 EDT
    assert next_slot(first, 1, "days", 1.5, tz="America/New_York") == dt(2026, 11, 2, 6, 30)  # 01:30 EST


def test_a_half_hour_gap():
    """Lord Howe Island moves its clock by 30 minutes: 02:15 on 2026-10-04 runs at 02:30, the end of the gap."""
    assert to_utc(dt(2026, 10, 4, 2, 15), time_zone("Australia/Lord_Howe")) == dt(2026, 10, 3, 15, 30)


# ------------------------------------------------------------- anchor days


def test_every_two_days_counts_from_the_anchor_both_ways():
    """Every 2 days at 09:00 anchored on the 27th runs on odd days, whenever it is asked."""
    anchor = datetime.date(2026, 11, 27)
    assert next_slot(AFTER, 2, "days", 9.0, anchor=anchor) == dt(2026, 11, 27, 9, 0)
    assert next_slot(dt(2026, 11, 27, 9, 0), 2, "days", 9.0, anchor=anchor) == dt(2026, 11, 29, 9, 0)
    assert next_slot(dt(2026, 11, 20, 9, 0), 2, "days", 9.0, anchor=anchor) == dt(2026, 11, 21, 9, 0)
    assert next_slot(dt(2027, 3, 1, 12, 0), 2, "days", 9.0, anchor=anchor) == dt(2027, 3, 3, 9, 0)


def test_weeks_fall_on_the_weekday_of_the_anchor_week():
    """Every 2 weeks on Sunday, anchored in the week of Nov 23-29: Nov 29, Dec 13; a Sunday between is not one."""
    anchor = datetime.date(2026, 11, 25)  # a Wednesday; its week's Sunday is the 29th
    assert next_slot(AFTER, 2, "weeks", 2.0, anchor=anchor, weekday=6) == dt(2026, 11, 29, 2, 0)
    assert next_slot(dt(2026, 11, 29, 2, 0), 2, "weeks", 2.0, anchor=anchor, weekday=6) == dt(2026, 12, 13, 2, 0)
    assert next_slot(AFTER, 1, "weeks", 2.0, anchor=anchor, weekday=0) == dt(2026, 11, 30, 2, 0)


def test_hours_that_do_not_divide_a_day_run_on_from_the_anchor():
    """Every 5 hours from 02:00 on the anchor day: 02, 07, 12, 17, 22, then 03:00 the next day."""
    anchor = datetime.date(2026, 11, 26)
    slots = successive_slots(dt(2026, 11, 26, 0, 0), 6, 5, "hours", 2.0, anchor=anchor)
    wanted = ["26 02:00", "26 07:00", "26 12:00", "26 17:00", "26 22:00", "27 03:00"]
    assert [slot.strftime("%d %H:%M") for slot in slots] == wanted


@pytest.mark.parametrize(
    "after, unit, time_of_day, tz, weekday, anchor",
    [
        (dt(2026, 11, 26, 10, 0), "days", 9.0, "UTC", None, datetime.date(2026, 11, 27)),
        (dt(2026, 11, 26, 8, 0), "days", 9.0, "UTC", None, datetime.date(2026, 11, 26)),
        (dt(2026, 11, 26, 22, 30), "days", 2.0, "Africa/Nairobi", None, datetime.date(2026, 11, 27)),
        (dt(2026, 11, 26, 22, 30), "days", 1.0, "Africa/Nairobi", None, datetime.date(2026, 11, 28)),
        (dt(2026, 11, 26, 10, 0), "weeks", 2.0, "UTC", 6, datetime.date(2026, 11, 29)),
        (dt(2026, 11, 26, 10, 0), "weeks", 2.0, "UTC", 3, datetime.date(2026, 12, 3)),
    ],
)
def test_schedule_anchor_is_the_first_opportunity(after, unit, time_of_day, tz, weekday, anchor):
    """A schedule set up now counts from the local day of its first run (the weekday, for weeks)."""
    assert schedule_anchor(after, unit, time_of_day, tz=tz, weekday=weekday) == anchor


@given(
    after=st.datetimes(min_value=dt(2000, 1, 1), max_value=dt(2100, 1, 1)),
    anchor=st.dates(min_value=datetime.date(2000, 1, 1), max_value=datetime.date(2100, 1, 1)),
    number=st.integers(min_value=1, max_value=60),
    unit=st.sampled_from(sorted(INTERVAL_UNITS)),
    minutes=st.integers(min_value=0, max_value=24 * 60 - 1),
)
def test_utc_slot_is_the_first_of_the_anchor_grid_after(after, anchor, number, unit, minutes):
    """In UTC the slot is on the anchor's grid, after ``after``, and no slot lies between."""
    step = INTERVAL_UNITS[unit][1] * number
    origin = dt.combine(anchor, datetime.time(*divmod(minutes, 60)))
    slot = next_slot(after, number, unit, minutes / 60.0, anchor=anchor)
    assert after < slot <= after + step
    assert (slot - origin) % step == datetime.timedelta(0)


@given(
    after=st.datetimes(min_value=dt(2020, 1, 1), max_value=dt(2040, 1, 1)),
    tz=st.sampled_from(["Europe/Berlin", "America/New_York", "Australia/Sydney", "America/Santiago"]),
    unit=st.sampled_from(["days", "weeks"]),
    minutes=st.integers(min_value=0, max_value=24 * 60 - 1),
)
def test_local_slot_keeps_the_wall_clock_time(after, tz, unit, minutes):
    """Across DST, a daily or weekly slot shows the time of day on the local clock, or the end of its gap."""
    zone = time_zone(tz)
    hour, minute = divmod(minutes, 60)
    slot = next_slot(after, 1, unit, minutes / 60.0, tz=tz)
    step = INTERVAL_UNITS[unit][1]
    assert after < slot <= after + step + datetime.timedelta(hours=1)
    wall = to_local(slot, zone)
    wanted = dt.combine(wall.date(), datetime.time(hour, minute))
    assert wall == wanted or (to_utc(wanted, zone) == slot and to_local(to_utc(wanted, zone), zone) != wanted)


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
        (3.05, "3.1 s"),  # half up, as Odoo rounds the drill's one-decimal RTO field
        (3.049, "3.0 s"),
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
