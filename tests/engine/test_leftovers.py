"""What killed backups leave at a destination is removed by the next backup; what a live one writes is not.

Backups are killed for real (SIGKILL) in the middle of their dump; each wait is bounded.
"""

import datetime
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import boto3
import psycopg2
import pytest
from conftest import ROOT, conn_kwargs

from engine.core.config import BackupPlan, DestinationConfig
from engine.formats import catalog
from engine.io.storage import LocalStorage, open_storage
from engine.ops import leftovers
from engine.ops.backup import run_backup

WAIT = 60  # seconds any one wait may take at most


@pytest.fixture(scope="module")
def big(tmp_path_factory):
    """A database whose dump takes a second or two (150 MB of rows), so a backup can be caught in the middle."""
    import sampledb

    name = "leftovers_%d" % os.getpid()
    data_dir = str(tmp_path_factory.mktemp("bigdata"))
    sampledb.build(
        conn_kwargs(), name, data_dir, partners=1000, messages=400000, files=5, file_size=1000, body_repeat=8
    )
    yield {"db": name, "data_dir": data_dir}
    conn = psycopg2.connect(dbname="postgres", **conn_kwargs())
    conn.autocommit = True
    with conn.cursor() as cr:
        cr.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,))
        cr.execute('DROP DATABASE IF EXISTS "%s"' % name)
    conn.close()


def cli_backup(big, dest):
    return subprocess.Popen(
        [sys.executable, "-m", "engine", "backup", "-d", big["db"], "--dest", dest, "--data-dir", big["data_dir"]],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def partial_files(root):
    return sorted(
        os.path.relpath(os.path.join(folder, name), root)
        for folder, _dirs, files in os.walk(root)
        for name in files
        if name.endswith(".partial")
    )


def stop_mid_dump(proc, dest, db, others=()):
    """Wait until ``proc`` is writing its dump (a partial file with bytes in it, in a set not among ``others``),
    then freeze it (SIGSTOP); the folder of its set."""
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        for backup_id in os.listdir(os.path.join(dest, db)) if os.path.isdir(os.path.join(dest, db)) else []:
            path = os.path.join(dest, db, backup_id, ".database.dump.zst.partial")
            if os.path.join(dest, db, backup_id) not in others and os.path.exists(path) and os.path.getsize(path) > 0:
                proc.send_signal(signal.SIGSTOP)
                return os.path.join(dest, db, backup_id)
        if proc.poll() is not None:
            break
        time.sleep(0.005)
    proc.kill()
    pytest.fail("the backup was never caught writing its dump: %s" % (proc.communicate()[1][-2000:],))


def set_locks_held():
    conn = psycopg2.connect(dbname="postgres", **conn_kwargs())
    try:
        with conn.cursor() as cr:
            cr.execute(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND classid = %s AND objsubid = 2",
                (leftovers.SET_LOCK_CLASS,),
            )
            return cr.fetchone()[0]
    finally:
        conn.close()


def kill(proc):
    """SIGKILL, then wait until PostgreSQL has closed the killed backup's sessions (its locks go with them)."""
    proc.send_signal(signal.SIGKILL)
    proc.wait(WAIT)
    err = proc.stderr.read()
    proc.stdout.close()
    proc.stderr.close()
    deadline = time.monotonic() + WAIT
    while set_locks_held() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not set_locks_held(), "the killed backup's session still holds its lock"
    return err


def test_the_next_cli_backup_removes_what_killed_ones_left(big, tmp_path):
    """A CLI backup SIGKILLed mid-dump leaves a set without a manifest and a .partial file; the next CLI backup
    (no retention is set) removes them before it writes anything and says so, killed or not itself: killed
    backups never leave more than one set behind."""
    dest = str(tmp_path / "backups")
    os.mkdir(dest, 0o700)
    proc = cli_backup(big, dest)
    first = stop_mid_dump(proc, dest, big["db"])
    kill(proc)
    assert partial_files(first) == [".database.dump.zst.partial"]
    record = json.loads(Path(first, "owner.json").read_text(encoding="utf-8"))
    assert record["owner"] is None and record["writer"]["lock"][0] == leftovers.SET_LOCK_CLASS
    entries = catalog.list_backups(LocalStorage(dest), big["db"])
    assert [(e.backup_id, e.restorable) for e in entries] == [(os.path.basename(first), False)]

    proc = cli_backup(big, dest)
    second = stop_mid_dump(proc, dest, big["db"], others=[first])
    assert not os.path.exists(first), "the second backup removed the first one's leftovers before its dump"
    err = kill(proc)
    assert "removed 1 unfinished set left by killed backups: %s (its backup (pid " % os.path.basename(first) in err
    pid = json.loads(Path(second, "owner.json").read_text(encoding="utf-8"))["writer"]["pid"]

    proc = subprocess.run(
        [sys.executable, "-m", "engine", "backup", "-d", big["db"], "--dest", dest, "--data-dir", big["data_dir"]],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=WAIT,
    )
    assert proc.returncode == 0, proc.stderr
    line = "removed 1 unfinished set left by killed backups: %s (its backup (pid %s on " % (
        os.path.basename(second),
        pid,
    )
    assert line in proc.stderr, proc.stderr
    entries = catalog.list_backups(LocalStorage(dest), big["db"])
    assert len(entries) == 1 and entries[0].restorable and entries[0].backup_id != os.path.basename(second)
    assert partial_files(dest) == []


def test_a_live_backups_set_is_not_removed(big, tmp_path, pgconf):
    """A backup running in another process (frozen mid-dump, its session alive) keeps its set while another
    backup runs, then finishes it: the set is restorable."""
    dest = str(tmp_path / "backups")
    os.mkdir(dest, 0o700)
    proc = cli_backup(big, dest)
    try:
        folder = stop_mid_dump(proc, dest, big["db"])
        lines = []
        plan = BackupPlan(
            db_name=big["db"],
            destinations=[DestinationConfig(path=dest)],
            pg=pgconf,
            data_dir=big["data_dir"],
            include_database=False,
        )
        result = run_backup(plan, log=lines.append)
        text = "\n".join(lines)
        assert "left 1 unfinished set: %s (a live backup is writing it)" % os.path.basename(folder) in text, text
        assert "removed" not in text
        assert os.path.exists(os.path.join(folder, ".database.dump.zst.partial")), "the live set is untouched"
    finally:
        proc.send_signal(signal.SIGCONT)
    out, err = proc.communicate(timeout=WAIT)
    assert proc.returncode == 0, err
    entries = {e.backup_id: e.restorable for e in catalog.list_backups(LocalStorage(dest), big["db"])}
    assert entries == {os.path.basename(folder): True, result.backup_id: True}


def test_an_unprovable_set_waits_a_day_and_a_store_partial_waits_for_its_writers(big, tmp_path, pgconf):
    """A set whose owner.json names no lock (an earlier engine) is left for a day, then removed; a partial file
    of a filestore store is removed only while no backup holds the store's lock."""
    dest = tmp_path / "backups"
    dest.mkdir(mode=0o700)
    storage = LocalStorage(str(dest))
    recent = (datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(hours=2)).strftime("%Y%m%dT%H%M%SZ")
    old = (datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(days=2)).strftime("%Y%m%dT%H%M%SZ")
    for backup_id in (recent + "-aaaaaa", old + "-bbbbbb"):
        folder = dest / big["db"] / backup_id
        folder.mkdir(parents=True)
        (folder / "owner.json").write_text(json.dumps({"backup_id": backup_id, "owner": None}))
        (folder / ".database.dump.zst.partial").write_bytes(b"x" * 100)
    sid = "0123456789abcdef"
    packs = dest / big["db"] / (".store-" + sid) / "packs" / "ab"
    packs.mkdir(parents=True)
    (packs / ".ab000000000000000000000000000000.partial").write_bytes(b"y")
    (packs / "ab000000000000000000000000000001").write_bytes(b"kept")
    writer = psycopg2.connect(dbname=big["db"], **conn_kwargs())
    writer.autocommit = True
    conn = psycopg2.connect(dbname=big["db"], **conn_kwargs())
    conn.autocommit = True
    try:
        with writer.cursor() as cr:  # a backup adding to the store holds its lock shared
            cr.execute("SELECT pg_advisory_lock_shared(%s)", (leftovers.packstore.lock_key(sid),))
        report = leftovers.remove_leftovers(storage, big["db"], conn)
        assert report.removed == {old + "-bbbbbb": "unfinished for more than a day, by a backup that recorded no lock"}
        assert report.kept == {recent + "-aaaaaa": "no lock recorded: left for a day"}
        assert report.partial_files == 0 and (packs / ".ab000000000000000000000000000000.partial").exists()
        with writer.cursor() as cr:  # that backup is done with the store
            cr.execute("SELECT pg_advisory_unlock_shared(%s)", (leftovers.packstore.lock_key(sid),))
        report = leftovers.remove_leftovers(storage, big["db"], conn)
        assert report.partial_files == 1 and report.removed == {}
        assert "removed 1 partial file of the filestore store" in report.summary()
        assert sorted(os.listdir(packs)) == ["ab000000000000000000000000000001"]
    finally:
        writer.close()
        conn.close()


def test_a_killed_backup_to_s3_is_removed_by_the_next_run(big, tmp_path, pgconf, s3_bucket):
    """A backup run as the worker runs a policy's plan, to S3, SIGKILLed mid-run, with retention off: the next
    run removes its objects and its unfinished multipart upload, and says so in its log."""
    endpoint, bucket = s3_bucket
    config = DestinationConfig(
        kind="s3", endpoint_url=endpoint, bucket=bucket, prefix="odoo", addressing_style="path", part_size_mb=5
    )
    plan = BackupPlan(
        db_name=big["db"], destinations=[config], pg=pgconf, owner={"database_uuid": "u-1", "policy_id": 7}
    ).to_dict()
    plan.pop("pg")
    plan_path = tmp_path / "plan.json"
    plan_path.write_text(json.dumps(dict(plan, action="backup")))
    env = dict(
        os.environ,
        SPP_BACKUP_S3_ENDPOINTS=endpoint,
        SPP_BACKUP_ALLOW_UNENCRYPTED_OFFSITE="true",
        SPP_BACKUP_BACKUP_ROOTS=str(tmp_path),
    )
    args = [sys.executable, "-m", "engine", "run", "--plan", str(plan_path), "--database", big["db"]]
    args += ["--data-dir", big["data_dir"]]
    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline and proc.poll() is None:
        if client.list_multipart_uploads(Bucket=bucket).get("Uploads"):
            proc.send_signal(signal.SIGSTOP)
            break
        time.sleep(0.005)
    else:
        proc.kill()
        pytest.fail("the backup was never caught uploading its dump: %s" % proc.communicate()[1][-2000:])
    kill(proc)
    storage = open_storage(config)
    entries = catalog.list_backups(storage, big["db"])
    assert len(entries) == 1 and not entries[0].restorable
    assert "owner.json" in storage.object_sizes("%s/%s" % (big["db"], entries[0].backup_id))
    assert client.list_multipart_uploads(Bucket=bucket).get("Uploads"), "an upload was left unfinished"

    done = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=WAIT * 2)
    assert done.returncode == 0, done.stderr + done.stdout
    assert "removed 1 unfinished set left by killed backups: %s (its backup (pid " % entries[0].backup_id in (
        done.stderr
    ), done.stderr
    after = catalog.list_backups(storage, big["db"])
    assert len(after) == 1 and after[0].restorable and after[0].backup_id != entries[0].backup_id
    assert not client.list_multipart_uploads(Bucket=bucket).get("Uploads")


HERE = {"system_identifier": "7716", "started": "2026-12-07 07:41:31+00"}
WRITER = {"lock": [leftovers.SET_LOCK_CLASS, 5], "server": dict(HERE), "host": "node-a", "pid": 42}
HOUR, DAYS = datetime.timedelta(hours=1), datetime.timedelta(days=2)


@pytest.mark.parametrize(
    "writer, held, age, remove, why",
    [
        (WRITER, False, HOUR, True, "its backup (pid 42 on node-a) ended without finishing it and holds no lock"),
        (WRITER, True, DAYS, False, "a live backup is writing it"),
        (dict(WRITER, server={"system_identifier": "9999", "started": HERE["started"]}), False, DAYS, False,
         "written through another PostgreSQL server"),
        (dict(WRITER, server={"system_identifier": "7716", "started": "earlier"}), False, HOUR, False,
         "written before PostgreSQL restarted: left for a day"),
        (dict(WRITER, server={"system_identifier": "7716", "started": "earlier"}), False, DAYS, True,
         "unfinished for more than a day, its backup ran before PostgreSQL restarted"),
        (dict(WRITER, server={"system_identifier": None, "started": HERE["started"]}), False, HOUR, True,
         "its backup (pid 42 on node-a) ended without finishing it and holds no lock"),
        (None, False, HOUR, False, "no lock recorded: left for a day"),
        ("garbage", False, DAYS, True, "unfinished for more than a day, by a backup that recorded no lock"),
    ],
)  # fmt: skip
def test_which_unfinished_sets_are_removed(writer, held, age, remove, why):
    """Only a set whose writer is provably gone on this very server is removed at once; one whose writer cannot
    be asked here waits a day; one another server writes, or a live backup writes, is never removed."""
    assert leftovers.verdict(writer, HERE, held, age) == (remove, why)
