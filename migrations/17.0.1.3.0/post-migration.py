"""From the detached runner (status files) to runs in PostgreSQL and the worker.

- Local destinations whose folder exists stay usable although backup_roots is
  new: they are recorded as approved, with a warning in the log to add them.
- The collect cron now collects runs, every minute.
- Work that the old runner had in hand cannot be followed any more: it is
  marked failed in words (the next scheduled backup runs as usual).
"""

from odoo import SUPERUSER_ID, api
from odoo.addons.spp_backup.models.server_fields import server_mode

INTERRUPTED = (
    "This was started by the runner of a previous version of the addon and could not be followed after the "
    "upgrade; it was not marked complete. Start it again if it is still needed."
)


def migrate(cr, version):
    env = api.Environment(cr, SUPERUSER_ID, {})
    env["spp.backup.destination"]._approve_existing_folders()
    cron = env.ref("spp_backup.ir_cron_spp_backup_collect", raise_if_not_found=False)
    if cron:
        cron.write(
            {
                "model_id": env.ref("spp_backup.model_spp_backup_run").id,
                "interval_number": 1,
                "interval_type": "minutes",
            }
        )
    for model in ("spp.backup.job", "spp.backup.restore", "spp.backup.drill"):
        server_mode(env[model]).search([("state", "in", ("queued", "running")), ("run_id", "=", False)]).write(
            {"state": "failed", "error_message": INTERRUPTED}
        )
