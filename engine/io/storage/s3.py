"""S3-compatible object storage (AWS, MinIO, Ceph, Wasabi, ...) through boto3.

Writes are streaming multipart uploads with bounded memory: each part is
spooled to an unnamed temporary file (the page cache holds it, not the
process: a part kept in Python's memory left the heap fragmented and the peak
RSS growing with the artifact) and uploaded when it is full. The part size
starts at the configured size and doubles every ``PARTS_PER_STEP`` parts, so
an artifact of 1 TB stays well under S3's 10,000 parts without knowing its
size in advance. A failed write aborts the
multipart upload, so no orphan parts are left in the bucket.

Credentials never pass through this module's arguments in clear from a
database: boto3's standard chain (environment, shared credentials file,
instance role), a named profile, or keys read from odoo.conf's
``[spp_backup]`` section by the caller.
"""

import concurrent.futures
import contextlib
import datetime
import tempfile
import uuid

from ...core.errors import PreflightError

MiB = 1 << 20
DEFAULT_PART_SIZE = 16 * MiB
MIN_PART_SIZE = 5 * MiB
MAX_PART_SIZE = 5 * 1024 * MiB
MAX_PARTS = 10000
PARTS_PER_STEP = 1000
READ_CHUNK = MiB


def part_size_for(part_number, base):
    """Size of part ``part_number`` (1-based): ``base`` doubled every PARTS_PER_STEP parts."""
    step = (part_number - 1) // PARTS_PER_STEP
    return min(MAX_PART_SIZE, max(MIN_PART_SIZE, base) << step)


def capacity(base, parts=MAX_PARTS):
    """The largest artifact that fits in ``parts`` parts (pure, for tests and docs)."""
    return sum(part_size_for(n, base) for n in range(1, parts + 1))


def describe_client_error(exc, bucket, action):
    """A sentence for a boto3/botocore error."""
    from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError

    if isinstance(exc, NoCredentialsError):
        return (
            "No S3 credentials were found for bucket %r: set them in the environment (AWS_ACCESS_KEY_ID / "
            "AWS_SECRET_ACCESS_KEY), a profile, or the [spp_backup] section of odoo.conf." % bucket
        )
    if isinstance(exc, EndpointConnectionError):
        return "Cannot reach the S3 endpoint to %s: %s" % (action, exc)
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code = error.get("Code", "")
        message = error.get("Message", "") or str(exc)
        if code in ("NoSuchBucket",) or (code in ("404", "NotFound") and action.startswith("reach the bucket")):
            return "The S3 bucket %r does not exist (or is not visible with these credentials)." % bucket
        if code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "AuthorizationHeaderMalformed"):
            return "The S3 credentials were refused for bucket %r (%s): check the access key and secret." % (
                bucket,
                code,
            )
        if code in ("AccessDenied", "403", "Forbidden"):
            return "Access to the S3 bucket %r was denied while trying to %s." % (bucket, action)
        return "S3 refused to %s in bucket %r: %s (%s)." % (action, bucket, message, code)
    return "S3 failed to %s in bucket %r: %s" % (action, bucket, exc)


class S3Writer:
    """A streaming multipart upload; ``commit()`` completes it, ``abort()`` removes the parts.

    One part uploads in a background thread while the next one fills, so
    compression and encryption go on during the network round trips; at most
    one part is in flight, which bounds memory to two spools.
    """

    def __init__(self, storage, key):
        self.storage = storage
        self.key = key
        self.base = storage.part_size
        self.upload_id = None
        self.parts = []
        self.size = 0
        self._spool = self._new_spool()
        self._spooled = 0
        self._number = 1  # the part now filling
        self._pending = None
        self._executor = None
        self.closed = False

    @staticmethod
    def _new_spool():
        return tempfile.TemporaryFile()  # noqa: SIM115 - closed after its upload

    def _limit(self):
        return part_size_for(self._number, self.base)

    def write(self, data):
        view = memoryview(data)
        while view:
            room = self._limit() - self._spooled
            piece = view[:room]
            self._spool.write(piece)
            self._spooled += len(piece)
            self.size += len(piece)
            view = view[len(piece) :]
            if self._spooled >= self._limit():
                self._flush_part()

    def _flush_part(self):
        storage = self.storage
        if self.upload_id is None:
            response = storage.call(
                "start the upload of %s" % self.key,
                storage.client.create_multipart_upload,
                Bucket=storage.bucket,
                Key=storage.full_key(self.key),
                **storage.put_args(),
            )
            self.upload_id = response["UploadId"]
            self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="spp_backup-s3")
        if self._number > MAX_PARTS:
            raise PreflightError("The artifact %s is larger than S3's 10,000 parts allow." % self.key)
        self._wait()
        spool, length, number = self._spool, self._spooled, self._number
        self._spool, self._spooled, self._number = self._new_spool(), 0, number + 1
        self._pending = self._executor.submit(self._upload, spool, length, number)

    def _upload(self, spool, length, number):
        """Upload one spooled part (in the background thread); returns its entry for completion."""
        storage = self.storage
        try:
            spool.seek(0)
            response = storage.call(
                "upload part %d of %s" % (number, self.key),
                storage.client.upload_part,
                Bucket=storage.bucket,
                Key=storage.full_key(self.key),
                UploadId=self.upload_id,
                PartNumber=number,
                Body=spool,
                ContentLength=length,
            )
        finally:
            spool.close()
        return {"PartNumber": number, "ETag": response["ETag"]}

    def _wait(self):
        """Wait for the part in flight; raise its error if it failed."""
        if self._pending is not None:
            future, self._pending = self._pending, None
            self.parts.append(future.result())

    def commit(self):
        storage = self.storage
        try:
            if self.upload_id is None:
                self._spool.seek(0)
                storage.call(
                    "upload %s" % self.key,
                    storage.client.put_object,
                    Bucket=storage.bucket,
                    Key=storage.full_key(self.key),
                    Body=self._spool,
                    ContentLength=self._spooled,
                    **storage.put_args(),
                )
            else:
                if self._spooled:
                    self._flush_part()
                self._wait()
                storage.call(
                    "complete the upload of %s" % self.key,
                    storage.client.complete_multipart_upload,
                    Bucket=storage.bucket,
                    Key=storage.full_key(self.key),
                    UploadId=self.upload_id,
                    MultipartUpload={"Parts": self.parts},
                )
        except BaseException:
            self.abort()
            raise
        self._close()

    def abort(self):
        if self._pending is not None:
            with contextlib.suppress(BaseException):
                self._pending.result()
            self._pending = None
        self._close()
        if self.upload_id is not None:
            with contextlib.suppress(Exception):
                self.storage.client.abort_multipart_upload(
                    Bucket=self.storage.bucket, Key=self.storage.full_key(self.key), UploadId=self.upload_id
                )
            self.upload_id = None

    def _close(self):
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None
        if not self.closed:
            self._spool.close()
            self.closed = True

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None:
            self.abort()
        elif not self.closed:
            self.commit()


class S3Reader:
    """A file-like reader over an object's body."""

    def __init__(self, body):
        self.body = body

    def read(self, size=-1):
        return self.body.read() if size is None or size < 0 else self.body.read(size)

    def readable(self):
        return True

    def close(self):
        self.body.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class S3Storage:
    kind = "s3"

    def __init__(
        self,
        bucket,
        prefix="",
        endpoint_url=None,
        region=None,
        profile=None,
        access_key_id=None,
        secret_access_key=None,
        storage_class=None,
        sse=None,
        sse_kms_key_id=None,
        addressing_style=None,
        object_lock_mode=None,
        object_lock_days=0,
        part_size=DEFAULT_PART_SIZE,
        max_attempts=8,
    ):
        if not bucket:
            raise PreflightError("The S3 destination has no bucket set.")
        import boto3
        from botocore.config import Config

        self.bucket = bucket
        self.prefix = (prefix or "").strip("/")
        self.endpoint_url = endpoint_url or None
        self.storage_class = storage_class or None
        self.sse = sse or None
        self.sse_kms_key_id = sse_kms_key_id or None
        self.object_lock_mode = (object_lock_mode or "").upper() or None
        self.object_lock_days = int(object_lock_days or 0)
        self.part_size = max(MIN_PART_SIZE, int(part_size or DEFAULT_PART_SIZE))
        if self.object_lock_mode and self.object_lock_mode not in ("GOVERNANCE", "COMPLIANCE"):
            raise PreflightError("Object Lock mode must be governance or compliance, not %r." % object_lock_mode)
        if self.object_lock_mode and self.object_lock_days <= 0:
            raise PreflightError("Object Lock needs a retention of at least 1 day.")
        session_kwargs = {}
        if profile:
            session_kwargs["profile_name"] = profile
        if access_key_id and secret_access_key:
            session_kwargs.update(aws_access_key_id=access_key_id, aws_secret_access_key=secret_access_key)
        try:
            session = boto3.session.Session(**session_kwargs)
        except Exception as exc:  # botocore.exceptions.ProfileNotFound and friends
            raise PreflightError("Cannot set up the S3 session: %s" % exc) from exc
        config = Config(
            region_name=region or None,
            retries={"max_attempts": max_attempts, "mode": "standard"},
            s3={"addressing_style": addressing_style or "auto"},
            connect_timeout=20,
            read_timeout=120,
        )
        self.client = session.client("s3", endpoint_url=self.endpoint_url, config=config)

    # -- helpers

    def describe(self, key=""):
        path = "/".join(p for p in (self.prefix, key) if p)
        return "s3://%s/%s" % (self.bucket, path) if path else "s3://%s" % self.bucket

    def full_key(self, key):
        parts = [p for p in key.split("/") if p]
        if any(p in (".", "..") for p in parts):
            raise ValueError("invalid storage key %r" % key)
        return "/".join(([self.prefix] if self.prefix else []) + parts)

    def call(self, action, method, **kwargs):
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return method(**kwargs)
        except (ClientError, BotoCoreError) as exc:
            raise PreflightError(describe_client_error(exc, self.bucket, action)) from exc

    def put_args(self):
        args = {}
        if self.storage_class:
            args["StorageClass"] = self.storage_class
        if self.sse:
            args["ServerSideEncryption"] = self.sse
            if self.sse == "aws:kms" and self.sse_kms_key_id:
                args["SSEKMSKeyId"] = self.sse_kms_key_id
        if self.object_lock_mode:
            args["ObjectLockMode"] = self.object_lock_mode
            args["ObjectLockRetainUntilDate"] = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(
                days=self.object_lock_days
            )
        return args

    # -- the storage interface

    def open_writer(self, key):
        return S3Writer(self, key)

    def open_reader(self, key):
        response = self.call("read %s" % key, self.client.get_object, Bucket=self.bucket, Key=self.full_key(key))
        return S3Reader(response["Body"])

    def read_bytes(self, key):
        with self.open_reader(key) as reader:
            return reader.read()

    def _head(self, key):
        from botocore.exceptions import ClientError

        try:
            return self.client.head_object(Bucket=self.bucket, Key=self.full_key(key))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return None
            raise PreflightError(describe_client_error(exc, self.bucket, "look at %s" % key)) from exc

    def exists(self, key):
        return self._head(key) is not None

    def size(self, key):
        head = self._head(key)
        if head is None:
            raise FileNotFoundError(self.describe(key))
        return head["ContentLength"]

    def delete(self, key):
        self.call("delete %s" % key, self.client.delete_object, Bucket=self.bucket, Key=self.full_key(key))

    def _iter(self, prefix, delimiter=None):
        full = self.full_key(prefix) if prefix else self.prefix
        full = full + "/" if full else ""
        paginator = self.client.get_paginator("list_objects_v2")
        kwargs = {"Bucket": self.bucket, "Prefix": full}
        if delimiter:
            kwargs["Delimiter"] = delimiter
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            for page in paginator.paginate(**kwargs):
                yield full, page
        except (ClientError, BotoCoreError) as exc:
            raise PreflightError(describe_client_error(exc, self.bucket, "list %s" % (prefix or "the bucket"))) from exc

    def list_dir(self, prefix=""):
        names = set()
        for full, page in self._iter(prefix, delimiter="/"):
            for common in page.get("CommonPrefixes", []):
                names.add(common["Prefix"][len(full) :].strip("/"))
            for obj in page.get("Contents", []):
                names.add(obj["Key"][len(full) :])
        return sorted(n for n in names if n)

    def object_sizes(self, prefix):
        """{name: size} of the objects directly under ``prefix`` (one listing call per 1,000)."""
        sizes = {}
        for full, page in self._iter(prefix, delimiter="/"):
            for obj in page.get("Contents", []):
                sizes[obj["Key"][len(full) :]] = obj["Size"]
        return sizes

    def remove_tree(self, prefix):
        keys = []
        for _full, page in self._iter(prefix):
            keys.extend({"Key": obj["Key"]} for obj in page.get("Contents", []))
        for start in range(0, len(keys), 1000):
            self.client.delete_objects(
                Bucket=self.bucket, Delete={"Objects": keys[start : start + 1000], "Quiet": True}
            )
        self.abort_uploads(prefix)

    def remove_partials(self, prefix):
        """Abort the multipart uploads writers left under ``prefix`` (the caller knows none is writing); how many."""
        return self.abort_uploads(prefix)

    def abort_uploads(self, prefix="", older_than=None):
        """Abort unfinished multipart uploads under ``prefix`` (started before ``older_than`` ago, if given).

        Returns how many were aborted: the orphans a run leaves when the
        network failed so badly that it could not abort its own upload.
        """
        full = self.full_key(prefix) if prefix else self.prefix
        count = 0
        now = datetime.datetime.now(datetime.timezone.utc)
        paginator = self.client.get_paginator("list_multipart_uploads")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=full):
            for upload in page.get("Uploads", []):
                initiated = upload.get("Initiated")
                if older_than is not None and initiated is not None and now - initiated < older_than:
                    continue
                with contextlib.suppress(Exception):
                    self.client.abort_multipart_upload(
                        Bucket=self.bucket, Key=upload["Key"], UploadId=upload["UploadId"]
                    )
                    count += 1
        return count

    def free_bytes(self):
        return None

    def locked_until(self, key):
        """The Object Lock retain-until date of an object (from its headers), or None."""
        head = self._head(key)
        return head.get("ObjectLockRetainUntilDate") if head else None

    def object_lock_enabled(self):
        from botocore.exceptions import ClientError

        try:
            response = self.client.get_object_lock_configuration(Bucket=self.bucket)
        except ClientError:
            return False
        return response.get("ObjectLockConfiguration", {}).get("ObjectLockEnabled") == "Enabled"

    def probe(self):
        """Check the bucket, write, read back and delete a probe object; say whether Object Lock is on."""
        self.call("reach the bucket", self.client.head_bucket, Bucket=self.bucket)
        key = ".spp_backup_probe_%s" % uuid.uuid4().hex
        payload = uuid.uuid4().bytes * 4
        self.call(
            "write a probe object",
            self.client.put_object,
            Bucket=self.bucket,
            Key=self.full_key(key),
            Body=payload,
            **{k: v for k, v in self.put_args().items() if not k.startswith("ObjectLock")},
        )
        if self.read_bytes(key) != payload:
            raise PreflightError("The probe object read back from %s differs from what was written." % self.describe())
        self.delete(key)
        locked = self.object_lock_enabled()
        if self.object_lock_mode and not locked:
            raise PreflightError(
                "Object Lock (%s, %d days) is configured for %s but the bucket does not have Object Lock enabled."
                % (self.object_lock_mode.lower(), self.object_lock_days, self.describe())
            )
        return "Wrote, read back and deleted a probe object in %s. Object Lock is %s on this bucket." % (
            self.describe(),
            "available" if locked else "not enabled",
        )
