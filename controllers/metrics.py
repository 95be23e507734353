"""Prometheus metrics of the backup policies: ``GET /spp_backup/metrics``.

Protected by a token from odoo.conf (``[spp_backup] metrics_token``) or the
environment (``SPP_BACKUP_METRICS_TOKEN``), given as ``Authorization:
Bearer <token>``, never in the URL (where access logs and proxies keep it: a
request with ``?token=`` is refused, 400). Without a configured token the endpoint does
not exist (404). The database is the one of the request (the only database
of the server, or the one the dbfilter selects).
"""

import calendar
import hmac
import logging
import os

from odoo import fields, http
from odoo.http import request
from odoo.tools import config as odoo_config
from werkzeug.exceptions import NotFound

from ..engine.core.config import Settings
from ..engine.core.errors import BackupError

_logger = logging.getLogger(__name__)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

METRICS = (
    ("spp_backup_last_success_timestamp_seconds", "Unix time the newest successful backup finished (0: never)."),
    ("spp_backup_last_duration_seconds", "Duration of the newest successful backup, in seconds."),
    ("spp_backup_last_size_bytes", "Stored size of the newest successful backup, in bytes."),
    ("spp_backup_rpo_compliant", "1 when the newest good backup is within the RPO, 0 when the RPO is breached."),
    ("spp_backup_rto_compliant", "1 when the last drill restored within the RTO, 0 when not, -1 when unmeasured."),
    ("spp_backup_last_drill_success", "1 when the last restore drill passed, 0 when it failed, -1 when none ran."),
    ("spp_backup_open_alerts", "Number of open alerts of the policy."),
)


def configured_token():
    """The metrics token of this server, or None."""
    rcfile = odoo_config.rcfile
    try:
        settings = Settings.from_config(rcfile if rcfile and os.path.isfile(rcfile) else None)
    except BackupError:
        _logger.warning("The metrics token cannot be read: the Odoo configuration file is not readable")
        return None
    token = (settings.get("metrics_token") or "").strip()
    return token or None


def given_token(httprequest):
    header = httprequest.headers.get("Authorization") or ""
    if header.lower().startswith("bearer "):
        return header[7:].strip()
    return ""


def label_value(value):
    return str(value or "").replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def number(value):
    if isinstance(value, bool):
        value = int(value)
    if isinstance(value, int):
        return str(value)
    return repr(float(value))


def policy_samples(policy):
    """{metric name: value} for one policy."""
    job = policy.last_success_job_id
    success = policy.last_success_at
    rto = {"ok": 1, "breached": 0}.get(policy.rto_status, -1)
    drill = {"passed": 1, "failed": 0}.get(policy.last_drill_state, -1)
    return {
        "spp_backup_last_success_timestamp_seconds": calendar.timegm(success.timetuple()) if success else 0,
        "spp_backup_last_duration_seconds": float(job.duration or 0.0) if job else 0.0,
        "spp_backup_last_size_bytes": int(job.total_size or 0) if job else 0,
        "spp_backup_rpo_compliant": 1 if policy.rpo_status == "ok" else 0,
        "spp_backup_rto_compliant": rto,
        "spp_backup_last_drill_success": drill,
        "spp_backup_open_alerts": policy.open_alert_count,
    }


PITR_METRICS = (
    ("spp_backup_pitr_receiving", "1 while the worker's pg_receivewal streams the server's WAL, else 0."),
    (
        "spp_backup_pitr_archive_behind_seconds",
        "Seconds of the server's newest changes the WAL archive lacks (-1: it vouches for no recent second yet).",
    ),
    ("spp_backup_pitr_window_start_timestamp_seconds", "Unix time of the oldest second that can be restored."),
    ("spp_backup_pitr_window_end_timestamp_seconds", "Unix time of the newest second that can be restored."),
    ("spp_backup_pitr_slot_retained_bytes", "WAL the replication slot keeps on the database server, in bytes."),
    ("spp_backup_pitr_report_age_seconds", "Seconds since the worker last reported on continuous protection."),
    ("spp_backup_pitr_problems", "Number of problems the worker reports (or 1 when it is silent)."),
)
STANDBY_METRICS = (
    ("spp_backup_standby_streaming", "1 when the standby is streaming, else 0."),
    (
        "spp_backup_standby_replay_lag_bytes",
        "WAL the standby has not replayed yet, in bytes (-1: not visible, or nothing replayed reported yet).",
    ),
    ("spp_backup_standby_replay_lag_seconds", "How far behind the standby replays, in seconds (-1: not visible)."),
)


def timestamp(moment):
    return calendar.timegm(moment.timetuple()) if moment else 0


def pitr_rows(servers, now):
    """[(labels, {metric: value})] of the protected servers, and of their streaming standbys."""
    rows, standby_rows = [], []
    for server in servers:
        labels = 'server="%s",system_id="%s"' % (label_value(server.name), label_value(server.system_id))
        rows.append(
            (
                labels,
                {
                    "spp_backup_pitr_receiving": 1 if server.receiving else 0,
                    "spp_backup_pitr_archive_behind_seconds": -1.0 if server._behind() is None else server._behind(),
                    "spp_backup_pitr_window_start_timestamp_seconds": timestamp(server.window_start),
                    "spp_backup_pitr_window_end_timestamp_seconds": timestamp(server.window_end),
                    "spp_backup_pitr_slot_retained_bytes": float(server.slot_retained_bytes or 0.0),
                    "spp_backup_pitr_report_age_seconds": (now - server.reported_at).total_seconds()
                    if server.reported_at
                    else -1.0,
                    "spp_backup_pitr_problems": len(server._problems_now(now)),
                },
            )
        )
        for standby in server._standbys():
            visible = bool(standby.get("visible"))
            standby_rows.append(
                (
                    '%s,standby="%s",client="%s"'
                    % (labels, label_value(standby.get("name")), label_value(standby.get("client"))),
                    {
                        "spp_backup_standby_streaming": 1 if standby.get("state") == "streaming" else 0,
                        "spp_backup_standby_replay_lag_bytes": int(standby["replay_lag_bytes"])
                        if visible and standby.get("replay_lag_bytes") is not None
                        else -1,
                        "spp_backup_standby_replay_lag_seconds": float(standby.get("replay_lag_seconds") or 0.0)
                        if visible and standby.get("replay_lag_bytes") is not None
                        else -1.0,
                    },
                )
            )
    return rows, standby_rows


def _family(lines, metrics, rows):
    for name, help_text in metrics:
        lines.append("# HELP %s %s" % (name, help_text))
        lines.append("# TYPE %s gauge" % name)
        for labels, samples in rows:
            lines.append("%s{%s} %s" % (name, labels, number(samples[name])))


def render(policies, servers=None, now=None):
    """The Prometheus text exposition (format 0.0.4) of ``policies`` and of the protected ``servers``
    (spp.backup.pitr.server) with their standbys, as of ``now`` (naive UTC; default: now)."""
    now = now or fields.Datetime.now()
    rows = [
        ('policy="%s",database="%s"' % (label_value(policy.name), label_value(policy.database)), policy_samples(policy))
        for policy in policies
    ]
    lines = []
    _family(lines, METRICS, rows)
    if servers:
        server_rows, standby_rows = pitr_rows(servers, now)
        _family(lines, PITR_METRICS, server_rows)
        _family(lines, STANDBY_METRICS, standby_rows)
    return "\n".join(lines) + "\n"


class BackupMetrics(http.Controller):
    @http.route("/spp_backup/metrics", type="http", auth="none", methods=["GET"], csrf=False, save_session=False)
    def metrics(self, **kwargs):
        token = configured_token()
        if not token:
            raise NotFound()
        if "token" in request.httprequest.args:
            # Odoo's access log, and any proxy's, has the URL: a token there is a token leaked.
            return request.make_response(
                "Give the token in the Authorization header (Bearer), not in the URL.\n",
                headers=[("Content-Type", "text/plain")],
                status=400,
            )
        if not hmac.compare_digest(given_token(request.httprequest).encode(), token.encode()):
            return request.make_response("Forbidden\n", headers=[("Content-Type", "text/plain")], status=403)
        policies = request.env["spp.backup.policy"].sudo().search([("active", "=", True)])
        servers = request.env["spp.backup.pitr.server"].sudo().search([])
        body = render(policies, servers, fields.Datetime.now())
        return request.make_response(body, headers=[("Content-Type", CONTENT_TYPE)])
