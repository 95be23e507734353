"""Runs in PostgreSQL and the worker, across processes: a real Odoo server, real workers, real RPC."""

import json
import os
import signal
import time
import xmlrpc.client

import pytest
from conftest import wait_for

from engine.core import states
from engine.service import protocol

MANAGER = ["base.group_user", "spp_backup.group_backup_manager"]
AUDITOR = ["base.group_user", "spp_backup.group_backup_auditor"]


@pytest.fixture(scope="module")
def people(odoo_server):
    return {
        "manager": odoo_server.make_user("w_manager", MANAGER),
        "auditor": odoo_server.make_user("w_auditor", AUDITOR),
        "admin": odoo_server.rpc("admin", "admin"),
    }


@pytest.fixture(scope="module")
def policy(odoo_server, people):
    manager = people["manager"]
    destination = manager("spp.backup.destination", "create", {"name": "Disk", "path": odoo_server.backups})
    return manager(
        "spp.backup.policy",
        "create",
        {
            "name": "Worker tier",
            "destination_ids": [(6, 0, [destination])],
            "encrypt": False,
            "is_drill_scheduled": False,
        },
    )


def back_up_now(rpc, policy_id):
    wizard = rpc("spp.backup.run.now", "create", {"policy_id": policy_id})
    return rpc("spp.backup.run.now", "action_confirm", [wizard])["res_id"]


def job_of(rpc, job_id, fields=("state", "backup_id", "error_message", "run_id", "has_stored_copy")):
    return rpc("spp.backup.job", "read", [job_id], list(fields))[0]


def run_row(server, run_id):
    return server.query("SELECT state, worker_pid, error_message FROM spp_backup_run WHERE id = %s", (run_id,))[0]


def manifests(server):
    """The backup sets with a manifest (those that list as restorable) under the server's backup folder."""
    return sorted(root for root, _dirs, names in os.walk(server.backups) if "manifest.json" in names)


def refused(call, *args):
    with pytest.raises(xmlrpc.client.Fault) as caught:
        call(*args)
    return caught.value.faultString


def denied(call, *args):
    """True when the call is refused for want of a right (Odoo's access error, or the server's own refusal)."""
    text = refused(call, *args)
    return any(words in text for words in ("You are not allowed", "nobody sets them", "nobody creates one"))


def test_rpc_refuses_runs_and_evidence_to_every_group(odoo_server, people, policy, workers):
    """Over RPC, Auditor, Manager and Settings administrator create, write and delete no run and no evidence."""
    workers.start()
    job_id = back_up_now(people["manager"], policy)
    wait_for(lambda: job_of(people["auditor"], job_id)["state"] == states.DONE, 180, "the backup")
    run_id = job_of(people["auditor"], job_id)["run_id"][0]
    # The open forms were told over Odoo's bus as the run went (by the worker, then by Odoo recording it).
    channel = json.dumps([odoo_server.db, protocol.BUS_CHANNEL], separators=(",", ":"))
    posted = odoo_server.query("SELECT message FROM bus_bus WHERE channel = %s", (channel,))
    assert any('"id":%d' % run_id in message for (message,) in posted), posted
    for who in ("auditor", "manager", "admin"):
        rpc = people[who]
        assert denied(rpc, "spp.backup.run", "write", [run_id], {"state": states.QUEUED}), who
        assert denied(rpc, "spp.backup.run", "create", {"action": "backup", "plan": "{}"}), who
        assert denied(rpc, "spp.backup.run", "unlink", [run_id]), who
        for values in ({"database_sha256": "0" * 64}, {"verify_state": "ok"}, {"state": states.DONE}):
            assert denied(rpc, "spp.backup.job", "write", [job_id], values), (who, values)
        forged = {"policy_id": policy, "state": states.DONE, "backup_id": "20261126T030000Z-f00000"}
        assert denied(rpc, "spp.backup.job", "create", forged), who
        assert denied(rpc, "spp.backup.policy", "write", [policy], {"last_success_at": "2030-01-01 00:00:00"}), who
        # The fields that once read a file into the Log tab do not exist any more.
        text = refused(rpc, "spp.backup.job", "write", [job_id], {"runner_log_path": "/etc/passwd"})
        assert "Invalid field" in text or "You are not allowed" in text
    assert job_of(people["auditor"], job_id)["state"] == states.DONE


def test_out_of_scope_database_and_folder_are_refused_over_rpc(odoo_server, people):
    """A policy naming another database, a destination outside backup_roots: refused with a sentence."""
    manager = people["manager"]
    text = refused(manager, "spp.backup.policy", "create", {"name": "Other", "database": "postgres"})
    assert "databases setting" in text and "odoo.conf" in text
    text = refused(manager, "spp.backup.destination", "create", {"name": "etc", "path": "/etc"})
    assert "backup_roots" in text
    assert not os.path.exists("/etc/" + odoo_server.db)


def test_killed_worker_is_failed_by_another_process_which_takes_the_next_run(odoo_server, people, policy, workers):
    """SIGKILL mid-backup: another worker marks the run failed at once; nothing restorable; it runs the next one."""
    manager = people["manager"]
    first = workers.start()
    before = manifests(odoo_server)
    job_id = back_up_now(manager, policy)
    run_id = job_of(manager, job_id)["run_id"][0]
    wait_for(
        lambda: odoo_server.query("SELECT progress FROM spp_backup_run WHERE id = %s AND state = 'running'", (run_id,)),
        60,
        "the run starting",
        interval=0.05,
    )
    first.send_signal(signal.SIGKILL)
    first.wait()
    killed_at = time.monotonic()
    second = workers.start()
    wait_for(lambda: run_row(odoo_server, run_id)[0] == states.FAILED, 60, "the dead run being marked failed")
    noticed = time.monotonic() - killed_at
    assert "stopped before it reported a result" in run_row(odoo_server, run_id)[2]
    assert noticed < 60
    wait_for(lambda: job_of(manager, job_id)["state"] == states.FAILED, 90, "the job recording the failure")
    assert not job_of(manager, job_id)["has_stored_copy"]
    assert manifests(odoo_server) == before, "the killed backup left no set that lists as restorable"
    next_job = back_up_now(manager, policy)
    wait_for(lambda: job_of(manager, next_job)["state"] == states.DONE, 180, "the next backup")
    next_run = job_of(manager, next_job)["run_id"][0]
    assert run_row(odoo_server, next_run)[1] == second.pid
    print("dead run noticed %.1f s after the SIGKILL" % noticed)


def test_odoo_restarted_mid_backup_while_a_service_worker_runs_it(odoo_server, people, policy, workers):
    """Odoo stopped and started during a backup: the service worker completes it and Odoo records it."""
    manager = people["manager"]
    workers.start()
    job_id = back_up_now(manager, policy)
    run_id = job_of(manager, job_id)["run_id"][0]
    wait_for(lambda: run_row(odoo_server, run_id)[0] == states.RUNNING, 60, "the run starting", interval=0.05)
    odoo_server.stop()
    odoo_server.start()
    manager = odoo_server.rpc("w_manager", "w_manager-pw")
    wait_for(lambda: job_of(manager, job_id)["state"] == states.DONE, 180, "the backup recorded after the restart")
    assert job_of(manager, job_id)["backup_id"]


def test_two_workers_run_twenty_due_policies_each_exactly_once(odoo_server, people, workers):
    """Two workers (two nodes) and 20 due policies: 20 jobs, each run claimed by one worker, none twice."""
    manager, admin = people["manager"], people["admin"]
    destination = manager("spp.backup.destination", "create", {"name": "Disk 20", "path": odoo_server.backups})
    policies = [
        manager(
            "spp.backup.policy",
            "create",
            {
                "name": "Due %02d" % index,
                "destination_ids": [(6, 0, [destination])],
                "encrypt": False,
                "include_filestore": False,
                "is_drill_scheduled": False,
                "next_run": "2020-01-01 00:00:00",
            },
        )
        for index in range(20)
    ]
    one, two = workers.start(), workers.start()
    cron = admin("ir.model.data", "check_object_reference", "spp_backup", "ir_cron_spp_backup_run_due")[1]
    admin("ir.cron", "method_direct_trigger", [cron])
    admin("ir.cron", "method_direct_trigger", [cron])  # a second pass finds nothing due

    def all_done():
        rows = odoo_server.query(
            "SELECT j.policy_id, r.state, r.worker_pid FROM spp_backup_job j JOIN spp_backup_run r ON r.id = j.run_id "
            "WHERE j.policy_id = ANY(%s)",
            (policies,),
        )
        return rows if len(rows) == 20 and all(state == states.DONE for _p, state, _w in rows) else None

    rows = wait_for(all_done, 300, "20 backups")
    assert sorted(p for p, _s, _w in rows) == sorted(policies), "each policy exactly once"
    assert {w for _p, _s, w in rows} <= {one.pid, two.pid}
    print("runs per worker:", {pid: sum(1 for _p, _s, w in rows if w == pid) for pid in (one.pid, two.pid)})


def limits_of(pid):
    try:
        with open("/proc/%d/limits" % pid, encoding="ascii") as handle:
            return handle.read()
    except OSError:
        return None


def address_limit(pid):
    """The soft address-space limit of a process ("unlimited" or bytes), or None when it is gone."""
    limits = limits_of(pid)
    if limits is None:
        return None
    return [line for line in limits.splitlines() if line.startswith("Max address space")][0].split()[3]


def children_of(pid):
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open("/proc/%s/stat" % entry, encoding="ascii") as handle:
                    if int(handle.read().rsplit(")", 1)[1].split()[1]) == pid:
                        found.append(int(entry))
            except (OSError, ValueError, IndexError):
                continue
    return found


def test_oneshot_worker_from_a_prefork_odoo_with_a_memory_limit(odoo_server, people, policy):
    """Embedded mode under prefork workers with limit_memory_hard 512 MB: the one-shot worker Odoo starts from
    such a worker has its address-space limit lifted (the Odoo worker's stays), and completes the backup."""
    odoo_server.stop()
    odoo_server.write_conf(
        workers=2, limit_memory_hard=512 * 1024 * 1024, limit_memory_soft=480 * 1024 * 1024, spp_worker="embedded"
    )
    odoo_server.start()
    try:
        manager = odoo_server.rpc("w_manager", "w_manager-pw")
        job_id = back_up_now(manager, policy)
        run_id = job_of(manager, job_id)["run_id"][0]
        pid = wait_for(lambda: run_row(odoo_server, run_id)[1], 60, "a one-shot worker claiming the run", 0.05)
        odoo_workers = children_of(odoo_server.process.pid)
        assert any(address_limit(child) == "536870912" for child in odoo_workers), "Odoo's workers have the limit"
        limit = address_limit(pid)
        if limit is not None:  # still running: its address space is not bound by Odoo's 512 MB
            assert limit == "unlimited", limit
        wait_for(lambda: job_of(manager, job_id)["state"] == states.DONE, 240, "the backup of the one-shot worker")
        log = odoo_server.query("SELECT log FROM spp_backup_run WHERE id = %s", (run_id,))[0][0]
        assert "peak address space" in log
        print("one-shot worker: %s" % log.split("Worker memory: ")[1].splitlines()[0])
        wait_for(lambda: limits_of(pid) is None, 60, "the one-shot worker exiting once nothing is queued")
    finally:
        odoo_server.stop()
        odoo_server.write_conf(workers=0, spp_worker="service")
        odoo_server.options.pop("limit_memory_hard", None)
        odoo_server.options.pop("limit_memory_soft", None)
        odoo_server.write_conf()
        odoo_server.start()
