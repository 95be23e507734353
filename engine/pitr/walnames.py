"""WAL positions and segment file names (pure).

A position (LSN) ``X/Y`` is the 64-bit number ``X << 32 | Y``; the segment that holds it is ``lsn //
segment_size``, named ``TTTTTTTTXXXXXXXXYYYYYYYY``: the timeline, then the segment number split in the
"log id" (segments per 4 GiB) and the segment within it, each as 8 hex digits.
"""

import re

SEGMENT_RE = re.compile(r"[0-9A-F]{24}")
HISTORY_RE = re.compile(r"[0-9A-F]{8}\.history")
DEFAULT_SEGMENT_SIZE = 16 * 1024 * 1024


def parse_lsn(text):
    """The number of a position written ``X/Y`` (hexadecimal), or a ValueError."""
    high, sep, low = str(text or "").strip().partition("/")
    if not sep or not high or not low:
        raise ValueError("%r is not a WAL position (X/Y)" % (text,))
    return (int(high, 16) << 32) | int(low, 16)


def format_lsn(value):
    return "%X/%X" % (value >> 32, value & 0xFFFFFFFF)


def segments_per_id(segment_size):
    return 0x100000000 // segment_size


def segment_name(timeline, segno, segment_size=DEFAULT_SEGMENT_SIZE):
    per = segments_per_id(segment_size)
    return "%08X%08X%08X" % (timeline, segno // per, segno % per)


def parse_segment(name, segment_size=DEFAULT_SEGMENT_SIZE):
    """(timeline, segment number) of a segment file name, or a ValueError."""
    if not SEGMENT_RE.fullmatch(name or ""):
        raise ValueError("%r is not a WAL segment name" % (name,))
    return int(name[:8], 16), int(name[8:16], 16) * segments_per_id(segment_size) + int(name[16:], 16)


def segment_of(lsn, timeline, segment_size=DEFAULT_SEGMENT_SIZE):
    """The name of the segment that holds position ``lsn`` on ``timeline``."""
    return segment_name(timeline, lsn // segment_size, segment_size)


def is_wal_file(name):
    """A segment or a timeline history file: what pg_receivewal writes and a restore asks for."""
    return bool(SEGMENT_RE.fullmatch(name or "") or HISTORY_RE.fullmatch(name or ""))


def gaps(names, first, last, segment_size=DEFAULT_SEGMENT_SIZE):
    """The segment names missing from ``names`` between ``first`` and ``last`` (both included) on their
    timeline: [(first missing, last missing, count)]. Names of other timelines are ignored."""
    timeline, start = parse_segment(first, segment_size)
    _tli, end = parse_segment(last, segment_size)
    have = set()
    for name in names:
        if SEGMENT_RE.fullmatch(name):
            tli, segno = parse_segment(name, segment_size)
            if tli == timeline:
                have.add(segno)
    missing, run = [], None
    for segno in range(start, end + 1):
        if segno in have:
            if run:
                missing.append(run)
                run = None
            continue
        if run is None:
            run = [segno, segno]
        else:
            run[1] = segno
    if run:
        missing.append(run)
    return [
        (segment_name(timeline, a, segment_size), segment_name(timeline, b, segment_size), b - a + 1)
        for a, b in missing
    ]
