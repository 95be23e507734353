"""The states Odoo and the worker agree on: one definition, imported by both (never the strings).

A run (``spp_backup_run``) is queued by Odoo, set running and then done or failed by the worker. The record a
run works for (a backup job, a restore, a drill) goes through the same states, and a backup job may end
partly done (some copies stored, at least one destination failed). A stored copy is verified apart.
"""

QUEUED = "queued"
RUNNING = "running"
DONE = "done"
PARTIAL = "partial"
FAILED = "failed"

# A run's states, with the words Odoo shows for them.
RUN_STATES = ((QUEUED, "Queued"), (RUNNING, "Running"), (DONE, "Done"), (FAILED, "Failed"))
# The states of a record whose work is a run: a run's, and a backup's "partly done".
WORK_STATES = ((QUEUED, "Queued"), (RUNNING, "Running"), (DONE, "Done"), (PARTIAL, "Partly done"), (FAILED, "Failed"))
# Waiting for a worker or worked on now.
IN_FLIGHT = (QUEUED, RUNNING)
# A run the worker has finished (its result awaits Odoo's collector until applied).
FINISHED = (DONE, FAILED)
# A backup that stored at least one copy.
SUCCEEDED = (DONE, PARTIAL)

# A backup job's verification.
NOT_VERIFIED = "not_verified"
VERIFYING = "verifying"
VERIFIED = "ok"
