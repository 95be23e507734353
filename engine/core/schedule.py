"""Schedule arithmetic: when the next backup and drill are due, and durations in words. Pure: no I/O.

A backup schedule is a grid of wall-clock times in the policy's time zone: the
time of day on the schedule's anchor day, and every N hours, days or weeks
before and after it (weeks on the chosen weekday). The grid is laid out by
``dateutil.rrule`` in local time and each slot is then placed on the UTC
timeline:

- a local time that does not exist (the clock springs forward over it) runs
  at the first instant after the gap: 02:30 on a day that skips from 02:00 to
  03:00 runs at 03:00;
- a local time that happens twice (the clock falls back) runs once, at its
  first occurrence.
"""

import datetime
import math

from dateutil import tz as dateutil_tz
from dateutil.relativedelta import relativedelta
from dateutil.rrule import DAILY, HOURLY, WEEKLY, rrule

try:
    import zoneinfo
except ImportError:  # Python before 3.9: dateutil's zones only
    zoneinfo = None

UTC = datetime.timezone.utc

# rrule frequency and length of one unit of each backup interval.
INTERVAL_UNITS = {
    "hours": (HOURLY, datetime.timedelta(hours=1)),
    "days": (DAILY, datetime.timedelta(days=1)),
    "weeks": (WEEKLY, datetime.timedelta(weeks=1)),
}

WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")

DRILL_UNITS = {
    "days": lambda count: relativedelta(days=count),
    "weeks": lambda count: relativedelta(weeks=count),
    "months": lambda count: relativedelta(months=count),
}


def time_zone(name):
    """The tzinfo of an IANA time zone name ('Africa/Nairobi'); ValueError when this system does not know it."""
    name = name or "UTC"
    if zoneinfo is not None:
        try:
            return zoneinfo.ZoneInfo(name)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            pass
    zone = dateutil_tz.gettz(name)
    if zone is None:
        raise ValueError("Unknown time zone %r: give an IANA name such as 'Africa/Nairobi' or 'UTC'." % name)
    return zone


def hour_minute(time_of_day):
    """Hours as a float (2.5) to (hour, minute), rounded to the minute; 24:00 wraps to midnight."""
    minutes = int(round((time_of_day or 0.0) * 60)) % (24 * 60)
    return divmod(minutes, 60)


def to_local(moment, zone):
    """A naive UTC moment as the naive wall-clock time it shows in ``zone``."""
    return moment.replace(tzinfo=UTC).astimezone(zone).replace(tzinfo=None)


def to_utc(wall, zone):
    """A naive wall-clock time of ``zone`` as a naive UTC moment, by the rules of the module docstring."""
    instant = wall.replace(tzinfo=zone, fold=0).astimezone(UTC)
    if to_local(instant.replace(tzinfo=None), zone) == wall:
        return instant.replace(tzinfo=None)
    # In a gap: the first instant whose wall time is past ``wall``. It lies
    # between ``wall`` read with the offset after the gap and with the one before.
    day = datetime.timedelta(days=1)
    earliest = wall - (wall + day).replace(tzinfo=zone).utcoffset()
    latest = wall - (wall - day).replace(tzinfo=zone).utcoffset()
    low, high = 0, int((latest - earliest).total_seconds())
    while low < high:
        middle = (low + high) // 2
        if to_local(earliest + datetime.timedelta(seconds=middle), zone) > wall:
            high = middle
        else:
            low = middle + 1
    return earliest + datetime.timedelta(seconds=low)


def next_slot(after, interval_number, interval_type, time_of_day, tz="UTC", anchor=None, weekday=None):
    """The first slot of the schedule strictly after ``after``; both naive UTC datetimes.

    The slots are the wall-clock times of ``tz`` at ``time_of_day`` (hours:
    2.5 is 02:30) on the ``anchor`` day, and every ``interval_number`` hours,
    days or weeks before and after it. For weeks, the slots fall on
    ``weekday`` (0 Monday .. 6 Sunday) of the anchor's week (Monday to
    Sunday) and of every N-th week from it. Without an anchor, the schedule
    is laid on the local day of ``after`` (the anchor only matters for
    intervals that do not divide a day or a week).

    Nothing here depends on when the previous run happened: a server down for
    days runs the next slot, once; a run moved by hand changes nothing after it.
    """
    frequency, unit = INTERVAL_UNITS[interval_type]
    if interval_number < 1:
        raise ValueError("The interval must be at least 1, not %r." % interval_number)
    zone = time_zone(tz)
    hour, minute = hour_minute(time_of_day)
    local_after = to_local(after, zone)
    anchor = anchor or local_after.date()
    if interval_type == "weeks" and weekday is not None:
        anchor += datetime.timedelta(days=int(weekday) - anchor.weekday())
    origin = datetime.datetime.combine(anchor, datetime.time(hour, minute))
    step = unit * interval_number
    # Start the rule on the grid, more than a day before ``after``: no change of
    # UTC offset is that large, so the slot sought is among the next ones.
    steps_back = math.floor((local_after - datetime.timedelta(days=1) - origin) / step)
    start = origin + step * steps_back
    for wall in rrule(frequency, interval=interval_number, dtstart=start):
        slot = to_utc(wall, zone)
        if slot > after:
            return slot
    raise AssertionError("an rrule without an end has no last slot")  # pragma: no cover


def schedule_anchor(after, interval_type, time_of_day, tz="UTC", weekday=None):
    """The anchor day of a schedule set up at ``after``: the local day of its first opportunity.

    A new "every N days or weeks" schedule thus starts at the next time of day
    (on the weekday, for weeks) and repeats every N from there.
    """
    slot = next_slot(after, 1, interval_type, time_of_day, tz=tz, weekday=weekday)
    return to_local(slot, time_zone(tz)).date()


def next_drill(after, number, unit):
    """The drill after ``after``: ``number`` days, weeks or months later (month ends clamp, as relativedelta)."""
    return after + DRILL_UNITS[unit](number)
