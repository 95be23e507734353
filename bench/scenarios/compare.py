"""The engine's backup and restore against pg_dump / pg_restore on the same data, in the same rounds:
(a)-(d), the optional steps (e)-(j) of the other scenario modules, the tar references; medians and the table."""

import os
import shutil
import statistics
import time

from measure.dataset import Dataset, scale_tag, warm_up
from measure.engine_cli import check_restored, engine_backup, engine_restore, make_keys
from measure.pg import drop_database
from measure.report import (
    STEP_HEADER,
    STEP_ROW,
    busy,
    environment,
    median_cpu,
    mib,
    note_engine_change,
    paired,
    peak_mb,
    pg_restore_seconds,
    verdict,
    write_json,
)
from measure.timing import log, timed

from . import drill, encrypted, restore_jobs, s3

TARGETS = {
    "backup_ratio": 1.2,
    "restore_ratio": 1.3,
    "peak_rss_mb": 64.0,
}


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
        r["secure_backup"], found = encrypted.backup(ds, dest_secure, env, keys)
        problems += found

    if "s3" in opts:
        log("(g) engine backup, encrypted + signed, to S3 (moto on loopback)")
        r["s3_backup"], found = s3.backup(ds, rundir, env, keys)
        problems += found

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
        r["secure_restore"], found = encrypted.restore(ds, dest_secure, restored_secure, secure_data, env, keys)
        problems += found
        done_with(restored_secure)

    if any(isinstance(o, int) for o in opts):
        runs, found = restore_jobs.restores(ds, opts, keys, dest, dest_secure, outputs, env)
        r.update(runs)
        problems += found

    if "drill" in opts:
        log("(h) engine drill of the encrypted + signed backup")
        r["drill"], found = drill.drill(ds, dest_secure, drill_data, env, keys)
        problems += found

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
    pg_restore_s = round(statistics.median(pg_restore_seconds(r) for r in rounds), 3)
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
                lambda r: r["engine_restore"]["seconds"] / pg_restore_seconds(r),
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
        "restore": [round(r["engine_restore"]["seconds"] / pg_restore_seconds(r), 3) for r in rounds],
    }
    s["targets"] = {
        "backup_ratio": {"value": s["ratios"]["backup_vs_pg_dump"], "target": TARGETS["backup_ratio"]},
        "restore_ratio": {"value": s["ratios"]["restore_vs_pg_restore"], "target": TARGETS["restore_ratio"]},
        "peak_rss_mb": {
            "value": max(s["peak_rss_mb"]["engine_backup"], s["peak_rss_mb"]["engine_restore"]),
            "target": TARGETS["peak_rss_mb"],
        },
    }
    first = rounds[0]
    if "secure_backup" in first:
        encrypted.summarize(rounds, s)
    if "s3_backup" in first:
        s3.summarize(rounds, s)
    if "drill" in first:
        drill.summarize(rounds, s)
    for t in s["targets"].values():
        t["met"] = t["value"] is not None and t["value"] <= t["target"]
    return s


def print_table(ds_facts, s, rounds):
    sec, rat, rss, size, ph = s["seconds"], s["ratios"], s["peak_rss_mb"], s["sizes"], s["phases"]
    p = ds_facts["params"]
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
        STEP_HEADER,
        STEP_ROW % ("(a) pg_dump -Fc", sec["pg_dump"], median_cpu(rounds, "pg_dump"), busy(rounds, "pg_dump")),
        STEP_ROW
        % (
            "(b) engine backup (db + filestore + manifest)",
            sec["engine_backup"],
            median_cpu(rounds, "engine_backup"),
            busy(rounds, "engine_backup"),
        ),
        "%-46s %9.2f" % ("      database artifact", ph["backup_database"]),
        "%-46s %9.2f" % ("      filestore artifact", ph["backup_filestore"]),
        STEP_ROW
        % (
            "(c) createdb + pg_restore",
            sec["createdb_pg_restore"],
            median_cpu(rounds, "pg_restore"),
            busy(rounds, "pg_restore"),
        ),
        STEP_ROW
        % (
            "(d) engine restore (verify + db + filestore)",
            sec["engine_restore"],
            median_cpu(rounds, "engine_restore"),
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
        % ("backup / pg_dump", rat["backup_vs_pg_dump"], TARGETS["backup_ratio"], verdict(s, "backup_ratio")),
        "%-46s %9.3f  target <= %.1f  %s"
        % (
            "restore / (createdb + pg_restore)",
            rat["restore_vs_pg_restore"],
            TARGETS["restore_ratio"],
            verdict(s, "restore_ratio"),
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
            verdict(s, "peak_rss_mb"),
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
    for name, scenario in (("secure", encrypted), ("s3", s3), ("drill", drill)):
        if name in s:
            lines += scenario.lines(s, rounds)
    problems = [p for r in rounds for p in r["problems"]]
    lines += ["", "restore checks: %s" % ("; ".join(problems) if problems else "row and file counts match")]
    print("\n".join(lines))


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
    summary["restore_jobs"] = restore_jobs.print_table(rounds)
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
