"""Schedule arithmetic: when the next backup and drill are due, and durations in words. Pure: no I/O."""

import datetime
import math

from dateutil.relativedelta import relativedelta

INTERVAL_UNITS = {
    "hours": datetime.timedelta(hours=1),
    "days": datetime.timedelta(days=1),
    "weeks": datetime.timedelta(weeks=1),
}

DRILL_UNITS = {
    "days": lambda count: relativedelta(days=count),
    "weeks": lambda count: relativedelta(weeks=count),
    "months": lambda count: relativedelta(months=count),
}


def human_duration(seconds):
    """A short human text of a duration: '2.5 s', '45 s', '3 min 10 s', '5 h 20 min', '2 d 3 h'."""
    seconds = max(float(seconds or 0.0), 0.0)
    if seconds < 10:
        return "%.1f s" % seconds
    if seconds < 60:
        return "%d s" % round(seconds)
    total = int(round(seconds))
    if total < 3600:
        minutes, secs = divmod(total, 60)
        return "%d min %d s" % (minutes, secs) if secs else "%d min" % minutes
    total_minutes = int(round(seconds / 60.0))
    if total_minutes < 48 * 60:
        hours, minutes = divmod(total_minutes, 60)
        return "%d h %d min" % (hours, minutes) if minutes else "%d h" % hours
    total_hours = int(round(seconds / 3600.0))
    days, hours = divmod(total_hours, 24)
    return "%d d %d h" % (days, hours) if hours else "%d d" % days


def next_slot(after, interval_number, interval_type, time_of_day, anchor=None):
    """The first scheduled moment strictly after ``after`` (naive UTC datetimes).

    Slots are ``anchor + k * interval``. Without an anchor, the slots are laid
    on the day of ``after`` at ``time_of_day`` (hours, UTC). With one (the
    previous planned run), missed slots are skipped and the phase is kept, so a
    server that was down for days runs once, not once per missed slot.
    """
    step = INTERVAL_UNITS[interval_type] * interval_number
    if anchor is None:
        minutes = int(round((time_of_day or 0.0) * 60)) % (24 * 60)
        anchor = datetime.datetime.combine(after.date(), datetime.time(minutes // 60, minutes % 60))
    count = math.floor((after - anchor) / step) + 1
    return anchor + step * count


def next_drill(after, number, unit):
    """The drill after ``after``: ``number`` days, weeks or months later (month ends clamp, as relativedelta)."""
    return after + DRILL_UNITS[unit](number)
