"""(h) a restore drill of the encrypted backup: its total_seconds and restore_seconds (the RTO)."""

from measure.engine_cli import engine_drill
from measure.pg import drop_database
from measure.report import STEP_ROW, busy, engine_rss_mb, fmt, med_of, median_cpu, paired, peak_mb, pg_restore_seconds


def drill(ds, dest, data_dir, env, keys):
    """(h): the run and its problems; a failed drill is reported, and a scratch database it left is dropped."""
    run = engine_drill(ds, dest, data_dir, env, keys)
    problems = []
    if not run["drill_ok"]:
        failed = ["%s: %s" % (c["name"], c["detail"]) for c in run["checks"] if not c["ok"]]
        problems.append("(h) the drill FAILED: %s" % "; ".join(failed + [run.get("error") or ""]).strip())
    if not run["cleaned_up"]:
        problems.append("(h) the drill left %s behind; dropped by the benchmark" % run["scratch_db"])
        drop_database(run["scratch_db"])
    return run, problems


def summarize(rounds, s):
    """s["drill"]: wall clock, total_seconds, restore_seconds and their difference, verdicts."""
    med = med_of
    timed_rounds = [r for r in rounds if r["drill"]["restore_seconds"] is not None]
    s["drill"] = {
        "wall_seconds": med(r["drill"]["seconds"] for r in rounds),
        "total_seconds": med(r["drill"]["total_seconds"] for r in rounds),
        "restore_seconds": med(r["drill"]["restore_seconds"] for r in rounds),
        "checks_seconds": med(r["drill"]["total_seconds"] - r["drill"]["restore_seconds"] for r in timed_rounds),
        "per_round_total": [r["drill"]["total_seconds"] for r in rounds],
        "per_round_restore": [r["drill"]["restore_seconds"] for r in rounds],
        "restore_vs_pg_restore": paired(timed_rounds, lambda r: r["drill"]["restore_seconds"] / pg_restore_seconds(r))
        if timed_rounds
        else None,
        "passed": [bool(r["drill"]["drill_ok"]) for r in rounds],
        "checks": [
            "%s %s: %s" % (c["name"], "ok" if c["ok"] else "FAIL", c["detail"]) for c in rounds[-1]["drill"]["checks"]
        ],
        "peak_rss_mb": engine_rss_mb(rounds, "drill"),
        "vmhwm_mb": peak_mb(rounds, "drill"),
    }


def lines(s, rounds):
    """The table's lines of (h)."""
    d = s["drill"]
    out = [
        "",
        "drill of (e): scratch restore, row counts, every attachment's SHA-1, drop",
        STEP_ROW
        % ("(h) engine drill (wall clock)", d["wall_seconds"], median_cpu(rounds, "drill"), busy(rounds, "drill")),
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
    out += ["  %s" % c for c in d["checks"]]
    return out
