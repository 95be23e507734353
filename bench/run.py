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

# The scenarios are in bench/scenarios/ (compare, with the optional steps encrypted, s3, drill and
# restore_jobs in its rounds; nightly; growth); what they share is in bench/measure/ (PostgreSQL, timing and
# memory, the dataset, the engine's commands, the S3 server, the report's figures).

import argparse
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from measure.dataset import Dataset  # noqa: E402
from measure.moto import S3_BUCKET, S3_PREFIX  # noqa: E402
from measure.pg import pg_environment  # noqa: E402
from scenarios import compare, growth, nightly  # noqa: E402


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
        return growth.run_growth(args, env)
    if args.nightly:
        return nightly.run_nightly(args, env)
    return compare.run_benchmark(args, env)


if __name__ == "__main__":
    sys.exit(main())
