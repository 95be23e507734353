"""Dispatch: one plan executed (backup, restore, drill, verify) within this worker's own scope.

The worker (service/worker.py) calls :func:`execute` for each run it claims,
and ``spp-backup run --plan FILE`` for a plan file given by hand. What a plan
may ask is checked against the worker's own odoo.conf (core/scope.py); its
connection, data_dir and keys are the worker's, never the plan's.
"""

import logging
from dataclasses import dataclass, field, replace

from ..core import scope
from ..core.config import DestinationConfig, PgConfig, Settings
from ..core.errors import BackupError, PreflightError
from ..core.plans import BACKUP, DRILL, PITR_DRILL, PITR_RESTORE, RESTORE, VERIFY, plan_from_dict
from ..formats import catalog
from ..formats.catalog import BackupRef, latest
from ..io.crypto import load_identities
from ..io.storage import open_storage
from ..ops.backup import run_backup
from ..ops.drill import run_drill
from ..ops.prune import apply_retention
from ..ops.restore import RestoreOptions, restore
from ..ops.verify import verify
from ..pitr import recover
from ..pitr.drill import run_pitr_drill
from ..pitr.service import configured_locations, server_keys

_logger = logging.getLogger("spp_backup.worker")


@dataclass
class WorkerContext:
    """What a worker knows about its server, from its own configuration, not from a plan."""

    settings: Settings
    pg: PgConfig
    data_dir: str | None
    conf_path: str | None = None
    identities: list = field(default_factory=list)
    # Folders the serving database's server approved at upgrade (approved_folders), per run.
    approved: tuple = ()

    @classmethod
    def from_config(cls, conf_path=None, data_dir=None):
        settings = Settings.from_config(conf_path)
        identity_file = settings.get("identity_file")
        return cls(
            settings=settings,
            pg=settings.pg,
            data_dir=data_dir or settings.data_dir,
            conf_path=conf_path,
            identities=load_identities(identity_file) if identity_file else [],
        )


def execute(action, plan, ctx, serving_db, progress, log=None, approved=()):
    """Run one plan: (result dict, error sentence or None, warnings list). Raises BackupError on failure.

    ``plan``: the plan's JSON object, read through its typed class (core/plans.py), which refuses unknown keys.

    ``progress(fraction, message)`` follows the work as it goes; ``log(message)`` receives one line per step
    done (the run's log). ``approved``: the folders the serving database's server approved at upgrade
    (``approved_folders``), read by the worker itself; a list a plan carries is never trusted.
    """
    plan = plan_from_dict(action, plan)
    ctx = replace(ctx, approved=tuple(approved or ()))
    return {
        BACKUP: _backup,
        RESTORE: _restore,
        DRILL: _drill,
        VERIFY: _verify,
        PITR_RESTORE: _pitr_restore,
        PITR_DRILL: _pitr_drill,
    }[action](plan, ctx, serving_db, progress, log or (lambda message: None))


def _destination(data, ctx):
    """A plan's destination, checked against this worker's odoo.conf (backup_roots, S3 scope) and the approvals
    the server recorded; whatever the plan says about approvals is ignored."""
    config = DestinationConfig(**data)
    scope.check_destination(config, ctx.settings, ctx.data_dir, ctx.approved)
    return config


def _backup(plan, ctx, serving_db, progress, log):
    scope.check_database(plan.db_name, serving_db, ctx.settings)
    plan.destinations = [_destination(vars(config), ctx) for config in plan.destinations]
    scope.check_offsite_encryption(bool(plan.recipients), plan.destinations, ctx.settings)
    plan.pg, plan.data_dir, plan.odoo_conf = ctx.pg, ctx.data_dir, ctx.conf_path
    if plan.signing_key_file:
        plan.signing_key_file = ctx.settings.get("signing_key_file")
        if not plan.signing_key_file:
            raise PreflightError(
                "This policy signs its backups, but this worker's odoo.conf names no signing_key_file in its "
                "[spp_backup] section."
            )
    # The store key, like the signing key, is this worker's own file: never a path that came with the plan.
    plan.store_key_file = ctx.settings.store_key_file(ctx.data_dir) if plan.incremental_filestore else None
    retention = []
    result = run_backup(
        plan,
        progress=progress,
        after=lambda done: retention.extend(apply_retention(plan, done, progress, log)),
        log=log,
    )
    data = result.to_dict()
    data["retention"] = retention
    error = None
    if result.failed_copies:
        error = "The backup was stored, but %d of %d copies failed: %s" % (
            len(result.failed_copies),
            len(result.copies),
            "; ".join("%s: %s" % (c["destination"], c["error"]) for c in result.failed_copies),
        )
    return data, error, result.warnings


def _source_ref(source, ctx, serving_db):
    """The BackupRef a plan's Source names (destination, database, backup id), within the scope."""
    scope.check_database(source.db_name, serving_db, ctx.settings, what="read the backups of")
    config = _destination(source.destination, ctx)
    storage = open_storage(config, ctx.settings)
    if source.is_latest:
        return latest(storage, source.db_name)
    return BackupRef(storage, source.db_name, source.backup_id)


def _restore(plan, ctx, serving_db, progress, log):
    # Code from outside is accepted by a person on the command line only (--accept-code), never through a plan
    # (RestoreRequest has no such setting and refuses it); how to connect, decrypt and report are the worker's own.
    options = plan.options.to_dict()
    scope.check_target_database(
        options.get("target_db"), serving_db, ctx.settings, replace=bool(options.get("replace"))
    )
    ref = _source_ref(plan.source, ctx, serving_db)
    # Whether an unsigned backup is accepted is the server's decision (its policy does not sign), written in
    # the plan by Odoo, never an option a person sets.
    restore_options = RestoreOptions(
        pg=ctx.pg,
        identities=ctx.identities,
        data_dir=ctx.data_dir,
        settings=ctx.settings,
        allow_unsigned=bool(plan.unsigned_ok),
        **options,
    )
    result = restore(ref, restore_options, progress=progress, log=log)
    return result.to_dict(), None, result.warnings


def _pitr_archive(location, ctx):
    """(storage, trusted keys) of the WAL archive at ``location``: only one this worker's odoo.conf names
    (pitr_destinations), with the worker's own keys; a location a plan names and the worker does not know is
    refused."""
    if location not in configured_locations(ctx.settings):
        raise PreflightError(
            "%s is not a WAL archive of this server: its odoo.conf names %s in pitr_destinations."
            % (location, ", ".join(configured_locations(ctx.settings)) or "none")
        )
    keys = server_keys(ctx.settings)
    if not keys:
        raise PreflightError(
            "This worker's odoo.conf names no signing_key_file nor verify_key: the WAL archive cannot be trusted."
        )
    return open_storage(catalog.destination_for(location, ctx.settings)[0], ctx.settings), keys


def _pitr_restore(plan, ctx, serving_db, progress, log):
    """One database as it was at one second, from a WAL archive of this worker's (``_pitr_archive``)."""
    scope.check_database(plan.db_name, serving_db, ctx.settings, what="read the backups of")
    options = plan.options.to_dict()
    scope.check_target_database(
        options.get("target_db"), serving_db, ctx.settings, replace=bool(options.get("replace"))
    )
    storage, keys = _pitr_archive(plan.location, ctx)
    # The scratch cluster goes where this worker's odoo.conf says (pitr_tmp_dir), never where a plan says.
    options["tmp_dir"] = ctx.settings.get("pitr_tmp_dir") or None
    restore_options = RestoreOptions(
        pg=ctx.pg, identities=ctx.identities, data_dir=ctx.data_dir, settings=ctx.settings, **options
    )
    result = recover.restore_database_at(
        storage,
        plan.db_name,
        plan.to_time,
        restore_options,
        keys,
        system_id=plan.system_id,
        progress=progress,
        log=log,
        neutralize_modules=plan.neutralize_modules,
    )
    return result.to_dict(), None, result.warnings


def _pitr_drill(plan, ctx, serving_db, progress, log):
    """A drill to a second (random when the plan names none) from a WAL archive of this worker's."""
    scope.check_database(plan.db_name, serving_db, ctx.settings, what="read the backups of")
    storage, keys = _pitr_archive(plan.location, ctx)
    result = run_pitr_drill(
        storage,
        plan.db_name,
        ctx.pg,
        ctx.data_dir,
        ctx.identities,
        keys,
        moment=plan.to_time,
        system_id=plan.system_id,
        tmp_dir=ctx.settings.get("pitr_tmp_dir") or None,
        neutralize_modules=plan.neutralize_modules,
        progress=progress,
        log=log,
    )
    error = None
    if not result.ok:
        failed = [check.name for check in result.checks if not check.ok]
        error = "The drill to a second failed: %s" % (result.error or ", ".join(failed) or "see the checks")
    return result.to_dict(), error, result.warnings


def _drill(plan, ctx, serving_db, progress, log):
    ref = _source_ref(plan.source, ctx, serving_db)
    result = run_drill(
        ref,
        ctx.pg,
        ctx.data_dir,
        identities=ctx.identities,
        public_key=plan.public_key,
        allow_unsigned=bool(plan.unsigned_ok),
        neutralize_sql=plan.neutralize_sql or [],
        jobs=int(plan.jobs or 1),
        progress=progress,
        log=log,
        settings=ctx.settings,
    )
    error = None
    if not result.ok:
        failed = [check.name for check in result.checks if not check.ok]
        error = "The restore drill failed: %s" % (result.error or ", ".join(failed) or "see the checks")
    return result.to_dict(), error, result.warnings


def _verify(plan, ctx, serving_db, progress, log):
    """Verify each source of the plan; the result lists one report per source, in order."""
    sources = plan.sources
    deep = bool(plan.deep) and bool(ctx.identities)
    reports = []
    for index, source in enumerate(sources):
        progress(index / max(len(sources), 1), "Verifying %s" % (source.label or source.db_name))
        entry = {"label": source.label, "deep": deep}
        try:
            ref = _source_ref(source, ctx, serving_db)
            report = verify(
                ref,
                public_key=plan.public_key,
                identities=ctx.identities or None,
                deep=deep,
                allow_unsigned=bool(plan.unsigned_ok),
            )
        except BackupError as exc:
            entry.update(ok=False, error=str(exc))
        except Exception as exc:  # storage and network trouble: a sentence for the people, details in the log
            _logger.warning("Verifying %s failed", source.label, exc_info=True)
            entry.update(ok=False, error="%s: %s" % (type(exc).__name__, exc))
        else:
            log(
                "Verified %s: %s"
                % (
                    source.label or source.db_name,
                    "OK (signature %s%s)" % (report.signature, ", deep" if deep else "")
                    if report.ok
                    else "FAILED: %s" % report.failure_text(),
                )
            )
            entry.update(
                ok=report.ok,
                signature=report.signature,
                text=report.text(),
                failure=None if report.ok else report.failure_text(),
                problems=list(report.problems),
                checks=[{"name": c.name, "file": c.file, "ok": c.ok, "message": c.message} for c in report.checks],
                encrypted=bool((report.manifest or {}).get("encryption")),
                manifest={
                    key: (report.manifest or {}).get(key)
                    for key in ("db_name", "backup_id", "version", "major_version", "created_at", "modules")
                },
                sizes={name: art.get("size") for name, art in ((report.manifest or {}).get("artifacts") or {}).items()},
            )
        if entry.get("error"):
            log("Verification of %s failed: %s" % (source.label or source.db_name, entry["error"]))
        reports.append(entry)
    return {"reports": reports}, None, []
