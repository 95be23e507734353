"""The WAL archive's retention, as plain decisions: what reaches every second of the window stays."""

import datetime

from engine.pitr import walnames
from engine.pitr.retention import plan_prune

NOW = datetime.datetime(2026, 12, 7, 12, 0, tzinfo=datetime.timezone.utc)
WINDOW = datetime.timedelta(days=14)


def base(backup_id, days_ago, segno, parent=None):
    moment = NOW - datetime.timedelta(days=days_ago)
    return {
        "backup_id": backup_id,
        "consistent_at": moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "start_wal": walnames.segment_name(1, segno),
        "parent": parent,
        "segment_size": walnames.DEFAULT_SEGMENT_SIZE,
    }


def segments(first, last, timeline=1):
    return [walnames.segment_name(timeline, n) for n in range(first, last + 1)]


def test_the_newest_backup_before_the_window_and_everything_after_it_are_kept():
    bases = [base("a", 30, 10), base("b", 20, 100), base("c", 10, 200), base("d", 1, 300)]
    names = segments(10, 350) + ["00000001.history"]
    plan = plan_prune(bases, names, WINDOW, NOW)
    assert plan.keep_bases == ["b", "c", "d"]  # b is consistent before the window starts: it reaches its first second
    assert plan.drop_bases == ["a"]
    assert plan.drop_wal == segments(10, 99)
    assert plan.covers_from == NOW - WINDOW
    assert plan.notes == []


def test_an_incremental_keeps_the_backups_its_chain_starts_from():
    bases = [base("full", 40, 10), base("inc1", 20, 100, parent="full"), base("inc2", 5, 200, parent="inc1")]
    plan = plan_prune(bases, segments(10, 250), WINDOW, NOW)
    assert plan.keep_bases == ["full", "inc1", "inc2"] and plan.drop_bases == []
    # WAL is needed from the kept backup that reaches the window, not from the full one its chain starts with.
    assert plan.drop_wal == segments(10, 99)


def test_an_archive_younger_than_the_window_keeps_everything_and_says_so():
    bases = [base("a", 3, 10), base("b", 1, 50)]
    plan = plan_prune(bases, segments(5, 60), WINDOW, NOW)
    assert plan.keep_bases == ["a", "b"] and plan.drop_wal == segments(5, 9)
    assert plan.covers_from == NOW - datetime.timedelta(days=3)
    assert "reaches back to" in plan.notes[0]


def test_nothing_is_removed_before_the_first_base_backup():
    plan = plan_prune([], segments(1, 100), WINDOW, NOW)
    assert plan.drop_wal == [] and plan.drop_bases == [] and plan.covers_from is None


def test_a_killed_base_backup_is_removed_once_it_is_old_and_never_while_it_may_be_running():
    bases = [base("a", 2, 10)]
    old = (NOW - datetime.timedelta(days=1)).strftime("%Y%m%dT%H%M%SZ") + "-abcdef"
    recent = (NOW - datetime.timedelta(hours=1)).strftime("%Y%m%dT%H%M%SZ") + "-123456"
    plan = plan_prune(bases, segments(10, 20), WINDOW, NOW, incomplete=[old, recent, "not-an-id"])
    assert plan.drop_bases == [old]
