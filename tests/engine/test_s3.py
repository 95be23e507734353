"""The S3 backend against a real S3 HTTP server (moto, its own process, on loopback)."""

import os

import boto3
import pytest
from conftest import MotoServer

from engine.core.errors import PreflightError
from engine.io.storage.s3 import MAX_PARTS, MiB, S3Storage, capacity, part_size_for


def storage(endpoint, bucket, **kwargs):
    return S3Storage(bucket=bucket, prefix="backups/odoo", endpoint_url=endpoint, region="us-east-1", **kwargs)


def test_part_size_grows_so_a_terabyte_fits_in_10000_parts():
    """Parts double every 1,000 parts: 1 TB fits within S3's 10,000-part limit at the default size."""
    assert part_size_for(1, 16 * MiB) == 16 * MiB
    assert part_size_for(1001, 16 * MiB) == 32 * MiB
    assert part_size_for(1, 1 * MiB) == 5 * MiB  # S3's minimum part size
    assert capacity(16 * MiB) > 1 << 40
    parts, total = 0, 0
    while total < 1 << 40:
        parts += 1
        total += part_size_for(parts, 16 * MiB)
    assert parts < MAX_PARTS


def test_small_and_multipart_objects_round_trip(s3_bucket):
    """A small object (one PUT) and a 12 MiB one (3 parts of 5 MiB) read back byte for byte."""
    endpoint, bucket = s3_bucket
    store = storage(endpoint, bucket, part_size=5 * MiB)
    small, big = os.urandom(1000), os.urandom(12 * MiB)
    with store.open_writer("db/id/small.bin") as writer:
        writer.write(small)
    writer = store.open_writer("db/id/big.bin")
    for start in range(0, len(big), 700_000):
        writer.write(big[start : start + 700_000])
    writer.commit()
    assert len(writer.parts) == 3
    assert store.read_bytes("db/id/small.bin") == small and store.read_bytes("db/id/big.bin") == big
    assert store.size("db/id/big.bin") == len(big) and store.exists("db/id/small.bin")
    assert not store.exists("db/id/none.bin")
    assert store.list_dir("") == ["db"] and store.list_dir("db") == ["id"]
    assert store.list_dir("db/id") == ["big.bin", "small.bin"]
    keys = [o["Key"] for o in boto3.client("s3", endpoint_url=endpoint).list_objects_v2(Bucket=bucket)["Contents"]]
    assert sorted(keys) == ["backups/odoo/db/id/big.bin", "backups/odoo/db/id/small.bin"]
    store.remove_tree("db/id")
    assert store.list_dir("db") == []


def test_aborted_write_leaves_no_object_and_no_orphan_parts(s3_bucket):
    """An upload that fails after some parts is aborted: no object, no multipart upload left."""
    endpoint, bucket = s3_bucket
    store = storage(endpoint, bucket, part_size=5 * MiB)
    client = boto3.client("s3", endpoint_url=endpoint)
    with pytest.raises(RuntimeError), store.open_writer("db/id/x.bin") as writer:
        writer.write(os.urandom(11 * MiB))
        assert len(client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])) == 1
        raise RuntimeError("the source failed")
    assert client.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    assert not store.exists("db/id/x.bin")


def test_probe_reports_object_lock(s3_server):
    """The destination test checks the bucket, writes, reads back, deletes and reports Object Lock."""
    client = boto3.client("s3", endpoint_url=s3_server.endpoint, region_name="us-east-1")
    client.create_bucket(Bucket="plain-bucket-probe")
    client.create_bucket(Bucket="locked-bucket-probe", ObjectLockEnabledForBucket=True)
    assert "Object Lock is not enabled" in storage(s3_server.endpoint, "plain-bucket-probe").probe()
    assert "Object Lock is available" in storage(s3_server.endpoint, "locked-bucket-probe").probe()
    with pytest.raises(PreflightError, match="does not have Object Lock enabled"):
        storage(s3_server.endpoint, "plain-bucket-probe", object_lock_mode="governance", object_lock_days=7).probe()
    assert client.list_objects_v2(Bucket="plain-bucket-probe").get("KeyCount") == 0


def test_object_lock_retention_is_set_and_forbids_deleting_the_version(s3_server):
    """Objects written with Object Lock carry a retain-until date and their version cannot be deleted."""
    client = boto3.client("s3", endpoint_url=s3_server.endpoint, region_name="us-east-1")
    client.create_bucket(Bucket="locked-bucket-write", ObjectLockEnabledForBucket=True)
    store = storage(s3_server.endpoint, "locked-bucket-write", object_lock_mode="compliance", object_lock_days=3)
    with store.open_writer("db/id/a.bin") as writer:
        writer.write(b"locked bytes")
    assert store.locked_until("db/id/a.bin") is not None
    version = client.list_object_versions(Bucket="locked-bucket-write")["Versions"][0]["VersionId"]
    with pytest.raises(Exception, match="AccessDenied|locked|retention|Object"):
        client.delete_object(Bucket="locked-bucket-write", Key="backups/odoo/db/id/a.bin", VersionId=version)


def test_missing_bucket_is_a_sentence(s3_server):
    """A missing bucket gives a clear error, not a botocore traceback."""
    with pytest.raises(PreflightError, match="bucket 'no-such-bucket-here' does not exist"):
        storage(s3_server.endpoint, "no-such-bucket-here").probe()


def test_wrong_credentials_are_a_sentence():
    """Credentials the server does not know are refused with a sentence that says to check them."""
    server = MotoServer(env={"INITIAL_NO_AUTH_ACTION_COUNT": "0"})
    try:
        with pytest.raises(PreflightError, match="credentials were refused|denied"):
            storage(server.endpoint, "any-bucket", access_key_id="AKIAWRONG", secret_access_key="wrong").probe()
    finally:
        server.stop()


def test_server_stopped_mid_upload_fails_cleanly(s3_server):
    """When the S3 server goes away in the middle of an upload the write fails with a sentence."""
    server = MotoServer()
    try:
        boto3.client("s3", endpoint_url=server.endpoint, region_name="us-east-1").create_bucket(Bucket="dying")
        store = storage(server.endpoint, "dying", part_size=5 * MiB, max_attempts=2)
        writer = store.open_writer("db/id/x.bin")
        writer.write(os.urandom(6 * MiB))
        writer._wait()  # the first part is uploaded before the server goes
        assert len(writer.parts) == 1
        server.stop()
        with pytest.raises(PreflightError, match="Cannot reach the S3 endpoint|S3 failed"):
            writer.write(os.urandom(5 * MiB))
            writer.commit()
        writer.abort()
    finally:
        server.stop()
