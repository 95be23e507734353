"""What a PostgreSQL server lacks for continuous WAL protection (pg_receivewal and pg_basebackup over a
replication connection), and the lines that give it.

``gather`` reads the facts from the server (settings, the role, a replication connection attempted with
IDENTIFY_SYSTEM, the client tools of the server's major version); ``evaluate`` turns facts into findings
(pure, tested without a server); ``report_lines`` writes them for a person, grouped by where each fix goes.
Nothing on the server is changed.
"""

import os
import shutil
from dataclasses import asdict, dataclass

import psycopg2
import psycopg2.extras

from ..core.errors import PreflightError
from . import pg

# Where a fix goes, in the order a person applies them.
POSTGRESQL_CONF_RESTART = "postgresql.conf (then restart PostgreSQL)"
POSTGRESQL_CONF_RELOAD = "postgresql.conf (then reload PostgreSQL: SELECT pg_reload_conf())"
SQL_AS_SUPERUSER = "SQL, as a superuser"
PG_HBA = "pg_hba.conf (then reload PostgreSQL: SELECT pg_reload_conf())"
CLIENT_TOOLS = "the host that runs the worker"
PLACES = (POSTGRESQL_CONF_RESTART, POSTGRESQL_CONF_RELOAD, SQL_AS_SUPERUSER, PG_HBA, CLIENT_TOOLS)

REPLICATION_TOOLS = ("pg_receivewal", "pg_basebackup", "pg_verifybackup")
MIN_MAJOR = 15
# A stopped receiver keeps its slot's WAL on the database server until this much: then the slot is lost (a gap
# healed by a new base backup) instead of the server's disk filling up.
SLOT_KEEP_SUGGESTED = "50GB"


@dataclass
class Finding:
    """One thing checked: what it is, whether it is in place, what was found and what is wanted, and the fix."""

    name: str
    ok: bool
    required: bool
    have: str
    want: str
    place: str = ""
    fix: str = ""


def gather(pgc, dbname=None):
    """The facts ``evaluate`` needs, read from the server ``pgc`` reaches (its maintenance database, or
    ``dbname``) as the role the worker connects with."""
    dbname = dbname or pgc.maintenance_db
    facts = {}
    with pg.cursor(pgc, dbname) as cr:
        cr.execute("SHOW server_version_num")
        facts["server_version_num"] = int(cr.fetchone()[0])
        cr.execute(
            "SELECT name, setting, unit FROM pg_settings WHERE name IN ('wal_level', 'max_wal_senders', "
            "'max_replication_slots', 'max_slot_wal_keep_size', 'summarize_wal')"
        )
        facts["settings"] = {name: setting for name, setting, _unit in cr.fetchall()}
        cr.execute("SELECT count(*) FROM pg_stat_replication")
        facts["senders_in_use"] = cr.fetchone()[0]
        cr.execute("SELECT count(*) FROM pg_replication_slots")
        facts["slots_in_use"] = cr.fetchone()[0]
        cr.execute("SELECT current_user, rolreplication, rolsuper FROM pg_roles WHERE rolname = current_user")
        role, replication, superuser = cr.fetchone()
        facts["role"], facts["role_replication"] = role, bool(replication or superuser)
        cr.execute("SELECT host(inet_client_addr())")
        facts["client_addr"] = cr.fetchone()[0]
    facts["replication_error"] = _replication_attempt(pgc)
    facts["tools"] = _replication_tools(pgc, facts["server_version_num"] // 10000)
    return facts


def replication_connection(pgc, application_name="spp_backup check"):
    """A physical replication connection to the server ``pgc`` reaches (psycopg2.OperationalError if refused)."""
    return psycopg2.connect(
        connect_timeout=15,
        application_name=application_name,
        connection_factory=psycopg2.extras.PhysicalReplicationConnection,
        **pgc.dsn_kwargs(None),
    )


def identify_system(pgc):
    """(system identifier, timeline, WAL position written) from IDENTIFY_SYSTEM, or a PreflightError in words."""
    try:
        conn = replication_connection(pgc, "spp_backup identify")
    except psycopg2.OperationalError as exc:
        raise PreflightError(
            "Cannot open a replication connection to %s (%s): run 'spp-backup pitr check' for what to change."
            % (pgc.describe(), str(exc).strip().splitlines()[0] if str(exc).strip() else exc)
        ) from exc
    try:
        with conn.cursor() as cr:
            cr.execute("IDENTIFY_SYSTEM")
            system_id, timeline, position, _db = cr.fetchone()
        return str(system_id), int(timeline), position
    finally:
        conn.close()


def _replication_attempt(pgc):
    """None when a physical replication connection answers IDENTIFY_SYSTEM, else the server's words."""
    try:
        conn = replication_connection(pgc)
    except psycopg2.OperationalError as exc:
        return str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
    try:
        with conn.cursor() as cr:
            cr.execute("IDENTIFY_SYSTEM")
            cr.fetchall()
        return None
    except psycopg2.Error as exc:
        return str(exc).strip().splitlines()[0]
    finally:
        conn.close()


def _replication_tools(pgc, server_major):
    """{tool: path or None} of the replication tools beside the client tools chosen for this server."""
    try:
        folder = pg.client_tools(pgc).folder
    except PreflightError:
        return dict.fromkeys(REPLICATION_TOOLS)
    found = {}
    for name in REPLICATION_TOOLS:
        path = os.path.join(folder, name) if folder else shutil.which(name)
        found[name] = path if path and os.access(path, os.X_OK) else None
    return found


def evaluate(facts):
    """[Finding] for ``facts`` (see ``gather``). Pure."""
    settings = facts["settings"]
    major = facts["server_version_num"] // 10000
    findings = []
    # pg_receivewal resumes from its slot's position only from PostgreSQL 15 on (READ_REPLICATION_SLOT); an older
    # one, with an empty folder, starts at the server's current position and would leave a gap unseen.
    findings.append(
        Finding(
            "postgresql version",
            major >= MIN_MAJOR,
            True,
            "%d" % major if major >= MIN_MAJOR else "%d: upgrade the server (nightly dumps are not affected)" % major,
            "%d or later" % MIN_MAJOR,
        )
    )

    wal_level = settings.get("wal_level", "")
    findings.append(
        Finding(
            "wal_level",
            wal_level in ("replica", "logical"),
            True,
            wal_level,
            "replica (or logical)",
            POSTGRESQL_CONF_RESTART,
            "wal_level = replica",
        )
    )
    senders, used = int(settings.get("max_wal_senders") or 0), facts["senders_in_use"]
    findings.append(
        Finding(
            "max_wal_senders",
            senders - used >= 2,
            True,
            "%d (%d in use)" % (senders, used),
            "2 free: the receiver and a base backup",
            POSTGRESQL_CONF_RESTART,
            "max_wal_senders = %d" % max(10, used + 2),
        )
    )
    slots, slots_used = int(settings.get("max_replication_slots") or 0), facts["slots_in_use"]
    findings.append(
        Finding(
            "max_replication_slots",
            slots - slots_used >= 1,
            True,
            "%d (%d in use)" % (slots, slots_used),
            "1 free: the receiver's slot",
            POSTGRESQL_CONF_RESTART,
            "max_replication_slots = %d" % max(10, slots_used + 1),
        )
    )
    role = facts["role"]
    findings.append(
        Finding(
            "replication role",
            facts["role_replication"],
            True,
            "%s %s" % (role, "may replicate" if facts["role_replication"] else "has no REPLICATION"),
            "a role with REPLICATION",
            SQL_AS_SUPERUSER,
            'ALTER ROLE "%s" REPLICATION;' % role.replace('"', '""'),
        )
    )
    error = facts["replication_error"]
    hba_refused = bool(error) and "pg_hba.conf" in error
    address = facts.get("client_addr")
    hba_line = (
        "host    replication    %s    %s/%d    scram-sha-256" % (role, address, 128 if ":" in address else 32)
        if address
        else "local   replication    %s    peer" % role
    )
    findings.append(
        Finding(
            "replication connection",
            error is None,
            True,
            "accepted (IDENTIFY_SYSTEM answered)" if error is None else error,
            "pg_hba.conf lets this host connect for replication",
            PG_HBA if hba_refused else "",
            hba_line if hba_refused else "",
        )
    )
    missing_tools = [name for name, path in facts["tools"].items() if not path]
    findings.append(
        Finding(
            "client tools",
            not missing_tools,
            True,
            "all found" if not missing_tools else "missing: %s" % ", ".join(missing_tools),
            "%s of PostgreSQL %d or newer" % (", ".join(REPLICATION_TOOLS), major),
            CLIENT_TOOLS,
            "apt-get install postgresql-client-%d (or set pg_bin_dir in odoo.conf's [spp_backup])" % major,
        )
    )
    keep = settings.get("max_slot_wal_keep_size")
    findings.append(
        Finding(
            "max_slot_wal_keep_size",
            keep not in (None, "", "-1"),
            False,
            "unlimited" if keep in (None, "", "-1") else "%s MB" % keep,
            "a limit, so that a stopped receiver cannot fill the database server's disk",
            POSTGRESQL_CONF_RELOAD,
            "max_slot_wal_keep_size = %s" % SLOT_KEEP_SUGGESTED,
        )
    )
    if major >= 17:
        summarize = settings.get("summarize_wal", "off")
        findings.append(
            Finding(
                "summarize_wal",
                summarize == "on",
                False,
                summarize,
                "on: base backups after the first are incremental",
                POSTGRESQL_CONF_RELOAD,
                "summarize_wal = on",
            )
        )
    return findings


def exit_code(findings):
    """0: all in place; 1: only recommendations missing; 2: something required is missing."""
    if any(not finding.ok and finding.required for finding in findings):
        return 2
    return 1 if any(not finding.ok for finding in findings) else 0


def report_lines(findings, server_text=""):
    """The findings for a person: one line each, then what to add where."""
    lines = ["Continuous WAL protection%s:" % (" of %s" % server_text if server_text else "")]
    for finding in findings:
        mark = "ok" if finding.ok else ("MISSING" if finding.required else "advised")
        lines.append("  %-8s %-24s %s" % (mark, finding.name, finding.have))
    todo = [finding for finding in findings if not finding.ok and finding.fix]
    for place in PLACES:
        fixes = [finding.fix for finding in todo if finding.place == place]
        if fixes:
            lines.append("Add to %s:" % place if place != SQL_AS_SUPERUSER else "Run in %s:" % place)
            lines.extend("    %s" % fix for fix in dict.fromkeys(fixes))
    if not todo:
        lines.append("Nothing to change.")
    return lines


def as_dicts(findings):
    return [asdict(finding) for finding in findings]
