"""Retention selection (grandfather-father-son): pure decisions, no I/O."""

import datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.core.retention import HELD_RUN_FAILED, NEWEST_VERIFIED, NO_RULES, RetainedBackup, RetentionRules, select

UTC = datetime.timezone.utc
NOW = datetime.datetime(2030, 6, 1, tzinfo=UTC)


def at(text):
    """An aware UTC datetime from 'YYYY-MM-DD HH:MM[:SS]'."""
    return datetime.datetime.fromisoformat(text).replace(tzinfo=UTC)


def bid(moment, suffix=0):
    return "%s-%06x" % (moment.strftime("%Y%m%dT%H%M%SZ"), suffix)


def backups_at(*texts, **options):
    """RetainedBackups with ids built from their times; options apply to all of them."""
    return [RetainedBackup(bid(at(text)), at(text), **options) for text in texts]


def ids(*texts):
    return [bid(at(text)) for text in texts]


# Concrete examples


def test_keep_last_keeps_the_newest_n_newest_first():
    """keep_last N keeps the N newest backups, numbered from the newest; the rest are deleted, newest first."""
    backups = backups_at("2026-11-22 03:00", "2026-11-26 03:00", "2026-11-23 03:00", "2026-11-25 03:00")
    decision = select(backups, RetentionRules(keep_last=2), NOW)
    assert decision.keep == ids("2026-11-26 03:00", "2026-11-25 03:00")
    assert decision.delete == ids("2026-11-23 03:00", "2026-11-22 03:00")
    assert decision.reasons == {bid(at("2026-11-26 03:00")): ["last 1"], bid(at("2026-11-25 03:00")): ["last 2"]}
    assert decision.locked == [] and decision.held is None


def test_backup_id_parses_into_a_retained_backup():
    """RetainedBackup.from_id reads the UTC time from the id; malformed ids are refused with the expected shape."""
    backup = RetainedBackup.from_id("20261126T030000Z-3f9a1c", verified=True)
    assert backup.created_at == at("2026-11-26 03:00") and backup.verified and backup.locked_until is None
    with pytest.raises(ValueError, match="like 20261126T030000Z-3f9a1c"):
        RetainedBackup.from_id("../etc/passwd")
    with pytest.raises(ValueError, match="real date"):
        RetainedBackup.from_id("20261399T030000Z-3f9a1c")


def test_daily_counts_only_the_newest_backup_of_each_day():
    """With several backups on one day, only that day's newest is kept by the daily rule."""
    backups = backups_at(
        "2026-11-26 03:00", "2026-11-26 15:00", "2026-11-26 23:59:59", "2026-11-25 00:00", "2026-11-25 12:00"
    )
    decision = select(backups, RetentionRules(keep_daily=2), NOW)
    assert decision.keep == ids("2026-11-26 23:59:59", "2026-11-25 12:00")
    assert decision.reasons == {
        bid(at("2026-11-26 23:59:59")): ["daily 2026-11-26"],
        bid(at("2026-11-25 12:00")): ["daily 2026-11-25"],
    }
    assert decision.delete == ids("2026-11-26 15:00", "2026-11-26 03:00", "2026-11-25 00:00")


def test_days_without_backups_do_not_use_up_the_daily_count():
    """keep_daily counts days that have backups: with gaps, it reaches back past the missing days."""
    backups = backups_at("2026-11-26 03:00", "2026-11-20 03:00", "2026-11-02 03:00", "2026-10-30 03:00")
    decision = select(backups, RetentionRules(keep_daily=3), NOW)
    assert decision.keep == ids("2026-11-26 03:00", "2026-11-20 03:00", "2026-11-02 03:00")
    assert decision.delete == ids("2026-10-30 03:00")


def test_the_day_boundary_is_midnight_utc():
    """23:59:59 and 00:00:00 the next second are different days; an aware non-UTC time is placed by its UTC day."""
    late = RetainedBackup(
        "late", datetime.datetime(2026, 11, 26, 23, 30, tzinfo=datetime.timezone(-datetime.timedelta(hours=5)))
    )
    backups = backups_at("2026-11-26 23:59:59", "2026-11-27 00:00:00") + [late]
    decision = select(backups, RetentionRules(keep_daily=3), NOW)
    # 23:30 at UTC-5 is 04:30 UTC on Nov 27, the newest backup of that day.
    assert decision.reasons == {
        "late": ["daily 2026-11-27"],
        bid(at("2026-11-26 23:59:59")): ["daily 2026-11-26"],
    }
    assert decision.delete == ids("2026-11-27 00:00:00")


def test_month_ends_and_the_leap_day_of_2028():
    """Jan 31, Feb 28 and Feb 29 2028 are distinct days; Feb 28 and Feb 29 share a month; Mar 1 starts the next."""
    backups = backups_at("2028-01-31 03:00", "2028-02-28 03:00", "2028-02-29 03:00", "2028-03-01 03:00")
    daily = select(backups, RetentionRules(keep_daily=3), NOW)
    assert daily.reasons == {
        bid(at("2028-03-01 03:00")): ["daily 2028-03-01"],
        bid(at("2028-02-29 03:00")): ["daily 2028-02-29"],
        bid(at("2028-02-28 03:00")): ["daily 2028-02-28"],
    }
    monthly = select(backups, RetentionRules(keep_monthly=3), NOW)
    assert monthly.reasons == {
        bid(at("2028-03-01 03:00")): ["monthly 2028-03"],
        bid(at("2028-02-29 03:00")): ["monthly 2028-02"],
        bid(at("2028-01-31 03:00")): ["monthly 2028-01"],
    }
    assert monthly.delete == ids("2028-02-28 03:00")


def test_february_28_is_the_month_end_outside_leap_years():
    """In 2027 the last backup of February is Feb 28, followed the next day by March 1."""
    backups = backups_at("2027-02-27 03:00", "2027-02-28 03:00", "2027-03-01 03:00")
    decision = select(backups, RetentionRules(keep_monthly=2, keep_daily=2), NOW)
    assert decision.reasons == {
        bid(at("2027-03-01 03:00")): ["daily 2027-03-01", "monthly 2027-03"],
        bid(at("2027-02-28 03:00")): ["daily 2027-02-28", "monthly 2027-02"],
    }
    assert decision.delete == ids("2027-02-27 03:00")


def test_iso_week_53_spans_the_new_year():
    """2026-12-31 and 2027-01-01 are both in ISO week 2026-W53, yet in different years; 2027-01-04 opens 2027-W01."""
    backups = backups_at("2026-12-27 03:00", "2026-12-31 03:00", "2027-01-01 03:00", "2027-01-04 03:00")
    weekly = select(backups, RetentionRules(keep_weekly=3), NOW)
    assert weekly.reasons == {
        bid(at("2027-01-04 03:00")): ["weekly 2027-W01"],
        bid(at("2027-01-01 03:00")): ["weekly 2026-W53"],
        bid(at("2026-12-27 03:00")): ["weekly 2026-W52"],
    }
    assert weekly.delete == ids("2026-12-31 03:00")
    yearly = select(backups, RetentionRules(keep_yearly=2), NOW)
    assert yearly.reasons == {
        bid(at("2027-01-04 03:00")): ["yearly 2027"],
        bid(at("2026-12-31 03:00")): ["yearly 2026"],
    }


def test_iso_year_of_early_january_2028_is_2027():
    """2028-01-01 and 01-02 belong to ISO week 2027-W52, the same week as 2027-12-31; 2028-01-03 is 2028-W01."""
    backups = backups_at("2027-12-31 03:00", "2028-01-01 03:00", "2028-01-02 03:00", "2028-01-03 03:00")
    decision = select(backups, RetentionRules(keep_weekly=5), NOW)
    assert decision.reasons == {
        bid(at("2028-01-03 03:00")): ["weekly 2028-W01"],
        bid(at("2028-01-02 03:00")): ["weekly 2027-W52"],
    }


def test_keep_last_and_daily_combine_and_share_reasons():
    """A backup kept by keep_last and by daily carries both reasons; each rule counts on its own."""
    backups = backups_at(
        "2026-11-26 03:00", "2026-11-26 09:00", "2026-11-26 15:00", "2026-11-25 03:00", "2026-11-24 03:00"
    )
    decision = select(backups, RetentionRules(keep_last=2, keep_daily=2), NOW)
    assert decision.reasons == {
        bid(at("2026-11-26 15:00")): ["last 1", "daily 2026-11-26"],
        bid(at("2026-11-26 09:00")): ["last 2"],
        bid(at("2026-11-25 03:00")): ["daily 2026-11-25"],
    }
    assert decision.delete == ids("2026-11-26 03:00", "2026-11-24 03:00")


def test_full_grandfather_father_son_policy():
    """Daily, weekly, monthly and yearly rules together over a year of nightly backups keep the expected set."""
    start = at("2026-01-01 03:00")
    backups = [
        RetainedBackup(bid(start + datetime.timedelta(days=n)), start + datetime.timedelta(days=n)) for n in range(365)
    ]
    decision = select(backups, RetentionRules(keep_daily=7, keep_weekly=4, keep_monthly=12, keep_yearly=3), NOW)
    kept_days = [backup_id[:8] for backup_id in decision.keep]
    # daily: Dec 25-31; weekly: Dec 31 (2026-W53) then the Sundays closing W52-W50 (Dec 27, 20, 13);
    # monthly: Dec 31 then the month ends of Nov back to Jan; yearly: Dec 31 (only 2026 has backups).
    assert kept_days == [
        "20261231", "20261230", "20261229", "20261228", "20261227", "20261226", "20261225",
        "20261220", "20261213",
        "20261130", "20261031", "20260930", "20260831", "20260731", "20260630", "20260531",
        "20260430", "20260331", "20260228", "20260131",
    ]  # fmt: skip
    assert decision.reasons[bid(at("2026-12-31 03:00"))] == [
        "daily 2026-12-31",
        "weekly 2026-W53",
        "monthly 2026-12",
        "yearly 2026",
    ]
    assert decision.reasons[bid(at("2026-12-27 03:00"))] == ["daily 2026-12-27", "weekly 2026-W52"]
    assert len(decision.delete) == 365 - 20


def test_a_zero_rule_keeps_nothing_by_itself():
    """Rules at 0 add nothing: only the rule with a count keeps backups."""
    backups = backups_at("2026-11-26 03:00", "2025-11-26 03:00")
    decision = select(backups, RetentionRules(keep_last=1, keep_yearly=0), NOW)
    assert decision.keep == ids("2026-11-26 03:00")


def test_policy_with_all_rules_zero_deletes_nothing():
    """A policy without retention keeps every backup and says why it pruned nothing."""
    backups = backups_at("2026-11-26 03:00", "2026-11-25 03:00", "2020-01-01 00:00")
    decision = select(backups, RetentionRules(), NOW)
    assert decision.keep == ids("2026-11-26 03:00", "2026-11-25 03:00", "2020-01-01 00:00")
    assert decision.delete == [] and decision.locked == []
    assert "nothing is pruned" in decision.held
    assert all(reasons == [NO_RULES] for reasons in decision.reasons.values())


def test_newest_verified_backup_is_never_deleted():
    """The newest verified backup is kept even when the counts would drop it; older verified ones are not protected."""
    backups = backups_at("2026-11-26 03:00", "2026-11-25 03:00") + backups_at(
        "2026-11-20 03:00", "2026-11-10 03:00", verified=True
    )
    decision = select(backups, RetentionRules(keep_last=1), NOW)
    assert decision.keep == ids("2026-11-26 03:00", "2026-11-20 03:00")
    assert decision.reasons[bid(at("2026-11-20 03:00"))] == [NEWEST_VERIFIED]
    assert decision.delete == ids("2026-11-25 03:00", "2026-11-10 03:00")


def test_newest_verified_kept_by_a_rule_carries_both_reasons():
    """When the newest verified backup is also kept by a rule, its reasons list the rule and the safety."""
    backups = backups_at("2026-11-26 03:00", verified=True) + backups_at("2026-11-25 03:00")
    decision = select(backups, RetentionRules(keep_last=1), NOW)
    assert decision.reasons == {bid(at("2026-11-26 03:00")): ["last 1", NEWEST_VERIFIED]}
    assert decision.delete == ids("2026-11-25 03:00")


def test_failed_newest_run_holds_every_backup():
    """After a failed run nothing is deleted, even locked-free old backups; the decision says why."""
    backups = backups_at("2026-11-26 03:00", "2026-11-25 03:00", "2026-01-01 03:00")
    decision = select(backups, RetentionRules(keep_last=1), NOW, newest_run_failed=True)
    assert decision.keep == ids("2026-11-26 03:00", "2026-11-25 03:00", "2026-01-01 03:00")
    assert decision.delete == [] and decision.locked == []
    assert "failed" in decision.held and "nothing is pruned" in decision.held
    assert decision.reasons[bid(at("2026-11-26 03:00"))] == ["last 1"]
    assert decision.reasons[bid(at("2026-01-01 03:00"))] == [HELD_RUN_FAILED]


def test_backups_under_object_lock_are_reported_not_deleted():
    """A backup the rules drop but Object Lock still protects goes to `locked`; an expired lock does not protect."""
    now = at("2026-12-01 00:00")
    locked = RetainedBackup(bid(at("2026-11-24 03:00")), at("2026-11-24 03:00"), locked_until=at("2026-12-24 03:00"))
    expired = RetainedBackup(bid(at("2026-11-23 03:00")), at("2026-11-23 03:00"), locked_until=now)
    kept_and_locked = RetainedBackup(bid(at("2026-11-26 03:00")), at("2026-11-26 03:00"), locked_until=at("2027-01-01"))
    backups = [locked, expired, kept_and_locked, *backups_at("2026-11-25 03:00")]
    decision = select(backups, RetentionRules(keep_last=1), now)
    assert decision.keep == ids("2026-11-26 03:00")
    assert decision.locked == ids("2026-11-24 03:00")
    assert decision.delete == ids("2026-11-25 03:00", "2026-11-23 03:00")
    assert decision.reasons[bid(at("2026-11-24 03:00"))] == ["object lock until 2026-12-24T03:00:00+00:00"]


def test_no_backups_decides_nothing():
    """An empty destination yields empty lists and no hold."""
    decision = select([], RetentionRules(keep_daily=7), NOW)
    assert (decision.keep, decision.delete, decision.locked, decision.reasons, decision.held) == ([], [], [], {}, None)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: RetentionRules(keep_daily=-1), "keep_daily is -1; it must be 0 or more"),
        (lambda: RetentionRules(keep_weekly=1.5), "keep_weekly must be a whole number"),
        (lambda: RetentionRules(keep_last=True), "keep_last must be a whole number"),
        (lambda: select(backups_at("2026-11-26 03:00") * 2, RetentionRules(keep_last=1), NOW), "listed twice"),
        (
            lambda: select([RetainedBackup("a", datetime.datetime(2026, 11, 26))], RetentionRules(keep_last=1), NOW),
            "creation time without a timezone",
        ),
        (
            lambda: select(backups_at("2026-11-26 03:00"), RetentionRules(keep_last=1), datetime.datetime(2026, 12, 1)),
            "current time with a timezone",
        ),
        (
            lambda: select(
                backups_at("2026-11-26 03:00", locked_until=datetime.datetime(2027, 1, 1)),
                RetentionRules(keep_last=1),
                NOW,
            ),
            "Object Lock end without a timezone",
        ),
    ],
)
def test_bad_input_is_refused_with_a_sentence(make, message):
    """Negative or non-integer rules, duplicate ids and naive datetimes raise ValueError naming the problem."""
    with pytest.raises(ValueError, match=message):
        make()


# Property tests

BASE = datetime.datetime(2026, 12, 1, tzinfo=UTC)
# Offsets within about 4 years (2026-12 .. 2030-11, through the 2028 leap day and three year ends),
# clustered so that several backups often fall on one day, week or month.
offsets = st.one_of(
    st.integers(min_value=0, max_value=4 * 365 * 24 * 3600),
    st.integers(min_value=0, max_value=40).map(lambda hours: (395 * 24 + hours) * 3600),  # around 2028-01-01
    st.integers(min_value=0, max_value=72).map(lambda hours: (453 * 24 + hours) * 3600),  # around 2028-02-28
)


@st.composite
def destinations(draw, verified=None, locks=True):
    """A list of RetainedBackups with unique ids (times may repeat)."""
    moments = draw(st.lists(offsets.map(lambda s: BASE + datetime.timedelta(seconds=s)), max_size=40))
    result = []
    for index, moment in enumerate(moments):
        is_verified = draw(st.booleans()) if verified is None else verified
        locked_until = None
        if locks and draw(st.booleans()):
            locked_until = BASE + datetime.timedelta(days=draw(st.integers(min_value=0, max_value=4 * 365)))
        result.append(RetainedBackup(bid(moment, index), moment, is_verified, locked_until))
    return result


counts = st.integers(min_value=0, max_value=8)
rule_sets = st.builds(
    RetentionRules, keep_last=counts, keep_daily=counts, keep_weekly=counts, keep_monthly=counts, keep_yearly=counts
)
nows = st.integers(min_value=0, max_value=5 * 365).map(lambda days: BASE + datetime.timedelta(days=days))


def oracle_keep(backups, rules):
    """What the policy keeps, computed plainly: group by period, take the first N groups, the newest of each."""
    if rules.is_empty:
        return {b.backup_id for b in backups}

    def newest_key(b):
        return (b.created_at, b.backup_id)

    # keep_last: the tail of the oldest-first order.
    kept = {b.backup_id for b in sorted(backups, key=newest_key)[-rules.keep_last :]} if rules.keep_last else set()
    period_of = {
        "daily": lambda t: t.date(),
        "weekly": lambda t: t.isocalendar()[:2],
        "monthly": lambda t: (t.year, t.month),
        "yearly": lambda t: t.year,
    }
    for period, count in (
        ("daily", rules.keep_daily),
        ("weekly", rules.keep_weekly),
        ("monthly", rules.keep_monthly),
        ("yearly", rules.keep_yearly),
    ):
        groups = {}
        for b in backups:
            groups.setdefault(period_of[period](b.created_at), []).append(b)
        for key in sorted(groups, reverse=True)[:count]:
            kept.add(max(groups[key], key=newest_key).backup_id)
    return kept


@settings(max_examples=300, deadline=None)
@given(destinations(), rule_sets, nows, st.booleans())
def test_property_newest_verified_backup_always_survives(backups, rules, now, failed):
    """Whatever the rules, locks and run outcome, the newest verified backup is kept and says so."""
    decision = select(backups, rules, now, newest_run_failed=failed)
    verified = [b for b in backups if b.verified]
    if verified:
        newest = max(verified, key=lambda b: (b.created_at, b.backup_id))
        assert newest.backup_id in decision.keep
        assert NEWEST_VERIFIED in decision.reasons[newest.backup_id]


@settings(max_examples=300, deadline=None)
@given(destinations(), rule_sets, nows, st.booleans())
def test_property_keep_delete_locked_partition_all_backups(backups, rules, now, failed):
    """keep, delete and locked are disjoint and together name every backup once; each list is newest first."""
    decision = select(backups, rules, now, newest_run_failed=failed)
    every = {b.backup_id for b in backups}
    assert set(decision.keep) | set(decision.delete) | set(decision.locked) == every
    assert len(decision.keep) + len(decision.delete) + len(decision.locked) == len(every)
    by_id = {b.backup_id: b for b in backups}
    for listed in (decision.keep, decision.delete, decision.locked):
        order = [(by_id[i].created_at, i) for i in listed]
        assert order == sorted(order, reverse=True)
    # Locked ones really are locked, deleted ones are not, and nothing is deleted after a failed run.
    assert all(by_id[i].is_locked(now) for i in decision.locked)
    assert not any(by_id[i].is_locked(now) for i in decision.delete)
    assert set(decision.reasons) == set(decision.keep) | set(decision.locked)
    assert all(decision.reasons[i] for i in decision.keep)
    if failed:
        assert decision.delete == [] and decision.locked == [] and decision.held


@settings(max_examples=500, deadline=None)
@given(destinations(verified=False, locks=False), rule_sets, nows)
def test_property_kept_set_matches_an_independent_oracle(backups, rules, now):
    """Without verified backups, locks or a failed run, select keeps exactly what the plain re-implementation keeps."""
    decision = select(backups, rules, now)
    expected = oracle_keep(backups, rules)
    assert set(decision.keep) == expected
    assert set(decision.delete) == {b.backup_id for b in backups} - expected


@settings(max_examples=300, deadline=None)
@given(destinations(), rule_sets, nows)
def test_property_daily_rule_keeps_one_backup_per_day_up_to_its_count(backups, rules, now):
    """Backups carrying a daily reason number min(keep_daily, distinct days), and their days are all different."""
    decision = select(backups, rules, now)
    daily = [i for i, reasons in decision.reasons.items() if any(r.startswith("daily ") for r in reasons)]
    days = {b.created_at.date() for b in backups}
    assert len(daily) == min(rules.keep_daily, len(days))
    assert len({i[:8] for i in daily}) == len(daily)


@settings(max_examples=200, deadline=None)
@given(destinations(verified=False, locks=False), st.integers(min_value=1, max_value=10), nows)
def test_property_daily_rule_alone_keeps_min_of_count_and_days(backups, keep_daily, now):
    """With only keep_daily set, exactly min(keep_daily, distinct days) backups are kept."""
    decision = select(backups, RetentionRules(keep_daily=keep_daily), now)
    assert len(decision.keep) == min(keep_daily, len({b.created_at.date() for b in backups}))


@settings(max_examples=200, deadline=None)
@given(destinations(), rule_sets, nows, st.booleans(), st.randoms(use_true_random=False))
def test_property_input_order_does_not_matter(backups, rules, now, failed, rnd):
    """The decision depends on the backups, not on the order the destination listed them in."""
    shuffled = list(backups)
    rnd.shuffle(shuffled)
    assert select(shuffled, rules, now, failed) == select(backups, rules, now, failed)


def test_oracle_agrees_on_a_hand_checked_case():
    """The test oracle itself gives the expected answer on a small case (so the property compares against truth)."""
    backups = backups_at("2026-12-31 03:00", "2026-12-31 04:00", "2027-01-01 03:00", "2027-01-04 03:00")
    assert oracle_keep(backups, RetentionRules(keep_weekly=2)) == set(ids("2027-01-04 03:00", "2027-01-01 03:00"))
    assert oracle_keep(backups, RetentionRules(keep_last=2)) == set(ids("2027-01-04 03:00", "2027-01-01 03:00"))
