"""The contracts between Odoo and the worker: typed plans, shared states, names and the backup id, each defined once."""

import json
import re
from pathlib import Path

import pytest
from conftest import ROOT as ROOT_DIR
from conftest import query, run_plan

from engine.core import manifest as mf
from engine.core import plans, states
from engine.core.config import BackupPlan, DestinationConfig
from engine.core.errors import PreflightError
from engine.ops.backup import run_backup
from engine.service import protocol

ROOT = Path(ROOT_DIR)


def a_source(**values):
    return plans.Source(
        destination={"kind": "local", "path": "/srv/backups", "name": "Local"},
        db_name="prod",
        backup_id="20261126T030000Z-3f9a1c",
        **values,
    )


def every_plan():
    return {
        plans.BACKUP: BackupPlan(
            db_name="prod",
            destinations=[DestinationConfig(path="/srv/backups")],
            recipients=["age1example"],
            owner={"database_uuid": "u", "policy_id": 3},
            main_tables=("res_partner",),
        ),
        plans.RESTORE: plans.RestorePlan(
            source=a_source(),
            options=plans.RestoreRequest(
                target_db="prod_copy", replace=True, neutralize=True, neutralize_sql=["UPDATE x SET y = 1"]
            ),
            unsigned_ok=True,
        ),
        plans.DRILL: plans.DrillPlan(source=a_source(), public_key=["ed25519:abc"], neutralize_sql=["SELECT 1"]),
        plans.VERIFY: plans.VerifyPlan(sources=[a_source(label="/srv/backups/prod/x")], public_key=None, deep=True),
        plans.PITR_RESTORE: plans.PitrRestorePlan(
            location="s3://ministry/pitr",
            db_name="prod",
            to_time="2026-12-07T14:03:12Z",
            options=plans.RestoreRequest(target_db="prod_before", neutralize=True),
            system_id="7400000000000000001",
            neutralize_modules={"base": [], "mail": ["UPDATE ir_mail_server SET active = false"]},
        ),
        plans.PITR_DRILL: plans.PitrDrillPlan(
            location="/srv/pitr", db_name="prod", system_id="7400", neutralize_modules={"mail": ["SELECT 1"]}
        ),
    }


@pytest.mark.parametrize("action", plans.ACTIONS)
def test_every_plan_round_trips_through_the_json_of_the_run_row(action):
    """What Odoo stores (to_dict, as JSON) reads back in the worker (from_dict) as the same typed plan."""
    plan = every_plan()[action]
    stored = json.loads(json.dumps(plans.plan_to_dict(action, plan), sort_keys=True))
    assert plans.plan_from_dict(action, stored) == plan


def test_a_plan_of_another_action_is_not_queued():
    """A run is queued only with its own action's plan type: a drill plan is no verification."""
    with pytest.raises(TypeError):
        plans.plan_to_dict(plans.VERIFY, every_plan()[plans.DRILL])
    with pytest.raises(TypeError):
        plans.plan_to_dict(plans.VERIFY, {"sources": []})
    with pytest.raises(PreflightError, match="Unknown run action"):
        plans.plan_from_dict("format_disk", {})


@pytest.mark.parametrize(
    "action, where",
    [
        (plans.BACKUP, lambda data: data),
        (plans.RESTORE, lambda data: data),
        (plans.RESTORE, lambda data: data["options"]),
        (plans.RESTORE, lambda data: data["source"]),
        (plans.DRILL, lambda data: data),
        (plans.VERIFY, lambda data: data),
        (plans.VERIFY, lambda data: data["sources"][0]),
        (plans.PITR_RESTORE, lambda data: data),
        (plans.PITR_RESTORE, lambda data: data["options"]),
        (plans.PITR_DRILL, lambda data: data),
    ],
)
def test_unknown_keys_are_refused_in_words(action, where):
    """A key no plan type knows (a misspelling, or a setting smuggled in) is refused by name, not ignored."""
    data = plans.plan_to_dict(action, every_plan()[action])
    where(data)["include_secrets"] = True
    with pytest.raises(PreflightError, match="Unknown .* settings: include_secrets"):
        plans.plan_from_dict(action, data)


def test_what_is_the_workers_own_is_never_taken_from_a_plan():
    """Accepted code, allow_unsigned, data_dir, connection and identities in a restore plan's options are refused
    in words: they are the worker's (and a person's at the command line), never a plan's."""
    for action in (plans.RESTORE, plans.PITR_RESTORE):
        for key in plans.RestoreRequest.WORKER_OWN:
            data = plans.plan_to_dict(action, every_plan()[action])
            data["options"][key] = ["a" * 64] if key == "accepted_code" else True
            with pytest.raises(PreflightError, match="worker's own") as refused:
                plans.plan_from_dict(action, data)
            assert key in str(refused.value)
    with pytest.raises(PreflightError, match="lacks source"):
        plans.plan_from_dict(plans.DRILL, {"public_key": None})
    with pytest.raises(PreflightError, match="not a set of settings"):
        plans.plan_from_dict(plans.VERIFY, ["sources"])


# Plans exactly as the previous versions of the addon stored them in spp_backup_run.plan.
OLD_SOURCE = {
    "destination": {"kind": "local", "path": "/srv/backups", "name": "Local"},
    "db_name": "prod",
    "backup_id": "20261126T030000Z-3f9a1c",
}
OLD_PLANS = {
    plans.RESTORE: [
        # Before signing decisions were the server's (no unsigned_ok, no confirm_name); the source named approvals.
        {
            "source": dict(OLD_SOURCE, approved_paths=["/srv/backups"]),
            "options": {
                "target_db": "prod_copy",
                "replace": False,
                "include_filestore": True,
                "new_uuid": True,
                "neutralize": False,
                "neutralize_sql": [],
                "jobs": 1,
                "public_key": None,
                "expected_major_version": "17.0",
            },
        },
        {
            "source": OLD_SOURCE,
            "options": {
                "target_db": "prod",
                "replace": True,
                "include_filestore": True,
                "new_uuid": False,
                "neutralize": False,
                "neutralize_sql": [],
                "jobs": 1,
                "public_key": ["ed25519:abc"],
                "expected_major_version": "17.0",
                "confirm_name": "prod",
            },
            "unsigned_ok": False,
        },
    ],
    plans.DRILL: [
        {"source": dict(OLD_SOURCE, approved_paths=[]), "public_key": None, "neutralize_sql": [], "jobs": 1},
        {"source": OLD_SOURCE, "public_key": ["k"], "unsigned_ok": True, "neutralize_sql": ["SELECT 1"], "jobs": 1},
    ],
    plans.VERIFY: [
        {"sources": [dict(OLD_SOURCE, label="/x", approved_paths=[])], "public_key": None, "deep": True},
        {"sources": [dict(OLD_SOURCE, label=None)], "public_key": ["k"], "unsigned_ok": True, "deep": False},
    ],
}


@pytest.mark.parametrize("action", sorted(OLD_PLANS))
def test_plans_queued_by_older_versions_are_still_read(action):
    """A run queued before an upgrade reads in the new worker: missing keys take their defaults, the approvals
    older plans carried are dropped (never trusted), and it writes back in today's form."""
    for data in OLD_PLANS[action]:
        plan = plans.plan_from_dict(action, data)
        sources = plan.sources if action == plans.VERIFY else [plan.source]
        assert [(s.db_name, s.backup_id, s.destination["path"]) for s in sources] == [
            ("prod", "20261126T030000Z-3f9a1c", "/srv/backups")
        ]
        assert "approved_paths" not in json.dumps(plan.to_dict())
        assert plans.plan_from_dict(action, plan.to_dict()) == plan
    old_restore = plans.plan_from_dict(plans.RESTORE, OLD_PLANS[plans.RESTORE][0])
    assert old_restore.unsigned_ok is False and old_restore.options.confirm_name is None
    assert old_restore.options.new_uuid is True and old_restore.options.include_database is True


def test_a_backup_and_its_verification_queued_by_the_previous_version_still_execute(sample, tmp_path):
    """The JSON the previous version stored for a backup run (with the approved folders it carried then) and for
    a verification of it runs through ``spp-backup run --plan``, the worker's own dispatch: the set is made and
    verified."""
    dest = tmp_path / "old-plans"
    dest.mkdir()
    backup = {
        "action": "backup",
        "db_name": sample["db"],
        "destinations": [{"kind": "local", "path": str(dest), "name": "Local"}],
        "pg": {"host": None, "port": None, "user": None},
        "data_dir": None,
        "include_database": True,
        "include_filestore": True,
        "include_application": True,
        "compression": "zstd",
        "compression_level": 3,
        "threads": 2,
        "label": "Nightly",
        "recipients": [],
        "signing_key_file": None,
        "retention": None,
        "verified_ids": [],
        "approved_paths": [str(dest)],
    }
    code, answer = run_plan(backup, tmp_path, data_dir=sample["data_dir"], database=sample["db"])
    assert code in (0, 1) and answer["ok"], answer
    backup_id = answer["result"]["backup_id"]
    assert mf.is_backup_id(backup_id)
    verify = {
        "action": "verify",
        "sources": [
            {
                "destination": {"kind": "local", "path": str(dest), "name": "Local"},
                "db_name": sample["db"],
                "backup_id": backup_id,
                "label": "old plan",
                "approved_paths": [str(dest)],
            }
        ],
        "public_key": None,
        "deep": True,
    }
    code, answer = run_plan(verify, tmp_path, data_dir=sample["data_dir"], database=sample["db"])
    report = answer["result"]["reports"][0]
    assert answer["ok"] and report["label"] == "old plan" and report["manifest"]["backup_id"] == backup_id, answer
    assert report["checks"] and all(check["ok"] for check in report["checks"]), report


def test_a_smuggled_setting_fails_the_run_before_anything_is_written(sample, plan_for, tmp_path):
    """The worker refuses a restore plan carrying accepted code in words; no database is made."""
    result = run_backup(plan_for(sample, include_filestore=False))
    source = {"destination": {"kind": "local", "path": sample["dest"]}, "db_name": sample["db"], "backup_id": "latest"}
    plan = {"action": "restore", "source": source, "options": {"target_db": "x_smuggled", "accepted_code": ["0" * 64]}}
    code, answer = run_plan(plan, tmp_path, data_dir=tmp_path / "rdata", database=sample["db"])
    assert code == 2 and not answer["ok"] and "accepted_code" in answer["error"], answer
    assert "--accept-code" in answer["error"] and "Traceback" not in answer["error"]
    assert result.backup_id and not (tmp_path / "rdata").exists()
    assert query("postgres", "SELECT count(*) FROM pg_database WHERE datname = 'x_smuggled'") == [(0,)]


def test_one_backup_id_pattern():
    """The engine writes exactly 6 hex digits after the time, every version has, and the catalog, retention,
    the manifest check and Odoo all ask is_backup_id: a wider pattern anywhere else would let Odoo accept ids
    the catalog never lists."""
    made = mf.new_backup_id()
    assert mf.is_backup_id(made) and re.fullmatch(r"\d{8}T\d{6}Z-[0-9a-f]{6}", made)
    assert mf.is_backup_id("20261126T030000Z-3f9a1c")
    for other in ("20261126T030000Z-3f9a", "20261126T030000Z-" + "a" * 32, "20261126T030000Z-3F9A1C", "latest", None):
        assert not mf.is_backup_id(other), other
    sources = [p for d in ("engine", "models", "wizards", "controllers") for p in (ROOT / d).rglob("*.py")]
    defining = [str(p.relative_to(ROOT)) for p in sources if r"T\d{6}Z" in p.read_text(encoding="utf-8")]
    assert defining == ["engine/core/manifest.py"]


def test_states_and_names_are_written_once():
    """Run states, actions and the bus channel are literals only where they are defined: the Odoo models,
    wizards, controllers and the engine use the names of engine/core/states.py and engine/service/protocol.py;
    the live form's script (which cannot import Python) names the same channel and type."""
    assert states.IN_FLIGHT == (states.QUEUED, states.RUNNING)
    assert {value for value, _label in states.RUN_STATES} == set(states.FINISHED + states.IN_FLIGHT)
    work = {value for value, _label in states.WORK_STATES}
    assert work == set(states.FINISHED + states.IN_FLIGHT + (states.PARTIAL,))
    sources = [p for d in ("engine", "models", "wizards", "controllers") for p in (ROOT / d).rglob("*.py")]
    literals = re.compile(r"""["'](queued|running|spp_backup_runs|spp_backup\.run)["']""")
    found = {
        str(p.relative_to(ROOT)): literals.findall(p.read_text(encoding="utf-8"))
        for p in sources
        if literals.search(p.read_text(encoding="utf-8"))
    }
    assert found == {
        "engine/core/states.py": ["queued", "running"],
        "engine/service/protocol.py": ["spp_backup_runs", "spp_backup.run"],
    }
    script = Path(ROOT, "static/src/js/run_live.js").read_text(encoding="utf-8")
    assert 'addChannel("%s")' % protocol.BUS_CHANNEL in script
    assert 'subscribe("%s"' % protocol.BUS_TYPE in script


def test_the_worker_reports_into_each_database_what_its_scope_allows(pgconf, dbs):
    """report_pitr writes the report into every served database (the table Odoo reads, upserted by system id):
    each hears of the databases its scope allows only, and of itself when no base backup holds it yet."""
    from engine.core.config import Settings
    from engine.service.dispatch import WorkerContext
    from engine.service.worker import Worker

    served = [dbs.name("served"), dbs.name("served")]
    for name in served:
        query("postgres", 'CREATE DATABASE "%s"' % name)
        query(
            name,
            "CREATE TABLE spp_backup_pitr_server (id serial PRIMARY KEY, system_id varchar UNIQUE, name varchar, "
            "receiving boolean, behind_seconds float, receive_lag_bytes float, slot_status varchar, "
            "slot_retained_bytes float, window_start timestamp, window_end timestamp, problems text, "
            "status_json text, reported_at timestamp, create_date timestamp, write_date timestamp)",
        )
    settings = Settings(pg=pgconf, section={})
    worker = Worker(WorkerContext(settings=settings, pg=pgconf, data_dir=None))
    worker.conns = dict.fromkeys(served)
    window = {"ranges": [["2026-12-01T00:00:00Z", "2026-12-07T00:00:00Z"]], "databases": [served[0], "hr"]}
    status = {
        "system_id": 7400000000000000009,
        "server": "db:5432",
        "receiver": {"receiving": True, "archive_behind_seconds": 2.5},
        "destinations": {"/srv/pitr": window},
        "databases": [served[0], "hr"],
        "problems": ["the archive is 400 s behind the server (limit 300 s)"],
    }
    for _round in range(2):  # the second report updates the same row
        worker.report_pitr(status)
    first, second = (
        query(name, "SELECT system_id, problems, status_json, window_end, behind_seconds FROM spp_backup_pitr_server")
        for name in served
    )
    assert len(first) == len(second) == 1
    assert first[0][0] == "7400000000000000009" and first[0][4] == 2.5
    assert str(first[0][3]) == "2026-12-07 00:00:00"
    assert json.loads(first[0][2])["databases"] == [served[0]], "hr is outside the first database's scope"
    assert first[0][1] == "the archive is 400 s behind the server (limit 300 s)"
    assert json.loads(second[0][2])["databases"] == [], "neither the first database nor hr is the second's"
    assert second[0][1].endswith(
        "database %s is in no base backup yet: it can be restored to a second only after the next one" % served[1]
    )
