"""Streaming standbys and their lag, from a real standby of the tests' PostgreSQL 15 on loopback.

The standby is made with pg_basebackup -R from the tests' server and started on a free port (as the
postgres OS user when the tests run as root: PostgreSQL refuses to run as root), then stopped and removed.
"""

import contextlib
import glob
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time

import psycopg2
import pytest
from conftest import ROOT, conn_kwargs

from engine.core.config import Settings
from engine.db import replication
from engine.pitr.service import PitrService


def server_bin(pgconf):
    """The server binaries of the tests' server's major version (Debian's folder)."""
    conn = psycopg2.connect(dbname="postgres", **conn_kwargs())
    major = conn.server_version // 10000
    conn.close()
    folders = glob.glob("/usr/lib/postgresql/%d/bin" % major)
    assert folders, "PostgreSQL %d's server binaries are needed for a standby" % major
    return folders[0]


def as_owner(command, **kwargs):
    if os.getuid() == 0:
        command = ["runuser", "-u", "postgres", "--", *command]
    return subprocess.run(command, capture_output=True, text=True, timeout=300, **kwargs)  # noqa: S603


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def standby(pgconf):
    """A standby named spp_test_standby streaming from the tests' server; its data folder and port."""
    bindir = server_bin(pgconf)
    base = tempfile.mkdtemp(prefix="spp_backup_standby_")
    if os.getuid() == 0:
        shutil.chown(base, "postgres")
    data = os.path.join(base, "data")
    made = as_owner(
        [
            os.path.join(bindir, "pg_basebackup"),
            "-d",
            "host=%s port=%s user=%s application_name=spp_test_standby"
            % (pgconf.host or "127.0.0.1", pgconf.port or 5432, pgconf.user or "postgres"),
            "-D",
            data,
            "-R",
            "-X",
            "stream",
            "-c",
            "fast",
        ]
    )
    assert made.returncode == 0, made.stderr
    port = free_port()
    started = as_owner(
        [
            os.path.join(bindir, "pg_ctl"),
            "-D",
            data,
            "-l",
            os.path.join(base, "standby.log"),
            "-w",
            "-t",
            "60",
            "start",
            "-o",
            "-c listen_addresses=127.0.0.1 -p %d -k %s" % (port, base),
        ]
    )
    assert started.returncode == 0, started.stderr + started.stdout
    try:
        yield data, port
    finally:
        as_owner([os.path.join(bindir, "pg_ctl"), "-D", data, "-m", "immediate", "-w", "stop"])
        shutil.rmtree(base, ignore_errors=True)


def wait_streaming(pgconf, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [s for s in replication.standbys(pgconf) if s.name == "spp_test_standby"]
        if found and found[0].state == "streaming" and found[0].replay_lag_bytes is not None:
            return found[0]
        time.sleep(0.25)
    pytest.fail("the standby did not stream within %d s" % timeout)


def test_a_streaming_standby_is_listed_with_its_lag(pgconf, standby):
    found = wait_streaming(pgconf)
    assert found.client == "127.0.0.1"
    assert found.sync_state == "async"
    assert found.visible and found.replay_lag_bytes >= 0 and found.sent_lag_bytes >= 0
    assert replication.lagging([found], max_lag_seconds=60, max_lag_bytes=64 << 20) == []
    # WAL written on the server reaches the standby: what it has not replayed yet goes back to (near) zero.
    with contextlib.closing(psycopg2.connect(dbname="postgres", **conn_kwargs())) as conn:
        conn.autocommit = True
        with conn.cursor() as cr:
            cr.execute("CREATE TEMP TABLE bulk AS SELECT g, md5(g::text) FROM generate_series(1, 200000) g")
            cr.execute("SELECT pg_switch_wal()")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        found = wait_streaming(pgconf)
        if found.replay_lag_bytes == 0:
            break
        time.sleep(0.25)
    assert found.replay_lag_bytes == 0, found
    # The command says it too, and fails past a limit of 0 seconds only when there is lag to count.
    done = subprocess.run(
        [sys.executable, "-m", "engine", "--json", "pitr", "status"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    listed = {s["name"]: s for s in json.loads(done.stdout)["standbys"]}
    assert listed["spp_test_standby"]["state"] == "streaming"


def test_a_standby_not_streaming_or_behind_or_hidden_is_late():
    def standby(**given):
        values = {
            "name": "s",
            "client": "10.0.0.9",
            "state": "streaming",
            "sync_state": "async",
            "sent_lag_bytes": 0,
            "replay_lag_bytes": 0,
            "replay_lag_seconds": 0.0,
        }
        values.update(given)
        return replication.Standby(**values)

    def why(found):
        return [reason for _standby, reason in replication.lagging([found], 60, 1 << 20)]

    assert why(standby()) == []
    assert why(standby(state="catchup")) == ["it is catchup, not streaming"]
    assert why(standby(replay_lag_bytes=2 << 20)) == ["it replays 2097152 bytes behind"]
    assert why(standby(replay_lag_seconds=61.5)) == ["it replays 61.5 s behind"]
    assert why(standby(replay_lag_bytes=None, replay_lag_seconds=None)) == ["it has not reported what it replayed yet"]
    assert why(standby(replay_lag_bytes=None, sent_lag_bytes=None, replay_lag_seconds=None)) == [
        "its position is hidden from this role (grant it pg_monitor)"
    ]


def test_the_workers_report_names_the_standby_and_the_limit_it_passes(pgconf, standby, keys, tmp_path):
    """Continuous protection's report (what Odoo shows and alerts on) lists the standby, not the receiver or a
    base backup, and says in words when it is past odoo.conf's limit."""
    wait_streaming(pgconf)
    section = {
        "signing_key_file": str(keys["signing_file"]),
        "pitr_destinations": str(tmp_path / "pitr"),
        "pitr_spool": str(tmp_path / "spool"),
    }
    service = PitrService.from_settings(Settings(pg=pgconf, section=section), pgconf, str(tmp_path))
    problems = []
    found = service.standbys(problems)
    assert [(s["name"], s["state"], s["visible"]) for s in found] == [("spp_test_standby", "streaming", True)]
    assert problems == []
    strict = PitrService.from_settings(
        Settings(pg=pgconf, section=dict(section, pitr_standby_max_lag_bytes="-1")), pgconf, str(tmp_path)
    )
    strict.standbys(problems)
    assert len(problems) == 1 and re.fullmatch(r"standby spp_test_standby: it replays \d+ bytes behind", problems[0])
