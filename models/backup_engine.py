import contextlib
import logging
import os
import resource
import signal
import subprocess
import sys
import threading

from odoo import SUPERUSER_ID, _, api, models, sql_db
from odoo.exceptions import AccessError, UserError
from odoo.modules.module import get_module_path
from odoo.modules.neutralize import get_neutralization_queries
from odoo.tools import config as odoo_config

from .. import compat
from ..engine.core import scope, states
from ..engine.core.config import PgConfig, Settings
from ..engine.core.errors import BackupError
from ..engine.io import crypto
from ..engine.service import protocol as run_protocol
from .server_fields import server_mode

_logger = logging.getLogger(__name__)

# The folder that holds the engine package: a one-shot worker starts from there.
ADDON_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Resource limits an Odoo worker sets on itself, which a worker it starts must not inherit.
RESET_LIMITS = ("RLIMIT_AS", "RLIMIT_CPU", "RLIMIT_DATA", "RLIMIT_RSS")


def _detach():
    """In the child, before exec: a process of its own, without Odoo's limits and signal dispositions."""
    for name in RESET_LIMITS:
        limit = getattr(resource, name, None)
        if limit is None:
            continue
        try:
            soft, hard = resource.getrlimit(limit)
            resource.setrlimit(limit, (hard, hard))
        except (ValueError, OSError):
            pass
    signal.pthread_sigmask(signal.SIG_SETMASK, [])
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGCHLD, signal.SIGPIPE):
        with contextlib.suppress(OSError, ValueError):
            signal.signal(signum, signal.SIG_DFL)


class SppBackupEngine(models.AbstractModel):
    """The bridge between Odoo and the engine: settings, connection, rights, scope and the worker.

    Every model asks this one, instead of each other, for what the server is
    configured with and for queueing work.
    """

    _name = "spp.backup.engine"
    _inherit = ["spp.backup.server.fields"]
    _description = "Backup engine bridge"

    # ------------------------------------------------------------ settings

    @api.model
    def _conf_path(self):
        rcfile = odoo_config.rcfile
        return rcfile if rcfile and os.path.isfile(rcfile) else None

    @api.model
    def _settings(self):
        """The ``[spp_backup]`` settings of odoo.conf (environment variables first)."""
        try:
            return Settings.from_config(self._conf_path())
        except BackupError as exc:
            raise UserError(str(exc)) from exc

    @api.model
    def _pg(self, settings=None):
        """PostgreSQL connection of this Odoo server (with the password, kept in memory)."""
        settings = settings or self._settings()
        port = odoo_config.get("db_port")
        return PgConfig(
            host=odoo_config.get("db_host") or None,
            port=int(port) if port else None,
            user=odoo_config.get("db_user") or None,
            password=odoo_config.get("db_password") or None,
            bin_dir=settings.get("pg_bin_dir") or None,
        )

    @api.model
    def _data_dir(self):
        """Odoo's data directory (its filestore lives in ``filestore/<db>`` there)."""
        return odoo_config["data_dir"]

    @api.model
    def _neutralize_queries(self, modules):
        """Odoo's neutralization statements of ``modules`` (names) that this server has on its addons path."""
        present = [name for name in sorted(modules) if get_module_path(name, display_warning=False)]
        try:
            return [query for query in get_neutralization_queries(present) if query]
        except (OSError, ValueError) as exc:
            _logger.warning("Cannot read the neutralization queries: %s", exc)
            return []

    @api.model
    def _neutralize_by_module(self):
        """{module: its neutralization statements} of every module this server knows that has some: a copy of a
        database as it was at some second runs those of the modules installed in it then (no manifest lists them)."""
        names = self.env["ir.module.module"].sudo().search([]).mapped("name")
        found = {}
        for name in names:
            queries = self._neutralize_queries([name])
            if queries:
                found[name] = queries
        return found

    # -------------------------------------------------------------- rights

    @api.model
    def _as_server(self, records):
        """``records`` as the server acts on them: the user of the server's crons, not the person who asked.

        What the server records (a run's outcome, the messages, alerts, activities and emails it makes) is the
        same whether the cron collected it or someone pressed Refresh, and never depends on that person's
        account: a Backup Manager without an email address is a sender Odoo cannot send from.
        """
        return server_mode(records.with_user(SUPERUSER_ID))

    @api.model
    def _check_manager(self):
        if not (self.env.su or self.env.user.has_group("spp_backup.group_backup_manager")):
            raise AccessError(_("Only Backup Managers may run, verify or test backups."))

    @api.model
    def _check_restore_right(self):
        if not (self.env.su or self.env.user.has_group("spp_backup.group_backup_restore")):
            raise AccessError(
                _("Only users with the Backup Restore right may restore backups. Ask an administrator to grant it.")
            )

    @api.model
    def _check_auditor(self):
        if not (self.env.su or self.env.user.has_group("spp_backup.group_backup_auditor")):
            raise AccessError(_("Only Backup Auditors and Managers may look at backups."))

    @api.model
    def _trusted_public_key(self, policies=None):
        """The keys every verification, restore and drill checks signatures with: a list, or None.

        ``verify_key`` in odoo.conf (set by whoever runs the server) comes first and alone. Else this server's
        own keys: the public half of the signing key file odoo.conf names, and every key this server signed
        with before (``spp.backup.signing.key``, written by the server only), so a backup made before the key
        was replaced still verifies. ``policies`` is accepted for callers that name the backup's policy; one
        key pair serves the whole server.
        """
        configured = crypto.public_key_list(self._settings().get("verify_key"))
        if configured:
            return configured
        Keys = self.env["spp.backup.signing.key"]
        keys = []
        current = Keys._server_key()
        if current.get("public_key"):
            keys.append(current["public_key"])
        for known in Keys._trusted():
            if known not in keys:
                keys.append(known)
        return keys or None

    @api.model
    def _unsigned_ok(self, policies):
        """Whether an unsigned backup of one of ``policies`` (found by the server) is accepted, with a warning.

        Only when none of them signs: a backup of a signing policy, or of no policy the server knows, must be
        signed once the server has a key.
        """
        return bool(policies) and not any(policies.sudo().mapped("sign"))

    # --------------------------------------------------------------- scope

    @api.model
    def _check_database_scope(self, name, what="back up", settings=None):
        """A UserError in words when database ``name`` is outside what odoo.conf lets this server touch."""
        try:
            scope.check_database(name, self.env.cr.dbname, settings or self._settings(), what=what)
        except BackupError as exc:
            raise UserError(str(exc)) from exc

    @api.model
    def _database_allowed(self, name, settings=None):
        try:
            return scope.database_allowed(name, self.env.cr.dbname, settings or self._settings())
        except BackupError:
            return name == self.env.cr.dbname

    @api.model
    def _check_target_scope(self, name, replace=True, settings=None):
        try:
            scope.check_target_database(name, self.env.cr.dbname, settings or self._settings(), replace=replace)
        except BackupError as exc:
            raise UserError(str(exc)) from exc

    # -------------------------------------------------------------- worker

    @api.model
    def _commit_unless_testing(self):
        if not (compat.in_test_mode(self.env) or odoo_config["test_enable"]):
            self.env.cr.commit()  # pylint: disable=invalid-commit

    @api.model
    def _worker_mode(self):
        """``service`` (a worker service is alive), ``oneshot`` (Odoo's own one-shot worker is) or ``none``."""
        modes = run_protocol.live_worker_modes(self.env.cr)
        if run_protocol.MODE_SERVICE in modes:
            return "service"
        if run_protocol.MODE_ONESHOT in modes:
            return "oneshot"
        return "none"

    @api.model
    def _embedded_allowed(self):
        """False when odoo.conf says a worker service runs (``worker = service``): Odoo then never starts one."""
        return (self._settings().get("worker") or "embedded").strip().lower() != "service"

    @api.model
    def _after_commit_wake_worker(self):
        """Once the current transaction commits: notify the workers, and start a one-shot one if none is alive."""
        dbname = self.env.cr.dbname
        if self.env.cr.postcommit.data.get("spp_backup.wake"):
            return
        self.env.cr.postcommit.data["spp_backup.wake"] = True
        embedded = self._embedded_allowed()
        registry = self.env.registry

        @self.env.cr.postcommit.add
        def wake():
            try:
                with sql_db.db_connect("postgres").cursor() as cr:
                    cr.execute("SELECT pg_notify(%s, %s)", (run_protocol.CHANNEL, dbname))
            except Exception:  # the workers poll as well
                _logger.warning("Cannot notify the backup workers", exc_info=True)
            if embedded:
                try:
                    with registry.cursor() as cr:
                        env = api.Environment(cr, self.env.uid, {})
                        env["spp.backup.engine"]._ensure_oneshot_worker()
                except Exception:  # the collect cron starts one for what is still queued
                    _logger.warning("Cannot start a one-shot backup worker", exc_info=True)

    @api.model
    def _check_workers(self):
        """From the collect cron: start a one-shot worker for queued runs when none is alive; alert when stuck."""
        Run = self.env["spp.backup.run"].sudo()
        queued = Run.search([("state", "=", states.QUEUED)], order="id")
        if queued and self._embedded_allowed():
            self._ensure_oneshot_worker()
        self.env["spp.backup.alert"]._check_stuck_runs(queued, self._worker_mode())

    @api.model
    def _ensure_oneshot_worker(self):
        """Start ``spp-backup worker --once`` for this database unless a worker is alive; True when started."""
        if self._worker_mode() != "none":
            return False
        if compat.in_test_mode(self.env) and not self.env.context.get("spp_backup_start_worker"):
            return False
        command = [
            self._settings().get("python") or sys.executable,
            "-m",
            "engine",
            "--conf",
            self._conf_path() or os.devnull,
            "worker",
            "--once",
            "--database",
            self.env.cr.dbname,
            "--data-dir",
            self._data_dir(),
        ]
        if not self._conf_path():
            command[3:5] = []
        env = dict(os.environ)
        env.update(self._pg().env())
        log_dir = os.path.join(self._data_dir(), "spp_backup")
        os.makedirs(log_dir, mode=0o700, exist_ok=True)
        log_path = os.path.join(log_dir, "worker-%s.log" % self.env.cr.dbname)
        try:
            with open(log_path, "ab") as log:
                process = subprocess.Popen(  # noqa: S603 - argument list, no shell
                    command,
                    cwd=ADDON_DIR,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    close_fds=True,
                    preexec_fn=_detach,  # noqa: PLW1509 - resets limits and signals only
                )
        except OSError as exc:
            _logger.error("Cannot start a one-shot backup worker: %s", exc)
            return False
        # Reap it when it ends, so it does not linger as a zombie.
        threading.Thread(target=process.wait, name="spp_backup-worker-%d" % process.pid, daemon=True).start()
        _logger.info("Started one-shot backup worker pid %s for %s", process.pid, self.env.cr.dbname)
        return True
