"""Figures over rounds (medians, paired ratios, peaks), the run's environment, and the JSON result."""

import datetime
import json
import os
import platform
import statistics
import subprocess
import sys

from . import OUT_DIR, REPO
from .pg import query

MB = 1024 * 1024


def mib(value):
    return "%.1f MiB" % (value / MB) if value is not None else "-"


def mb_per_s(nbytes, seconds):
    return round(nbytes / MB / seconds, 1) if nbytes and seconds else None


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


def med_of(values):
    """Median of the values that are not None, rounded (None when there are none)."""
    values = [v for v in values if v is not None]
    return round(statistics.median(values), 3) if values else None


def cpu_seconds(r, key):
    """user + system CPU seconds of one step of a round."""
    return r[key]["user_s"] + r[key]["sys_s"]


def median_cpu(rounds, key):
    return statistics.median(cpu_seconds(r, key) for r in rounds)


def pg_restore_seconds(r):
    """createdb + pg_restore of a round: the baseline of every restore."""
    return r["createdb"]["seconds"] + r["pg_restore"]["seconds"]


def engine_rss_mb(rounds, key):
    """Largest peak_rss_kb the engine reported for a step over the rounds, MB."""
    return round(max(r[key]["engine_peak_rss_kb"] or 0 for r in rounds) / 1024, 1)


def verdict(s, name):
    return "met" if s["targets"][name]["met"] else "MISSED"


def fmt(value, spec="%.1f"):
    return spec % value if value is not None else "-"


STEP_HEADER = "%-46s %9s %10s %9s" % ("step", "seconds", "cpu s*", "machine**")
STEP_ROW = "%-46s %9.2f %10.2f %9s"
