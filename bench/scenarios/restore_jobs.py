"""(i) the restore with pg_restore --jobs N, (j) the database alone (--no-filestore)."""

import os
import statistics

from measure.engine_cli import check_restored, engine_restore, secure_restore_args
from measure.pg import drop_database
from measure.report import busy, median_cpu, paired, pg_restore_seconds
from measure.timing import log


def restores(ds, opts, keys, dest, dest_secure, outputs, env):
    """(i) for each --jobs N of ``opts`` and (j) once: the runs by name and their problems.

    Each restores (e) (or (b) without --secure) into a database of its own, checked and dropped at once."""
    runs, problems = {}, []
    label, source, extra = (
        ("(f)", dest_secure, secure_restore_args(keys))
        if "secure" in opts
        else ("(d)", dest, ["--verify-key", keys["verify_key"]])
    )
    for jobs in sorted(j for j in opts if isinstance(j, int)):
        # (i) the restore with pg_restore --jobs N from a local copy of the dump.
        log("(i) %s with --jobs %d" % (label, jobs))
        target, data_dir = ds.db + "_j%d" % jobs, os.path.join(outputs, "restore_data_j%d" % jobs)
        runs["restore_jobs_%d" % jobs] = engine_restore(
            ds, source, target, data_dir, env, extra=[*extra, "--jobs", str(jobs)]
        )
        problems += check_restored(ds, target, os.path.join(data_dir, "filestore", target))
        drop_database(target)
    # (j) the database alone: what the engine adds to pg_restore's own work, without the filestore beside it.
    log("(j) engine restore of the database alone (--no-filestore)")
    target = ds.db + "_dbonly"
    runs["restore_db_only"] = engine_restore(
        ds, source, target, os.path.join(outputs, "db_only"), env, extra=[*extra, "--no-filestore"]
    )
    problems += check_restored(ds, target)
    drop_database(target)
    return runs, problems


def print_table(rounds):
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
        cpu = median_cpu(rounds, key)
        ratio = paired(rounds, lambda r, key=key: r[key]["seconds"] / pg_restore_seconds(r))
        per_round = " ".join("%.3f" % (r[key]["seconds"] / pg_restore_seconds(r)) for r in rounds)
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
