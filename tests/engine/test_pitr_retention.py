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


def receiver_state(**changes):
    state = {
        "updated_at": "2026-12-07T11:59:30.000000Z",
        "receiving": True,
        "last_error": None,
        "archive_behind_seconds": 4.0,
        "slot_status": "reserved",
        "slot_retained_bytes": 1 << 20,
        "gaps": [],
        "destination_errors": {},
    }
    state.update(changes)
    return state


def test_the_receivers_state_says_what_is_wrong_in_words():
    from engine.pitr.receiver import state_problems

    assert state_problems(receiver_state(), NOW) == []
    assert state_problems(None, NOW) == ["the receiver has written no state: it has never run with this spool folder"]
    assert state_problems(receiver_state(updated_at="2026-12-07T11:50:00.000000Z"), NOW) == [
        "the receiver has not written its state for 600 s: is the worker running?"
    ]
    assert state_problems(
        receiver_state(receiving=False, last_error="pg_receivewal stopped (exit code 1): x"), NOW
    ) == ["pg_receivewal is not running: pg_receivewal stopped (exit code 1): x"]
    assert state_problems(receiver_state(archive_behind_seconds=900.0), NOW) == [
        "the archive is 900 s behind the server (limit 300 s)"
    ]
    assert state_problems(receiver_state(archive_behind_seconds=None), NOW) == [
        "the archive does not yet vouch for any recent second (catching up, or nothing stored)"
    ]
    assert "a gap" in state_problems(receiver_state(slot_status="lost"), NOW)[0]
    assert "set max_slot_wal_keep_size" in state_problems(receiver_state(slot_status="extended"), NOW)[0]
    gap = {"at": "2026-12-07T10:00:00Z", "why": "requested WAL segment has already been removed"}
    assert state_problems(receiver_state(gaps=[gap], destination_errors={"s3": "timeout"}), NOW) == [
        "a gap in the WAL archive since 2026-12-07T10:00:00Z: requested WAL segment has already been removed",
        "destination s3: timeout",
    ]


def test_malformed_signed_files_from_someone_else_are_refused_in_words(tmp_path):
    """A destination's writer without the signing key plants entries of every wrong shape: each is a VerifyError
    (a sentence), never a crash, and the window built on them offers nothing."""
    import json as json_

    import pytest

    from engine.core.errors import VerifyError
    from engine.io.storage import LocalStorage
    from engine.pitr import archive, recover

    storage = LocalStorage(str(tmp_path))
    arch = archive.Archive(storage, "7716000000000000001")
    base = "%s/20261207T100000Z-abcdef/base.json" % archive.base_prefix(arch.system_id)
    wal = "%s/%s.json" % (archive.wal_prefix(arch.system_id), walnames.segment_name(1, 5))
    public = "vqpaIJILphibPPOj2c+L8wkXkSKiYp5uVfL40csJj1s="
    for body in (
        b"not json",
        b"[]",
        json_.dumps({"doc": "!!", "signature": "x"}).encode(),
        json_.dumps({"doc": "e30=", "signature": 1}).encode(),
        json_.dumps({"doc": "e30=", "signature": "AAAA"}).encode(),
    ):
        for key in (base, wal):
            with storage.open_writer(key) as writer:
                writer.write(body)
        with pytest.raises(VerifyError):
            arch.entry(walnames.segment_name(1, 5), public)
        with pytest.raises(VerifyError):
            arch.base("20261207T100000Z-abcdef", public)
        win = recover.window(arch, public)
        assert win.ranges == [] and win.bases == [] and win.problems
