"""A restored database does not accuse itself: what was in flight in its snapshot is closed, in words."""

import pytest
from conftest import query
from test_roundtrip import ref_of

from engine.ops.backup import run_backup
from engine.ops.inflight import IN_FLIGHT_MESSAGE, closed_text
from engine.ops.restore import RestoreOptions, restore

# The columns spp_backup's models give these tables (models/backup_run.py, backup_run_mixin.py, backup_job.py,
# backup_drill.py, backup_restore.py), as far as closing them needs.
SCHEMA = """
CREATE TABLE spp_backup_run (id serial PRIMARY KEY, state varchar NOT NULL, error_message text,
    is_applied boolean, finished_at timestamp, write_date timestamp);
CREATE TABLE spp_backup_job (id serial PRIMARY KEY, state varchar NOT NULL, error_message text,
    finished_at timestamp, verify_state varchar NOT NULL DEFAULT 'not_verified', verify_report text,
    write_date timestamp);
CREATE TABLE spp_backup_drill (id serial PRIMARY KEY, state varchar NOT NULL, error_message text,
    finished_at timestamp, verdict varchar, write_date timestamp);
CREATE TABLE spp_backup_restore (id serial PRIMARY KEY, state varchar NOT NULL, error_message text,
    finished_at timestamp, write_date timestamp);
-- The backup's own job and run, another job waiting, a drill and a verification under way; and finished work.
INSERT INTO spp_backup_run (state, is_applied) VALUES ('running', false), ('queued', false), ('running', false),
    ('done', true), ('failed', false);
INSERT INTO spp_backup_job (state, verify_state) VALUES ('running', 'not_verified'), ('queued', 'not_verified'),
    ('done', 'verifying'), ('done', 'ok');
INSERT INTO spp_backup_drill (state, verdict) VALUES ('running', 'pending'), ('done', 'passed');
INSERT INTO spp_backup_restore (state) VALUES ('done');
"""


@pytest.fixture
def in_flight(sample, plan_for):
    """A backup of the sample taken while its own job and run, and other work, were in flight."""
    query(sample["db"], SCHEMA)
    return run_backup(plan_for(sample, include_filestore=False))


def states(dbname):
    return {
        "runs": query(dbname, "SELECT id, state, is_applied, error_message FROM spp_backup_run ORDER BY id"),
        "jobs": query(dbname, "SELECT id, state, error_message, verify_state, verify_report FROM spp_backup_job"),
        "drills": query(dbname, "SELECT id, state, verdict, error_message FROM spp_backup_drill ORDER BY id"),
        "restores": query(dbname, "SELECT id, state, error_message FROM spp_backup_restore"),
    }


@pytest.mark.parametrize("kind", ["replace", "copy"])
def test_restore_closes_what_was_in_flight_in_words(sample, in_flight, dbs, pgconf, kind):
    """A replace without neutralization (the runbook's restore) and a neutralized copy alike: the runs, jobs,
    drills and verifications in flight in the snapshot are closed with the words, finished ones stay, and the
    restore's result and log say how many."""
    lines = []
    if kind == "replace":
        options = RestoreOptions(target_db=sample["db"], pg=pgconf, include_filestore=False, replace=True)
    else:
        options = RestoreOptions(
            target_db=dbs.name("copy"), pg=pgconf, include_filestore=False, new_uuid=True, neutralize=True
        )
    out = restore(ref_of(in_flight, sample), options, log=lines.append)
    restored = states(out.target_db)
    assert restored["runs"] == [
        (1, "failed", True, IN_FLIGHT_MESSAGE),
        (2, "failed", True, IN_FLIGHT_MESSAGE),
        (3, "failed", True, IN_FLIGHT_MESSAGE),
        (4, "done", True, None),
        (5, "failed", False, None),
    ]
    assert sorted(restored["jobs"]) == [
        (1, "failed", IN_FLIGHT_MESSAGE, "not_verified", None),
        (2, "failed", IN_FLIGHT_MESSAGE, "not_verified", None),
        (3, "done", None, "not_verified", IN_FLIGHT_MESSAGE),
        (4, "done", None, "ok", None),
    ]
    assert restored["drills"] == [(1, "failed", "failed", IN_FLIGHT_MESSAGE), (2, "done", "passed", None)]
    assert restored["restores"] == [(1, "done", None)]
    assert "in flight when this backup was taken" in IN_FLIGHT_MESSAGE.lower()
    assert out.in_flight_closed == {"run": 3, "backup job": 2, "drill": 1, "verification": 1}
    said = "In the restored database: closed 3 runs, 2 backup jobs, 1 drill and 1 verification that were in flight "
    assert [line for line in lines if line.startswith(said)] == [
        "In the restored database: " + closed_text(out.in_flight_closed)
    ]
    assert query(out.target_db, "SELECT count(*) FROM spp_backup_run WHERE finished_at IS NOT NULL")[0][0] == 3


def test_restore_of_a_database_without_backup_tables_closes_nothing(sample, plan_for, dbs, pgconf):
    """A database without spp_backup's tables restores as before and says nothing about work in flight."""
    result = run_backup(plan_for(sample, include_filestore=False))
    lines = []
    out = restore(
        ref_of(result, sample),
        RestoreOptions(target_db=dbs.name("plain"), pg=pgconf, include_filestore=False),
        log=lines.append,
    )
    assert out.in_flight_closed == {}
    assert not [line for line in lines if "in flight" in line]
