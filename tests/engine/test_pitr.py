"""Continuous WAL protection and point-in-time restore against real PostgreSQL servers.

Each test runs its own throwaway cluster (pgcluster): pg_receivewal streams its WAL on a slot, a base backup is
taken with pg_basebackup and checked with pg_verifybackup, both are stored encrypted and signed at a destination,
and a restore replays them with a scratch postmaster of the same major version.
"""

import datetime
import hashlib
import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time

import pytest
from conftest import ROOT
from pgcluster import Cluster, debian_bin, reachable_dir, wheel_bin

sys.path.insert(0, os.path.join(ROOT, "dev"))
import sampledb  # noqa: E402

from engine.core import plans  # noqa: E402
from engine.core.config import Settings  # noqa: E402
from engine.core.errors import BackupError, RestoreError, VerifyError  # noqa: E402
from engine.io import crypto  # noqa: E402
from engine.io.storage import LocalStorage  # noqa: E402
from engine.io.storage.s3 import S3Storage  # noqa: E402
from engine.ops.restore import RestoreOptions  # noqa: E402
from engine.pitr import archive as archive_mod  # noqa: E402
from engine.pitr import basebackup, receiver, recover  # noqa: E402
from engine.pitr import scratch as scratch_mod  # noqa: E402
from engine.pitr import service as service_mod  # noqa: E402
from engine.service import cli_pitr, dispatch  # noqa: E402


@pytest.fixture
def reachable():
    """Makes folders the postgres OS user can reach; removes them afterwards."""
    made = []

    def make():
        made.append(reachable_dir())
        return made[-1]

    yield make
    for folder in made:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def cluster15():
    cluster = Cluster(debian_bin(15))
    try:
        yield cluster
    finally:
        cluster.remove()


class Protected:
    """A cluster under continuous protection: its receiver running in a thread, a local destination."""

    def __init__(self, cluster, tmp_path, keys, partial_seconds=0.3, extra=None):
        self.cluster = cluster
        self.pgc = cluster.pgconfig()
        self.dest = str(tmp_path / "backups")
        os.makedirs(self.dest, mode=0o700)
        self.storage = LocalStorage(self.dest)
        self.spool = str(tmp_path / "spool")
        self.keys = keys
        self.signing_key = crypto.load_signing_key(keys["signing_file"])
        self.recipients = crypto.parse_recipients([keys["recipient"]])
        self.destinations = {"local": self.storage, **(extra or {})}
        self.messages = []
        self.receiver = receiver.Receiver(
            self.pgc,
            self.destinations,
            self.spool,
            self.signing_key,
            self.recipients,
            partial_seconds=partial_seconds,
            poll_seconds=0.2,
            log=self.messages.append,
        )
        self.thread, self.stop = receiver.run_in_thread(self.receiver)

    def base_backup(self, tmp_path):
        return basebackup.take_base_backup(
            self.pgc,
            self.destinations,
            self.signing_key,
            self.recipients,
            tmp_dir=str(tmp_path),
            spool=self.spool,
        )

    def now(self, dbname="postgres"):
        return self.cluster.query(dbname, "SELECT clock_timestamp()")[0][0]

    def wait_archived(self, timeout=60):
        """Until the archive holds everything the server has written now."""
        target = self.cluster.query("postgres", "SELECT pg_current_wal_lsn()::text")[0][0]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            shipped = self.receiver.shipped.get("lsn")
            if shipped and receiver.walnames.parse_lsn(shipped) >= receiver.walnames.parse_lsn(target):
                return
            assert not self.thread.errors, self.thread.errors
            time.sleep(0.1)
        pytest.fail("the receiver did not archive up to %s in %d s: %s" % (target, timeout, self.receiver.state()))

    def close(self):
        self.stop.set()
        self.thread.join(60)
        assert not self.thread.errors, self.thread.errors


@pytest.fixture
def protected(cluster15, tmp_path, keys):
    protected = Protected(cluster15, tmp_path, keys)
    try:
        yield protected
    finally:
        protected.close()


def build_registry(cluster, tmp_path, name="registry"):
    data_dir = str(tmp_path / "odoo")
    sampledb.build(cluster.conn_kwargs(), name, data_dir, partners=300, messages=500, files=12, file_size=5000)
    return data_dir


def restore_options(protected, target, data_dir, keys, **more):
    return RestoreOptions(
        target_db=target,
        pg=protected.pgc,
        data_dir=data_dir,
        identities=keys["identities"],
        **more,
    )


def partners(cluster, dbname):
    return cluster.query(dbname, "SELECT id, name, phone FROM res_partner ORDER BY id")


def test_registrants_deleted_by_mistake_come_back_as_of_the_second_before(protected, tmp_path, keys):
    cluster = protected.cluster
    data_dir = build_registry(cluster, tmp_path)
    base = protected.base_backup(tmp_path)
    assert base["databases"] == ["postgres", "registry", "template1"]
    cluster.query(
        "registry", "INSERT INTO res_partner (name, is_registrant) VALUES ('Registered after the base', true)"
    )
    before = partners(cluster, "registry")
    moment = protected.now()
    time.sleep(1.0)
    cluster.query(
        "registry",
        "DELETE FROM g2p_program_membership WHERE partner_id > 100; DELETE FROM mail_message WHERE res_id > 100; "
        "DELETE FROM ir_attachment WHERE res_id > 100; DELETE FROM res_partner WHERE id > 100",
    )
    protected.wait_archived()
    assert len(partners(cluster, "registry")) == 100

    result = recover.restore_database_at(
        protected.storage,
        "registry",
        moment,
        restore_options(protected, "registry_at_t", data_dir, keys),
        keys["public"],
        source_data_dir=data_dir,
    )
    assert partners(cluster, "registry_at_t") == before
    assert len(partners(cluster, "registry")) == 100  # the live database is untouched
    assert result.base_backup == base["backup_id"]
    assert result.reached and result.reached.startswith("recovery stopping before commit of transaction")
    # The attachments the database references at T are there, each with the SHA-1 its name says.
    names = [row[0] for row in cluster.query("registry_at_t", "SELECT store_fname FROM ir_attachment")]
    assert len(names) == 12 and result.filestore_files == 12 and result.missing_files == []
    for name in names:
        with open(os.path.join(data_dir, "filestore", "registry_at_t", name), "rb") as handle:
            assert hashlib.sha1(handle.read()).hexdigest() == name.split("/")[1]  # noqa: S324
    # The scratch cluster is gone.
    assert not [n for n in os.listdir(tmp_path) if n.startswith("spp_backup_pitr_")]


def insert(cluster, name):
    cluster.query("registry", "INSERT INTO res_partner (name, is_registrant) VALUES (%s, true)", (name,))


def second_between(protected, before, after):
    """Insert ``before``, take the server's time T, a second later insert ``after``; T once all is archived."""
    insert(protected.cluster, before)
    moment = protected.now()
    time.sleep(1.0)
    insert(protected.cluster, after)
    protected.wait_archived()
    return moment


def names_in(cluster, dbname):
    return {row[0] for row in cluster.query(dbname, "SELECT name FROM res_partner WHERE name LIKE 'Mark %%'")}


def test_a_second_between_two_base_backups_and_across_segment_switches(protected, tmp_path, keys):
    cluster = protected.cluster
    data_dir = build_registry(cluster, tmp_path)
    first = protected.base_backup(tmp_path)
    insert(cluster, "Mark A")
    for _ in range(3):  # three segments full of WAL between the base backup and T
        cluster.query("registry", "CREATE TABLE IF NOT EXISTS bulk AS SELECT 1 AS x; SELECT pg_switch_wal()")
    early = protected.now()
    time.sleep(1.0)
    insert(cluster, "Mark B")
    second = protected.base_backup(tmp_path)
    late = second_between(protected, "Mark C", "Mark D")

    result = recover.restore_database_at(
        protected.storage, "registry", early, restore_options(protected, "at_early", data_dir, keys), keys["public"]
    )
    assert names_in(cluster, "at_early") == {"Mark A"}
    assert result.base_backup == first["backup_id"]
    assert result.wal_files >= 4 and result.wal_first == first["start_wal"]
    result = recover.restore_database_at(
        protected.storage, "registry", late, restore_options(protected, "at_late", data_dir, keys), keys["public"]
    )
    assert names_in(cluster, "at_late") == {"Mark A", "Mark B", "Mark C"}
    assert result.base_backup == second["backup_id"]


def test_a_second_outside_the_window_is_refused_before_anything_is_made(protected, tmp_path, keys):
    cluster = protected.cluster
    data_dir = build_registry(cluster, tmp_path)
    before = protected.now()
    protected.base_backup(tmp_path)
    insert(cluster, "Mark A")
    protected.wait_archived()
    win = recover.window(recover.open_archive(protected.storage), keys["public"])
    assert win.start and win.end and not win.gaps
    for moment in (before, win.end + datetime.timedelta(hours=1)):
        with pytest.raises(RestoreError, match="is outside the window this archive covers"):
            recover.restore_database_at(
                protected.storage,
                "registry",
                moment,
                restore_options(protected, "nowhere", data_dir, keys, tmp_dir=str(tmp_path)),
                keys["public"],
            )
    assert not cluster.query("postgres", "SELECT 1 FROM pg_database WHERE datname LIKE 'nowhere%%'")
    assert not [n for n in os.listdir(tmp_path) if n.startswith("spp_backup_pitr_")]


def stored_wal(protected, name):
    prefix = os.path.join(protected.dest, ".pitr", protected.receiver.system_id, "wal")
    return [os.path.join(prefix, f) for f in os.listdir(prefix) if f.startswith(name + ".")]


def test_a_changed_segment_is_refused_and_the_scratch_cluster_removed(protected, tmp_path, keys, reachable):
    cluster = protected.cluster
    data_dir = build_registry(cluster, tmp_path)
    base = protected.base_backup(tmp_path)
    moment = second_between(protected, "Mark A", "Mark B")
    stored = [p for p in stored_wal(protected, base["start_wal"]) if p.endswith(".age")]
    assert len(stored) == 1
    with open(stored[0], "r+b") as handle:
        handle.seek(200)
        byte = handle.read(1)
        handle.seek(200)
        handle.write(bytes([byte[0] ^ 1]))
    scratch_root = reachable()
    with pytest.raises(BackupError, match="does not match|damaged|authentic"):
        recover.restore_database_at(
            protected.storage,
            "registry",
            moment,
            restore_options(protected, "at_t", data_dir, keys, tmp_dir=scratch_root),
            keys["public"],
        )
    assert not cluster.query("postgres", "SELECT 1 FROM pg_database WHERE datname LIKE 'at\\_t%%'")
    assert os.listdir(scratch_root) == []
    # An entry signed by another key is refused the same way.
    entry = [p for p in stored_wal(protected, base["start_wal"]) if p.endswith(".json")][0]
    with open(entry, "rb") as handle:
        doc = archive_mod.open_signed(handle.read(), keys["public"], "entry")
    pem, _public = crypto.generate_signing_key()
    (tmp_path / "other.pem").write_text(pem)
    forged = archive_mod.signed_bytes(doc, crypto.load_signing_key(str(tmp_path / "other.pem")))
    with pytest.raises(VerifyError, match="signature does not match"):
        archive_mod.open_signed(forged, keys["public"], "entry")


def test_a_missing_segment_is_a_named_gap_and_nothing_after_it_is_offered(protected, tmp_path, keys):
    cluster = protected.cluster
    build_registry(cluster, tmp_path)
    base = protected.base_backup(tmp_path)
    for _ in range(4):
        insert(cluster, "Mark A")
        cluster.query("registry", "SELECT pg_switch_wal()")
    protected.wait_archived()
    win = recover.window(recover.open_archive(protected.storage), keys["public"])
    assert not win.gaps
    timeline, segno = recover.walnames.parse_segment(base["end_wal"])
    victim = recover.walnames.segment_name(timeline, segno + 2)
    for path in stored_wal(protected, victim):
        os.unlink(path)
    cut = recover.window(recover.open_archive(protected.storage), keys["public"])
    assert cut.gaps == [(victim, victim, 1)]
    assert cut.end < win.end
    code, data, text = cli_pitr._list(recover.open_archive(protected.storage), keys["public"])
    assert code == 1 and "GAP: %s to %s (1 segment(s) missing)" % (victim, victim) in text


def test_a_killed_receiver_is_started_again_and_the_slot_leaves_no_gap(protected, tmp_path, keys):
    cluster = protected.cluster
    build_registry(cluster, tmp_path)
    protected.base_backup(tmp_path)
    for round_ in range(2):
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not (
            protected.receiver.process is not None and protected.receiver.process.poll() is None
        ):
            time.sleep(0.05)
        os.kill(protected.receiver.process.pid, signal.SIGKILL)
        while protected.receiver.restarts <= round_ and time.monotonic() < deadline:
            time.sleep(0.05)
        for _ in range(3):  # WAL written while no receiver runs: the slot keeps it on the server
            insert(cluster, "Mark %d" % round_)
            cluster.query("registry", "SELECT pg_switch_wal()")
    protected.wait_archived()
    assert protected.receiver.restarts >= 2
    # Each kill is told (a later restart may stop again on the file a kill left unfinished, healed the same way).
    assert len([m for m in protected.messages if "exit code -9" in m]) == 2, protected.messages
    win = recover.window(recover.open_archive(protected.storage), keys["public"])
    assert win.gaps == [] and win.start is not None


def test_not_enough_disk_for_the_scratch_cluster_is_refused_first(protected, tmp_path, keys, monkeypatch):
    cluster = protected.cluster
    data_dir = build_registry(cluster, tmp_path)
    protected.base_backup(tmp_path)
    moment = protected.now()
    time.sleep(0.5)
    insert(cluster, "Mark A")
    protected.wait_archived()
    real = shutil.disk_usage
    monkeypatch.setattr(scratch_mod.shutil, "disk_usage", lambda path: real(path)._replace(free=50 << 20))
    with pytest.raises(RestoreError, match="Not enough free disk space for the scratch cluster.*Nothing was changed"):
        recover.restore_database_at(
            protected.storage,
            "registry",
            moment,
            restore_options(protected, "at_t", data_dir, keys, tmp_dir=str(tmp_path)),
            keys["public"],
        )
    assert not [n for n in os.listdir(tmp_path) if n.startswith("spp_backup_pitr_")]


def cli_connection(cluster):
    return ["--db-host", "127.0.0.1", "--db-port", str(cluster.port), "--db-user", "postgres"]


def cli(*args, **kwargs):
    return subprocess.Popen(  # noqa: S603
        [sys.executable, "-m", "engine", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kwargs,
    )


def test_sigterm_during_a_restore_removes_the_scratch_cluster(protected, tmp_path, keys, reachable):
    cluster = protected.cluster
    data_dir = build_registry(cluster, tmp_path)
    protected.base_backup(tmp_path)
    cluster.query("registry", "CREATE TABLE ballast AS SELECT g, md5(g::text) FROM generate_series(1, 1500000) g")
    moment = protected.now()
    time.sleep(1.0)
    insert(cluster, "Mark B")
    protected.wait_archived()
    outcomes = []
    for _attempt in range(3):
        scratch_root = pathlib.Path(reachable())
        proc = cli(
            "restore",
            "%s/registry" % protected.dest,
            "--to-time",
            moment.isoformat(),
            "-t",
            "at_t",
            "--no-filestore",
            "--tmp-dir",
            str(scratch_root),
            "--identity",
            keys["identity_file"],
            "--verify-key",
            keys["public"],
            "--db-host",
            "127.0.0.1",
            "--db-port",
            str(cluster.port),
            "--db-user",
            "postgres",
            "--data-dir",
            data_dir,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not list(scratch_root.glob("spp_backup_pitr_*/postmaster.log")):
            time.sleep(0.05)
        assert list(scratch_root.glob("spp_backup_pitr_*/postmaster.log")), proc.communicate()
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=120)
        # Whatever the outcome, nothing of the scratch cluster is left: no folder, no process.
        assert list(scratch_root.iterdir()) == []
        leftover = subprocess.run(["pgrep", "-f", str(scratch_root)], capture_output=True, text=True)
        assert leftover.stdout.strip() == ""
        outcomes.append(proc.returncode)
        if proc.returncode == 2:
            assert "interrupted" in err
            break
        # Seen once: the restore completed despite the signal (exit 0, the database restored as asked; a signal's
        # exception raised while a finalizer runs is dropped by Python). Not what is tested here: again.
        assert proc.returncode == 0, (out, err)
        cluster.query("postgres", "DROP DATABASE at_t")
    assert outcomes[-1] == 2, "SIGTERM never interrupted the restore: %s" % outcomes


def test_the_whole_cluster_comes_back_to_the_newest_second_and_starts(protected, tmp_path, keys, reachable):
    cluster = protected.cluster
    build_registry(cluster, tmp_path)
    protected.base_backup(tmp_path)
    cluster.query("postgres", "CREATE DATABASE other")
    cluster.query("other", "CREATE TABLE t AS SELECT 42 AS answer")
    insert(cluster, "Mark last")
    protected.wait_archived()

    def restore_cluster(into):
        keys_ = ["--identity", keys["identity_file"], "--verify-key", keys["public"]]
        return ["pitr", "restore-cluster", protected.dest, "--into", into, *keys_, "--pg-bin-dir", cluster.bin_dir]

    if os.geteuid() == 0:
        # As root, never into a folder the database server's OS user could change under the restore.
        theirs = reachable()
        shutil.chown(theirs, "postgres")
        proc = cli(*restore_cluster(os.path.join(theirs, "restored")))
        _out, err = proc.communicate(timeout=120)
        assert proc.returncode == 2 and "cannot change" in err and os.listdir(theirs) == [], err
    into = pathlib.Path(reachable()) / "restored"
    proc = cli("--json", *restore_cluster(str(into)))
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    result = json.loads(out)
    assert result["partial_used"] is True
    assert not os.path.exists(into / "recovery.signal")
    restored = Cluster.adopt(cluster.bin_dir, str(into))
    try:
        assert restored.query("other", "SELECT answer FROM t") == [(42,)]
        assert "Mark last" in names_in(restored, "registry")
    finally:
        restored.remove()


@pytest.fixture
def cluster18():
    cluster = Cluster(wheel_bin(), {"summarize_wal": "on"})
    try:
        yield cluster
    finally:
        cluster.remove()


def test_postgresql_18_restores_to_a_second_across_an_incremental_base_backup(cluster18, tmp_path, keys):
    protected = Protected(cluster18, tmp_path, keys)
    try:
        data_dir = build_registry(cluster18, tmp_path)
        cluster18.query(
            "registry", "CREATE TABLE ballast AS SELECT g, md5(g::text) AS h FROM generate_series(1, 200000) g"
        )
        # As in a database in use, its rows' hint bits are set (PostgreSQL 18 checksums pages by default: setting
        # them for the first time logs every page whole, and an incremental backup then copies every page).
        cluster18.query("registry", "VACUUM ballast")
        full = protected.base_backup(tmp_path)
        cluster18.query("registry", "UPDATE ballast SET h = 'changed' WHERE g <= 2000")  # 1 % of the rows, side by side
        incremental = protected.base_backup(tmp_path)
        assert full["incremental"] is False and full["pg_major"] == 18
        assert incremental["incremental"] is True and incremental["parent"] == full["backup_id"]
        assert incremental["artifacts"]["base"]["size"] < full["artifacts"]["base"]["size"] / 2
        moment = second_between(protected, "Mark A", "Mark B")
        result = recover.restore_database_at(
            protected.storage, "registry", moment, restore_options(protected, "at_t", data_dir, keys), keys["public"]
        )
        assert result.base_chain == [full["backup_id"], incremental["backup_id"]]
        assert names_in(cluster18, "at_t") == {"Mark A"}
        assert cluster18.query("at_t", "SELECT count(*) FROM ballast WHERE h = 'changed'") == [(2000,)]
    finally:
        protected.close()


def test_copies_to_a_folder_and_to_s3_and_a_restore_from_s3(cluster15, tmp_path, keys, s3_bucket):
    endpoint, bucket = s3_bucket
    s3 = S3Storage(bucket=bucket, prefix="pitr", endpoint_url=endpoint, region="us-east-1")
    protected = Protected(cluster15, tmp_path, keys, extra={"s3": s3})
    try:
        data_dir = build_registry(cluster15, tmp_path)
        protected.base_backup(tmp_path)
        moment = second_between(protected, "Mark A", "Mark B")
        local = recover.window(recover.open_archive(protected.storage), keys["public"])
        remote = recover.window(recover.open_archive(s3), keys["public"])
        assert remote.newest_wal == local.newest_wal and remote.bases[0]["backup_id"] == local.bases[0]["backup_id"]
        recover.restore_database_at(
            s3, "registry", moment, restore_options(protected, "from_s3", data_dir, keys), keys["public"]
        )
        assert names_in(cluster15, "from_s3") == {"Mark A"}
    finally:
        protected.close()


def test_the_worker_service_takes_base_backups_on_schedule_and_keeps_only_the_window(
    cluster15, tmp_path, keys, monkeypatch, reachable
):
    monkeypatch.setattr(service_mod, "CHECK_SECONDS", 0.3)
    monkeypatch.setattr(service_mod, "WINDOW_SECONDS", 0.6)
    build_registry(cluster15, tmp_path)
    dest = tmp_path / "pitr"
    dest.mkdir(mode=0o700)
    settings = Settings(
        pg=cluster15.pgconfig(),
        section={
            "signing_key_file": keys["signing_file"],
            "pitr_destinations": str(dest),
            "pitr_recipients": keys["recipient"],
            "pitr_base_backup_hours": "0.0008",  # about 3 s
            "pitr_window_days": "0.00003",  # about 2.6 s
            "pitr_partial_seconds": "0.5",
            "pitr_spool": str(tmp_path / "spool"),
            # Base backups stage there, and restores and drills queued by Odoo make their scratch clusters there.
            "pitr_tmp_dir": reachable(),
        },
    )
    service = service_mod.PitrService.from_settings(settings, cluster15.pgconfig(), str(tmp_path))
    assert service_mod.PitrService.from_settings(Settings(), cluster15.pgconfig(), None) is None
    reports = []
    service.report = reports.append  # the worker writes each into the databases it serves
    thread, stop = service_mod.start_in_thread(service)
    arch = None
    first = None
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            insert(cluster15, "Mark")  # the server keeps writing
            if service.receiver.system_id:
                arch = archive_mod.Archive(LocalStorage(str(dest)), service.receiver.system_id)
                ids = sorted(arch.base_ids())
                first = first or (ids[0] if ids else None)
                if first and first not in ids and len(ids) >= 2:
                    break
            time.sleep(0.3)
    finally:
        stop.set()
        thread.join(120)
    # pitr status tells the receiver's state from its spool folder (stopped now: it is not receiving).
    proc = cli("--json", "pitr", "status", "--spool", str(tmp_path / "spool"), *cli_connection(cluster15))
    out, err = proc.communicate(timeout=60)
    status = json.loads(out)
    assert status["receiver"]["system_id"] == service.receiver.system_id and status["receiver"]["restarts"] == 0
    assert proc.returncode == 1 and status["receiver_problems"][0].startswith("pg_receivewal is not running"), err
    ids = sorted(arch.base_ids())
    assert first and first not in ids, "the base backup older than the window was not removed: %s" % ids
    win = recover.window(arch, keys["public"])
    assert win.gaps == [] and win.start is not None and win.problems == []
    # WAL older than the oldest kept base backup was removed with it.
    oldest_start = min(doc["start_wal"] for doc in win.bases)
    assert all(name >= oldest_start for name in arch.wal_names() if recover.walnames.SEGMENT_RE.fullmatch(name))

    # What the worker reported: the window of the destination, the databases, the receiver's state.
    report = [r for r in reports if r["destinations"][str(dest)]["ranges"]][-1]
    assert report["system_id"] == service.receiver.system_id and "registry" in report["databases"]
    assert report["receiver"]["receiving"] and report["destinations"][str(dest)]["error"] is None
    # (the window slides by seconds here: the newest second the archive reaches now)
    end = recover.window(arch, keys["public"]).end.strftime("%Y-%m-%dT%H:%M:%S.%fZ")

    # The worker's restore to a second, as Odoo's wizard queues it: a location the worker's odoo.conf does not
    # name is refused; the one it names restores, with the worker's own keys.
    ctx = dispatch.WorkerContext(
        settings=settings, pg=cluster15.pgconfig(), data_dir=str(tmp_path / "odoo"), identities=keys["identities"]
    )
    # The neutralization of the modules installed in the copy at that second runs; website's (not installed
    # there: its table does not exist) does not.
    plan = plans.PitrRestorePlan(
        location=str(tmp_path),
        db_name="registry",
        to_time=end,
        options=plans.RestoreRequest(target_db="at_end", neutralize=True),
        system_id=str(service.receiver.system_id),
        neutralize_modules={
            "mail": ["UPDATE res_partner SET name = 'neutralized by mail' WHERE id = 1"],
            "website": ["UPDATE website SET domain = NULL"],
        },
    ).to_dict()
    with pytest.raises(BackupError, match="is not a WAL archive of this server"):
        dispatch.execute(plans.PITR_RESTORE, plan, ctx, "registry", lambda *a: None)
    plan["location"] = str(dest)
    result, error, _warnings = dispatch.execute(plans.PITR_RESTORE, plan, ctx, "registry", lambda *a: None)
    assert error is None and result["target_db"] == "at_end" and result["wal_files"] >= 1
    assert cluster15.query("at_end", "SELECT count(*) FROM res_partner")[0][0] >= 300
    assert cluster15.query("at_end", "SELECT name FROM res_partner WHERE id = 1")[0][0] == "neutralized by mail"
    plan["system_id"] = "1234"
    with pytest.raises(BackupError, match="1234"):
        dispatch.execute(plans.PITR_RESTORE, dict(plan, options={"target_db": "at_end2"}), ctx, "registry", print)
    # The drill to a second as Odoo queues it: restored into a scratch database, checked, dropped.
    drill = plans.PitrDrillPlan(
        location=str(dest), db_name="registry", to_time=end, system_id=str(service.receiver.system_id)
    ).to_dict()
    result, error, _warnings = dispatch.execute(plans.PITR_DRILL, drill, ctx, "registry", lambda *a: None)
    assert error is None and result["ok"] and result["cleaned_up"], result
    assert [check["name"] for check in result["checks"]] == ["window", "restore", "attachments"]
    # The service stopped: its newest base backup grows older than its schedule, which the report says.
    monkeypatch.setattr(service_mod, "BASE_GRACE_HOURS", 0.0)
    time.sleep(3.0)
    late = [p for p in service.status()["problems"] if p.startswith("the newest base backup is")]
    assert late and late[0].endswith("one is due every 0.0008 h"), late


def test_a_drill_restores_a_random_second_checks_it_and_drops_it(protected, tmp_path, keys):
    cluster = protected.cluster
    data_dir = build_registry(cluster, tmp_path)
    protected.base_backup(tmp_path)
    second_between(protected, "Mark A", "Mark B")
    drill = ["pitr", "drill", protected.dest, "-d", "registry", "--identity", keys["identity_file"]]
    drill += ["--verify-key", keys["public"], "--data-dir", data_dir, *cli_connection(cluster)]
    proc = cli("--json", *drill)
    out, err = proc.communicate(timeout=300)
    result = json.loads(out)
    assert proc.returncode == 0 and result["ok"], (result, err)
    assert [check["name"] for check in result["checks"]] == ["window", "restore", "attachments"]
    assert "12 files present with the right SHA-1" in result["checks"][2]["detail"]
    assert result["restore_seconds"] > 0 and result["cleaned_up"]
    assert not cluster.query("postgres", "SELECT 1 FROM pg_database WHERE datname LIKE 'registry\\_drill\\_%%'")
    assert not os.path.exists(os.path.join(data_dir, "filestore", result["scratch_db"]))
    # A file the database references but no filestore holds any more fails the drill, which names it.
    name = cluster.query("registry", "SELECT store_fname FROM ir_attachment ORDER BY id LIMIT 1")[0][0]
    os.unlink(os.path.join(data_dir, "filestore", "registry", name))
    proc = cli(*drill)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 2 and "FAILED" in out and name in out, (out, err)


def test_the_end_of_the_archive_is_the_state_at_a_second_it_is_known_to_reach(cluster15, tmp_path, keys):
    """T after the last commit, the segment then completed and stored, nothing stored after it: recovery meets no
    commit after T. The segment's entry says the server had written nothing past it at a moment after T, so the
    end of the archive is the state at T; a second after what any entry says is outside the window."""
    protected = Protected(cluster15, tmp_path, keys, partial_seconds=3600)
    try:
        data_dir = build_registry(cluster15, tmp_path)
        protected.base_backup(tmp_path)
        insert(cluster15, "Mark A")
        time.sleep(0.5)
        moment = protected.now()
        time.sleep(1.5)  # the receiver samples the server's position while nothing is written
        segment = cluster15.query("postgres", "SELECT pg_walfile_name(pg_current_wal_lsn())")[0][0]
        cluster15.query("postgres", "SELECT pg_switch_wal()")
        deadline = time.monotonic() + 60
        while segment not in recover.open_archive(protected.storage).wal_names() and time.monotonic() < deadline:
            time.sleep(0.1)
        arch = recover.open_archive(protected.storage)
        names = arch.wal_names()
        assert names.get(segment) is False and not any(names.values())  # complete, and no partial stored
        assert recover.parse_time(arch.entry(segment, keys["public"])["complete_until"]) > moment
        win = recover.window(arch, keys["public"])
        with pytest.raises(RestoreError, match="is outside the window"):
            recover.restore_database_at(
                protected.storage,
                "registry",
                win.end + datetime.timedelta(seconds=30),
                restore_options(protected, "later", data_dir, keys),
                keys["public"],
            )
        result = recover.restore_database_at(
            protected.storage, "registry", moment, restore_options(protected, "at_t", data_dir, keys), keys["public"]
        )
        assert names_in(cluster15, "at_t") == {"Mark A"} and result.reached is None and not result.partial_used
    finally:
        protected.close()
