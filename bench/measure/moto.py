"""moto's S3 server on loopback, in its own process, and what a bucket or a local store holds."""

import os
import sys

from . import REPO

sys.path.insert(0, REPO)
from tests import s3server  # noqa: E402  (the S3 test server the tests use too)

from .timing import proc_status  # noqa: E402

MOTO_SERVER = s3server.moto_server_path(honour_override=False)
S3_BUCKET = "spp-bench"
S3_PREFIX = "odoo"
S3_DEST = "s3://%s/%s" % (S3_BUCKET, S3_PREFIX)


class MotoServer(s3server.MotoServer):
    """moto's S3 server on a free loopback port, in its own process (and virtual environment).

    It keeps every object in its own memory: its RSS is the server's, reported
    apart from the engine's.
    """

    def __init__(self, logdir):
        if not os.access(MOTO_SERVER, os.X_OK):
            raise SystemExit(
                "--s3 needs moto's server at %s (dev/setup installs it: pip install -r requirements-s3-server.txt "
                "into .venv-s3)" % MOTO_SERVER
            )
        super().__init__(MOTO_SERVER, log_path=os.path.join(logdir, "moto_server.log"))

    def env(self, base):
        env = dict(base)
        env.update(s3server.S3_ENV)
        env.update(
            AWS_ENDPOINT_URL=self.endpoint,
            AWS_CONFIG_FILE=os.devnull,
            AWS_SHARED_CREDENTIALS_FILE=os.devnull,
        )
        env.pop("AWS_PROFILE", None)
        env.pop("AWS_SESSION_TOKEN", None)
        return env

    def start(self, base_env, timeout=60):
        try:
            return super().start(env=self.env(base_env), timeout=timeout, probe_timeout=2, interval=0.2)
        except s3server.MotoServerError as exc:
            raise SystemExit(str(exc)) from None

    def memory(self):
        values = proc_status(self.process.pid) if self.process else {}
        return {"hwm_kb": values.get("VmHWM"), "rss_kb": values.get("VmRSS")}

    def stop(self):
        super().stop(timeout=15)

    def make_bucket(self):
        """The bucket the backups go to, created; returns a boto3 client of the server."""
        client = self.client()
        client.create_bucket(Bucket=S3_BUCKET)
        return client


def bucket_objects(client, prefix):
    """Every object of the bucket under ``prefix``/."""
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=S3_BUCKET, Prefix=prefix + "/"):
        yield from page.get("Contents", [])


def store_pack_bytes(dest):
    """Bytes of every pack of every store under a local destination."""
    total = 0
    for dirpath, _dirs, files in os.walk(dest):
        if os.sep + "packs" in dirpath and os.sep + ".store-" in dirpath:
            total += sum(os.path.getsize(os.path.join(dirpath, name)) for name in files)
    return total


def s3_pack_bytes(client, prefix):
    """Bytes of every pack of every store under an S3 prefix."""
    return sum(
        obj["Size"] for obj in bucket_objects(client, prefix) if "/.store-" in obj["Key"] and "/packs/" in obj["Key"]
    )
