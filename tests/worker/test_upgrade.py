"""Upgrading a real database.

Odoo 17: from the previous release of the addon (17.0.1.3.0) to this one. The
previous release is taken from this repository's own history: its files as
they were at that commit are installed on a database of their own, given
policies over RPC (one with a signing public key, one without, one weekly),
and the database is then upgraded with ``-u spp_backup`` by this checkout.

Odoo 19: 19.0.1.6.0 is the first release for Odoo 19, so there is no older
one to upgrade from; what every deployment runs after pulling a new checkout,
``-u spp_backup`` on a database in use, is tested instead.
"""

import os
import subprocess
import tarfile
import tempfile

import pytest
from conftest import ROOT, OdooServer, only_on_odoo

# The last commit of release 17.0.1.3.0 (one signing key per policy, schedules in UTC, the key dialog).
PREVIOUS_RELEASE = "0e5e38d6b018ada0ac5c737acee5ce2d7e24da4d"


def export_release(commit, target):
    """The addon's files at ``commit``, written under ``target`` (from git, so nothing of this checkout leaks)."""
    archive = os.path.join(os.path.dirname(target), "release.tar")
    have = ["git", "-C", ROOT, "cat-file", "-e", commit + "^{commit}"]
    if subprocess.run(have, capture_output=True, check=False).returncode:  # noqa: S603
        # A shallow clone: ask its origin for that one commit.
        subprocess.run(  # noqa: S603
            ["git", "-C", ROOT, "fetch", "--quiet", "--depth=1", "origin", commit],  # noqa: S607
            capture_output=True,
            check=False,
            timeout=300,
        )
    if subprocess.run(have, capture_output=True, check=False).returncode:  # noqa: S603
        pytest.skip("release %s is not in this clone's history (a shallow clone without its origin)" % commit)
    done = subprocess.run(  # noqa: S603
        ["git", "-C", ROOT, "archive", "--format=tar", "-o", archive, commit],  # noqa: S607
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode:
        pytest.fail("cannot read release %s from this repository's history: %s" % (commit, done.stderr.strip()))
    with tarfile.open(archive) as tar:
        tar.extractall(target, filter="data")


def disk_destination(server, admin):
    """A local destination in the server's backup root, made over RPC; its id."""
    folder = os.path.join(server.backups, "disk")
    os.makedirs(folder)
    return admin("spp.backup.destination", "create", {"name": "Disk", "path": folder})


ADDON_CRONS = (
    "SELECT c.id, c.active FROM ir_cron c JOIN ir_model_data d ON d.res_id = c.id AND d.model = 'ir.cron' "
    "WHERE d.module = 'spp_backup' ORDER BY c.id"
)


def update_addon(server):
    """``-u spp_backup`` with Odoo stopped; what Odoo logged while doing it (the test fails if it failed)."""
    with open(server.log, "a", encoding="utf-8") as handle:
        handle.write("=== update\n")
    update = subprocess.run(  # noqa: S603
        server.odoo_command("-u", "spp_backup", "--stop-after-init"),
        cwd=server.base,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    with open(server.log, encoding="utf-8", errors="replace") as handle:
        log = handle.read().rsplit("=== update\n", 1)[1]
    assert update.returncode == 0, log[-3000:]
    return log


@pytest.fixture
def old_server():
    base = tempfile.mkdtemp(prefix="spp_backup_upgrade_")
    server = OdooServer(base)
    link = os.path.join(base, "addons", "spp_backup")
    release = os.path.join(base, "release", "spp_backup")
    os.makedirs(release)
    export_release(PREVIOUS_RELEASE, release)
    os.unlink(link)
    os.symlink(release, link)
    server.install()
    yield server
    server.destroy()


@only_on_odoo(17)
def test_upgrade_from_the_previous_release(old_server):
    """Policies keep their instants and get Sign from their old key; the key dialog's model goes; the new
    release then serves the database (the signing dialog opens, the schedule reads in words)."""
    server = old_server
    server.start()
    admin = server.rpc("admin", "admin")
    destination = disk_destination(server, admin)
    signed_key = "Tq5ifmrUXuv9Ny1VJ5kw9Rwo0K5n86oBF8GiZ/R+Ebw="
    common = {"destination_ids": [(6, 0, [destination])], "encrypt": False}
    signed = admin("spp.backup.policy", "create", dict(common, name="Signed", signing_public_key=signed_key))
    plain = admin("spp.backup.policy", "create", dict(common, name="Plain", time_of_day=2.5))
    weekly = admin("spp.backup.policy", "create", dict(common, name="Weekly", interval_type="weeks", interval_number=1))
    before = dict(server.query("SELECT id, next_run FROM spp_backup_policy"))
    server.stop()

    link = os.path.join(server.base, "addons", "spp_backup")
    os.unlink(link)
    os.symlink(ROOT, link)
    log = update_addon(server)
    assert "Failed to load registry" not in log

    rows = {
        row[0]: row[1:]
        for row in server.query("SELECT id, sign, tz, next_run, weekday FROM spp_backup_policy ORDER BY id")
    }
    assert rows[signed][0] is True and rows[plain][0] is False, "Sign follows the old signing public key"
    assert {row[1] for row in rows.values()} == {"UTC"}, "existing schedules stay in UTC"
    assert {pid: row[2] for pid, row in rows.items()} == before, "no next run moved"
    assert rows[weekly][3], "a weekly policy keeps its weekday"
    assert server.query("SELECT DISTINCT incremental_filestore FROM spp_backup_policy") == [(False,)], (
        "existing policies keep writing filestore archives"
    )
    assert server.query("SELECT count(*) FROM ir_model WHERE model = 'spp.backup.key.show'") == [(0,)]
    # The mixin of records run by the worker keeps its registry entries under its new name.
    assert server.query(
        "SELECT model FROM ir_model WHERE model IN ('spp.backup.runner.mixin', 'spp.backup.run.mixin')"
    ) == [("spp.backup.run.mixin",)]
    assert server.query(
        "SELECT count(*) FROM ir_model_data WHERE module = 'spp_backup' AND name LIKE '%runner_mixin%'"
    ) == [(0,)]
    assert server.query("SELECT count(*) FROM spp_backup_signing_key") == [(0,)], "no policy key becomes trusted"

    server.start()
    admin = server.rpc("admin", "admin")
    texts = admin("spp.backup.policy", "read", [plain], ["schedule_text", "sign", "signing_status"])[0]
    assert texts["schedule_text"] == "Every day at 02:30 (UTC)"
    assert "not signed" in texts["signing_status"]
    action = admin("spp.backup.signing", "action_open")
    assert action["res_model"] == "spp.backup.signing" and action["res_id"]


@pytest.fixture
def fresh_server():
    server = OdooServer(tempfile.mkdtemp(prefix="spp_backup_update_"))
    server.install()
    yield server
    server.destroy()


@only_on_odoo(19)
def test_update_in_place_keeps_policies_schedules_and_crons(fresh_server):
    """``-u spp_backup`` on a database in use: policies and their schedules stay, the crons stay active,
    nothing is logged as a warning or an error, and the updated addon serves it."""
    server = fresh_server
    server.start()
    admin = server.rpc("admin", "admin")
    destination = disk_destination(server, admin)
    common = {"destination_ids": [(6, 0, [destination])], "encrypt": False}
    plain = admin("spp.backup.policy", "create", dict(common, name="Plain", time_of_day=2.5))
    weekly = admin("spp.backup.policy", "create", dict(common, name="Weekly", interval_type="weeks", interval_number=1))
    before = server.query("SELECT id, name, next_run, weekday, tz FROM spp_backup_policy ORDER BY id")
    crons = server.query(ADDON_CRONS)
    assert crons and all(active for _id, active in crons)
    server.stop()

    log = update_addon(server)
    problems = [line for line in log.splitlines() if " WARNING " in line or " ERROR " in line or " CRITICAL " in line]
    assert problems == [], "\n".join(problems)
    assert server.query("SELECT id, name, next_run, weekday, tz FROM spp_backup_policy ORDER BY id") == before
    assert server.query(ADDON_CRONS) == crons

    server.start()
    admin = server.rpc("admin", "admin")
    texts = admin("spp.backup.policy", "read", [plain, weekly], ["schedule_text", "sign"])
    assert texts[0]["schedule_text"].startswith("Every day at 02:30 (")
    assert texts[1]["schedule_text"].startswith("Every week on ")
    version = server.query("SELECT latest_version FROM ir_module_module WHERE name = 'spp_backup'")
    assert version == [("19.0.1.6.0",)]
