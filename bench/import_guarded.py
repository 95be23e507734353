#!/usr/bin/env python3
"""What reading a dump from outside as hostile costs: the engine's import of a plain .sql against raw psql.

Same dataset as bench/run.py (``--scale``), dumped once with
``pg_dump --no-owner`` to plain SQL (as Odoo's database manager writes
``dump.sql``). Each round, one after the other:

(i)  createdb -T template0 NEW + psql --single-transaction -v ON_ERROR_STOP=1 -f dump.sql, as the superuser
     (what an administrator does with a trusted file);
(j)  python -m engine --json import dump.sql --target NEW2 --no-filestore (guard pass over the whole file,
     import role, guarded load under \\restrict, hand-over, checks).

Also the guard alone over the file, in this process (MB/s). Medians of
``--repeat`` rounds; the ratio (j)/(i) is paired per round, then the median.
"""

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.path.insert(0, ROOT)

from measure.dataset import Dataset, scale_tag  # noqa: E402
from measure.engine_cli import engine_cmd, engine_json  # noqa: E402
from measure.pg import drop_database, pg_environment, query  # noqa: E402
from measure.timing import log, timed  # noqa: E402

from engine.db import sqlguard  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=float, default=1.0, help="dataset scale as in bench/run.py (default 1.0)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "spp_backup_bench"))
    args = parser.parse_args()
    env = pg_environment()
    os.environ.update({k: v for k, v in env.items() if k.startswith("PG")})
    os.makedirs(args.workdir, exist_ok=True)
    ds = Dataset(args.workdir, args.scale)
    facts = ds.ensure()
    dump = os.path.join(args.workdir, "plain_s%s.sql" % scale_tag(args.scale))
    log("pg_dump --no-owner to plain SQL")
    timed(["pg_dump", "--no-owner", "-f", dump, ds.db], env=env)
    size = os.path.getsize(dump)
    raw_db, engine_db = ds.db + "_rawsql", ds.db + "_import"
    data_dir = os.path.join(args.workdir, "import_data")
    rounds = []
    for index in range(args.repeat):
        log("round %d/%d: guard alone" % (index + 1, args.repeat))
        t0 = time.monotonic()
        with open(dump, "rb") as handle:
            guard = sqlguard.scan(handle)
        scan_s = time.monotonic() - t0
        log("(i) createdb + psql -f dump.sql")
        drop_database(raw_db)
        created, _ = timed(["createdb", "-T", "template0", raw_db], env=env)
        loaded, _ = timed(
            ["psql", "-q", "--no-psqlrc", "--single-transaction", "-v", "ON_ERROR_STOP=1", "-d", raw_db, "-f", dump],
            env=env,
        )
        log("(j) engine import")
        drop_database(engine_db)
        imported, out = timed(
            engine_cmd("import", dump, "--target", engine_db, "--no-filestore", "--data-dir", data_dir),
            cwd=ROOT,
            env=env,
            ok_codes=(0, 1),
        )
        result = engine_json(out)
        rows = [query("SELECT count(*) FROM mail_message", dbname=db)[0][0] for db in (raw_db, engine_db)]
        if rows[0] != rows[1] or rows[0] != ds.params["messages"]:
            raise SystemExit("row counts differ: %s, expected %d" % (rows, ds.params["messages"]))
        raw_s = created["seconds"] + loaded["seconds"]
        rounds.append(
            {
                "guard_s": round(scan_s, 3),
                "raw_s": round(raw_s, 3),
                "import_s": imported["seconds"],
                "ratio": round(imported["seconds"] / raw_s, 3),
                "import_rss_mb": round((result.get("peak_rss_kb") or 0) / 1024, 1),
                "statements": guard.statements,
                "copy_rows": guard.copy_rows,
            }
        )
        for db in (raw_db, engine_db):
            drop_database(db)
    summary = {
        "dataset": {"db": ds.db, "db_size_bytes": facts["db_size_bytes"], "dump_bytes": size},
        "median": {key: statistics.median(r[key] for r in rounds) for key in ("guard_s", "raw_s", "import_s", "ratio")},
        "guard_mb_per_s": round(size / 1e6 / statistics.median(r["guard_s"] for r in rounds), 1),
        "import_peak_rss_mb": max(r["import_rss_mb"] for r in rounds),
        "rounds": rounds,
    }
    print(json.dumps(summary, indent=2))
    print(
        "\nplain dump %.2f GB: guard alone %.1f s (%.0f MB/s); psql -f %.1f s; engine import %.1f s; "
        "import / psql = %.2f (median of %d rounds, paired); engine peak RSS %.0f MB"
        % (
            size / 1e9,
            summary["median"]["guard_s"],
            summary["guard_mb_per_s"],
            summary["median"]["raw_s"],
            summary["median"]["import_s"],
            summary["median"]["ratio"],
            len(rounds),
            summary["import_peak_rss_mb"],
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
