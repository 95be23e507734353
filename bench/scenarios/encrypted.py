"""(e) the backup encrypted to an age recipient and signed, (f) its restore; the cost of encryption."""

import os

from measure.engine_cli import (
    check_restored,
    check_secure_backup,
    engine_backup,
    engine_restore,
    secure_backup_args,
    secure_restore_args,
)
from measure.report import (
    STEP_HEADER,
    STEP_ROW,
    busy,
    cpu_seconds,
    engine_rss_mb,
    fmt,
    mb_per_s,
    med_of,
    median_cpu,
    mib,
    paired,
    peak_mb,
    pg_restore_seconds,
    verdict,
)

TARGETS = {
    "secure_backup_ratio": 1.0,
    "secure_restore_ratio": 1.0,
}


def backup(ds, dest, env, keys):
    """(e): the run and its problems (an artifact left unencrypted, a copy not stored)."""
    run = engine_backup(ds, dest, env, extra=secure_backup_args(keys))
    return run, check_secure_backup(run, "(e)")


def restore(ds, dest, target, data_dir, env, keys):
    """(f): the run and its problems (row or file counts, a signature not valid)."""
    run = engine_restore(ds, dest, target, data_dir, env, extra=secure_restore_args(keys))
    problems = check_restored(ds, target, os.path.join(data_dir, "filestore", target))
    if not (run.get("signature") or "").startswith("valid"):
        problems.append("(f) signature: %s" % run.get("signature"))
    return run, problems


def summarize(rounds, s):
    """s["secure"] and the targets of (e) and (f): seconds, ratios, the cost of encryption, RSS."""
    first = rounds[0]
    med = med_of
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
            "extra_cpu_s": med(cpu_seconds(r, "secure_backup") - cpu_seconds(r, "engine_backup") for r in rounds),
            "plain_cpu_s": med(cpu_seconds(r, "engine_backup") for r in rounds),
            "secure_cpu_s": med(cpu_seconds(r, "secure_backup") for r in rounds),
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
            "secure_backup": engine_rss_mb(rounds, "secure_backup"),
            "secure_backup_vmhwm": peak_mb(rounds, "secure_backup"),
            "secure_backup_tree_total": peak_mb(rounds, "secure_backup", total=True),
        },
    }
    if "secure_restore" in first:
        sec["seconds"]["secure_restore"] = med(r["secure_restore"]["seconds"] for r in rounds)
        sec["seconds"]["plain_restore"] = s["seconds"]["engine_restore"]
        sec["ratios"]["secure_restore_vs_pg_restore"] = paired(
            rounds, lambda r: r["secure_restore"]["seconds"] / pg_restore_seconds(r)
        )
        sec["per_round"]["secure_restore_vs_pg_restore"] = [
            round(r["secure_restore"]["seconds"] / pg_restore_seconds(r), 3) for r in rounds
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
        sec["peak_rss_mb"]["secure_restore"] = engine_rss_mb(rounds, "secure_restore")
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


def lines(s, rounds):
    """The table's lines of (e) and (f)."""
    sec, cost = s["secure"], s["secure"]["encryption_cost"]
    out = [
        "",
        "encrypted (age) + signed (Ed25519), local destination",
        STEP_HEADER,
        STEP_ROW
        % (
            "(e) engine backup, encrypted + signed",
            sec["seconds"]["secure_backup"],
            median_cpu(rounds, "secure_backup"),
            busy(rounds, "secure_backup"),
        ),
    ]
    for name, a in cost["artifacts"].items():
        out.append(
            "%-46s %9.2f  (unencrypted %.2f s)" % ("      %s artifact" % name, a["secure_seconds"], a["plain_seconds"])
        )
    if "secure_restore" in sec["seconds"]:
        out.append(
            STEP_ROW
            % (
                "(f) engine restore of (e) (verify+decrypt)",
                sec["seconds"]["secure_restore"],
                median_cpu(rounds, "secure_restore"),
                busy(rounds, "secure_restore"),
            )
        )
        for key in sorted(sec["restore_phases"], key=lambda k: {"verify": 0, "database": 1}.get(k, 2)):
            out.append("%-46s %9.2f" % ("      %s" % key, sec["restore_phases"][key]))
    out += [
        "",
        "%-46s %9.3f  target <= %.1f  %s"
        % (
            "(e) / pg_dump",
            sec["ratios"]["secure_backup_vs_pg_dump"],
            TARGETS["secure_backup_ratio"],
            verdict(s, "secure_backup_ratio"),
        ),
        "%-46s %s" % ("  per round", " ".join("%.3f" % v for v in sec["per_round"]["secure_backup_vs_pg_dump"])),
    ]
    if "secure_restore" in sec["seconds"]:
        out += [
            "%-46s %9.3f  target <= %.1f  %s"
            % (
                "(f) / (createdb + pg_restore)",
                sec["ratios"]["secure_restore_vs_pg_restore"],
                TARGETS["secure_restore_ratio"],
                verdict(s, "secure_restore_ratio"),
            ),
            "%-46s %s"
            % ("  per round", " ".join("%.3f" % v for v in sec["per_round"]["secure_restore_vs_pg_restore"])),
            "%-46s %9s" % ("  signature check", ", ".join(str(v) for v in sec["signature"])),
        ]
    out += [
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
        out.append(
            "%-46s %9s / %s MB/s"
            % (
                "    %s artifact, (b) / (e)" % name,
                fmt(a["plain_stored_mb_per_s"]),
                fmt(a["secure_stored_mb_per_s"]),
            )
        )
    out.append(
        "%-46s %12s / %s" % ("  stored, (b) / (e)", mib(cost["stored_bytes_plain"]), mib(cost["stored_bytes_secure"]))
    )
    if "secure_vs_plain_restore" in cost:
        out.append(
            "%-46s %9.3f  (%+.2f s)"
            % ("  restore (f) / (d)", cost["secure_vs_plain_restore"], cost["restore_extra_seconds"])
        )
    rss = sec["peak_rss_mb"]
    out += [
        "%-46s %9.1f / %s"
        % ("engine peak RSS (e) / (f) (MB, peak_rss_kb)", rss["secure_backup"], rss.get("secure_restore", "-")),
        "%-46s %9s / %s"
        % ("engine VmHWM sampled (e) / (f)", rss["secure_backup_vmhwm"], rss.get("secure_restore_vmhwm", "-")),
    ]
    return out
