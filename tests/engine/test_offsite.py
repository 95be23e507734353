"""Offsite and safe: encrypted, signed copies on local disk and S3; faults and forgeries refused."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import boto3
import pytest
from conftest import ROOT, CutProxy, conn_kwargs, query, run_plan, table_contents, tree_digest

from engine.core.config import DestinationConfig
from engine.core.errors import BackupError, PreflightError, RestoreError
from engine.formats import catalog
from engine.io import crypto
from engine.io.storage import LocalStorage
from engine.io.storage.s3 import S3Storage
from engine.ops import backup as backup_module
from engine.ops.backup import run_backup
from engine.ops.prune import prune
from engine.ops.restore import RestoreOptions, restore
from engine.ops.verify import verify


def s3_dest(endpoint, bucket, **kwargs):
    return DestinationConfig(
        kind="s3", endpoint_url=endpoint, region="us-east-1", bucket=bucket, prefix="odoo", **kwargs
    )


def s3_storage(endpoint, bucket):
    return S3Storage(bucket=bucket, prefix="odoo", endpoint_url=endpoint, region="us-east-1")


def secure_plan(plan_for, sample, keys, destinations):
    return plan_for(
        sample, destinations=destinations, recipients=[keys["recipient"]], signing_key_file=keys["signing_file"]
    )


def test_two_encrypted_signed_copies_verify_and_restore(sample, plan_for, s3_bucket, keys, dbs, pgconf):
    """Local + S3: both copies are signed, encrypted, verified (deeply, from the bucket), and restore identically."""
    endpoint, bucket = s3_bucket
    plan = secure_plan(plan_for, sample, keys, [DestinationConfig(path=sample["dest"]), s3_dest(endpoint, bucket)])
    result = run_backup(plan)
    assert [c["ok"] for c in result.copies] == [True, True]
    assert result.locations[1] == "s3://%s/odoo/%s/%s" % (bucket, sample["db"], result.backup_id)
    for name, art in result.artifacts.items():
        assert art["file"].endswith(".age") and art["encryption"]["format"] == "age", name
    local_ref = catalog.resolve(result.locations[0])
    s3_ref = catalog.BackupRef(s3_storage(endpoint, bucket), sample["db"], result.backup_id)
    for ref in (local_ref, s3_ref):
        report = verify(ref, public_key=keys["public"], identities=keys["identities"], deep=True)
        assert report.ok, report.text()
        assert report.signature == "valid (Ed25519)" and "decrypts" in report.checks[0].message
    target = dbs.name("froms3")
    restore_dir = str(sample["tmp"] / "restored")
    out = restore(
        s3_ref,
        RestoreOptions(
            target_db=target, pg=pgconf, data_dir=restore_dir, identities=keys["identities"], public_key=keys["public"]
        ),
    )
    assert out.signature == "valid (Ed25519)"
    assert table_contents(target) == table_contents(sample["db"])
    assert tree_digest(os.path.join(restore_dir, "filestore", target)) == tree_digest(sample["filestore"])


def test_the_age_tool_opens_a_backup_pulled_from_s3(sample, plan_for, s3_bucket, keys, tmp_path):
    """With nothing but age, zstd and pg_restore, the S3 copy's dump is readable."""
    endpoint, bucket = s3_bucket
    result = run_backup(secure_plan(plan_for, sample, keys, [s3_dest(endpoint, bucket)]))
    key = "odoo/%s/%s/database.dump.zst.age" % (sample["db"], result.backup_id)
    local = tmp_path / "database.dump.zst.age"
    boto3.client("s3", endpoint_url=endpoint).download_file(bucket, key, str(local))
    age = subprocess.Popen(["age", "-d", "-i", keys["identity_file"], str(local)], stdout=subprocess.PIPE)
    dump = subprocess.run(["zstd", "-d", "-c"], stdin=age.stdout, capture_output=True, check=True).stdout
    assert age.wait() == 0
    (tmp_path / "db.dump").write_bytes(dump)
    listing = subprocess.run(
        ["pg_restore", "--list", str(tmp_path / "db.dump")], capture_output=True, text=True, check=True
    )
    assert "TABLE DATA public res_partner" in listing.stdout


def test_encrypted_backup_needs_the_identity_and_the_right_one(sample, plan_for, keys, dbs, pgconf, tmp_path):
    """Without an identity the restore says what to give; with another one it says the keys differ."""
    result = run_backup(secure_plan(plan_for, sample, keys, [DestinationConfig(path=sample["dest"])]))
    ref = catalog.resolve(result.locations[0])
    with pytest.raises(RestoreError, match="give the age identity file"):
        restore(ref, RestoreOptions(target_db=dbs.name("noid"), pg=pgconf, data_dir=str(tmp_path / "d")))
    stranger, _ = crypto.generate_identity()
    (tmp_path / "stranger.txt").write_text(stranger + "\n")
    target = dbs.name("wrongid")
    with pytest.raises(RestoreError, match="encrypted to other keys"):
        restore(
            ref,
            RestoreOptions(
                target_db=target,
                pg=pgconf,
                data_dir=str(tmp_path / "d"),
                identities=crypto.load_identities(str(tmp_path / "stranger.txt")),
            ),
        )
    assert query("postgres", "SELECT count(*) FROM pg_database WHERE datname LIKE %s", (target + "%",)) == [(0,)]


def test_truncated_ciphertext_is_refused(sample, plan_for, keys, tmp_path):
    """A truncated encrypted artifact fails verification, naming it."""
    result = run_backup(secure_plan(plan_for, sample, keys, [DestinationConfig(path=sample["dest"])]))
    path = os.path.join(result.locations[0], result.artifacts["filestore"]["file"])
    with open(path, "r+b") as handle:
        handle.truncate(os.path.getsize(path) - 1000)
    report = verify(
        catalog.resolve(result.locations[0]), public_key=keys["public"], identities=keys["identities"], deep=True
    )
    assert not report.ok and report.failed_artifacts() == ["filestore"]


def test_swapped_artifact_between_two_backups_is_named(sample, plan_for, keys):
    """An artifact copied over from another backup of the same database fails on exactly that artifact."""
    plan = secure_plan(plan_for, sample, keys, [DestinationConfig(path=sample["dest"])])
    first, second = run_backup(plan), run_backup(plan)
    name = first.artifacts["database"]["file"]
    shutil.copyfile(os.path.join(first.locations[0], name), os.path.join(second.locations[0], name))
    report = verify(catalog.resolve(second.locations[0]), public_key=keys["public"])
    assert not report.ok and report.failed_artifacts() == ["database"]


def test_tampered_manifest_fails_the_signature(sample, plan_for, keys, dbs, pgconf):
    """Changing the manifest (even to match changed bytes) breaks the signature; restore refuses."""
    result = run_backup(secure_plan(plan_for, sample, keys, [DestinationConfig(path=sample["dest"])]))
    path = os.path.join(result.locations[0], "manifest.json")
    manifest = json.loads(Path(path).read_text())
    manifest["database"]["row_counts"]["res_partner"] = 1
    Path(path).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    report = verify(catalog.resolve(result.locations[0]), public_key=keys["public"])
    assert not report.ok and report.signature == "BAD" and "signature does not match" in report.problems[0]
    with pytest.raises(RestoreError, match="signature does not match"):
        restore(
            catalog.resolve(result.locations[0]),
            RestoreOptions(
                target_db=dbs.name("t"),
                pg=pgconf,
                include_filestore=False,
                identities=keys["identities"],
                public_key=keys["public"],
            ),
        )


def test_forged_unsigned_backup_is_refused(sample, plan_for, keys, dbs, pgconf):
    """A backup encrypted to the public recipient but not signed with the policy's key is refused."""
    forged = run_backup(plan_for(sample, recipients=[keys["recipient"]]))  # no signing key: a forgery
    ref = catalog.resolve(forged.locations[0])
    report = verify(ref, public_key=keys["public"])
    assert not report.ok and report.signature == "MISSING" and "not signed" in report.problems[0]
    with pytest.raises(RestoreError, match="not signed"):
        restore(
            ref,
            RestoreOptions(
                target_db=dbs.name("f"),
                pg=pgconf,
                include_filestore=False,
                identities=keys["identities"],
                public_key=keys["public"],
            ),
        )
    other_pem, _ = crypto.generate_signing_key()
    other_file = sample["tmp"] / "other.pem"
    other_file.write_text(other_pem)
    signed_by_other = run_backup(plan_for(sample, recipients=[keys["recipient"]], signing_key_file=str(other_file)))
    report = verify(catalog.resolve(signed_by_other.locations[0]), public_key=keys["public"])
    assert not report.ok and report.signature == "BAD"


def test_a_failed_copy_fails_the_run_but_the_good_copy_stays(sample, plan_for, tmp_path):
    """One destination failing mid-run is reported; the other copy is complete and verifies."""
    blocker = tmp_path / "blocker"
    blocker.mkdir()
    good = str(tmp_path / "good")
    os.mkdir(good)

    class Failing(LocalStorage):
        def open_writer(self, key):
            if "filestore" in key:
                raise OSError(28, "No space left on device")
            return super().open_writer(key)

    original = backup_module.open_storage
    backup_module.open_storage = lambda config, settings=None: (
        Failing(config.path) if config.path == str(blocker) else original(config, settings)
    )
    try:
        result = run_backup(
            plan_for(sample, destinations=[DestinationConfig(path=good), DestinationConfig(path=str(blocker))])
        )
    finally:
        backup_module.open_storage = original
    assert [c["ok"] for c in result.copies] == [True, False]
    assert "No space left" in result.copies[1]["error"]
    assert any("copy to" in w for w in result.warnings)
    assert verify(catalog.resolve(result.locations[0])).ok
    assert os.listdir(blocker / sample["db"]) == [], "the failed copy's partial set is removed"


def test_a_destination_failing_its_checks_is_named_and_the_others_are_written(sample, plan_for, tmp_path):
    """A local folder that does not exist beside a good one: the good copy is complete and verifies."""
    good = str(tmp_path / "good")
    os.mkdir(good)
    missing = str(tmp_path / "not-mounted")
    result = run_backup(plan_for(sample, destinations=[DestinationConfig(path=missing), DestinationConfig(path=good)]))
    assert [c["ok"] for c in result.copies] == [False, True]
    assert missing in result.copies[0]["destination"] and "does not exist" in result.copies[0]["error"]
    assert verify(catalog.resolve(result.locations[0])).ok and result.locations[0].startswith(good)
    assert not os.path.exists(missing), "the server never makes a missing folder"
    with pytest.raises(PreflightError, match="No destination can be written: 1: %s" % missing):
        run_backup(plan_for(sample, destinations=[DestinationConfig(path=missing)]))


def test_network_cut_mid_upload_leaves_no_manifest_and_next_run_clears_orphans(
    dbs, tmp_path, pgconf, s3_server, plan_for, monkeypatch
):
    """The link to S3 dies after the first part: the run fails with a sentence, nothing is restorable there,
    and the orphaned multipart upload is aborted by the next run."""
    import sampledb

    name = dbs.name("cut")
    data_dir = str(tmp_path / "data")
    sampledb.build(conn_kwargs(), name, data_dir, partners=100, messages=100, files=60, file_size=200_000)
    sample = {"db": name, "data_dir": data_dir, "dest": str(tmp_path / "b"), "tmp": tmp_path}
    client = boto3.client("s3", endpoint_url=s3_server.endpoint, region_name="us-east-1")
    client.create_bucket(Bucket="cut-bucket")
    proxy = CutProxy(s3_server.port)
    dest = s3_dest(proxy.endpoint, "cut-bucket", part_size_mb=5, max_attempts=2)
    from engine.io.storage import s3 as s3_module

    original_upload = s3_module.S3Writer._upload

    def upload_then_cut(writer, spool, length, number):
        entry = original_upload(writer, spool, length, number)
        if "filestore" in writer.key:
            proxy.cut()  # the link dies once the filestore's first part is stored
        return entry

    monkeypatch.setattr(s3_module.S3Writer, "_upload", upload_then_cut)
    try:
        with pytest.raises(BackupError, match="every destination failed|Cannot reach the S3 endpoint|S3 failed"):
            run_backup(plan_for(sample, destinations=[dest]))
        keys = [o["Key"] for o in client.list_objects_v2(Bucket="cut-bucket").get("Contents", [])]
        assert not any(k.endswith("manifest.json") for k in keys)
        assert len(client.list_multipart_uploads(Bucket="cut-bucket").get("Uploads", [])) == 1
        proxy.mend()
        monkeypatch.setattr(s3_module.S3Writer, "_upload", original_upload)
        monkeypatch.setattr(backup_module, "STALE_UPLOAD", backup_module.datetime.timedelta(0))
        result = run_backup(plan_for(sample, destinations=[dest]))
        assert client.list_multipart_uploads(Bucket="cut-bucket").get("Uploads", []) == []
        assert verify(catalog.BackupRef(s3_storage(proxy.endpoint, "cut-bucket"), name, result.backup_id)).ok
    finally:
        proxy.close()


def test_missing_bucket_stops_the_backup_before_it_starts(sample, plan_for, s3_server):
    """A destination bucket that does not exist is a preflight error with its name."""
    with pytest.raises(PreflightError, match="bucket 'not-there-at-all' does not exist"):
        run_backup(plan_for(sample, destinations=[s3_dest(s3_server.endpoint, "not-there-at-all")]))


def test_retention_through_a_plan_file_keeps_exactly_the_policy(sample, plan_for, tmp_path):
    """keep_last 2: after four runs two backups remain, the newest ones, and the prune is reported."""
    ids = []
    for _ in range(4):
        plan = plan_for(sample, retention={"keep_last": 2})
        code, status = run_plan(plan.to_dict(), tmp_path, data_dir=sample["data_dir"], database=sample["db"])
        assert code == 0, status
        ids.append(status["result"]["backup_id"])
    remaining = [e.backup_id for e in catalog.list_backups(LocalStorage(sample["dest"]), sample["db"])]
    assert remaining == sorted(ids)[-2:]
    assert status["result"]["retention"][0]["deleted"] == [sorted(ids)[-3]]


def test_object_lock_forbids_pruning_and_is_reported(sample, plan_for, s3_server, keys):
    """Backups under Object Lock are skipped by retention and reported as locked, not as errors."""
    client = boto3.client("s3", endpoint_url=s3_server.endpoint, region_name="us-east-1")
    client.create_bucket(Bucket="lock-prune", ObjectLockEnabledForBucket=True)
    dest = s3_dest(s3_server.endpoint, "lock-prune", object_lock_mode="governance", object_lock_days=1)
    first = run_backup(plan_for(sample, destinations=[dest], include_filestore=False))
    second = run_backup(plan_for(sample, destinations=[dest], include_filestore=False))
    report = prune(s3_storage(s3_server.endpoint, "lock-prune"), sample["db"], {"keep_last": 1})
    assert report.keep == [second.backup_id] and report.locked == [first.backup_id]
    assert report.delete == [] and report.errors == []


def test_killed_restore_puts_the_original_back(sample, plan_for, pgconf, tmp_path):
    """SIGTERM in the middle of a --replace restore leaves the original database under its own name."""
    import signal
    import time

    import sampledb

    result = run_backup(plan_for(sample))
    # Make the database big enough that pg_restore is still running when the signal comes.
    sampledb.build(
        conn_kwargs(), sample["db"], sample["data_dir"], partners=1000, messages=300000, files=5, file_size=1000
    )
    result = run_backup(plan_for(sample))
    query(sample["db"], "CREATE TABLE marker (note text)")
    query(sample["db"], "INSERT INTO marker VALUES ('original')")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "engine",
            "restore",
            result.locations[0],
            "--target",
            sample["db"],
            "--replace",
            "--data-dir",
            sample["data_dir"],
        ],
        cwd=ROOT,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 60
    while time.time() < deadline:
        rows = query(
            "postgres", "SELECT datname FROM pg_database WHERE datname LIKE %s", (sample["db"][:40] + "%__restoring_%",)
        )
        if rows:
            break
        time.sleep(0.02)
    assert rows, "the restore never reached pg_restore"
    time.sleep(0.3)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 2 and "Traceback" not in err
    assert query(sample["db"], "SELECT note FROM marker") == [("original",)]
    assert query("postgres", "SELECT count(*) FROM pg_database WHERE datname LIKE %s", (sample["db"] + "%",)) == [(1,)]
