"""The dataset: built by dev/sampledb.py at a scale, reused by later runs of the same scale, warmed before
the measured steps."""

import datetime
import json
import os
import shutil
import subprocess
import sys
import time

from . import REPO
from .pg import conn_kwargs, database_exists, drop_database, query
from .timing import count_files, log, timed, tree_bytes

# Dataset at scale 1.0 (calibrated: pg_database_size ~ 1.05e9 bytes, filestore 0.92e9 bytes).
MESSAGES = 2_000_000

PARTNERS = 50_000

FILES = 4_000

FILE_SIZE = 225 * 1024

BODY_REPEAT = 10


def scale_tag(scale):
    return ("%g" % scale).replace(".", "_")


def dataset_params(scale):
    return {
        "scale": scale,
        "messages": max(1, round(MESSAGES * scale)),
        "partners": max(1, round(PARTNERS * scale)),
        "files": max(1, round(FILES * scale)),
        "file_size": FILE_SIZE,
        "body_repeat": BODY_REPEAT,
    }


class Dataset:
    def __init__(self, workdir, scale):
        self.params = dataset_params(scale)
        tag = scale_tag(scale)
        self.db = "spp_bench_s%s" % tag
        self.data_dir = os.path.join(workdir, "data_s%s" % tag)
        self.filestore = os.path.join(self.data_dir, "filestore", self.db)
        self.stamp = os.path.join(self.data_dir, "dataset.json")

    def present(self):
        """True when the database and filestore exist with the expected rows and files."""
        try:
            with open(self.stamp, encoding="utf-8") as handle:
                stamp = json.load(handle)
        except (OSError, ValueError):
            return False
        if stamp.get("params") != self.params or not database_exists(self.db):
            return False
        rows = query("SELECT count(*) FROM mail_message", dbname=self.db)[0][0]
        return rows == self.params["messages"] and count_files(self.filestore) == self.params["files"]

    def ensure(self, rebuild=False):
        """Build the dataset unless an identical one is there; returns facts about it."""
        facts = {"db": self.db, "params": self.params, "reused": True}
        if rebuild or not self.present():
            facts["reused"] = False
            facts.update(self.build())
        else:
            with open(self.stamp, encoding="utf-8") as handle:
                facts["built"] = json.load(handle).get("built")
        facts["db_size_bytes"] = query("SELECT pg_database_size(%s)", (self.db,))[0][0]
        facts["filestore_files"] = count_files(self.filestore)
        facts["filestore_bytes"] = tree_bytes(self.filestore)
        return facts

    def build(self):
        sys.path.insert(0, os.path.join(REPO, "dev"))
        import sampledb

        p = self.params
        log(
            "building dataset %s: %d messages, %d partners, %d files of %d bytes"
            % (self.db, p["messages"], p["partners"], p["files"], p["file_size"])
        )
        shutil.rmtree(self.data_dir, ignore_errors=True)
        os.makedirs(self.data_dir)
        t0 = time.monotonic()
        sampledb.build(
            conn_kwargs(),
            self.db,
            self.data_dir,
            partners=p["partners"],
            messages=p["messages"],
            files=p["files"],
            file_size=p["file_size"],
            body_repeat=p["body_repeat"],
        )
        t1 = time.monotonic()
        # Freeze and set hint bits now, so the first measured read does not write pages.
        query("VACUUM (FREEZE, ANALYZE)", dbname=self.db)
        query("CHECKPOINT")
        t2 = time.monotonic()
        built = {
            "at": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "sampledb_seconds": round(t1 - t0, 1),
            "vacuum_seconds": round(t2 - t1, 1),
            "seconds": round(t2 - t0, 1),
        }
        with open(self.stamp, "w", encoding="utf-8") as handle:
            json.dump({"params": p, "built": built}, handle, indent=2)
        log(
            "dataset built in %.0f s (sampledb %.0f s, vacuum %.0f s)"
            % (built["seconds"], built["sampledb_seconds"], built["vacuum_seconds"])
        )
        return {"built": built}

    def drop(self):
        drop_database(self.db)
        shutil.rmtree(self.data_dir, ignore_errors=True)


def warm_up(ds, rundir, env):
    """One unmeasured pg_dump and one read of every filestore file; the engine's bytecode compiled."""
    log("warming the cache (unmeasured pg_dump, filestore read, engine bytecode)")
    # As an installed package's is: each engine process then starts in 0.03 s of imports instead of 0.25 s
    # of compiling its modules again, which it would do every time under PYTHONDONTWRITEBYTECODE.
    subprocess.run([sys.executable, "-m", "compileall", "-q", os.path.join(REPO, "engine")], check=True)
    path = os.path.join(rundir, "warmup.dump")
    timed(["pg_dump", "-Fc", "-f", path, ds.db], env=env)
    os.unlink(path)
    for dirpath, _dirs, files in os.walk(ds.filestore):
        for name in files:
            with open(os.path.join(dirpath, name), "rb") as handle:
                while handle.read(1 << 20):
                    pass
