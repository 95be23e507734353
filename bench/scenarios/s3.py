"""(g) the encrypted, signed backup to a loopback S3 bucket (moto, a fresh server per round)."""

from measure.engine_cli import check_secure_backup, engine_backup, secure_backup_args
from measure.moto import S3_DEST, S3_PREFIX, MotoServer, bucket_objects
from measure.report import (
    STEP_ROW,
    busy,
    engine_rss_mb,
    fmt,
    mb_per_s,
    med_of,
    median_cpu,
    mib,
    paired,
    peak_mb,
    verdict,
)
from measure.timing import proc_cpu_seconds

TARGETS = {"s3_peak_rss_mb": 96.0}


def backup(ds, rundir, env, keys):
    """(g): a fresh moto server, a bucket, the encrypted + signed backup to it; the server is stopped after.
    Returns the run and its problems (an artifact unencrypted, a copy not stored, a bucket short of bytes)."""
    server = MotoServer(rundir)
    result = {}
    try:
        result["server_start_seconds"] = server.start(env)
        client = server.make_bucket()
        cpu0 = proc_cpu_seconds(server.process.pid)
        result.update(engine_backup(ds, S3_DEST, server.env(env), extra=secure_backup_args(keys)))
        cpu1 = proc_cpu_seconds(server.process.pid)
        result["server_cpu_s"] = round(cpu1 - cpu0, 2) if cpu0 is not None and cpu1 is not None else None
        result["server_memory_kb"] = server.memory()
        stored, objects = 0, 0
        for obj in bucket_objects(client, S3_PREFIX):
            stored += obj["Size"]
            objects += 1
        result["bucket_bytes"], result["bucket_objects"] = stored, objects
    finally:
        server.stop()
    problems = check_secure_backup(result, "(g)")
    if result["bucket_bytes"] < result["stored_bytes"]:
        problems.append(
            "(g) the bucket holds %d bytes, less than the %d bytes of artifacts"
            % (result["bucket_bytes"], result["stored_bytes"])
        )
    return result, problems


def summarize(rounds, s):
    """s["s3"] and the target of (g): seconds, ratios, the engine's memory and the server's apart."""
    first = rounds[0]
    med = med_of
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
            "engine": engine_rss_mb(rounds, "s3_backup"),
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


def lines(s, rounds):
    """The table's lines of (g)."""
    s3 = s["s3"]
    out = [
        "",
        "encrypted + signed, to S3 (moto server on loopback, started per round)",
        STEP_ROW
        % (
            "(g) engine backup to %s" % S3_DEST,
            s3["seconds"],
            median_cpu(rounds, "s3_backup"),
            busy(rounds, "s3_backup"),
        ),
    ]
    for name, value in s3["artifact_seconds"].items():
        out.append("%-46s %9.2f" % ("      %s artifact" % name, value))
    out += [
        "%-46s %9.3f  (no target)" % ("(g) / pg_dump", s3["ratio_vs_pg_dump"]),
        "%-46s %s" % ("  per round", " ".join("%.3f" % v for v in s3["per_round_vs_pg_dump"])),
    ]
    if "ratio_vs_local_secure" in s3:
        out.append("%-46s %9.3f" % ("(g) / (e) (S3 vs local)", s3["ratio_vs_local_secure"]))
    out += [
        "%-46s %9s MB/s" % ("  stored bytes per second", fmt(s3["stored_mb_per_s"])),
        "%-46s %9.1f  target <= %.0f  %s"
        % (
            "engine peak RSS (g) (MB, its peak_rss_kb)",
            s3["peak_rss_mb"]["engine"],
            TARGETS["s3_peak_rss_mb"],
            verdict(s, "s3_peak_rss_mb"),
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
    return out
