"""How cost grows: the engine's encrypted, signed, incremental backup, its restore and drill (and with --s3 to
and from S3) at each of --rss-scales: seconds, per GB, peak RSS, stored bytes."""

import os
import shutil
import statistics

from measure.dataset import Dataset, scale_tag, warm_up
from measure.engine_cli import (
    engine_backup,
    engine_drill,
    engine_restore,
    incremental_args,
    make_keys,
    secure_backup_args,
    secure_restore_args,
)
from measure.moto import S3_DEST, MotoServer, store_pack_bytes
from measure.pg import drop_database
from measure.report import environment, mib, note_engine_change, write_json
from measure.timing import log

GROWTH_STEPS = (
    ("backup", "backup, encrypted + signed, incremental filestore", "local"),
    ("restore", "restore of it", "local"),
    ("drill", "drill of it", "local"),
    ("s3_backup", "the same backup to S3 on loopback", "s3"),
    ("s3_restore", "restore from S3", "s3"),
)


def growth_round(ds, rundir, env, keys, s3):
    """Each step of GROWTH_STEPS once on ``ds``: {step: run}."""
    store = incremental_args(rundir)
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
            server.make_bucket()
            s3_env, s3_dest = server.env(env), S3_DEST
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
