"""Which backups a policy keeps and which it prunes (grandfather-father-son), decided without I/O.

The rules read like restic's ``forget --keep-*``. Backups are taken newest
first. ``keep_last`` keeps the N newest. ``keep_daily`` walks newest to oldest
and keeps the newest backup of each calendar day (UTC) until N days have been
kept; days without a backup do not count. Weekly uses the ISO year-week,
monthly the calendar month, yearly the calendar year. A backup kept by several
rules carries every reason; a rule set to 0 keeps nothing.

Safety comes before the counts:

- a policy whose rules are all 0 prunes nothing;
- when the newest run failed, nothing is pruned (the older copies may be the
  only good ones);
- the newest verified backup is always kept;
- a backup still under Object Lock is never offered for deletion: it is
  reported in ``locked`` instead.
"""

import datetime
from dataclasses import dataclass, field, fields

from .manifest import backup_time, is_backup_id

UTC = datetime.timezone.utc

NEWEST_VERIFIED = "newest verified"
NO_RULES = "no retention rules"
HELD_RUN_FAILED = "held: newest run failed"

HELD_NO_RULES_SENTENCE = (
    "Every keep rule of this policy is 0, so nothing is pruned: a policy without retention deletes nothing."
)
HELD_RUN_FAILED_SENTENCE = (
    "The newest backup run failed, so nothing is pruned until a run succeeds: "
    "the older backups may be the only good copies."
)


@dataclass
class RetainedBackup:
    """One backup on a destination, as retention sees it."""

    backup_id: str
    created_at: datetime.datetime
    verified: bool = False
    locked_until: datetime.datetime | None = None

    @classmethod
    def from_id(cls, backup_id, verified=False, locked_until=None):
        """A backup whose creation time is read from its id (``20261126T030000Z-3f9a1c``)."""
        if not isinstance(backup_id, str) or not is_backup_id(backup_id):
            raise ValueError(
                "%r is not a backup id: expected a UTC time and 6 hex digits, like 20261126T030000Z-3f9a1c." % backup_id
            )
        try:
            created_at = backup_time(backup_id)
        except ValueError:
            raise ValueError("Backup id %r does not hold a real date and time." % backup_id)
        return cls(backup_id=backup_id, created_at=created_at, verified=verified, locked_until=locked_until)

    def is_locked(self, now):
        """True while Object Lock forbids deleting this backup."""
        return self.locked_until is not None and self.locked_until > now


@dataclass(frozen=True)
class RetentionRules:
    """How many backups each rule keeps; 0 turns a rule off."""

    keep_last: int = 0
    keep_daily: int = 0
    keep_weekly: int = 0
    keep_monthly: int = 0
    keep_yearly: int = 0

    def __post_init__(self):
        for rule in fields(self):
            value = getattr(self, rule.name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError("Retention rule %s must be a whole number of backups, not %r." % (rule.name, value))
            if value < 0:
                raise ValueError(
                    "Retention rule %s is %d; it must be 0 or more (0 turns the rule off)." % (rule.name, value)
                )

    @property
    def is_empty(self):
        """True when every rule is 0: such a policy keeps everything."""
        return not any(getattr(self, rule.name) for rule in fields(self))


@dataclass
class RetentionDecision:
    """The outcome of :func:`select`; every list is newest first."""

    keep: list = field(default_factory=list)
    delete: list = field(default_factory=list)
    locked: list = field(default_factory=list)
    reasons: dict = field(default_factory=dict)
    held: str | None = None


def period_labels(moment):
    """The day, ISO week, month and year a moment falls in (UTC), as retention names them."""
    moment = moment.astimezone(UTC)
    iso_year, iso_week, _weekday = moment.isocalendar()
    return {
        "daily": "%04d-%02d-%02d" % (moment.year, moment.month, moment.day),
        "weekly": "%04d-W%02d" % (iso_year, iso_week),
        "monthly": "%04d-%02d" % (moment.year, moment.month),
        "yearly": "%04d" % moment.year,
    }


def select(backups, rules, now, newest_run_failed=False):
    """Decide which backups to keep, delete, or leave alone because they are locked.

    ``backups`` are :class:`RetainedBackup` of one destination, in any order;
    ``rules`` a :class:`RetentionRules`; ``now`` an aware datetime.
    """
    backups = list(backups)
    _check(backups, now)
    ordered = sorted(backups, key=lambda b: (b.created_at, b.backup_id), reverse=True)

    held = None
    if rules.is_empty:
        reasons = {b.backup_id: [NO_RULES] for b in ordered}
        held = HELD_NO_RULES_SENTENCE
    else:
        reasons = _rule_reasons(ordered, rules)

    newest_verified = next((b for b in ordered if b.verified), None)
    if newest_verified is not None:
        reasons.setdefault(newest_verified.backup_id, []).append(NEWEST_VERIFIED)

    if newest_run_failed:
        held = HELD_RUN_FAILED_SENTENCE
        for backup in ordered:
            reasons.setdefault(backup.backup_id, [HELD_RUN_FAILED])

    decision = RetentionDecision(held=held)
    for backup in ordered:
        if backup.backup_id in reasons:
            decision.keep.append(backup.backup_id)
        elif backup.is_locked(now):
            decision.locked.append(backup.backup_id)
            reasons[backup.backup_id] = ["object lock until %s" % backup.locked_until.astimezone(UTC).isoformat()]
        else:
            decision.delete.append(backup.backup_id)
    decision.reasons = {backup_id: reasons[backup_id] for backup_id in decision.keep + decision.locked}
    return decision


def _rule_reasons(ordered, rules):
    """{backup_id: [reason, ...]} for the backups the counting rules keep."""
    reasons = {}
    for position, backup in enumerate(ordered[: rules.keep_last], start=1):
        reasons.setdefault(backup.backup_id, []).append("last %d" % position)
    for period, count in (
        ("daily", rules.keep_daily),
        ("weekly", rules.keep_weekly),
        ("monthly", rules.keep_monthly),
        ("yearly", rules.keep_yearly),
    ):
        periods_kept = set()
        for backup in ordered:
            if len(periods_kept) >= count:
                break
            label = period_labels(backup.created_at)[period]
            if label in periods_kept:
                continue  # an older backup of a period already kept
            periods_kept.add(label)
            reasons.setdefault(backup.backup_id, []).append("%s %s" % (period, label))
    return reasons


def _check(backups, now):
    if not _is_aware(now):
        raise ValueError("Retention needs the current time with a timezone (UTC), not %r." % (now,))
    seen = set()
    for backup in backups:
        if backup.backup_id in seen:
            raise ValueError("Backup %s is listed twice; give each backup of a destination once." % (backup.backup_id,))
        seen.add(backup.backup_id)
        if not _is_aware(backup.created_at):
            raise ValueError(
                "Backup %s has a creation time without a timezone (%r); give it in UTC."
                % (backup.backup_id, backup.created_at)
            )
        if backup.locked_until is not None and not _is_aware(backup.locked_until):
            raise ValueError(
                "Backup %s has an Object Lock end without a timezone (%r); give it in UTC."
                % (backup.backup_id, backup.locked_until)
            )


def _is_aware(moment):
    return isinstance(moment, datetime.datetime) and moment.utcoffset() is not None
