"""One backup and one restore through a real Odoo server, against pg_dump / pg_restore in the same run.

    PYTHON19=.venv19/bin/python
    eval "$(SPP_PG_MAJOR=18 dev/pg.sh env)"
    PATH=<the PostgreSQL 18 bin folder>:$PATH $PYTHON19 bench/odoo_round_trip.py --partners 200000 --repeat 3

The interpreter's Odoo series (17 or 19) is installed with spp_backup on a
throwaway database of the PostgreSQL server libpq's PGHOST / PGPORT name (a
role ``odoo``, superuser, is made when missing), given ``--partners``
partners and as many chatter messages, and ``--files`` attachment files of
``--file-size`` bytes (half random, half zeros) in its filestore. Odoo then
runs as a server with the backup worker as a service, and each round:

  (a) pg_dump -Fc of the database                  the usual raw tool
  (b) "Back up now" on a policy over XML-RPC, the worker backs up database,
      filestore and manifest to a local folder; the job's own duration
  (c) createdb + pg_restore -d of dump (a)
  (d) spp-backup restore --copy of the set (b) into a new database, with
      its filestore (verification pass included)

The medians of the rounds and their ratios are printed as JSON; pg_dump
and pg_restore are the first ones on the PATH (their version is printed).
"""

import argparse
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "tests", "worker"))

from conftest import OdooServer, odoo_series, pg_kwargs, wait_for  # noqa: E402


def log(message):
    print("[%s] %s" % (time.strftime("%H:%M:%S"), message), file=sys.stderr, flush=True)


def timed(command, ok=(0,), **kwargs):
    """Seconds ``command`` took; it must exit with one of ``ok``."""
    started = time.monotonic()
    done = subprocess.run(command, check=False, stdout=subprocess.DEVNULL, **kwargs)  # noqa: S603
    if done.returncode not in ok:
        sys.exit("%s exited %d" % (command[0], done.returncode))
    return time.monotonic() - started


def bulk(server, partners, files, file_size):
    """Partners and messages in SQL, attachment files written in Odoo's layout with their rows."""
    log("adding %d partners, %d messages and %d attachment files" % (partners, partners, files))
    server.query(
        "INSERT INTO res_partner (name, complete_name, email, active, type, is_company) "
        "SELECT 'Registrant ' || g, 'Registrant ' || g, 'r' || g || '@example.org', true, 'contact', false "
        "FROM generate_series(1, %s) g",
        (partners,),
    )
    server.query(
        "INSERT INTO mail_message (model, res_id, message_type, body, date, create_date, write_date) "
        "SELECT 'res.partner', g, 'comment', '<p>Visit ' || md5(g::text) || '</p>', now(), now(), now() "
        "FROM generate_series(1, %s) g",
        (partners,),
    )
    store = os.path.join(server.data_dir, "filestore", server.db)
    for number in range(files):
        data = os.urandom(file_size // 2) + bytes(file_size - file_size // 2)
        sha = hashlib.sha1(data).hexdigest()  # noqa: S324 - Odoo's own file naming
        folder = os.path.join(store, sha[:2])
        os.makedirs(folder, exist_ok=True)
        with open(os.path.join(folder, sha), "wb") as handle:
            handle.write(data)
        server.query(
            "INSERT INTO ir_attachment (name, type, store_fname, checksum, file_size, mimetype, res_model, res_id, "
            "create_date, write_date) VALUES (%s, 'binary', %s, %s, %s, 'application/octet-stream', 'res.partner', "
            "1, now(), now())",
            ("file%d.bin" % number, "%s/%s" % (sha[:2], sha), sha, file_size),
        )
    server.query("VACUUM ANALYZE")


def version(tool):
    return subprocess.run([tool, "--version"], capture_output=True, text=True, check=True).stdout.strip()  # noqa: S603


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--partners", type=int, default=200_000)
    parser.add_argument("--files", type=int, default=400)
    parser.add_argument("--file-size", type=int, default=256 * 1024)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    if not odoo_series():
        sys.exit("run this with an interpreter that imports Odoo 17 or 19")

    import psycopg2

    with psycopg2.connect(dbname="postgres", **pg_kwargs()) as conn, conn.cursor() as cr:
        conn.autocommit = True
        cr.execute("SELECT 1 FROM pg_roles WHERE rolname = 'odoo'")
        if not cr.fetchone():
            cr.execute("CREATE ROLE odoo SUPERUSER LOGIN")
        cr.execute("SHOW server_version")
        server_version = cr.fetchone()[0]

    base = tempfile.mkdtemp(prefix="spp_backup_bench_odoo_")
    server = OdooServer(base)
    rounds = {"pg_dump": [], "engine_backup": [], "pg_restore": [], "engine_restore": []}
    try:
        log("installing Odoo %s with spp_backup on PostgreSQL %s" % (odoo_series(), server_version))
        server.install()
        bulk(server, args.partners, args.files, args.file_size)
        size = server.query("SELECT pg_database_size(current_database())")[0][0]
        server.start()
        worker = server.start_worker()
        admin = server.rpc("admin", "admin")
        destination = admin("spp.backup.destination", "create", {"name": "Disk", "path": server.backups})
        policy = admin(
            "spp.backup.policy",
            "create",
            {"name": "Bench", "destination_ids": [(6, 0, [destination])], "encrypt": False, "sign": False},
        )
        env = dict(os.environ, PGUSER="odoo")
        for number in range(args.repeat):
            log("round %d of %d" % (number + 1, args.repeat))
            dump = os.path.join(base, "raw.dump")
            rounds["pg_dump"].append(timed(["pg_dump", "-Fc", "-f", dump, server.db], env=env))

            wizard = admin("spp.backup.run.now", "create", {"policy_id": policy})
            job_id = admin("spp.backup.run.now", "action_confirm", [wizard])["res_id"]
            job = wait_for(
                lambda job_id=job_id: next(
                    (
                        row
                        for row in admin("spp.backup.job", "read", [job_id], ["state", "duration", "backup_id"])
                        if row["state"] in ("done", "failed", "partial")
                    ),
                    None,
                ),
                1800,
                "the backup job",
                interval=0.5,
            )
            if job["state"] != "done":
                sys.exit("the backup job ended %s" % job["state"])
            rounds["engine_backup"].append(job["duration"])

            raw_db = "%s_raw%d" % (server.db, number)
            started = time.monotonic()
            subprocess.run(["createdb", raw_db], check=True, env=env)  # noqa: S603, S607
            subprocess.run(["pg_restore", "-d", raw_db, dump], check=True, env=env)  # noqa: S603, S607
            rounds["pg_restore"].append(time.monotonic() - started)
            subprocess.run(["dropdb", raw_db], check=True, env=env)  # noqa: S603, S607

            copy_db = "%s_copy%d" % (server.db, number)
            location = os.path.join(server.backups, server.db, job["backup_id"])
            rounds["engine_restore"].append(
                timed(
                    [sys.executable, "-m", "engine", "--conf", server.conf, "restore", location, "--target", copy_db]
                    + ["--copy", "--allow-unsigned"],
                    ok=(0, 1),  # 1: restored, with the warning that the set is not signed
                    cwd=ROOT,
                )
            )
            restored = server.query("SELECT count(*) FROM pg_database WHERE datname = %s", (copy_db,))
            if restored != [(1,)]:
                sys.exit("the restore made no database %s" % copy_db)
            subprocess.run(["dropdb", copy_db], check=True, env=env)  # noqa: S603, S607
            shutil.rmtree(os.path.join(server.data_dir, "filestore", copy_db), ignore_errors=True)
        worker.terminate()
        worker.wait(60)
    finally:
        server.destroy()
    medians = {name: round(statistics.median(values), 2) for name, values in rounds.items()}
    print(
        json.dumps(
            {
                "odoo": odoo_series(),
                "postgresql_server": server_version,
                "pg_dump": version("pg_dump"),
                "database_bytes": size,
                "files": args.files,
                "file_bytes": args.file_size,
                "rounds": {name: [round(value, 2) for value in values] for name, values in rounds.items()},
                "median_seconds": medians,
                "backup_over_pg_dump": round(medians["engine_backup"] / medians["pg_dump"], 2),
                "restore_over_pg_restore": round(medians["engine_restore"] / medians["pg_restore"], 2),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
