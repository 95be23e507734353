"""Benchmark: the engine's backup and restore against plain pg_dump / pg_restore.

    .venv/bin/python bench/run.py [--scale 1.0] [--workdir DIR] [--keep] [--repeat N]
    .venv/bin/python bench/run.py --rss-check [--rss-scales 0.5,1]
    .venv/bin/python bench/run.py --suite full --repeat 3     # also --secure, --s3, --drill

At scale 1.0 the dataset is a ~1 GB database (2 million chatter-like
mail_message rows plus partners, built by dev/sampledb.py) and a ~0.9 GB
filestore of 4,000 files in Odoo's layout, each half random bytes and half
zeros. ``--scale`` multiplies the rows and the file count. The dataset is kept
in the work directory and on the server, and reused by later runs of the same
scale (checked by row count and file count).

Timed, in one run, with a warm cache (one unmeasured pg_dump and one read of
the filestore first; the page cache cannot be dropped without root):

  (a) pg_dump -Fc -f X db                                  the usual raw tool
  (b) python -m engine backup (database + filestore + manifest)
  (c) createdb + pg_restore -d NEWDB X                     dump (a), fresh database
  (d) python -m engine restore (verification pass, database, filestore)

plus, for context only, tar -cf / tar -xf of the filestore. Each restored
database is checked (row count, file count) and dropped before the next step,
so that autovacuum of one step's new 1 GB tables never runs during another.

Optional steps, in the same rounds (``--suite full`` selects them all):

  --secure  (e) engine backup encrypted to an age recipient, manifest signed (Ed25519)
            (f) engine restore of (e) with --identity / --verify-key (verification included)
  --s3      (g) the backup of (e) to s3://bucket/odoo on a loopback moto server
            (.venv-s3/bin/moto_server, its own process, started and stopped each round)
  --drill   (h) engine drill of (e): scratch restore, row counts, every attachment's
            SHA-1, drop; its total_seconds and restore_seconds (the RTO) are reported
            (implies --secure)

Targets: (b)/(a) <= 1.2, (d)/(c) <= 1.3, engine peak RSS <= 64 MB (the
engine's own process, as ``peak_rss_kb`` in its JSON output) and flat when the
dataset doubles (``--rss-check``); with the options: (e)/(a) <= 1.0,
(f)/(c) <= 1.0, the engine's peak RSS during (g) <= 96 MB.

Results are printed as a table and written to bench/out/<timestamp>.json.
PostgreSQL: libpq's PGHOST/PGPORT/PGUSER; when PGHOST is unset the throwaway
cluster of dev/pg.sh is started and used.
"""

import argparse
import datetime
import hashlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
OUT_DIR = os.path.join(HERE, "out")

sys.path.insert(0, REPO)
from tests import s3server  # noqa: E402  (the S3 test server the tests use too)

# Dataset at scale 1.0 (calibrated: pg_database_size ~ 1.05e9 bytes, filestore 0.92e9 bytes).
MESSAGES = 2_000_000
PARTNERS = 50_000
FILES = 4_000
FILE_SIZE = 225 * 1024
BODY_REPEAT = 10

TARGETS = {
    "backup_ratio": 1.2,
    "restore_ratio": 1.3,
    "peak_rss_mb": 64.0,
    # with --secure / --s3
    "secure_backup_ratio": 1.0,
    "secure_restore_ratio": 1.0,
    "s3_peak_rss_mb": 96.0,
}
MOTO_SERVER = s3server.moto_server_path(honour_override=False)
S3_BUCKET = "spp-bench"
S3_PREFIX = "odoo"
MB = 1024 * 1024


# ----------------------------------------------------------------------------- helpers


def log(message):
    print("[%s] %s" % (time.strftime("%H:%M:%S"), message), file=sys.stderr, flush=True)


def pg_environment():
    """libpq settings; starts dev/pg.sh's cluster when none are given."""
    env = dict(os.environ)
    if not env.get("PGHOST"):
        subprocess.run(["bash", os.path.join(REPO, "dev", "pg.sh"), "start"], check=True, stdout=subprocess.DEVNULL)
        out = subprocess.run(
            ["bash", os.path.join(REPO, "dev", "pg.sh"), "env"], check=True, capture_output=True, text=True
        ).stdout
        for word in out.replace("export", " ").split():
            key, _, value = word.partition("=")
            if key.startswith("PG"):
                env[key] = value
    os.environ.update({k: v for k, v in env.items() if k.startswith("PG")})
    return env


def conn_kwargs():
    return {
        k: os.environ[v] for k, v in (("host", "PGHOST"), ("port", "PGPORT"), ("user", "PGUSER")) if os.environ.get(v)
    }


def connect(dbname="postgres"):
    import psycopg2

    conn = psycopg2.connect(dbname=dbname, **conn_kwargs())
    conn.autocommit = True
    return conn


def query(sql, params=None, dbname="postgres"):
    conn = connect(dbname)
    try:
        with conn.cursor() as cr:
            cr.execute(sql, params)
            return cr.fetchall() if cr.description else None
    finally:
        conn.close()


def database_exists(name):
    return bool(query("SELECT 1 FROM pg_database WHERE datname = %s", (name,)))


def drop_database(name):
    from psycopg2 import sql

    conn = connect()
    try:
        with conn.cursor() as cr:
            cr.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,))
            cr.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))
    finally:
        conn.close()


def count_files(root):
    total = 0
    for _dirpath, _dirs, files in os.walk(root):
        total += len(files)
    return total


def tree_bytes(root):
    total = 0
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            total += os.path.getsize(os.path.join(dirpath, name))
    return total


def cpu_ticks():
    """(busy, iowait) jiffies of the whole machine, from /proc/stat (None elsewhere)."""
    try:
        with open("/proc/stat", encoding="ascii") as handle:
            fields = [int(v) for v in handle.readline().split()[1:]]
    except OSError:
        return None
    user, nice, system, idle, iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
    return user + nice + system + irq + softirq + steal, iowait


class TreeSampler(threading.Thread):
    """Polls /proc for the peak memory of a process and of its descendants.

    ``VmHWM`` is per address space and starts afresh at exec, so unlike
    ru_maxrss it does not include the RSS of the (forking) parent. Sampled
    every ``interval`` seconds: a child's growth in its last interval before
    it exits can be missed, the engine's own high-water mark cannot.
    """

    def __init__(self, root, interval=0.1):
        super().__init__(daemon=True)
        self.root = root
        self.interval = interval
        self.stop = threading.Event()
        self.peaks = {}  # pid -> {"name", "hwm_kb"}
        self.max_total_rss_kb = 0

    @staticmethod
    def _status(pid):
        values = {}
        try:
            with open("/proc/%d/status" % pid, encoding="ascii", errors="replace") as handle:
                for line in handle:
                    key, _, rest = line.partition(":")
                    if key in ("Name", "VmHWM", "VmRSS"):
                        values[key] = rest.split()[0] if key == "Name" else int(rest.split()[0])
        except (OSError, ValueError, IndexError):
            return None
        return values if "VmHWM" in values else None

    def _tree(self):
        children = {}
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open("/proc/%s/stat" % entry, encoding="ascii", errors="replace") as handle:
                    ppid = int(handle.read().rpartition(")")[2].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(entry))
        tree, todo = [], [self.root]
        while todo:
            pid = todo.pop()
            tree.append(pid)
            todo.extend(children.get(pid, ()))
        return tree

    def sample(self):
        total = 0
        for pid in self._tree():
            values = self._status(pid)
            if values is None:
                continue
            total += values.get("VmRSS", 0)
            peak = self.peaks.setdefault(pid, {"name": values.get("Name"), "hwm_kb": 0})
            peak["hwm_kb"] = max(peak["hwm_kb"], values["VmHWM"])
        self.max_total_rss_kb = max(self.max_total_rss_kb, total)

    def run(self):
        while not self.stop.is_set():
            self.sample()
            self.stop.wait(self.interval)

    def result(self):
        by_name = {}
        for pid, peak in self.peaks.items():
            name = "root" if pid == self.root else peak["name"]
            by_name[name] = max(by_name.get(name, 0), peak["hwm_kb"])
        return {"hwm_kb": by_name, "max_total_rss_kb": self.max_total_rss_kb}


_SETTLE = {"checkpoint": True}


def settle():
    """Before each measured step: dirty pages written out (sync) and a CHECKPOINT, so that no step pays for
    the writeback or the checkpoint of the step before it (a restore leaves about 2 GB of WAL behind)."""
    os.sync()
    if _SETTLE["checkpoint"]:
        try:
            conn = connect()
            try:
                with conn.cursor() as cr:
                    cr.execute("CHECKPOINT")
            finally:
                conn.close()
        except Exception as exc:  # not a superuser: sync only, said once
            _SETTLE["checkpoint"] = False
            log("no CHECKPOINT before the steps (%s); sync only" % str(exc).strip().splitlines()[0])


def timed(cmd, cwd=None, env=None, ok_codes=(0,)):
    """Run ``cmd``; wall seconds, CPU and memory of its process tree, stdout text.

    os.wait4 gives the rusage of the child including its reaped descendants:
    user/sys add up the whole tree (e.g. the engine plus its pg_dump). Its
    ru_maxrss is not used for memory: on Linux a child inherits its parent's
    high-water mark at fork, so it is never below this script's own RSS;
    TreeSampler's per-process VmHWM is reported instead.
    """
    hz = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    settle()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        ticks0 = cpu_ticks()
        started = time.monotonic()
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=err)
        sampler = None
        if os.path.isdir("/proc/%d" % proc.pid):
            sampler = TreeSampler(proc.pid)
            sampler.start()
        _pid, status, usage = os.wait4(proc.pid, 0)
        seconds = time.monotonic() - started
        ticks1 = cpu_ticks()
        if sampler is not None:
            sampler.stop.set()
            sampler.join()
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout = out.read().decode("utf-8", "replace")
        stderr = err.read().decode("utf-8", "replace")
    if proc.returncode not in ok_codes:
        raise SystemExit(
            "command failed (exit %d): %s\n%s\n%s" % (proc.returncode, " ".join(cmd), stdout[-2000:], stderr[-4000:])
        )
    result = {
        "seconds": round(seconds, 3),
        "user_s": round(usage.ru_utime, 3),
        "sys_s": round(usage.ru_stime, 3),
        "wait4_maxrss_kb": usage.ru_maxrss,
    }
    if sampler is not None:
        result.update(sampler.result())
    if ticks0 and ticks1:
        result["machine_busy_cpu_s"] = round((ticks1[0] - ticks0[0]) / hz, 2)
        result["machine_iowait_s"] = round((ticks1[1] - ticks0[1]) / hz, 2)
    return result, stdout


def engine_cmd(*args):
    return [sys.executable, "-m", "engine", "--json", *args]


def engine_json(stdout):
    """The engine's --json output (exit 1 means done with warnings; those are kept in the result)."""
    try:
        data = json.loads(stdout)
    except ValueError as exc:
        raise SystemExit("the engine did not print JSON: %s\n%s" % (exc, stdout[-2000:])) from exc
    if isinstance(data, dict) and data.get("ok") is False:
        raise SystemExit("the engine failed: %s" % data.get("error"))
    return data


# ----------------------------------------------------------------------------- dataset


def scale_tag(scale):
    return ("%g" % scale).replace(".", "_")


def dataset_params(scale):
    return {
        "scale": scale,
        "messages": max(1, round(MESSAGES * scale)),
        "partners": max(1, round(PARTNERS * scale)),
        "files": max(1, round(FILES * scale)),
        "file_size": FILE_SIZE,
        "body_repeat": BODY_REPEAT,
    }


class Dataset:
    def __init__(self, workdir, scale):
        self.params = dataset_params(scale)
        tag = scale_tag(scale)
        self.db = "spp_bench_s%s" % tag
        self.data_dir = os.path.join(workdir, "data_s%s" % tag)
        self.filestore = os.path.join(self.data_dir, "filestore", self.db)
        self.stamp = os.path.join(self.data_dir, "dataset.json")

    def present(self):
        """True when the database and filestore exist with the expected rows and files."""
        try:
            with open(self.stamp, encoding="utf-8") as handle:
                stamp = json.load(handle)
        except (OSError, ValueError):
            return False
        if stamp.get("params") != self.params or not database_exists(self.db):
            return False
        rows = query("SELECT count(*) FROM mail_message", dbname=self.db)[0][0]
        return rows == self.params["messages"] and count_files(self.filestore) == self.params["files"]

    def ensure(self, rebuild=False):
        """Build the dataset unless an identical one is there; returns facts about it."""
        facts = {"db": self.db, "params": self.params, "reused": True}
        if rebuild or not self.present():
            facts["reused"] = False
            facts.update(self.build())
        else:
            with open(self.stamp, encoding="utf-8") as handle:
                facts["built"] = json.load(handle).get("built")
        facts["db_size_bytes"] = query("SELECT pg_database_size(%s)", (self.db,))[0][0]
        facts["filestore_files"] = count_files(self.filestore)
        facts["filestore_bytes"] = tree_bytes(self.filestore)
        return facts

    def build(self):
        sys.path.insert(0, os.path.join(REPO, "dev"))
        import sampledb

        p = self.params
        log(
            "building dataset %s: %d messages, %d partners, %d files of %d bytes"
            % (self.db, p["messages"], p["partners"], p["files"], p["file_size"])
        )
        shutil.rmtree(self.data_dir, ignore_errors=True)
        os.makedirs(self.data_dir)
        t0 = time.monotonic()
        sampledb.build(
            conn_kwargs(),
            self.db,
            self.data_dir,
            partners=p["partners"],
            messages=p["messages"],
            files=p["files"],
            file_size=p["file_size"],
            body_repeat=p["body_repeat"],
        )
        t1 = time.monotonic()
        # Freeze and set hint bits now, so the first measured read does not write pages.
        query("VACUUM (FREEZE, ANALYZE)", dbname=self.db)
        query("CHECKPOINT")
        t2 = time.monotonic()
        built = {
            "at": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "sampledb_seconds": round(t1 - t0, 1),
            "vacuum_seconds": round(t2 - t1, 1),
            "seconds": round(t2 - t0, 1),
        }
        with open(self.stamp, "w", encoding="utf-8") as handle:
            json.dump({"params": p, "built": built}, handle, indent=2)
        log(
            "dataset built in %.0f s (sampledb %.0f s, vacuum %.0f s)"
            % (built["seconds"], built["sampledb_seconds"], built["vacuum_seconds"])
        )
        return {"built": built}

    def drop(self):
        drop_database(self.db)
        shutil.rmtree(self.data_dir, ignore_errors=True)


def warm_up(ds, rundir, env):
    """One unmeasured pg_dump and one read of every filestore file; the engine's bytecode compiled."""
    log("warming the cache (unmeasured pg_dump, filestore read, engine bytecode)")
    # As an installed package's is: each engine process then starts in 0.03 s of imports instead of 0.25 s
    # of compiling its modules again, which it would do every time under PYTHONDONTWRITEBYTECODE.
    subprocess.run([sys.executable, "-m", "compileall", "-q", os.path.join(REPO, "engine")], check=True)
    path = os.path.join(rundir, "warmup.dump")
    timed(["pg_dump", "-Fc", "-f", path, ds.db], env=env)
    os.unlink(path)
    for dirpath, _dirs, files in os.walk(ds.filestore):
        for name in files:
            with open(os.path.join(dirpath, name), "rb") as handle:
                while handle.read(1 << 20):
                    pass


# ----------------------------------------------------------------------------- measurements


def engine_backup(ds, dest, env, extra=(), fresh=True):
    """The engine's backup of ``ds`` into ``dest`` (a folder, emptied first unless not ``fresh``, or an s3:// URL)."""
    if "://" not in dest and fresh:
        shutil.rmtree(dest, ignore_errors=True)
        os.makedirs(dest)
    run, stdout = timed(
        engine_cmd("backup", "-d", ds.db, "--dest", dest, "--data-dir", ds.data_dir, *extra),
        cwd=REPO,
        env=env,
        ok_codes=(0, 1),
    )
    data = engine_json(stdout)
    run["engine_peak_rss_kb"] = data.get("peak_rss_kb")
    run["engine_duration"] = data.get("duration")
    run["backup_id"] = data.get("backup_id")
    run["artifacts"] = {
        name: dict(
            {k: art.get(k) for k in ("file", "size", "raw_size", "seconds")}, encrypted=bool(art.get("encryption"))
        )
        for name, art in data["artifacts"].items()
    }
    run["stored_bytes"] = sum(art["size"] or 0 for art in run["artifacts"].values())
    run["copies"] = [{k: c.get(k) for k in ("location", "ok", "error")} for c in data.get("copies") or []]
    run["warnings"] = data.get("warnings")
    return run


def engine_restore(ds, dest, target, data_dir, env, extra=()):
    drop_database(target)
    shutil.rmtree(data_dir, ignore_errors=True)
    source = os.path.join(dest, ds.db, "latest")
    run, stdout = timed(
        engine_cmd("restore", source, "--target", target, "--data-dir", data_dir, *extra),
        cwd=REPO,
        env=env,
        ok_codes=(0, 1),
    )
    data = engine_json(stdout)
    run["engine_peak_rss_kb"] = data.get("peak_rss_kb")
    run["engine_duration"] = data.get("duration")
    run["phases"] = data.get("seconds")
    run["filestore_files"] = data.get("filestore_files")
    run["signature"] = data.get("signature")
    return run


def engine_drill(ds, dest, data_dir, env, keys):
    """A drill of the newest backup in ``dest``; a failed drill is reported, not fatal."""
    shutil.rmtree(data_dir, ignore_errors=True)
    source = os.path.join(dest, ds.db, "latest")
    run, stdout = timed(
        engine_cmd(
            "drill", source, "--data-dir", data_dir, "--identity", keys["identity"], "--verify-key", keys["verify_key"]
        ),
        cwd=REPO,
        env=env,
        ok_codes=(0, 2),
    )
    try:
        data = json.loads(stdout)
    except ValueError as exc:
        raise SystemExit("the engine's drill did not print JSON: %s\n%s" % (exc, stdout[-2000:])) from exc
    if "checks" not in data:  # an error before the drill started (bad arguments, unreadable backup)
        raise SystemExit("the drill failed: %s" % data.get("error"))
    run["engine_peak_rss_kb"] = data.get("peak_rss_kb")
    run["drill_ok"] = data.get("ok")
    run["total_seconds"] = data.get("total_seconds")
    run["restore_seconds"] = data.get("restore_seconds")
    run["checks"] = data.get("checks")
    run["cleaned_up"] = data.get("cleaned_up")
    run["scratch_db"] = data.get("scratch_db")
    run["error"] = data.get("error")
    return run


def make_keys(keydir, env):
    """A fresh age identity and Ed25519 signing key, made by the engine's own ``keys`` command."""
    shutil.rmtree(keydir, ignore_errors=True)
    os.makedirs(keydir)
    keys = {}
    for kind, name, private, public in (
        ("age", "age_identity.txt", "identity", "recipient"),
        ("signing", "signing_key.pem", "sign_key", "verify_key"),
    ):
        path = os.path.join(keydir, name)
        proc = subprocess.run(
            engine_cmd("keys", kind, "--out", path), cwd=REPO, env=env, capture_output=True, text=True
        )
        if proc.returncode != 0:
            raise SystemExit("python -m engine keys %s failed: %s%s" % (kind, proc.stdout[-1000:], proc.stderr[-2000:]))
        keys[private] = path
        keys[public] = engine_json(proc.stdout)["public_key"]
    return keys


def secure_backup_args(keys):
    return ("--encrypt-to", keys["recipient"], "--sign-key", keys["sign_key"])


def secure_restore_args(keys):
    return ("--identity", keys["identity"], "--verify-key", keys["verify_key"])


def proc_status(pid, keys=("VmHWM", "VmRSS")):
    values = {}
    try:
        with open("/proc/%d/status" % pid, encoding="ascii", errors="replace") as handle:
            for line in handle:
                key, _, rest = line.partition(":")
                if key in keys:
                    values[key] = int(rest.split()[0])
    except (OSError, ValueError, IndexError):
        pass
    return values


def proc_cpu_seconds(pid):
    """user + system CPU seconds of one process so far (None when it is gone)."""
    try:
        with open("/proc/%d/stat" % pid, encoding="ascii", errors="replace") as handle:
            fields = handle.read().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


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


def s3_backup(ds, rundir, env, keys):
    """(g): a fresh moto server, a bucket, the encrypted + signed backup to it; the server is stopped after."""
    server = MotoServer(rundir)
    result = {}
    try:
        result["server_start_seconds"] = server.start(env)
        client = server.client()
        client.create_bucket(Bucket=S3_BUCKET)
        cpu0 = proc_cpu_seconds(server.process.pid)
        result.update(
            engine_backup(ds, "s3://%s/%s" % (S3_BUCKET, S3_PREFIX), server.env(env), extra=secure_backup_args(keys))
        )
        cpu1 = proc_cpu_seconds(server.process.pid)
        result["server_cpu_s"] = round(cpu1 - cpu0, 2) if cpu0 is not None and cpu1 is not None else None
        result["server_memory_kb"] = server.memory()
        stored, objects = 0, 0
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=S3_BUCKET, Prefix=S3_PREFIX + "/"):
            for obj in page.get("Contents", []):
                stored += obj["Size"]
                objects += 1
        result["bucket_bytes"], result["bucket_objects"] = stored, objects
    finally:
        server.stop()
    return result


def check_restored(ds, target, filestore=None):
    rows = query("SELECT count(*) FROM mail_message", dbname=target)[0][0]
    ok = rows == ds.params["messages"]
    problems = [] if ok else ["%s has %d mail_message rows, expected %d" % (target, rows, ds.params["messages"])]
    if filestore is not None:
        files = count_files(filestore)
        if files != ds.params["files"]:
            problems.append("%s holds %d files, expected %d" % (filestore, files, ds.params["files"]))
    return problems


def one_round(ds, rundir, env, keep, opts=None, keys=None, index=0):
    """(a)-(d), the steps of ``opts`` ((e)-(h)) and the tar references, once; returns the measurements.

    Restored filestores go to folders of their own round (``restored/<index>``), removed with the run folder
    at the end, not before the next step: on an ext4 without a journal (as on the 2-core machine the README's
    numbers come from) a file created within a minute of thousands deleted in the same block group costs
    about 0.8 ms of kernel time instead of 30 us (ext4 skips recently deleted inodes one by one), so that
    removing one step's 4,000 files just before the next step's restore put about 3 CPU seconds of the
    benchmark's own clean-up into the measured restore.
    """
    opts = opts or set()
    r = {}
    dump = os.path.join(rundir, "pg_dump.dump")
    dest = os.path.join(rundir, "backups")
    dest_secure = os.path.join(rundir, "backups_secure")
    restored_pg, restored_engine, restored_secure = ds.db + "_pgr", ds.db + "_engr", ds.db + "_secr"
    outputs = os.path.join(rundir, "restored", str(index))
    restore_data = os.path.join(outputs, "restore_data")
    secure_data = os.path.join(outputs, "restore_data_secure")
    drill_data = os.path.join(outputs, "drill_data")
    problems = []

    def done_with(name):
        # A restored database is dropped once checked (with --keep, at the end): autovacuum would otherwise
        # read and rewrite its 1 GB during the next measured step.
        if not keep:
            drop_database(name)

    log("(a) pg_dump -Fc")
    r["pg_dump"], _ = timed(["pg_dump", "-Fc", "-f", dump, ds.db], env=env)
    r["pg_dump"]["size"] = os.path.getsize(dump)

    log("(b) engine backup")
    r["engine_backup"] = engine_backup(ds, dest, env, extra=("--sign-key", keys["sign_key"]))

    if "secure" in opts:
        log("(e) engine backup, encrypted + signed, local")
        r["secure_backup"] = engine_backup(ds, dest_secure, env, extra=secure_backup_args(keys))
        problems += check_secure_backup(r["secure_backup"], "(e)")

    if "s3" in opts:
        log("(g) engine backup, encrypted + signed, to S3 (moto on loopback)")
        r["s3_backup"] = s3_backup(ds, rundir, env, keys)
        problems += check_secure_backup(r["s3_backup"], "(g)")
        if r["s3_backup"]["bucket_bytes"] < r["s3_backup"]["stored_bytes"]:
            problems.append(
                "(g) the bucket holds %d bytes, less than the %d bytes of artifacts"
                % (r["s3_backup"]["bucket_bytes"], r["s3_backup"]["stored_bytes"])
            )

    log("(c) createdb + pg_restore")
    drop_database(restored_pg)
    r["createdb"], _ = timed(["createdb", "-T", "template0", restored_pg], env=env)
    r["pg_restore"], _ = timed(["pg_restore", "-d", restored_pg, dump], env=env)
    problems += check_restored(ds, restored_pg)
    done_with(restored_pg)

    log("(d) engine restore")
    r["engine_restore"] = engine_restore(
        ds, dest, restored_engine, restore_data, env, extra=("--verify-key", keys["verify_key"])
    )
    problems += check_restored(ds, restored_engine, os.path.join(restore_data, "filestore", restored_engine))
    done_with(restored_engine)

    if "secure" in opts:
        log("(f) engine restore of the encrypted + signed backup")
        r["secure_restore"] = engine_restore(
            ds, dest_secure, restored_secure, secure_data, env, extra=secure_restore_args(keys)
        )
        problems += check_restored(ds, restored_secure, os.path.join(secure_data, "filestore", restored_secure))
        if not (r["secure_restore"].get("signature") or "").startswith("valid"):
            problems.append("(f) signature: %s" % r["secure_restore"].get("signature"))
        done_with(restored_secure)

    for jobs in (opts_jobs := sorted(j for j in opts if isinstance(j, int))):
        # (i) the restore of (e) (of (b) without --secure) with pg_restore --jobs N from a local copy of the dump.
        label, source, extra = (
            ("(f)", dest_secure, secure_restore_args(keys))
            if "secure" in opts
            else ("(d)", dest, ["--verify-key", keys["verify_key"]])
        )
        log("(i) %s with --jobs %d" % (label, jobs))
        target, data_dir = ds.db + "_j%d" % jobs, os.path.join(outputs, "restore_data_j%d" % jobs)
        r["restore_jobs_%d" % jobs] = engine_restore(
            ds, source, target, data_dir, env, extra=[*extra, "--jobs", str(jobs)]
        )
        problems += check_restored(ds, target, os.path.join(data_dir, "filestore", target))
        drop_database(target)
    if opts_jobs:
        # (j) the database alone: what the engine adds to pg_restore's own work, without the filestore beside it.
        log("(j) engine restore of the database alone (--no-filestore)")
        label, source, extra = (
            ("(f)", dest_secure, secure_restore_args(keys))
            if "secure" in opts
            else ("(d)", dest, ["--verify-key", keys["verify_key"]])
        )
        target = ds.db + "_dbonly"
        r["restore_db_only"] = engine_restore(
            ds, source, target, os.path.join(outputs, "db_only"), env, extra=[*extra, "--no-filestore"]
        )
        problems += check_restored(ds, target)
        drop_database(target)

    if "drill" in opts:
        log("(h) engine drill of the encrypted + signed backup")
        r["drill"] = engine_drill(ds, dest_secure, drill_data, env, keys)
        if not r["drill"]["drill_ok"]:
            failed = ["%s: %s" % (c["name"], c["detail"]) for c in r["drill"]["checks"] if not c["ok"]]
            problems.append("(h) the drill FAILED: %s" % "; ".join(failed + [r["drill"].get("error") or ""]).strip())
        if not r["drill"]["cleaned_up"]:
            problems.append("(h) the drill left %s behind; dropped by the benchmark" % r["drill"]["scratch_db"])
            drop_database(r["drill"]["scratch_db"])

    log("reference: tar -cf / tar -xf of the filestore")
    tarball = os.path.join(rundir, "filestore.tar")
    r["tar_create"], _ = timed(["tar", "-C", ds.filestore, "-cf", tarball, "."], env=env)
    r["tar_create"]["size"] = os.path.getsize(tarball)
    untar = os.path.join(outputs, "untar")
    shutil.rmtree(untar, ignore_errors=True)
    os.makedirs(untar)
    r["tar_extract"], _ = timed(["tar", "-C", untar, "-xf", tarball], env=env)

    if not keep:
        for name in (restored_pg, restored_engine, restored_secure):
            drop_database(name)
        for path in (tarball, dump):
            if os.path.isdir(path):
                shutil.rmtree(path, ignore_errors=True)
            elif os.path.exists(path):
                os.unlink(path)
    r["problems"] = problems
    return r


def check_secure_backup(run, label):
    """Every artifact of an encrypted backup is encrypted, and every copy was stored."""
    problems = []
    plain = [name for name, art in run["artifacts"].items() if not art.get("encrypted")]
    if plain:
        problems.append("%s not encrypted: %s" % (label, ", ".join(plain)))
    failed = [c["location"] for c in run.get("copies") or [] if not c.get("ok")]
    if failed:
        problems.append("%s copies failed: %s" % (label, ", ".join(failed)))
    return problems


def peak_mb(rounds, key, name="root", total=False):
    """Largest sampled VmHWM of one process of a step (or the largest RSS sum of its tree), MB."""
    values = [r[key].get("max_total_rss_kb") if total else r[key].get("hwm_kb", {}).get(name) for r in rounds]
    values = [v for v in values if v]
    return round(max(values) / 1024, 1) if values else None


def paired(rounds, ratio):
    return round(statistics.median(ratio(r) for r in rounds), 3)


def busy(rounds, key):
    """Median share of all the machine's cores that were busy during a step (any process)."""
    cpus = os.cpu_count() or 1
    values = [
        r[key]["machine_busy_cpu_s"] / (r[key]["seconds"] * cpus) for r in rounds if "machine_busy_cpu_s" in r[key]
    ]
    return "%3.0f%%" % (100 * statistics.median(values)) if values else "-"


def phase_medians(rounds):
    """Median seconds of each phase the engine's restore reports (verify, database, filestore...)."""
    keys = []
    for r in rounds:
        keys += [k for k in r["engine_restore"].get("phases") or {} if k not in keys]
    order = {"verify": 0, "database": 1, "filestore": 2}
    keys.sort(key=lambda k: order.get(k, 3))
    result = {}
    for key in keys:
        values = [
            r["engine_restore"]["phases"][key] for r in rounds if key in (r["engine_restore"].get("phases") or {})
        ]
        result[key] = statistics.median(values)
    return result


def summarize(rounds):
    """Median seconds over the rounds, ratios, RSS and sizes."""

    def med(key, sub="seconds"):
        return round(statistics.median(r[key][sub] for r in rounds), 3)

    last = rounds[-1]
    pg_dump_s = med("pg_dump")
    backup_s = med("engine_backup")
    pg_restore_s = round(statistics.median(r["createdb"]["seconds"] + r["pg_restore"]["seconds"] for r in rounds), 3)
    restore_s = med("engine_restore")
    tar_c, tar_x = med("tar_create"), med("tar_extract")
    backup_rss = max(r["engine_backup"]["engine_peak_rss_kb"] or 0 for r in rounds)
    restore_rss = max(r["engine_restore"]["engine_peak_rss_kb"] or 0 for r in rounds)
    arts = last["engine_backup"]["artifacts"]
    dump_size = last["pg_dump"]["size"]
    total = sum(a["size"] for a in arts.values())
    db_art = arts.get("database", {})
    s = {
        "seconds": {
            "pg_dump": pg_dump_s,
            "engine_backup": backup_s,
            "createdb_pg_restore": pg_restore_s,
            "pg_restore_only": med("pg_restore"),
            "engine_restore": restore_s,
            "tar_create": tar_c,
            "tar_extract": tar_x,
        },
        "ratios": {
            # Each round's engine step against the baseline measured just before it, then the median:
            # robust to load that drifts over the run. The ratio of the medians is kept for reference.
            "backup_vs_pg_dump": paired(rounds, lambda r: r["engine_backup"]["seconds"] / r["pg_dump"]["seconds"]),
            "restore_vs_pg_restore": paired(
                rounds,
                lambda r: r["engine_restore"]["seconds"] / (r["createdb"]["seconds"] + r["pg_restore"]["seconds"]),
            ),
            "backup_vs_pg_dump_of_medians": round(backup_s / pg_dump_s, 3),
            "restore_vs_pg_restore_of_medians": round(restore_s / pg_restore_s, 3),
            "backup_vs_pg_dump_plus_tar": round(backup_s / (pg_dump_s + tar_c), 3),
            "restore_vs_pg_restore_plus_untar": round(restore_s / (pg_restore_s + tar_x), 3),
        },
        "peak_rss_mb": {
            "engine_backup": round(backup_rss / 1024, 1),
            "engine_restore": round(restore_rss / 1024, 1),
            "engine_backup_vmhwm": peak_mb(rounds, "engine_backup"),
            "engine_restore_vmhwm": peak_mb(rounds, "engine_restore"),
            "backup_child_pg_dump": peak_mb(rounds, "engine_backup", "pg_dump"),
            "restore_child_pg_restore": peak_mb(rounds, "engine_restore", "pg_restore"),
            "backup_tree_total": peak_mb(rounds, "engine_backup", total=True),
            "restore_tree_total": peak_mb(rounds, "engine_restore", total=True),
            "pg_dump": peak_mb(rounds, "pg_dump"),
            "pg_restore": peak_mb(rounds, "pg_restore"),
        },
        "sizes": {
            "pg_dump_fc": dump_size,
            "engine_database": db_art.get("size"),
            "engine_database_raw": db_art.get("raw_size"),
            "engine_filestore": arts.get("filestore", {}).get("size"),
            "engine_filestore_raw": arts.get("filestore", {}).get("raw_size"),
            "engine_total": total,
            "database_vs_pg_dump": round(db_art.get("size", 0) / dump_size, 3) if dump_size else None,
            "total_vs_pg_dump": round(total / dump_size, 3) if dump_size else None,
        },
        "phases": {
            "backup_database": statistics.median(
                r["engine_backup"]["artifacts"]["database"]["seconds"] for r in rounds
            ),
            "backup_filestore": statistics.median(
                r["engine_backup"]["artifacts"]["filestore"]["seconds"] for r in rounds
            ),
            "restore": phase_medians(rounds),
        },
    }
    s["per_round"] = {
        "backup": [round(r["engine_backup"]["seconds"] / r["pg_dump"]["seconds"], 3) for r in rounds],
        "restore": [
            round(r["engine_restore"]["seconds"] / (r["createdb"]["seconds"] + r["pg_restore"]["seconds"]), 3)
            for r in rounds
        ],
    }
    s["targets"] = {
        "backup_ratio": {"value": s["ratios"]["backup_vs_pg_dump"], "target": TARGETS["backup_ratio"]},
        "restore_ratio": {"value": s["ratios"]["restore_vs_pg_restore"], "target": TARGETS["restore_ratio"]},
        "peak_rss_mb": {
            "value": max(s["peak_rss_mb"]["engine_backup"], s["peak_rss_mb"]["engine_restore"]),
            "target": TARGETS["peak_rss_mb"],
        },
    }
    summarize_options(rounds, s)
    for t in s["targets"].values():
        t["met"] = t["value"] is not None and t["value"] <= t["target"]
    return s


def mb_per_s(nbytes, seconds):
    return round(nbytes / MB / seconds, 1) if nbytes and seconds else None


def summarize_options(rounds, s):
    """The figures of (e)-(h) when they ran: seconds, ratios, encryption cost, RSS, drill times."""
    first = rounds[0]

    def med(values):
        values = [v for v in values if v is not None]
        return round(statistics.median(values), 3) if values else None

    def rss_mb(key):
        return round(max(r[key]["engine_peak_rss_kb"] or 0 for r in rounds) / 1024, 1)

    def pg_restore_s(r):
        return r["createdb"]["seconds"] + r["pg_restore"]["seconds"]

    def cpu(r, key):
        return r[key]["user_s"] + r[key]["sys_s"]

    if "secure_backup" in first:
        art_names = [n for n in ("database", "filestore") if n in first["secure_backup"]["artifacts"]]
        sec = {
            "seconds": {
                "secure_backup": med(r["secure_backup"]["seconds"] for r in rounds),
                "plain_backup": s["seconds"]["engine_backup"],
            },
            "ratios": {
                "secure_backup_vs_pg_dump": paired(
                    rounds, lambda r: r["secure_backup"]["seconds"] / r["pg_dump"]["seconds"]
                ),
            },
            "per_round": {
                "secure_backup_vs_pg_dump": [
                    round(r["secure_backup"]["seconds"] / r["pg_dump"]["seconds"], 3) for r in rounds
                ],
            },
            # The cost of encryption: the same backup with and without age + signature, same round.
            "encryption_cost": {
                "secure_vs_plain_backup": paired(
                    rounds, lambda r: r["secure_backup"]["seconds"] / r["engine_backup"]["seconds"]
                ),
                "per_round_secure_vs_plain": [
                    round(r["secure_backup"]["seconds"] / r["engine_backup"]["seconds"], 3) for r in rounds
                ],
                "extra_seconds": med(r["secure_backup"]["seconds"] - r["engine_backup"]["seconds"] for r in rounds),
                "extra_cpu_s": med(cpu(r, "secure_backup") - cpu(r, "engine_backup") for r in rounds),
                "plain_cpu_s": med(cpu(r, "engine_backup") for r in rounds),
                "secure_cpu_s": med(cpu(r, "secure_backup") for r in rounds),
                "plain_stored_mb_per_s": med(
                    mb_per_s(r["engine_backup"]["stored_bytes"], r["engine_backup"]["seconds"]) for r in rounds
                ),
                "secure_stored_mb_per_s": med(
                    mb_per_s(r["secure_backup"]["stored_bytes"], r["secure_backup"]["seconds"]) for r in rounds
                ),
                "artifacts": {
                    name: {
                        "plain_seconds": med(r["engine_backup"]["artifacts"][name]["seconds"] for r in rounds),
                        "secure_seconds": med(r["secure_backup"]["artifacts"][name]["seconds"] for r in rounds),
                        "plain_stored_mb_per_s": med(
                            mb_per_s(
                                r["engine_backup"]["artifacts"][name]["size"],
                                r["engine_backup"]["artifacts"][name]["seconds"],
                            )
                            for r in rounds
                        ),
                        "secure_stored_mb_per_s": med(
                            mb_per_s(
                                r["secure_backup"]["artifacts"][name]["size"],
                                r["secure_backup"]["artifacts"][name]["seconds"],
                            )
                            for r in rounds
                        ),
                    }
                    for name in art_names
                },
                "stored_bytes_plain": rounds[-1]["engine_backup"]["stored_bytes"],
                "stored_bytes_secure": rounds[-1]["secure_backup"]["stored_bytes"],
            },
            "peak_rss_mb": {
                "secure_backup": rss_mb("secure_backup"),
                "secure_backup_vmhwm": peak_mb(rounds, "secure_backup"),
                "secure_backup_tree_total": peak_mb(rounds, "secure_backup", total=True),
            },
        }
        if "secure_restore" in first:
            sec["seconds"]["secure_restore"] = med(r["secure_restore"]["seconds"] for r in rounds)
            sec["seconds"]["plain_restore"] = s["seconds"]["engine_restore"]
            sec["ratios"]["secure_restore_vs_pg_restore"] = paired(
                rounds, lambda r: r["secure_restore"]["seconds"] / pg_restore_s(r)
            )
            sec["per_round"]["secure_restore_vs_pg_restore"] = [
                round(r["secure_restore"]["seconds"] / pg_restore_s(r), 3) for r in rounds
            ]
            sec["encryption_cost"]["secure_vs_plain_restore"] = paired(
                rounds, lambda r: r["secure_restore"]["seconds"] / r["engine_restore"]["seconds"]
            )
            sec["encryption_cost"]["restore_extra_seconds"] = med(
                r["secure_restore"]["seconds"] - r["engine_restore"]["seconds"] for r in rounds
            )
            phases = {}
            for r in rounds:
                for key, value in (r["secure_restore"].get("phases") or {}).items():
                    phases.setdefault(key, []).append(value)
            sec["restore_phases"] = {k: med(v) for k, v in phases.items()}
            sec["signature"] = sorted({r["secure_restore"].get("signature") for r in rounds})
            sec["peak_rss_mb"]["secure_restore"] = rss_mb("secure_restore")
            sec["peak_rss_mb"]["secure_restore_vmhwm"] = peak_mb(rounds, "secure_restore")
            sec["peak_rss_mb"]["secure_restore_tree_total"] = peak_mb(rounds, "secure_restore", total=True)
        s["secure"] = sec
        s["targets"]["secure_backup_ratio"] = {
            "value": sec["ratios"]["secure_backup_vs_pg_dump"],
            "target": TARGETS["secure_backup_ratio"],
        }
        if "secure_restore" in first:
            s["targets"]["secure_restore_ratio"] = {
                "value": sec["ratios"]["secure_restore_vs_pg_restore"],
                "target": TARGETS["secure_restore_ratio"],
            }

    if "s3_backup" in first:
        s3 = {
            "seconds": med(r["s3_backup"]["seconds"] for r in rounds),
            "ratio_vs_pg_dump": paired(rounds, lambda r: r["s3_backup"]["seconds"] / r["pg_dump"]["seconds"]),
            "per_round_vs_pg_dump": [round(r["s3_backup"]["seconds"] / r["pg_dump"]["seconds"], 3) for r in rounds],
            "artifact_seconds": {
                name: med(r["s3_backup"]["artifacts"][name]["seconds"] for r in rounds)
                for name in ("database", "filestore")
                if name in first["s3_backup"]["artifacts"]
            },
            "stored_mb_per_s": med(mb_per_s(r["s3_backup"]["stored_bytes"], r["s3_backup"]["seconds"]) for r in rounds),
            "peak_rss_mb": {
                "engine": rss_mb("s3_backup"),
                "engine_vmhwm": peak_mb(rounds, "s3_backup"),
                "engine_child_pg_dump": peak_mb(rounds, "s3_backup", "pg_dump"),
                "engine_tree_total": peak_mb(rounds, "s3_backup", total=True),
            },
            "server": {
                "vmhwm_mb": round(max(r["s3_backup"]["server_memory_kb"]["hwm_kb"] or 0 for r in rounds) / 1024, 1),
                "rss_after_mb": round(max(r["s3_backup"]["server_memory_kb"]["rss_kb"] or 0 for r in rounds) / 1024, 1),
                "cpu_s": med(r["s3_backup"].get("server_cpu_s") for r in rounds),
                "start_seconds": med(r["s3_backup"]["server_start_seconds"] for r in rounds),
                "bucket_bytes": rounds[-1]["s3_backup"]["bucket_bytes"],
                "bucket_objects": rounds[-1]["s3_backup"]["bucket_objects"],
            },
        }
        if "secure_backup" in first:
            s3["ratio_vs_local_secure"] = paired(
                rounds, lambda r: r["s3_backup"]["seconds"] / r["secure_backup"]["seconds"]
            )
        s["s3"] = s3
        s["targets"]["s3_peak_rss_mb"] = {"value": s3["peak_rss_mb"]["engine"], "target": TARGETS["s3_peak_rss_mb"]}

    if "drill" in first:
        s["drill"] = {
            "wall_seconds": med(r["drill"]["seconds"] for r in rounds),
            "total_seconds": med(r["drill"]["total_seconds"] for r in rounds),
            "restore_seconds": med(r["drill"]["restore_seconds"] for r in rounds),
            "checks_seconds": med(
                r["drill"]["total_seconds"] - r["drill"]["restore_seconds"]
                for r in rounds
                if r["drill"]["restore_seconds"] is not None
            ),
            "per_round_total": [r["drill"]["total_seconds"] for r in rounds],
            "per_round_restore": [r["drill"]["restore_seconds"] for r in rounds],
            "restore_vs_pg_restore": paired(
                [r for r in rounds if r["drill"]["restore_seconds"] is not None],
                lambda r: r["drill"]["restore_seconds"] / pg_restore_s(r),
            )
            if any(r["drill"]["restore_seconds"] is not None for r in rounds)
            else None,
            "passed": [bool(r["drill"]["drill_ok"]) for r in rounds],
            "checks": [
                "%s %s: %s" % (c["name"], "ok" if c["ok"] else "FAIL", c["detail"])
                for c in rounds[-1]["drill"]["checks"]
            ],
            "peak_rss_mb": rss_mb("drill"),
            "vmhwm_mb": peak_mb(rounds, "drill"),
        }


# ----------------------------------------------------------------------------- output


def mib(value):
    return "%.1f MiB" % (value / MB) if value is not None else "-"


def print_table(ds_facts, s, rounds):
    sec, rat, rss, size, ph = s["seconds"], s["ratios"], s["peak_rss_mb"], s["sizes"], s["phases"]
    cpu = lambda key: statistics.median(r[key]["user_s"] + r[key]["sys_s"] for r in rounds)  # noqa: E731
    p = ds_facts["params"]
    verdict = lambda name: "met" if s["targets"][name]["met"] else "MISSED"  # noqa: E731
    lines = [
        "",
        "dataset %s (scale %g): database %s (%d messages), filestore %d files / %s%s"
        % (
            ds_facts["db"],
            p["scale"],
            mib(ds_facts["db_size_bytes"]),
            p["messages"],
            ds_facts["filestore_files"],
            mib(ds_facts["filestore_bytes"]),
            ", reused" if ds_facts["reused"] else ", built in %.0f s" % ds_facts["built"]["seconds"],
        ),
        "warm cache (one unmeasured pg_dump and filestore read first); %d round(s), medians shown; "
        "ratios: median of each round's ratio" % len(rounds),
        "",
        "%-46s %9s %10s %9s" % ("step", "seconds", "cpu s*", "machine**"),
        "%-46s %9.2f %10.2f %9s" % ("(a) pg_dump -Fc", sec["pg_dump"], cpu("pg_dump"), busy(rounds, "pg_dump")),
        "%-46s %9.2f %10.2f %9s"
        % (
            "(b) engine backup (db + filestore + manifest)",
            sec["engine_backup"],
            cpu("engine_backup"),
            busy(rounds, "engine_backup"),
        ),
        "%-46s %9.2f" % ("      database artifact", ph["backup_database"]),
        "%-46s %9.2f" % ("      filestore artifact", ph["backup_filestore"]),
        "%-46s %9.2f %10.2f %9s"
        % ("(c) createdb + pg_restore", sec["createdb_pg_restore"], cpu("pg_restore"), busy(rounds, "pg_restore")),
        "%-46s %9.2f %10.2f %9s"
        % (
            "(d) engine restore (verify + db + filestore)",
            sec["engine_restore"],
            cpu("engine_restore"),
            busy(rounds, "engine_restore"),
        ),
    ]
    for key, value in ph["restore"].items():
        lines.append("%-46s %9.2f" % ("      %s" % key, value))
    lines += [
        "%-46s %9.2f" % ("ref: tar -cf filestore", sec["tar_create"]),
        "%-46s %9.2f" % ("ref: tar -xf filestore", sec["tar_extract"]),
        "* user+sys of the process tree (the server's own CPU not included)",
        "** share of all cores busy during the step, any process (server, other load) included",
        "",
        "%-46s %9.3f  target <= %.1f  %s"
        % ("backup / pg_dump", rat["backup_vs_pg_dump"], TARGETS["backup_ratio"], verdict("backup_ratio")),
        "%-46s %9.3f  target <= %.1f  %s"
        % (
            "restore / (createdb + pg_restore)",
            rat["restore_vs_pg_restore"],
            TARGETS["restore_ratio"],
            verdict("restore_ratio"),
        ),
        "%-46s %s" % ("  per round, backup", " ".join("%.3f" % v for v in s["per_round"]["backup"])),
        "%-46s %s" % ("  per round, restore", " ".join("%.3f" % v for v in s["per_round"]["restore"])),
        "%-46s %9.3f" % ("backup / (pg_dump + tar -cf)", rat["backup_vs_pg_dump_plus_tar"]),
        "%-46s %9.3f" % ("restore / (createdb + pg_restore + tar -xf)", rat["restore_vs_pg_restore_plus_untar"]),
        "",
        "%-46s %9.1f  target <= %.0f  %s"
        % (
            "engine peak RSS, backup (MB, its peak_rss_kb)",
            rss["engine_backup"],
            TARGETS["peak_rss_mb"],
            verdict("peak_rss_mb"),
        ),
        "%-46s %9.1f" % ("engine peak RSS, restore (MB, its peak_rss_kb)", rss["engine_restore"]),
        "%-46s %9s / %s"
        % ("engine VmHWM sampled, backup / restore", rss["engine_backup_vmhwm"], rss["engine_restore_vmhwm"]),
        "%-46s %9s / %s"
        % ("its pg_dump / pg_restore child VmHWM", rss["backup_child_pg_dump"], rss["restore_child_pg_restore"]),
        "%-46s %9s / %s"
        % ("whole tree at once, backup / restore", rss["backup_tree_total"], rss["restore_tree_total"]),
        "%-46s %9s / %s" % ("plain pg_dump / pg_restore VmHWM", rss["pg_dump"], rss["pg_restore"]),
        "",
        "%-46s %12s" % ("pg_dump -Fc", mib(size["pg_dump_fc"])),
        "%-46s %12s  (%.3f x pg_dump -Fc; raw %s)"
        % (
            "engine database.dump.zst",
            mib(size["engine_database"]),
            size["database_vs_pg_dump"],
            mib(size["engine_database_raw"]),
        ),
        "%-46s %12s  (raw %s)"
        % ("engine filestore.tar.zst", mib(size["engine_filestore"]), mib(size["engine_filestore_raw"])),
        "%-46s %12s  (%.3f x pg_dump -Fc)" % ("engine total", mib(size["engine_total"]), size["total_vs_pg_dump"]),
    ]
    lines += option_lines(s, rounds)
    problems = [p for r in rounds for p in r["problems"]]
    lines += ["", "restore checks: %s" % ("; ".join(problems) if problems else "row and file counts match")]
    print("\n".join(lines))


def option_lines(s, rounds):
    """Table lines of (e)-(h), when they ran."""
    lines = []
    cpu = lambda key: statistics.median(r[key]["user_s"] + r[key]["sys_s"] for r in rounds)  # noqa: E731
    verdict = lambda name: "met" if s["targets"][name]["met"] else "MISSED"  # noqa: E731
    fmt = lambda v, spec="%.1f": spec % v if v is not None else "-"  # noqa: E731
    row = "%-46s %9.2f %10.2f %9s"
    if "secure" in s:
        sec, cost = s["secure"], s["secure"]["encryption_cost"]
        lines += [
            "",
            "encrypted (age) + signed (Ed25519), local destination",
            "%-46s %9s %10s %9s" % ("step", "seconds", "cpu s*", "machine**"),
            row
            % (
                "(e) engine backup, encrypted + signed",
                sec["seconds"]["secure_backup"],
                cpu("secure_backup"),
                busy(rounds, "secure_backup"),
            ),
        ]
        for name, a in cost["artifacts"].items():
            lines.append(
                "%-46s %9.2f  (unencrypted %.2f s)"
                % ("      %s artifact" % name, a["secure_seconds"], a["plain_seconds"])
            )
        if "secure_restore" in sec["seconds"]:
            lines.append(
                row
                % (
                    "(f) engine restore of (e) (verify+decrypt)",
                    sec["seconds"]["secure_restore"],
                    cpu("secure_restore"),
                    busy(rounds, "secure_restore"),
                )
            )
            for key in sorted(sec["restore_phases"], key=lambda k: {"verify": 0, "database": 1}.get(k, 2)):
                lines.append("%-46s %9.2f" % ("      %s" % key, sec["restore_phases"][key]))
        lines += [
            "",
            "%-46s %9.3f  target <= %.1f  %s"
            % (
                "(e) / pg_dump",
                sec["ratios"]["secure_backup_vs_pg_dump"],
                TARGETS["secure_backup_ratio"],
                verdict("secure_backup_ratio"),
            ),
            "%-46s %s" % ("  per round", " ".join("%.3f" % v for v in sec["per_round"]["secure_backup_vs_pg_dump"])),
        ]
        if "secure_restore" in sec["seconds"]:
            lines += [
                "%-46s %9.3f  target <= %.1f  %s"
                % (
                    "(f) / (createdb + pg_restore)",
                    sec["ratios"]["secure_restore_vs_pg_restore"],
                    TARGETS["secure_restore_ratio"],
                    verdict("secure_restore_ratio"),
                ),
                "%-46s %s"
                % ("  per round", " ".join("%.3f" % v for v in sec["per_round"]["secure_restore_vs_pg_restore"])),
                "%-46s %9s" % ("  signature check", ", ".join(str(v) for v in sec["signature"])),
            ]
        lines += [
            "",
            "cost of encryption (same round, encrypted vs unencrypted engine backup):",
            "%-46s %9.3f  (%+.2f s, %+.2f s CPU)"
            % ("  backup (e) / (b)", cost["secure_vs_plain_backup"], cost["extra_seconds"], cost["extra_cpu_s"]),
            "%-46s %s" % ("  per round", " ".join("%.3f" % v for v in cost["per_round_secure_vs_plain"])),
            "%-46s %9s / %s MB/s"
            % (
                "  stored bytes per second, (b) / (e)",
                fmt(cost["plain_stored_mb_per_s"]),
                fmt(cost["secure_stored_mb_per_s"]),
            ),
        ]
        for name, a in cost["artifacts"].items():
            lines.append(
                "%-46s %9s / %s MB/s"
                % (
                    "    %s artifact, (b) / (e)" % name,
                    fmt(a["plain_stored_mb_per_s"]),
                    fmt(a["secure_stored_mb_per_s"]),
                )
            )
        lines.append(
            "%-46s %12s / %s"
            % ("  stored, (b) / (e)", mib(cost["stored_bytes_plain"]), mib(cost["stored_bytes_secure"]))
        )
        if "secure_vs_plain_restore" in cost:
            lines.append(
                "%-46s %9.3f  (%+.2f s)"
                % ("  restore (f) / (d)", cost["secure_vs_plain_restore"], cost["restore_extra_seconds"])
            )
        rss = sec["peak_rss_mb"]
        lines += [
            "%-46s %9.1f / %s"
            % ("engine peak RSS (e) / (f) (MB, peak_rss_kb)", rss["secure_backup"], rss.get("secure_restore", "-")),
            "%-46s %9s / %s"
            % ("engine VmHWM sampled (e) / (f)", rss["secure_backup_vmhwm"], rss.get("secure_restore_vmhwm", "-")),
        ]
    if "s3" in s:
        s3 = s["s3"]
        lines += [
            "",
            "encrypted + signed, to S3 (moto server on loopback, started per round)",
            row
            % (
                "(g) engine backup to s3://%s/%s" % (S3_BUCKET, S3_PREFIX),
                s3["seconds"],
                cpu("s3_backup"),
                busy(rounds, "s3_backup"),
            ),
        ]
        for name, value in s3["artifact_seconds"].items():
            lines.append("%-46s %9.2f" % ("      %s artifact" % name, value))
        lines += [
            "%-46s %9.3f  (no target)" % ("(g) / pg_dump", s3["ratio_vs_pg_dump"]),
            "%-46s %s" % ("  per round", " ".join("%.3f" % v for v in s3["per_round_vs_pg_dump"])),
        ]
        if "ratio_vs_local_secure" in s3:
            lines.append("%-46s %9.3f" % ("(g) / (e) (S3 vs local)", s3["ratio_vs_local_secure"]))
        lines += [
            "%-46s %9s MB/s" % ("  stored bytes per second", fmt(s3["stored_mb_per_s"])),
            "%-46s %9.1f  target <= %.0f  %s"
            % (
                "engine peak RSS (g) (MB, its peak_rss_kb)",
                s3["peak_rss_mb"]["engine"],
                TARGETS["s3_peak_rss_mb"],
                verdict("s3_peak_rss_mb"),
            ),
            "%-46s %9s / %s"
            % (
                "engine VmHWM sampled / its pg_dump child",
                s3["peak_rss_mb"]["engine_vmhwm"],
                s3["peak_rss_mb"]["engine_child_pg_dump"],
            ),
            "%-46s %9s" % ("engine tree at once", s3["peak_rss_mb"]["engine_tree_total"]),
            "%-46s %9.1f / %.1f MB  (%s s CPU; not the engine)"
            % (
                "moto server VmHWM / RSS after",
                s3["server"]["vmhwm_mb"],
                s3["server"]["rss_after_mb"],
                fmt(s3["server"]["cpu_s"]),
            ),
            "%-46s %12s in %d objects"
            % ("  bucket holds", mib(s3["server"]["bucket_bytes"]), s3["server"]["bucket_objects"]),
        ]
    if "drill" in s:
        d = s["drill"]
        lines += [
            "",
            "drill of (e): scratch restore, row counts, every attachment's SHA-1, drop",
            row % ("(h) engine drill (wall clock)", d["wall_seconds"], cpu("drill"), busy(rounds, "drill")),
            "%-46s %9s" % ("      total_seconds (its JSON)", fmt(d["total_seconds"], "%.2f")),
            "%-46s %9s" % ("      restore_seconds = the measured RTO", fmt(d["restore_seconds"], "%.2f")),
            "%-46s %9s" % ("      verify + checks + drop (total - restore)", fmt(d["checks_seconds"], "%.2f")),
            "%-46s %s" % ("  per round, total_seconds", " ".join("%.2f" % v for v in d["per_round_total"])),
            "%-46s %s" % ("  per round, restore_seconds", " ".join(fmt(v, "%.2f") for v in d["per_round_restore"])),
            "%-46s %9s  (no target)"
            % ("restore_seconds / (createdb + pg_restore)", fmt(d["restore_vs_pg_restore"], "%.3f")),
            "%-46s %9.1f" % ("engine peak RSS (MB, its peak_rss_kb)", d["peak_rss_mb"]),
            "%-46s %s" % ("drill verdicts", " ".join("PASSED" if ok else "FAILED" for ok in d["passed"])),
        ]
        lines += ["  %s" % c for c in d["checks"]]
    return lines


def environment(env):
    import zstandard

    def version(tool):
        try:
            return subprocess.run([tool, "--version"], capture_output=True, text=True, env=env).stdout.strip()
        except OSError:
            return None

    def git(*args):
        try:
            return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True).stdout.strip()
        except OSError:
            return None

    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "loadavg_at_start": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "zstandard": zstandard.__version__,
        "pg_dump": version("pg_dump"),
        "server": query("SHOW server_version")[0][0],
        "git_commit": git("rev-parse", "--short", "HEAD"),
        "git_dirty": bool(git("status", "--porcelain", "--", "engine")),
        "engine_sources": engine_fingerprint(),
    }


def engine_fingerprint():
    """A short hash of the engine's sources, to tell whether they changed during a run."""
    import hashlib

    digest = hashlib.sha1()
    for dirpath, dirs, files in os.walk(os.path.join(REPO, "engine")):
        dirs.sort()
        for name in sorted(files):
            if name.endswith(".py"):
                digest.update(name.encode())
                with open(os.path.join(dirpath, name), "rb") as handle:
                    digest.update(handle.read())
    return digest.hexdigest()[:12]


def note_engine_change(info):
    info["engine_sources_at_end"] = engine_fingerprint()
    if info["engine_sources_at_end"] != info["engine_sources"]:
        print("WARNING: the engine's sources changed during this run; the figures mix two versions.")


def write_json(data, suffix=""):
    os.makedirs(OUT_DIR, exist_ok=True)
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    path = os.path.join(OUT_DIR, "%s%s.json" % (stamp, suffix))
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(data, handle, indent=2, default=str)
    return os.path.relpath(path, os.getcwd())


# ----------------------------------------------------------------------------- modes


def run_benchmark(args, env):
    ds = Dataset(args.workdir, args.scale)
    t0 = time.monotonic()
    facts = ds.ensure(rebuild=args.rebuild)
    facts["ensure_seconds"] = round(time.monotonic() - t0, 1)
    rundir = os.path.join(args.workdir, "run_s%s" % scale_tag(args.scale))
    shutil.rmtree(rundir, ignore_errors=True)
    os.makedirs(rundir)
    info = environment(env)
    opts = selected_options(args)
    # (b) is signed as well: only a set whose signature is verified is loaded by pg_restore itself (an unsigned
    # one goes through the SQL guard as a role that owns nothing else).
    log("making an age identity and an Ed25519 signing key (python -m engine keys)")
    keys = make_keys(os.path.join(rundir, "keys"), env)
    warm_up(ds, rundir, env)
    rounds = []
    started = time.monotonic()
    for index in range(args.repeat):
        if args.repeat > 1:
            log("round %d of %d" % (index + 1, args.repeat))
        rounds.append(one_round(ds, rundir, env, keep=args.keep, opts=opts, keys=keys, index=index))
    info["measured_seconds"] = round(time.monotonic() - started, 1)
    info["loadavg_at_end"] = os.getloadavg() if hasattr(os, "getloadavg") else None
    summary = summarize(rounds)
    print_table(facts, summary, rounds)
    summary["restore_jobs"] = print_restore_jobs(rounds)
    print(
        "\nsteps: %s; %d round(s) in %.0f s; load average at start %s, at end %s"
        % (
            ", ".join(["(a)-(d)"] + sorted(str(o) if isinstance(o, str) else "--jobs %d" % o for o in opts)),
            len(rounds),
            info["measured_seconds"],
            " ".join("%.2f" % v for v in info["loadavg_at_start"] or ()),
            " ".join("%.2f" % v for v in info["loadavg_at_end"] or ()),
        )
    )
    note_engine_change(info)
    if not args.keep:
        shutil.rmtree(rundir, ignore_errors=True)
    path = write_json(
        {
            "kind": "benchmark",
            "options": sorted(str(o) for o in opts),
            "dataset": facts,
            "environment": info,
            "cache": "warm",
            "summary": summary,
            "rounds": rounds,
        }
    )
    print("\nwritten to %s" % path)
    return 0 if all(t["met"] for t in summary["targets"].values()) else 1


def print_restore_jobs(rounds):
    """(i) and (j): seconds and ratio to createdb + pg_restore of the same round, medians; their JSON summary."""
    keys = [k for k in rounds[0] if k.startswith("restore_jobs_")] + (
        ["restore_db_only"] if "restore_db_only" in rounds[0] else []
    )
    if not keys:
        return {}
    cores = os.cpu_count() or 1
    print(
        "\nrestore with pg_restore --jobs N (this machine has %d core%s), and the database alone"
        % (cores, "s" * (cores != 1))
    )
    print("%-46s %8s %10s %9s %s" % ("step", "seconds", "cpu s*", "machine**", "  / (createdb + pg_restore)"))
    out = {}
    for key in sorted(
        keys, key=lambda k: (k == "restore_db_only", int(k.rsplit("_", 1)[1]) if k != "restore_db_only" else 0)
    ):
        label = "--jobs %s" % key.rsplit("_", 1)[1] if key != "restore_db_only" else "database alone (--no-filestore)"
        seconds = statistics.median(r[key]["seconds"] for r in rounds)
        cpu = statistics.median(r[key]["user_s"] + r[key]["sys_s"] for r in rounds)
        ratio = paired(
            rounds, lambda r, key=key: r[key]["seconds"] / (r["createdb"]["seconds"] + r["pg_restore"]["seconds"])
        )
        per_round = " ".join(
            "%.3f" % (r[key]["seconds"] / (r["createdb"]["seconds"] + r["pg_restore"]["seconds"])) for r in rounds
        )
        phases = {}
        for name in ("verify", "database", "filestore"):
            values = [(r[key].get("phases") or {}).get(name) for r in rounds]
            values = [v for v in values if v is not None]
            if values:
                phases[name] = statistics.median(values)
        print(
            "%-46s %8.2f %10.2f %9s   %.3f  (rounds %s)"
            % (
                "(i) engine restore " + label if key != "restore_db_only" else "(j) engine restore, " + label,
                seconds,
                cpu,
                busy(rounds, key),
                ratio,
                per_round,
            )
        )
        for name, value in phases.items():
            print("      %-40s %8.2f" % (name, value))
        out[key] = {"seconds": seconds, "cpu_seconds": cpu, "ratio": ratio, "phases": phases}
    return out


def selected_options(args):
    """The optional steps: --secure, --s3, --drill (which needs the backup of --secure), or --suite full."""
    opts = set()
    if args.suite == "full":
        opts |= {"secure", "s3", "drill"}
    for name in ("secure", "s3", "drill"):
        if getattr(args, name):
            opts.add(name)
    if "drill" in opts:
        opts.add("secure")
    for jobs in (args.restore_jobs or "").split(","):
        if jobs.strip():
            opts.add(int(jobs))
    return opts


class NightlyCopy:
    """A copy of the dataset that the nightly scenario may change: its own database (a template copy) and a
    filestore of hard links to the dataset's files (Odoo never changes a stored file)."""

    def __init__(self, ds, rundir):
        self.db = ds.db + "_nightly"
        self.data_dir = os.path.join(rundir, "data")
        self.filestore = os.path.join(self.data_dir, "filestore", self.db)
        drop_database(self.db)
        query('CREATE DATABASE "%s" TEMPLATE "%s"' % (self.db, ds.db))
        shutil.rmtree(self.data_dir, ignore_errors=True)
        shutil.copytree(ds.filestore, self.filestore, copy_function=os.link)

    def change(self, files, rows):
        """``files`` new attachments of the dataset's file size and ``rows`` new chatter rows."""
        added = 0
        for _ in range(files):
            content = os.urandom(FILE_SIZE)
            sha1 = hashlib.sha1(content).hexdigest()
            folder = os.path.join(self.filestore, sha1[:2])
            os.makedirs(folder, exist_ok=True)
            with open(os.path.join(folder, sha1), "wb") as handle:
                handle.write(content)
            added += len(content)
        query(
            "INSERT INTO mail_message (model, res_id, body) SELECT model, res_id, body FROM mail_message "
            "ORDER BY id LIMIT %s",
            (rows,),
            dbname=self.db,
        )
        return added

    def drop(self):
        drop_database(self.db)
        shutil.rmtree(self.data_dir, ignore_errors=True)


def store_pack_bytes(dest):
    """Bytes of every pack of every store under a local destination."""
    total = 0
    for dirpath, _dirs, files in os.walk(dest):
        if os.sep + "packs" in dirpath and os.sep + ".store-" in dirpath:
            total += sum(os.path.getsize(os.path.join(dirpath, name)) for name in files)
    return total


def s3_pack_bytes(client, prefix):
    """Bytes of every pack of every store under an S3 prefix."""
    total = 0
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=S3_BUCKET, Prefix=prefix + "/"):
        for obj in page.get("Contents", []):
            if "/.store-" in obj["Key"] and "/packs/" in obj["Key"]:
                total += obj["Size"]
    return total


class NightlyTarget:
    """Where one series of the nightly scenario writes: a local folder, or a prefix of a loopback S3 bucket."""

    def __init__(self, rundir, env, server=None):
        self.server, self.env = server, (server.env(env) if server else env)
        if server:
            self.client = server.client()
            self.client.create_bucket(Bucket=S3_BUCKET)
            self.dest = "s3://%s/%s" % (S3_BUCKET, S3_PREFIX)
            self.db_only = "s3://%s/%s-db-only" % (S3_BUCKET, S3_PREFIX)
        else:
            self.dest = os.path.join(rundir, "backups")
            self.db_only = os.path.join(rundir, "db_only")
            shutil.rmtree(self.dest, ignore_errors=True)
            os.makedirs(self.dest)

    def pack_bytes(self):
        return s3_pack_bytes(self.client, S3_PREFIX) if self.server else store_pack_bytes(self.dest)

    def backup(self, fake, extra, db_only=False):
        return engine_backup(fake, self.db_only if db_only else self.dest, self.env, extra, fresh=db_only)


def run_nightly(args, env):
    """A first incremental backup, 1 % more attachments and 20,000 chatter rows, a second one; and a third
    with no change. Against the database artifact alone (--no-filestore) in the same round; with --s3, the
    same series to a loopback S3 bucket as well, in the same rounds."""
    ds = Dataset(args.workdir, args.scale)
    facts = ds.ensure(rebuild=args.rebuild)
    info = environment(env)
    rundir = os.path.join(args.workdir, "nightly_s%s" % scale_tag(args.scale))
    shutil.rmtree(rundir, ignore_errors=True)
    os.makedirs(rundir)
    keys = make_keys(os.path.join(rundir, "keys"), env)
    secure = secure_backup_args(keys)
    new_files = max(1, round(facts["filestore_files"] * 0.01))
    series = ["local", "s3"] if args.s3 else ["local"]
    rounds = {name: [] for name in series}
    for number in range(args.repeat):
        log("nightly round %d of %d" % (number + 1, args.repeat))
        copy = NightlyCopy(ds, rundir)
        fake = type("DS", (), {"db": copy.db, "data_dir": copy.data_dir, "filestore": copy.filestore})
        store = ("--incremental", "--store-key", os.path.join(rundir, "store.key"))
        server = MotoServer(rundir) if args.s3 else None
        if server:
            server.start(env)
        try:
            targets = {"local": NightlyTarget(rundir, env)}
            if server:
                targets["s3"] = NightlyTarget(rundir, env, server)
            warm_up(fake, rundir, env)
            runs = {name: {} for name in series}
            for name, target in targets.items():
                runs[name]["first"] = target.backup(fake, secure + store)
                runs[name]["after_first"] = target.pack_bytes()
            added = copy.change(new_files, 20000)
            for step in ("second", "third"):
                for name, target in targets.items():
                    runs[name][step] = target.backup(fake, secure + store)
                    runs[name]["after_" + step] = target.pack_bytes()
            for name, target in targets.items():
                runs[name]["db_only"] = target.backup(fake, secure + ("--no-filestore",), db_only=True)
        finally:
            if server:
                server.stop()
        filestore_bytes = tree_bytes(copy.filestore)
        for name, run in runs.items():
            rounds[name].append(
                {
                    "first_seconds": run["first"]["seconds"],
                    "first_store_bytes": run["after_first"],
                    "second_seconds": run["second"]["seconds"],
                    "second_store_bytes": run["after_second"] - run["after_first"],
                    "added_bytes": added,
                    "third_seconds": run["third"]["seconds"],
                    "third_store_bytes": run["after_third"] - run["after_second"],
                    "db_only_seconds": run["db_only"]["seconds"],
                    "filestore_bytes": filestore_bytes,
                    "first_peak_rss_kb": run["first"]["engine_peak_rss_kb"],
                    "second_peak_rss_kb": run["second"]["engine_peak_rss_kb"],
                }
            )
        copy.drop()
    result, met = {}, True
    print(
        "\nnightly scenario, %d round(s), medians (dataset %s, filestore %s in %d files)"
        % (args.repeat, mib(facts["db_size_bytes"]), mib(facts["filestore_bytes"]), facts["filestore_files"])
    )
    for name in series:
        med = {key: statistics.median(r[key] for r in rounds[name]) for key in rounds[name][0]}
        share = med["second_store_bytes"] / med["filestore_bytes"]
        ratio = med["second_seconds"] / med["db_only_seconds"]
        rss_limit = 96 if name == "s3" else 64
        peak = max(med["first_peak_rss_kb"], med["second_peak_rss_kb"]) / 1024
        targets = {
            "second backup stores <= 2 % of the filestore": {"value": round(share * 100, 2), "met": share <= 0.02},
            "second backup <= 1.1x its database artifact alone": {"value": round(ratio, 2), "met": ratio <= 1.1},
            "no change stores < 1 MiB": {"value": med["third_store_bytes"], "met": med["third_store_bytes"] < MB},
            "peak RSS <= %d MB" % rss_limit: {"value": round(peak, 1), "met": peak <= rss_limit},
        }
        print("  %s" % ("to a local folder" if name == "local" else "to S3 on loopback (moto)"))
        print(
            "    first incremental backup   %7.2f s   stored %s of filestore"
            % (med["first_seconds"], mib(med["first_store_bytes"]))
        )
        print(
            "    +%d files (%s), +20,000 rows; second backup %7.2f s   stored %s (%.2f %% of the filestore)"
            % (new_files, mib(med["added_bytes"]), med["second_seconds"], mib(med["second_store_bytes"]), share * 100)
        )
        print("    database artifact alone    %7.2f s   ratio %.2f" % (med["db_only_seconds"], ratio))
        third = (med["third_seconds"], med["third_store_bytes"])
        print("    no change: third backup    %7.2f s   stored %d bytes" % third)
        for label, target in targets.items():
            print("    %-52s %s %s" % (label, target["value"], "met" if target["met"] else "NOT met"))
        met = met and all(t["met"] for t in targets.values())
        result[name] = {"rounds": rounds[name], "median": med, "targets": targets}
    note_engine_change(info)
    if not args.keep:
        shutil.rmtree(rundir, ignore_errors=True)
    path = write_json({"kind": "nightly", "environment": info, "dataset": facts, "series": result}, "-nightly")
    print("written to %s" % path)
    return 0 if met else 1


GROWTH_STEPS = (
    ("backup", "backup, encrypted + signed, incremental filestore", "local"),
    ("restore", "restore of it", "local"),
    ("drill", "drill of it", "local"),
    ("s3_backup", "the same backup to S3 on loopback", "s3"),
    ("s3_restore", "restore from S3", "s3"),
)


def growth_round(ds, rundir, env, keys, s3):
    """Each step of GROWTH_STEPS once on ``ds``: {step: run}."""
    store = ("--incremental", "--store-key", os.path.join(rundir, "store.key"))
    secure, restore_args = secure_backup_args(keys), secure_restore_args(keys)
    dest = os.path.join(rundir, "backups")
    target = ds.db + "_grow"
    runs = {"backup": engine_backup(ds, dest, env, secure + store)}
    runs["backup"]["pack_bytes"] = store_pack_bytes(dest)
    runs["restore"] = engine_restore(ds, dest, target, os.path.join(rundir, "restored"), env, restore_args)
    drop_database(target)
    runs["drill"] = engine_drill(ds, dest, os.path.join(rundir, "drills"), env, keys)
    if s3:
        server = MotoServer(rundir)
        try:
            server.start(env)
            server.client().create_bucket(Bucket=S3_BUCKET)
            s3_env, s3_dest = server.env(env), "s3://%s/%s" % (S3_BUCKET, S3_PREFIX)
            runs["s3_backup"] = engine_backup(ds, s3_dest, s3_env, secure + store)
            runs["s3_restore"] = engine_restore(
                ds, s3_dest, target, os.path.join(rundir, "restored"), s3_env, restore_args
            )
            drop_database(target)
        finally:
            server.stop()
    shutil.rmtree(os.path.join(rundir, "restored"), ignore_errors=True)
    return runs


def run_growth(args, env):
    """How cost grows: time, stored bytes and the engine's peak RSS of backup, restore and drill (and, with
    --s3, to and from S3) at each of --rss-scales, per GB of data; is memory flat, and under its targets?"""
    scales = [float(v) for v in args.rss_scales.split(",")] if args.rss_scales else [0.5, 1.0, 2.0]
    info = environment(env)
    results = []
    for scale in scales:
        ds = Dataset(args.workdir, scale)
        facts = ds.ensure(rebuild=args.rebuild)
        rundir = os.path.join(args.workdir, "growth_s%s" % scale_tag(scale))
        shutil.rmtree(rundir, ignore_errors=True)
        os.makedirs(rundir)
        keys = make_keys(os.path.join(rundir, "keys"), env)
        warm_up(ds, rundir, env)
        rounds = []
        for number in range(args.repeat):
            log("scale %g, round %d of %d" % (scale, number + 1, args.repeat))
            rounds.append(growth_round(ds, rundir, env, keys, args.s3))
        steps = {}
        for step in rounds[0]:
            steps[step] = {
                "seconds": statistics.median(r[step]["seconds"] for r in rounds),
                "peak_rss_mb": statistics.median(r[step]["engine_peak_rss_kb"] for r in rounds) / 1024,
            }
            if "pack_bytes" in rounds[0][step]:
                # what the set holds and what its store holds (a fresh destination each round)
                steps[step]["stored_bytes"] = statistics.median(
                    r[step]["stored_bytes"] + r[step]["pack_bytes"] for r in rounds
                )
        if not args.keep:
            shutil.rmtree(rundir, ignore_errors=True)
        gigabytes = (facts["db_size_bytes"] + facts["filestore_bytes"]) / 1e9
        results.append({"scale": scale, "dataset": facts, "gigabytes": gigabytes, "steps": steps, "rounds": rounds})
    print("\nhow cost grows (%d round(s) per scale, medians; GB = database + filestore)" % args.repeat)
    print("%-52s %s" % ("", "".join("%-26s" % ("scale %g: %.2f GB" % (r["scale"], r["gigabytes"])) for r in results)))
    targets, met = {}, True
    for step, label, where in GROWTH_STEPS:
        if step not in results[0]["steps"]:
            continue
        cells = []
        for r in results:
            figures = r["steps"][step]
            cells.append(
                "%5.1f s %5.2f s/GB %5.1f MB"
                % (figures["seconds"], figures["seconds"] / r["gigabytes"], figures["peak_rss_mb"])
            )
        print("%-52s %s" % (label, "".join("%-26s" % cell for cell in cells)))
        peaks = [r["steps"][step]["peak_rss_mb"] for r in results]
        limit = 96 if where == "s3" else 64
        growth = (peaks[-1] - peaks[0]) / peaks[0]
        targets["%s: peak RSS <= %d MB" % (step, limit)] = {"value": round(max(peaks), 1), "met": max(peaks) <= limit}
        targets["%s: peak RSS flat (<= +10 %%)" % step] = {"value": round(growth * 100, 1), "met": growth <= 0.10}
    stored = ["%s per GB" % mib(r["steps"]["backup"]["stored_bytes"] / r["gigabytes"]) for r in results]
    print("%-52s %s" % ("stored by the backup (set + store)", "".join("%-26s" % cell for cell in stored)))
    for label, target in targets.items():
        print("  %-50s %s %s" % (label, target["value"], "met" if target["met"] else "NOT met"))
        met = met and target["met"]
    note_engine_change(info)
    for r in results:
        r.pop("rounds")
    path = write_json({"kind": "growth", "environment": info, "results": results, "targets": targets}, "-growth")
    print("written to %s" % path)
    return 0 if met else 1


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--scale", type=float, default=1.0, help="dataset size factor (1.0: ~1 GB database + ~0.9 GB filestore)"
    )
    parser.add_argument(
        "--workdir",
        default=os.path.join(tempfile.gettempdir(), "spp_backup_bench"),
        help="where the dataset, dumps and backups go (default: %(default)s)",
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the dump, the backup set and the restored databases and filestore"
    )
    parser.add_argument("--repeat", type=int, default=1, help="measure N rounds and report the median (default 1)")
    parser.add_argument(
        "--rebuild", action="store_true", help="rebuild the dataset even if one of the same scale exists"
    )
    parser.add_argument(
        "--rss-check",
        action="store_true",
        help="how cost grows instead: the engine's encrypted, signed, incremental backup, its restore and drill "
        "(with --s3 also to and from S3) at each of --rss-scales: seconds, per GB, peak RSS, stored bytes",
    )
    parser.add_argument("--rss-scales", help="comma-separated scales for --rss-check (default: 0.5,1,2)")
    parser.add_argument(
        "--drop-dataset", action="store_true", help="drop the dataset of --scale (database and files) and exit"
    )
    parser.add_argument(
        "--nightly",
        action="store_true",
        help="the nightly scenario of the incremental filestore instead: a first backup, 1 %% more attachments "
        "and 20,000 chatter rows, a second backup, a third with no change (encrypted, signed)",
    )
    group = parser.add_argument_group("optional steps, measured in the same rounds as (a)-(d)")
    group.add_argument(
        "--secure",
        action="store_true",
        help="(e) backup encrypted to a fresh age key and signed (Ed25519), to a local folder; "
        "(f) its restore with --identity/--verify-key; the cost of encryption against (b)",
    )
    group.add_argument(
        "--s3",
        action="store_true",
        help="(g) the backup of (e) to s3://%s/%s on moto's server (.venv-s3, loopback, a fresh process per round); "
        "peak RSS of the engine and of the server" % (S3_BUCKET, S3_PREFIX),
    )
    group.add_argument(
        "--drill",
        action="store_true",
        help="(h) python -m engine drill of the backup of (e): total_seconds and restore_seconds (implies --secure)",
    )
    group.add_argument(
        "--restore-jobs",
        help="(i) comma-separated N: also restore (f) (or (d)) with --jobs N, pg_restore -j N from a local copy of "
        "the dump; and (j) the database alone (--no-filestore)",
    )
    group.add_argument(
        "--suite",
        choices=("basic", "full"),
        default="basic",
        help="basic: (a)-(d) only (default); full: also --secure --s3 --drill",
    )
    args = parser.parse_args(argv)
    args.workdir = os.path.abspath(args.workdir)
    env = pg_environment()
    if args.drop_dataset:
        Dataset(args.workdir, args.scale).drop()
        return 0
    os.makedirs(args.workdir, exist_ok=True)
    if args.rss_check:
        return run_growth(args, env)
    if args.nightly:
        return run_nightly(args, env)
    return run_benchmark(args, env)


if __name__ == "__main__":
    sys.exit(main())
