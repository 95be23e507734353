"""Retention prunes a policy's own sets only, and "newest verified" means verified (real backups on disk)."""

import json
import os

import pytest

from engine.core.errors import LockBusy
from engine.formats import catalog
from engine.io.storage import LocalStorage
from engine.ops.backup import run_backup
from engine.ops.prune import apply_retention, prune

A = {"database_uuid": "11111111-aaaa", "policy_id": 1}
B = {"database_uuid": "11111111-aaaa", "policy_id": 2}


def noop(fraction, message):
    pass


def stored(sample):
    return [e.backup_id for e in catalog.list_backups(LocalStorage(sample["dest"]), sample["db"])]


def backup(plan_for, sample, owner, **plan):
    """One backup of ``owner`` with retention applied as the worker does; (backup id, retention reports)."""
    plan = plan_for(sample, include_filestore=False, owner=owner, lock_key=4242, **plan)
    reports = []

    def prune_under_the_lock(result):
        # Retention runs while the policy's lock is held: a second run of the policy cannot start meanwhile.
        with pytest.raises(LockBusy):
            run_backup(plan_for(sample, include_filestore=False, owner=owner, lock_key=4242))
        reports.extend(apply_retention(plan, result, noop))

    result = run_backup(plan, after=prune_under_the_lock)
    return result.backup_id, reports


def test_two_policies_on_one_database_and_destination_keep_each_others_sets(sample, plan_for):
    a1, _ = backup(plan_for, sample, A)
    b1, _ = backup(plan_for, sample, B)
    a2, _ = backup(plan_for, sample, A)
    b2, _ = backup(plan_for, sample, B)
    a3, reports = backup(plan_for, sample, A, retention={"keep_last": 1})
    assert sorted(reports[0]["deleted"]) == [a1, a2] and sorted(reports[0]["others"]) == [b1, b2]
    assert stored(sample) == sorted([b1, b2, a3])
    b3, reports = backup(plan_for, sample, B, retention={"keep_last": 1})
    assert sorted(reports[0]["deleted"]) == [b1, b2] and reports[0]["others"] == [a3]
    assert stored(sample) == sorted([a3, b3])
    manifest = json.loads(catalog.BackupRef(LocalStorage(sample["dest"]), sample["db"], a3).read_manifest_bytes())
    assert manifest["owner"] == A


def test_newest_verified_survives_a_prune_after_an_unverified_run(sample, plan_for):
    """keep_last 1 after a run nobody verified yet: the verified set stays, for its own reason."""
    old, _ = backup(plan_for, sample, A)
    new, reports = backup(plan_for, sample, A, retention={"keep_last": 1}, verified_ids=[old])
    assert stored(sample) == [old, new]
    assert reports[0]["reasons"][old] == ["newest verified"]
    assert reports[0]["reasons"][new] == ["last 1"], reports[0]["reasons"]


def unfinished(sample, backup_id, owner=None):
    """A set a killed run left: an artifact, no manifest; owner.json first when the run had an owner."""
    folder = os.path.join(sample["dest"], sample["db"], backup_id)
    os.makedirs(folder)
    if owner:
        with open(os.path.join(folder, "owner.json"), "w", encoding="utf-8") as handle:
            json.dump({"backup_id": backup_id, "owner": owner}, handle)
    with open(os.path.join(folder, "database.dump.zst"), "wb") as handle:
        handle.write(b"half a dump")
    return backup_id


def test_unfinished_sets_are_cleaned_up_only_by_their_owner(sample, plan_for):
    """A two-day-old set without manifest is removed by the policy that made it, never by another."""
    mine = unfinished(sample, "20200101T000000Z-aaaaaa", owner=A)
    legacy = unfinished(sample, "20200101T000001Z-cccccc")
    theirs = unfinished(sample, "20200102T000000Z-bbbbbb", owner=B)
    storage = LocalStorage(sample["dest"])
    report = prune(storage, sample["db"], {"keep_last": 5}, owner=A, owned_ids={legacy})
    assert report.incomplete_removed == [mine, legacy]
    assert [e.backup_id for e in catalog.list_backups(storage, sample["db"])] == [theirs]
    # Without an owner (the command line), every stale unfinished set is fair game, as before.
    assert prune(storage, sample["db"], {"keep_last": 5}).incomplete_removed == [theirs]


def test_a_killed_run_leaves_a_set_that_says_whose_it_is(sample, plan_for):
    """owner.json is the set's first object: written before any artifact, and not a stray file to verify."""
    from engine.ops.verify import verify

    backup_id, _ = backup(plan_for, sample, A)
    ref = catalog.BackupRef(LocalStorage(sample["dest"]), sample["db"], backup_id)
    assert json.loads(ref.storage.read_bytes(ref.key("owner.json")))["owner"] == A
    report = verify(ref)
    assert report.ok and not [w for w in report.warnings if "not listed" in w], report.warnings


def test_sets_made_before_owners_were_recorded_are_found_by_the_jobs_ids(sample, plan_for):
    legacy, _ = backup(plan_for, sample, None)
    stranger, _ = backup(plan_for, sample, None)
    new, reports = backup(plan_for, sample, A, retention={"keep_last": 1}, owned_ids=[legacy])
    assert reports[0]["deleted"] == [legacy] and reports[0]["others"] == [stranger]
    assert stored(sample) == sorted([stranger, new])
