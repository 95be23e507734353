"""The engine's commands as the benchmark runs them (python -m engine --json ...), and the checks of what
they left."""

import json
import os
import shutil
import subprocess
import sys

from . import REPO
from .pg import drop_database, query
from .timing import count_files, timed


def engine_cmd(*args):
    return [sys.executable, "-m", "engine", "--json", *args]


def engine_json(stdout):
    """The engine's --json output (exit 1 means done with warnings; those are kept in the result)."""
    try:
        data = json.loads(stdout)
    except ValueError as exc:
        raise SystemExit("the engine did not print JSON: %s\n%s" % (exc, stdout[-2000:])) from exc
    if isinstance(data, dict) and data.get("ok") is False:
        raise SystemExit("the engine failed: %s" % data.get("error"))
    return data


def run_engine(env, *args):
    """One engine command, timed (exit 1, done with warnings, is accepted): its figures with the engine's own
    peak RSS and duration, and its JSON."""
    run, stdout = timed(engine_cmd(*args), cwd=REPO, env=env, ok_codes=(0, 1))
    data = engine_json(stdout)
    run["engine_peak_rss_kb"] = data.get("peak_rss_kb")
    run["engine_duration"] = data.get("duration")
    return run, data


def engine_backup(ds, dest, env, extra=(), fresh=True):
    """The engine's backup of ``ds`` into ``dest`` (a folder, emptied first unless not ``fresh``, or an s3:// URL)."""
    if "://" not in dest and fresh:
        shutil.rmtree(dest, ignore_errors=True)
        os.makedirs(dest)
    run, data = run_engine(env, "backup", "-d", ds.db, "--dest", dest, "--data-dir", ds.data_dir, *extra)
    run["backup_id"] = data.get("backup_id")
    run["artifacts"] = {
        name: dict(
            {k: art.get(k) for k in ("file", "size", "raw_size", "seconds")}, encrypted=bool(art.get("encryption"))
        )
        for name, art in data["artifacts"].items()
    }
    run["stored_bytes"] = sum(art["size"] or 0 for art in run["artifacts"].values())
    run["copies"] = [{k: c.get(k) for k in ("location", "ok", "error")} for c in data.get("copies") or []]
    run["warnings"] = data.get("warnings")
    return run


def engine_restore(ds, dest, target, data_dir, env, extra=()):
    drop_database(target)
    shutil.rmtree(data_dir, ignore_errors=True)
    source = os.path.join(dest, ds.db, "latest")
    run, data = run_engine(env, "restore", source, "--target", target, "--data-dir", data_dir, *extra)
    run["phases"] = data.get("seconds")
    run["filestore_files"] = data.get("filestore_files")
    run["signature"] = data.get("signature")
    return run


def engine_drill(ds, dest, data_dir, env, keys):
    """A drill of the newest backup in ``dest``; a failed drill is reported, not fatal."""
    shutil.rmtree(data_dir, ignore_errors=True)
    source = os.path.join(dest, ds.db, "latest")
    run, stdout = timed(
        engine_cmd(
            "drill", source, "--data-dir", data_dir, "--identity", keys["identity"], "--verify-key", keys["verify_key"]
        ),
        cwd=REPO,
        env=env,
        ok_codes=(0, 2),
    )
    try:
        data = json.loads(stdout)
    except ValueError as exc:
        raise SystemExit("the engine's drill did not print JSON: %s\n%s" % (exc, stdout[-2000:])) from exc
    if "checks" not in data:  # an error before the drill started (bad arguments, unreadable backup)
        raise SystemExit("the drill failed: %s" % data.get("error"))
    run["engine_peak_rss_kb"] = data.get("peak_rss_kb")
    run["drill_ok"] = data.get("ok")
    run["total_seconds"] = data.get("total_seconds")
    run["restore_seconds"] = data.get("restore_seconds")
    run["checks"] = data.get("checks")
    run["cleaned_up"] = data.get("cleaned_up")
    run["scratch_db"] = data.get("scratch_db")
    run["error"] = data.get("error")
    return run


def make_keys(keydir, env):
    """A fresh age identity and Ed25519 signing key, made by the engine's own ``keys`` command."""
    shutil.rmtree(keydir, ignore_errors=True)
    os.makedirs(keydir)
    keys = {}
    for kind, name, private, public in (
        ("age", "age_identity.txt", "identity", "recipient"),
        ("signing", "signing_key.pem", "sign_key", "verify_key"),
    ):
        path = os.path.join(keydir, name)
        proc = subprocess.run(
            engine_cmd("keys", kind, "--out", path), cwd=REPO, env=env, capture_output=True, text=True
        )
        if proc.returncode != 0:
            raise SystemExit("python -m engine keys %s failed: %s%s" % (kind, proc.stdout[-1000:], proc.stderr[-2000:]))
        keys[private] = path
        keys[public] = engine_json(proc.stdout)["public_key"]
    return keys


def secure_backup_args(keys):
    return ("--encrypt-to", keys["recipient"], "--sign-key", keys["sign_key"])


def incremental_args(rundir):
    """The incremental filestore, its store key beside the run's other files."""
    return ("--incremental", "--store-key", os.path.join(rundir, "store.key"))


def secure_restore_args(keys):
    return ("--identity", keys["identity"], "--verify-key", keys["verify_key"])


def check_restored(ds, target, filestore=None):
    rows = query("SELECT count(*) FROM mail_message", dbname=target)[0][0]
    ok = rows == ds.params["messages"]
    problems = [] if ok else ["%s has %d mail_message rows, expected %d" % (target, rows, ds.params["messages"])]
    if filestore is not None:
        files = count_files(filestore)
        if files != ds.params["files"]:
            problems.append("%s holds %d files, expected %d" % (filestore, files, ds.params["files"]))
    return problems


def check_secure_backup(run, label):
    """Every artifact of an encrypted backup is encrypted, and every copy was stored."""
    problems = []
    plain = [name for name, art in run["artifacts"].items() if not art.get("encrypted")]
    if plain:
        problems.append("%s not encrypted: %s" % (label, ", ".join(plain)))
    failed = [c["location"] for c in run.get("copies") or [] if not c.get("ok")]
    if failed:
        problems.append("%s copies failed: %s" % (label, ", ".join(failed)))
    return problems
