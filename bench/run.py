"""Benchmark: the engine's backup and restore against plain pg_dump / pg_restore.

    .venv/bin/python bench/run.py [--scale 1.0] [--workdir DIR] [--keep] [--repeat N]
    .venv/bin/python bench/run.py --rss-check [--rss-scales 0.5,1]

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

plus, for context only, tar -cf / tar -xf of the filestore. The restored
databases are checked (row count, file count) and dropped afterwards.

Targets: (b)/(a) <= 1.2, (d)/(c) <= 1.3, engine peak RSS <= 100 MB (the
engine's own process, as ``peak_rss_kb`` in its JSON output) and flat when the
dataset doubles (``--rss-check``).

Results are printed as a table and written to bench/out/<timestamp>.json.
PostgreSQL: libpq's PGHOST/PGPORT/PGUSER; when PGHOST is unset the throwaway
cluster of dev/pg.sh is started and used.
"""

import argparse
import datetime
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

# Dataset at scale 1.0 (calibrated: pg_database_size ~ 1.05e9 bytes, filestore 0.92e9 bytes).
MESSAGES = 2_000_000
PARTNERS = 50_000
FILES = 4_000
FILE_SIZE = 225 * 1024
BODY_REPEAT = 10

TARGETS = {"backup_ratio": 1.2, "restore_ratio": 1.3, "peak_rss_mb": 100.0}
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


def timed(cmd, cwd=None, env=None, ok_codes=(0,)):
    """Run ``cmd``; wall seconds, CPU and memory of its process tree, stdout text.

    os.wait4 gives the rusage of the child including its reaped descendants:
    user/sys add up the whole tree (e.g. the engine plus its pg_dump). Its
    ru_maxrss is not used for memory: on Linux a child inherits its parent's
    high-water mark at fork, so it is never below this script's own RSS;
    TreeSampler's per-process VmHWM is reported instead.
    """
    hz = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
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
    """One unmeasured pg_dump and one read of every filestore file."""
    log("warming the cache (unmeasured pg_dump, filestore read)")
    path = os.path.join(rundir, "warmup.dump")
    timed(["pg_dump", "-Fc", "-f", path, ds.db], env=env)
    os.unlink(path)
    for dirpath, _dirs, files in os.walk(ds.filestore):
        for name in files:
            with open(os.path.join(dirpath, name), "rb") as handle:
                while handle.read(1 << 20):
                    pass


# ----------------------------------------------------------------------------- measurements


def engine_backup(ds, dest, env):
    shutil.rmtree(dest, ignore_errors=True)
    os.makedirs(dest)
    run, stdout = timed(
        engine_cmd("backup", "-d", ds.db, "--dest", dest, "--data-dir", ds.data_dir), cwd=REPO, env=env, ok_codes=(0, 1)
    )
    data = engine_json(stdout)
    run["engine_peak_rss_kb"] = data.get("peak_rss_kb")
    run["engine_duration"] = data.get("duration")
    run["artifacts"] = {
        name: {k: art.get(k) for k in ("file", "size", "raw_size", "seconds")}
        for name, art in data["artifacts"].items()
    }
    run["warnings"] = data.get("warnings")
    return run


def engine_restore(ds, dest, target, data_dir, env):
    drop_database(target)
    shutil.rmtree(data_dir, ignore_errors=True)
    source = os.path.join(dest, ds.db, "latest")
    run, stdout = timed(
        engine_cmd("restore", source, "--target", target, "--data-dir", data_dir), cwd=REPO, env=env, ok_codes=(0, 1)
    )
    data = engine_json(stdout)
    run["engine_peak_rss_kb"] = data.get("peak_rss_kb")
    run["engine_duration"] = data.get("duration")
    run["phases"] = data.get("seconds")
    run["filestore_files"] = data.get("filestore_files")
    return run


def check_restored(ds, target, filestore=None):
    rows = query("SELECT count(*) FROM mail_message", dbname=target)[0][0]
    ok = rows == ds.params["messages"]
    problems = [] if ok else ["%s has %d mail_message rows, expected %d" % (target, rows, ds.params["messages"])]
    if filestore is not None:
        files = count_files(filestore)
        if files != ds.params["files"]:
            problems.append("%s holds %d files, expected %d" % (filestore, files, ds.params["files"]))
    return problems


def one_round(ds, rundir, env, keep):
    """(a)-(d) plus the tar references, once; returns the measurements."""
    r = {}
    dump = os.path.join(rundir, "pg_dump.dump")
    dest = os.path.join(rundir, "backups")
    restored_pg, restored_engine = ds.db + "_pgr", ds.db + "_engr"
    restore_data = os.path.join(rundir, "restore_data")
    problems = []

    log("(a) pg_dump -Fc")
    r["pg_dump"], _ = timed(["pg_dump", "-Fc", "-f", dump, ds.db], env=env)
    r["pg_dump"]["size"] = os.path.getsize(dump)

    log("(b) engine backup")
    r["engine_backup"] = engine_backup(ds, dest, env)

    log("(c) createdb + pg_restore")
    drop_database(restored_pg)
    r["createdb"], _ = timed(["createdb", "-T", "template0", restored_pg], env=env)
    r["pg_restore"], _ = timed(["pg_restore", "-d", restored_pg, dump], env=env)
    problems += check_restored(ds, restored_pg)

    log("(d) engine restore")
    r["engine_restore"] = engine_restore(ds, dest, restored_engine, restore_data, env)
    problems += check_restored(ds, restored_engine, os.path.join(restore_data, "filestore", restored_engine))

    log("reference: tar -cf / tar -xf of the filestore")
    tarball = os.path.join(rundir, "filestore.tar")
    r["tar_create"], _ = timed(["tar", "-C", ds.filestore, "-cf", tarball, "."], env=env)
    r["tar_create"]["size"] = os.path.getsize(tarball)
    untar = os.path.join(rundir, "untar")
    shutil.rmtree(untar, ignore_errors=True)
    os.makedirs(untar)
    r["tar_extract"], _ = timed(["tar", "-C", untar, "-xf", tarball], env=env)

    if not keep:
        drop_database(restored_pg)
        drop_database(restored_engine)
        for path in (restore_data, untar, tarball, dump):
            if os.path.isdir(path):
                shutil.rmtree(path, ignore_errors=True)
            elif os.path.exists(path):
                os.unlink(path)
    r["problems"] = problems
    return r


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
    for t in s["targets"].values():
        t["met"] = t["value"] <= t["target"]
    return s


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
    problems = [p for r in rounds for p in r["problems"]]
    lines += ["", "restore checks: %s" % ("; ".join(problems) if problems else "row and file counts match")]
    print("\n".join(lines))


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
    warm_up(ds, rundir, env)
    rounds = []
    for index in range(args.repeat):
        if args.repeat > 1:
            log("round %d of %d" % (index + 1, args.repeat))
        rounds.append(one_round(ds, rundir, env, keep=args.keep))
    summary = summarize(rounds)
    print_table(facts, summary, rounds)
    note_engine_change(info)
    if not args.keep:
        shutil.rmtree(rundir, ignore_errors=True)
    path = write_json(
        {
            "kind": "benchmark",
            "dataset": facts,
            "environment": info,
            "cache": "warm",
            "summary": summary,
            "rounds": rounds,
        }
    )
    print("\nwritten to %s" % path)
    return 0 if all(t["met"] for t in summary["targets"].values()) else 1


def run_rss_check(args, env):
    scales = [float(v) for v in args.rss_scales.split(",")] if args.rss_scales else [args.scale / 2, args.scale]
    info = environment(env)
    results = []
    for scale in scales:
        ds = Dataset(args.workdir, scale)
        t0 = time.monotonic()
        facts = ds.ensure(rebuild=args.rebuild)
        facts["ensure_seconds"] = round(time.monotonic() - t0, 1)
        rundir = os.path.join(args.workdir, "rss_s%s" % scale_tag(scale))
        shutil.rmtree(rundir, ignore_errors=True)
        os.makedirs(rundir)
        warm_up(ds, rundir, env)
        dest = os.path.join(rundir, "backups")
        log("engine backup at scale %g" % scale)
        backup = engine_backup(ds, dest, env)
        restore_run = None
        if args.rss_restore:
            log("engine restore at scale %g" % scale)
            target = ds.db + "_engr"
            restore_data = os.path.join(rundir, "restore_data")
            restore_run = engine_restore(ds, dest, target, restore_data, env)
            drop_database(target)
        if not args.keep:
            shutil.rmtree(rundir, ignore_errors=True)
        results.append({"scale": scale, "dataset": facts, "backup": backup, "restore": restore_run})
    print(
        "\n%-8s %12s %14s %10s %14s %12s"
        % ("scale", "database", "filestore", "backup s", "backup RSS MB", "restore RSS MB")
    )
    for r in results:
        f = r["dataset"]
        print(
            "%-8g %12s %14s %10.1f %14.1f %12s"
            % (
                r["scale"],
                mib(f["db_size_bytes"]),
                mib(f["filestore_bytes"]),
                r["backup"]["seconds"],
                r["backup"]["engine_peak_rss_kb"] / 1024,
                "%.1f" % (r["restore"]["engine_peak_rss_kb"] / 1024) if r["restore"] else "-",
            )
        )
    note_engine_change(info)
    small, big = results[0]["backup"]["engine_peak_rss_kb"], results[-1]["backup"]["engine_peak_rss_kb"]
    growth = (big - small) / small
    flat = growth <= 0.10
    print(
        "backup peak RSS grows %+.1f%% from scale %g to %g: %s"
        % (growth * 100, scales[0], scales[-1], "flat" if flat else "NOT flat")
    )
    path = write_json(
        {"kind": "rss_check", "environment": info, "results": results, "growth": round(growth, 4), "flat": flat}, "-rss"
    )
    print("written to %s" % path)
    return 0 if flat else 1


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
        "--rss-check", action="store_true", help="only run the engine backup at two scales and compare its peak RSS"
    )
    parser.add_argument("--rss-scales", help="comma-separated scales for --rss-check (default: SCALE/2,SCALE)")
    parser.add_argument(
        "--rss-restore",
        action="store_true",
        help="with --rss-check, also restore at each scale and report its peak RSS",
    )
    parser.add_argument(
        "--drop-dataset", action="store_true", help="drop the dataset of --scale (database and files) and exit"
    )
    args = parser.parse_args(argv)
    args.workdir = os.path.abspath(args.workdir)
    env = pg_environment()
    if args.drop_dataset:
        Dataset(args.workdir, args.scale).drop()
        return 0
    os.makedirs(args.workdir, exist_ok=True)
    if args.rss_check:
        return run_rss_check(args, env)
    return run_benchmark(args, env)


if __name__ == "__main__":
    sys.exit(main())
