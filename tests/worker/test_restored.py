"""A database restored from its own backup, started as Odoo: a real server, a real worker, the real CLI."""

import os
import subprocess
import sys

from conftest import ROOT, OdooServer, wait_for

from engine.core import states
from engine.ops.inflight import IN_FLIGHT_MESSAGE

MANAGER = ["base.group_user", "spp_backup.group_backup_manager"]
COLLECT = ("spp_backup", "ir_cron_spp_backup_collect")
OBJECTIVES = ("spp_backup", "ir_cron_spp_backup_check_objectives")


def noise(server):
    """(alerts, activities, e-mails) in the server's database now."""
    return tuple(
        server.query("SELECT count(*) FROM %s" % table)[0][0]
        for table in ("spp_backup_alert", "mail_activity", "mail_mail")
    )


def test_runbook_restore_of_a_backup_taken_while_its_job_ran_raises_no_alert(odoo_server, workers, tmp_path):
    """The runbook's CLI restore (no copy, no neutralization) of a set whose snapshot holds its own job (running)
    and run (running), then Odoo started on it with its crons: the job and run are closed in words, and the crons
    that reap, collect and alert open no alert, plan no activity and queue no e-mail."""
    manager = odoo_server.make_user("r_manager", MANAGER)
    destination = manager("spp.backup.destination", "create", {"name": "Disk R", "path": odoo_server.backups})
    policy = manager(
        "spp.backup.policy",
        "create",
        {
            "name": "Restored from itself",
            "destination_ids": [(6, 0, [destination])],
            "encrypt": False,
            "include_filestore": False,
            "is_drill_scheduled": False,
        },
    )
    workers.start()
    wizard = manager("spp.backup.run.now", "create", {"policy_id": policy})
    job_id = manager("spp.backup.run.now", "action_confirm", [wizard])["res_id"]

    def job():
        return manager("spp.backup.job", "read", [job_id], ["state", "backup_id", "run_id"])[0]

    wait_for(lambda: job()["state"] == states.DONE, 300, "the backup")
    backup_id, run_id = job()["backup_id"], job()["run_id"][0]
    key = manager("spp.backup.policy", "read", [policy], ["signing_public_key"])[0]["signing_public_key"]

    target = odoo_server.db + "_rst"
    restored = OdooServer(str(tmp_path / "restored"))
    restored.db = target
    restored.write_conf(dbfilter="^%s$" % target, spp_backup_roots=odoo_server.backups)
    try:
        command = [sys.executable, "-m", "engine", "--conf", odoo_server.conf, "restore"]
        command += [os.path.join(odoo_server.backups, odoo_server.db, backup_id), "--target", target]
        command += ["--no-filestore"] + (["--verify-key", key] if key else ["--allow-unsigned"])
        proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=900)  # noqa: S603
        assert proc.returncode in (0, 1), proc.stdout + proc.stderr
        assert "closed 1 run and 1 backup job that were in flight when this backup was taken" in proc.stdout, (
            proc.stdout
        )
        assert restored.query(
            "SELECT state, is_applied, error_message FROM spp_backup_run WHERE id = %s", (run_id,)
        ) == [(states.FAILED, True, IN_FLIGHT_MESSAGE)]
        before = noise(restored)
        restored.start()
        admin = restored.rpc("admin", "admin")
        for xmlid in (COLLECT, OBJECTIVES, COLLECT):
            cron = admin("ir.model.data", "check_object_reference", *xmlid)[1]
            admin("ir.cron", "method_direct_trigger", [cron])
        assert noise(restored) == before
        assert restored.query("SELECT state, error_message FROM spp_backup_job WHERE id = %s", (job_id,)) == [
            (states.FAILED, IN_FLIGHT_MESSAGE)
        ]
        assert restored.query("SELECT state, is_applied FROM spp_backup_run WHERE id = %s", (run_id,)) == [
            (states.FAILED, True)
        ]
        assert restored.query("SELECT last_failure_at FROM spp_backup_policy WHERE id = %s", (policy,)) == [(None,)]
    finally:
        restored.destroy()
