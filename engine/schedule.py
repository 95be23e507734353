"""Schedule arithmetic: when the next backup and drill are due. Pure: no I/O."""

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
