"""Quantities in words, the way people read them in logs, forms and alerts. Pure: no I/O."""

import decimal


def human_bytes(value):
    """A size: '512 B', '1.5 KiB', '3.0 GiB'."""
    value = float(value or 0)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return "%.1f %s" % (value, unit) if unit != "B" else "%d B" % value
        value /= 1024
    return str(value)


def human_duration(seconds):
    """A short human text of a duration: '2.5 s', '45 s', '3 min 10 s', '5 h 20 min', '2 d 3 h'."""
    seconds = max(float(seconds or 0.0), 0.0)
    if seconds < 10:
        # Half up, as Odoo rounds a field of one decimal: a drill's log and its form say the same 3.1 s of 3.05 s.
        tenths = decimal.Decimal(repr(seconds)).quantize(decimal.Decimal("0.1"), rounding=decimal.ROUND_HALF_UP)
        if tenths < 10:
            return "%s s" % tenths
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


def count(number, word, plural=None):
    """'1 file', '0 files', '3 destinations'."""
    return "%d %s" % (number, word if number == 1 else (plural or word + "s"))
