"""The log of a run: one line per step done (each artifact, whatever its size), the ticks kept apart."""

import contextlib
import os
import re

import pytest
import sampledb
from conftest import conn_kwargs

from engine.core.config import DestinationConfig
from engine.core.human import human_bytes
from engine.formats import catalog
from engine.io.storage import LocalStorage
from engine.ops.backup import run_backup
from engine.ops.drill import run_drill
from engine.ops.prune import apply_retention
from engine.ops.restore import RestoreOptions, restore
from engine.service.worker import RunReporter


@pytest.fixture
def tiny(dbs, tmp_path):
    """An Odoo-like database whose filestore holds three files, and two destination folders."""
    name = dbs.name("tiny")
    data_dir = str(tmp_path / "data")
    root = sampledb.build(conn_kwargs(), name, data_dir, partners=50, messages=100, files=3, file_size=5000)
    dests = []
    for folder in ("disk", "usb"):
        (tmp_path / folder).mkdir(mode=0o700)
        dests.append(str(tmp_path / folder))
    return {"db": name, "data_dir": data_dir, "filestore": root, "dest": dests[0], "dests": dests, "tmp": tmp_path}


class Recorder:
    """What a run tells: progress ticks and log lines, apart."""

    def __init__(self):
        self.ticks, self.lines = [], []

    def progress(self, fraction, message):
        self.ticks.append(message)

    def log(self, message):
        self.lines.append(message)

    def line(self, prefix):
        found = [line for line in self.lines if line.startswith(prefix)]
        assert len(found) == 1, "one line %r expected in %s" % (prefix, self.lines)
        return found[0]


def backup_with_log(plan):
    """A backup as the worker runs it: retention after the set, everything logged."""
    seen = Recorder()
    retention = []
    result = run_backup(
        plan,
        progress=seen.progress,
        after=lambda done: retention.extend(apply_retention(plan, done, seen.progress, seen.log)),
        log=seen.log,
    )
    return result, seen


def test_backup_logs_each_step_and_artifact_of_a_tiny_filestore(tiny, plan_for, keys):
    """Three files get their own line, as the dump, the snapshot, the signature, each copy and retention do."""
    plan = plan_for(
        tiny,
        destinations=[
            DestinationConfig(path=tiny["dests"][0], name="Local disk"),
            DestinationConfig(path=tiny["dests"][1]),
        ],
        signing_key_file=keys["signing_file"],
        recipients=[keys["recipient"]],
        retention={"keep_last": 3},
    )
    result, seen = backup_with_log(plan)
    assert any(tick.startswith("Dumping the database: ") for tick in seen.ticks), seen.ticks
    assert not [line for line in seen.lines if line.startswith(("Dumping", "Archiving", "Connecting"))], seen.lines
    assert seen.line("Checked ") == "Checked 2 destinations"
    arts = result.artifacts
    dumped = seen.line("Database dumped: ")
    assert "(artifact %s, sha256 %s\u2026)" % (arts["database"]["file"], arts["database"]["sha256"][:12]) in dumped
    assert arts["database"]["file"] == "database.dump.zst.age"
    assert re.match(r"Database dumped: [\d.]+ [KMG]iB in [\d.]+ s, stored as [\d.]+ [KMG]?i?B \(", dumped), dumped
    archived = seen.line("Filestore archived: ")
    size = human_bytes(result.manifest["filestore"]["bytes"])
    assert archived.startswith("Filestore archived: 3 files, %s in " % size), archived
    assert "(artifact filestore.tar.zst.age, sha256 %s\u2026)" % arts["filestore"]["sha256"][:12] in archived
    assert "(artifact application.json.age, sha256 " in seen.line("Application snapshot written: ")
    assert seen.line("Signed manifest")
    stored = [line for line in seen.lines if line.startswith("Copy to ")]
    assert stored == [
        "Copy to 'Local disk' stored at %s (manifest.json written last)" % result.locations[0],
        "Copy to '%s' stored at %s (manifest.json written last)" % (tiny["dests"][1], result.locations[1]),
    ]
    assert seen.line("Retention at 'Local disk': ") == "Retention at 'Local disk': kept 1, deleted 0"
    assert seen.lines[-1] == "Backup %s done in %s" % (result.backup_id, seen.lines[-1].split(" in ")[-1])
    order = [line.split(":")[0].split(" ")[0] for line in seen.lines]
    assert order.index("Checked") < order.index("Database") < order.index("Filestore") < order.index("Application")
    assert order.index("Application") < order.index("Signed") < order.index("Copy") < order.index("Retention")


def test_backup_of_no_filestore_file_still_logs_the_filestore(tiny, plan_for):
    """A filestore folder that holds nothing (or is absent) is archived, said so, and warned about."""
    empty = str(tiny["tmp"] / "empty-data")
    os.makedirs(empty)
    result, seen = backup_with_log(
        plan_for(tiny, destinations=[DestinationConfig(path=tiny["dests"][0])], data_dir=empty)
    )
    assert seen.line("Filestore archived: ").startswith("Filestore archived: 0 files, 0 B in ")
    assert result.manifest["filestore"]["files"] == 0
    assert any(line.startswith("Warning: The filestore folder") for line in seen.lines), seen.lines
    assert seen.line("Copy to ")


def test_restore_and_drill_log_their_steps(tiny, plan_for, dbs, pgconf):
    """A restore says what it verified, restored (database, files) and swapped; a drill adds its checks."""
    result, _seen = backup_with_log(plan_for(tiny, destinations=[DestinationConfig(path=tiny["dests"][0])]))
    ref = catalog.BackupRef(LocalStorage(tiny["dests"][0]), result.db_name, result.backup_id)
    seen = Recorder()
    target = dbs.name("back")
    restore(
        ref,
        RestoreOptions(target_db=target, pg=pgconf, data_dir=str(tiny["tmp"] / "r"), new_uuid=True, neutralize=True),
        progress=seen.progress,
        log=seen.log,
    )
    assert seen.line("Verified backup %s: signature " % result.backup_id).endswith(")")
    assert "3 artifacts match the manifest" in seen.line("Verified backup ")
    assert seen.line("Database restored in ")
    size = human_bytes(result.manifest["filestore"]["bytes"])
    assert seen.line("Filestore restored: ").startswith("Filestore restored: 3 files, %s in " % size)
    assert seen.line("Gave the copy its own database.uuid")
    assert seen.line("Neutralized the copy")
    assert seen.line("Swapped the restored copy in as %s" % target)
    assert seen.lines[-1].startswith("Restored %s into %s in " % (result.backup_id, target))

    drilled = Recorder()
    outcome = run_drill(ref, pgconf, str(tiny["tmp"] / "d"), progress=drilled.progress, log=drilled.log)
    assert outcome.ok, outcome.text()
    assert drilled.line("Verified backup ")
    assert drilled.line("Database restored in ")
    assert drilled.line("Filestore restored: ").startswith("Filestore restored: 3 files")
    assert drilled.line("Restore took ").endswith("(the measured RTO)")
    assert drilled.line("Check row counts: passed (")
    assert drilled.line("Check attachments: passed (3 files present")
    assert drilled.line("Scratch database %s dropped" % outcome.scratch_db)


class _Connection:
    """A connection that keeps what the reporter writes into the run's row."""

    def __init__(self):
        self.rows = []

    @contextlib.contextmanager
    def cursor(self):
        yield self

    def execute(self, statement, params):
        self.rows.append(params)


def test_reporter_keeps_ticks_out_of_the_log():
    """Ticks go to the progress and the current step only; steps stay in the log, each on its line."""
    conn = _Connection()
    reporter = RunReporter(conn, 7)
    reporter(0.1, "Dumping the database: 10.0 MiB")
    reporter.step("Checked 1 destination")
    reporter(0.5, "Dumping the database: 1.0 GiB")
    reporter(0.6, "Dumping the database: 1.2 GiB")
    reporter.step("Database dumped: 1.2 GiB in 14 s")
    reporter.flush()
    progress, message, log, run_id = conn.rows[-1]
    assert run_id == 7 and progress == 60.0
    assert message == "Database dumped: 1.2 GiB in 14 s"
    assert [line.split(" ", 1)[1] for line in log.splitlines()] == [
        "Checked 1 destination",
        "Database dumped: 1.2 GiB in 14 s",
    ]
    reporter(0.7, "Archiving the filestore: 200 files")
    reporter.flush()
    assert conn.rows[-1][1] == "Archiving the filestore: 200 files"
    assert "Archiving" not in conn.rows[-1][2]
