#!/usr/bin/env python3
"""Time from "Back up now" to the job showing Done, for a database of about 1 GB.

A real Odoo 17 server process with spp_backup on a throwaway database padded
to ``--gb`` GB, a service worker, and XML-RPC as a Backup Manager: the clock
starts when the wizard's confirmation is sent and stops when reading the job
(as its form does) says Done. Also prints when the worker picked the run up
and how long the backup itself took, so the overhead of the queue is visible.
Median of ``--repeat`` rounds. Run with the Odoo 17 interpreter (.venv).
"""

import argparse
import os
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests", "worker"))

import psycopg2  # noqa: E402
from conftest import OdooServer, pg_kwargs, wait_for  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gb", type=float, default=1.0, help="database size to pad to (default 1)")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    base = tempfile.mkdtemp(prefix="spp_backup_latency_")
    server = OdooServer(base)
    print("installing spp_backup into %s ..." % server.db, flush=True)
    server.install()
    rows = int(args.gb * 1e9 / 130)
    server.query(
        "CREATE TABLE spp_bulk AS SELECT g AS id, md5(g::text) || md5((g * 7)::text) || md5((g * 13)::text) AS t "
        "FROM generate_series(1, %s) g",
        (rows,),
    )
    size = server.query("SELECT pg_database_size(current_database())")[0][0]
    print("database size: %.2f GB" % (size / 1e9), flush=True)
    server.start()
    worker = server.start_worker()
    try:
        manager = server.make_user("bench_manager", ["base.group_user", "spp_backup.group_backup_manager"])
        destination = manager("spp.backup.destination", "create", {"name": "Disk", "path": server.backups})
        policy = manager(
            "spp.backup.policy",
            "create",
            {"name": "Bench", "destination_ids": [(6, 0, [destination])], "encrypt": False, "keep_last": 1},
        )
        totals, picks, backups = [], [], []
        for index in range(args.repeat):
            started = time.monotonic()
            wizard = manager("spp.backup.run.now", "create", {"policy_id": policy})
            job = manager("spp.backup.run.now", "action_confirm", [wizard])["res_id"]

            def done(job=job):
                return manager("spp.backup.job", "read", [job], ["state"])[0]["state"] in ("done", "failed")

            wait_for(done, 3600, "the backup", interval=0.1)
            total = time.monotonic() - started
            record = manager("spp.backup.job", "read", [job], ["state", "duration", "run_id"])[0]
            run = server.query(
                "SELECT extract(epoch FROM started_at - create_date) FROM spp_backup_run WHERE id = %s",
                (record["run_id"][0],),
            )[0][0]
            totals.append(total)
            picks.append(float(run))
            backups.append(record["duration"])
            print(
                "round %d: %s; Back up now -> Done %.2f s (picked up after %.2f s, backup %.2f s)"
                % (index + 1, record["state"], total, float(run), record["duration"]),
                flush=True,
            )
        print(
            "median of %d: Back up now -> Done %.2f s; picked up after %.2f s; backup itself %.2f s"
            % (args.repeat, statistics.median(totals), statistics.median(picks), statistics.median(backups))
        )
    finally:
        worker.kill()
        server.stop()
        conn = psycopg2.connect(dbname="postgres", **pg_kwargs())
        conn.autocommit = True
        with conn.cursor() as cr:
            cr.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (server.db,))
            cr.execute('DROP DATABASE IF EXISTS "%s"' % server.db)
        conn.close()


if __name__ == "__main__":
    main()
