"""The command line of continuous WAL protection: ``spp-backup pitr check|status|receive|base-backup|list|
restore-cluster`` and ``spp-backup restore <dest>/<database> --to-time``."""

import datetime
import os
import threading

from ..core.errors import PreflightError
from ..core.human import human_bytes, human_duration
from ..db import replication, walcheck
from ..formats import catalog
from ..io import crypto
from ..pitr import basebackup, receiver, recover
from ..pitr import drill as pitr_drill
from . import cli_common as cli

WHEN_HELP = (
    "the second to restore to: 2026-12-07 14:03:12 in this machine's time zone, or with its offset "
    "(2026-12-07T14:03:12+02:00, ...Z for UTC)"
)


def add_parsers(sub, connection, target_options, keys):
    p = sub.add_parser(
        "pitr",
        help="continuous WAL protection (point-in-time recovery) of a PostgreSQL server",
        description="Continuous WAL protection of a PostgreSQL server, for restores to a chosen second.",
    )
    pitr = p.add_subparsers(dest="pitr_command", metavar="PITR_COMMAND")
    pitr.required = True
    p = pitr.add_parser(
        "check",
        help="say what the PostgreSQL server lacks for it, and the lines to add (changes nothing)",
        description="Reads the server's settings, the connecting role and a replication connection "
        "(IDENTIFY_SYSTEM), and looks for pg_receivewal, pg_basebackup and pg_verifybackup of the server's "
        "major version; prints each check and what to add where. Exit code: 0 all in place, 1 only advice, "
        "2 something required is missing.",
    )
    connection(p)
    p = pitr.add_parser(
        "status",
        help="the streaming standbys of the PostgreSQL server: state and lag",
        description="Lists the server's streaming standbys (pg_stat_replication): state, WAL not yet sent and "
        "not yet replayed (bytes), replay lag (seconds), and the WAL receiver's state when its spool folder is "
        "here. Exit code 1 when a standby is not streaming, lags past a limit or its position is hidden from the "
        "connecting role (grant it pg_monitor), or when the receiver is stopped, behind, or its slot is in trouble.",
    )
    connection(p)
    p.add_argument(
        "--spool",
        help="the WAL receiver's folder, whose state is told too (default: odoo.conf's pitr_spool, else "
        "spp_backup/wal-spool in the data directory, when it exists)",
    )
    p.add_argument("--max-lag-seconds", type=float, default=60.0, help="replay lag allowed (default 60)")
    p.add_argument("--max-lag-bytes", type=int, default=64 << 20, help="WAL not yet replayed allowed (default 64 MiB)")

    def writing(p):
        p.add_argument("--dest", required=True, action="append", help="destination folder or s3://bucket/prefix")
        p.add_argument("--spool", help="the receiver's folder (default: spp_backup/wal-spool in the data directory)")
        p.add_argument("--encrypt-to", action="append", default=[], metavar="AGE_RECIPIENT", help="age public key")
        p.add_argument("--sign-key", help="Ed25519 private key file (default: odoo.conf's signing_key_file)")
        connection(p)

    p = pitr.add_parser(
        "receive",
        help="stream the server's WAL into the destinations until stopped (SIGTERM)",
        description="Runs pg_receivewal on a replication slot of its own (made on first use), starts it again "
        "when it stops, and stores every WAL segment compressed, encrypted and signed at each destination; the "
        "segment in progress is stored every --partial-seconds. Stops on SIGTERM or Ctrl-C after storing what it "
        "received.",
    )
    writing(p)
    p.add_argument("--slot", default=receiver.DEFAULT_SLOT, help="replication slot name (default spp_backup)")
    p.add_argument("--partial-seconds", type=float, default=30.0, help="store the segment in progress this often")
    p.add_argument("--duration", type=float, help="stop after this many seconds (default: run until stopped)")

    p = pitr.add_parser(
        "base-backup",
        help="take a base backup now (pg_basebackup, checked with pg_verifybackup)",
        description="A base backup of the whole server, checked with pg_verifybackup and stored compressed, "
        "encrypted and signed; incremental on PostgreSQL 17 and later with summarize_wal = on, after the "
        "previous one the spool remembers.",
    )
    writing(p)
    p.add_argument("--full", action="store_true", help="a full backup even where an incremental one is possible")
    p.add_argument("--tmp-dir", help="staging folder for the backup (needs the cluster's size free)")

    p = pitr.add_parser(
        "list",
        help="the window of seconds a destination's WAL archive can restore to, its base backups and gaps",
        description="Lists the base backups and the WAL of a server's archive, says the window a restore can "
        "reach and names every gap. Exit code 1 when a gap or a base backup that does not verify is found.",
    )
    p.add_argument("dest", help="destination folder or s3://bucket/prefix")
    p.add_argument("--server", help="the server's system id, when the destination holds several")
    keys(p, identity=False, unsigned=False)

    p = pitr.add_parser(
        "drill",
        help="restore one database to a random second of the window, check it, time it, drop it",
        description="A point-in-time drill: restores the database as it was at a random second of the window "
        "(or --to-time) into a scratch database <db>_drill_<random> (neutralized), checks where recovery stopped "
        "and every attachment's SHA-1, prints the measured restore time (RTO) and drops the copy, also when a "
        "check fails. Exit code 0 passed, 2 failed.",
    )
    p.add_argument("dest", help="destination folder or s3://bucket/prefix")
    p.add_argument("--database", "-d", required=True, help="the database to drill")
    p.add_argument("--to-time", help=WHEN_HELP + " (default: a random second of the window)")
    p.add_argument("--server", help="the server's system id, when the destination holds several")
    p.add_argument("--tmp-dir", help="where the scratch cluster is made (default: the system temporary folder)")
    keys(p, unsigned=False)
    connection(p)

    p = pitr.add_parser(
        "restore-cluster",
        help="restore the whole server (every database) into a new data directory, Odoo and PostgreSQL down",
        description="Replays the newest base backup and the archived WAL into a new, empty data directory, to "
        "the newest second received or --to-time, shuts it down cleanly and puts the server's own "
        "postgresql.auto.conf back: start it with PostgreSQL of the same major version.",
    )
    p.add_argument("dest", help="destination folder or s3://bucket/prefix")
    p.add_argument("--into", required=True, metavar="DATA_DIR", help="the new data directory (must be empty)")
    p.add_argument("--to-time", help=WHEN_HELP)
    p.add_argument("--server", help="the server's system id, when the destination holds several")
    p.add_argument("--pg-bin-dir", help="the folder of PostgreSQL's server binaries of the archive's version")
    keys(p, unsigned=False)


def _public_keys(args, settings):
    """The verify key: --verify-key, odoo.conf's verify_key, else the public half of signing_key_file."""
    given = getattr(args, "verify_key", None) or settings.get("verify_key")
    if given:
        return given
    key_file = settings.get("signing_key_file")
    if key_file:
        return crypto.public_key_text(crypto.load_signing_key(key_file).public_key())
    return None


def _destinations(args, settings):
    from ..io.storage import open_storage

    found = {}
    for location in args.dest:
        config = catalog.destination_for(location, settings)[0]
        found[location] = open_storage(config, settings)
    return found


def _spool(args, data_dir):
    return args.spool or os.path.join(data_dir, "spp_backup", "wal-spool")


def parse_when(text):
    """``--to-time``: a time without an offset is this machine's local time."""
    text = str(text).strip()
    if text.upper().endswith(" UTC") or text.endswith("Z"):
        return recover.parse_time(text)
    try:
        moment = datetime.datetime.fromisoformat(text)
    except ValueError:
        return recover.parse_time(text)  # says how to write it
    if moment.tzinfo is None:
        moment = moment.astimezone()
    return recover.parse_time(moment)


def cmd_pitr(args):
    settings, pgc, data_dir = cli.settings_for(args)
    command = args.pitr_command
    if command == "status":
        return _status(args, pgc, args.spool or settings.get("pitr_spool") or _spool(args, data_dir))
    if command == "check":
        findings = walcheck.evaluate(walcheck.gather(pgc))
        code = walcheck.exit_code(findings)
        data = {"ok": code == 0, "server": pgc.describe(), "findings": walcheck.as_dicts(findings)}
        return code, data, "\n".join(walcheck.report_lines(findings, pgc.describe()))
    if command in ("receive", "base-backup"):
        signing_file = args.sign_key or settings.get("signing_key_file")
        if not signing_file:
            raise PreflightError(
                "The WAL archive and base backups are signed: give --sign-key or set signing_key_file in odoo.conf's "
                "[spp_backup] section."
            )
        signing_key = crypto.load_signing_key(signing_file)
        recipients = crypto.parse_recipients(args.encrypt_to)
        destinations = _destinations(args, settings)
        spool = _spool(args, data_dir)
        log = cli.reporters(args).get("log")
        if command == "base-backup":
            doc = basebackup.take_base_backup(
                pgc, destinations, signing_key, recipients, args.tmp_dir, spool, incremental=not args.full, log=log
            )
            lines = [
                "Base backup %s (%s) stored in %s: WAL %s to %s needed"
                % (
                    doc["backup_id"],
                    "incremental after %s" % doc["parent"] if doc["incremental"] else "full",
                    human_duration(doc["seconds"]),
                    doc["start_wal"],
                    doc["end_wal"],
                )
            ]
            lines += ["  FAILED at %s: %s" % item for item in doc["failures"].items()]
            return (2 if doc["failures"] else 0), doc, "\n".join(lines)
        return _receive(args, pgc, destinations, spool, signing_key, recipients, log)
    public_keys = _public_keys(args, settings)
    storage = catalog.open_location(args.dest, settings)
    if command == "list":
        if not public_keys:
            raise PreflightError(
                "The archive's entries are signed: give --verify-key (or verify_key / signing_key_file in odoo.conf)."
            )
        return _list(recover.open_archive(storage, args.server), public_keys)
    if command == "drill":
        identities, _ = cli.key_options(args, settings)
        result = pitr_drill.run_pitr_drill(
            storage,
            args.database,
            pgc,
            data_dir,
            identities,
            public_keys,
            moment=parse_when(args.to_time) if args.to_time else None,
            system_id=args.server,
            tmp_dir=args.tmp_dir,
            **cli.reporters(args),
        )
        return (0 if result.ok else 2), result.to_dict(), result.text()
    if command == "restore-cluster":
        identities, _ = cli.key_options(args, settings)
        if args.pg_bin_dir:
            pgc.bin_dir = args.pg_bin_dir
        result = recover.restore_cluster(
            storage,
            args.into,
            public_keys,
            identities,
            pgc,
            moment=parse_when(args.to_time) if args.to_time else None,
            system_id=args.server,
            log=cli.reporters(args).get("log"),
        )
        lines = [
            "Cluster of server %s restored into %s in %s"
            % (result["system_id"], result["data_dir"], human_duration(result["duration"])),
            "  to: %s" % result["target_time"],
            "  base backup %s, then %d WAL file(s) up to %s%s"
            % (
                result["base_backup"],
                result["wal_files"],
                result["wal_last"],
                " (its newest part)" if result["partial_used"] else "",
            ),
            "  recovery: %s" % (result["reached"] or "replayed everything received"),
            "  start it with PostgreSQL %d: pg_ctl -D %s start (check its postgresql.conf and pg_hba.conf first)"
            % (result["pg_major"], result["data_dir"]),
        ]
        return 0, result, "\n".join(lines)
    raise PreflightError("Unknown pitr command %r." % command)


def _status(args, pgc, spool=None):
    found = replication.standbys(pgc)
    # The WAL receiver and a base backup stream too; they replay nothing, and the receiver's state says its lag.
    ours = (receiver.APPLICATION_NAME, basebackup.APPLICATION_NAME)
    late = replication.lagging([s for s in found if s.name not in ours], args.max_lag_seconds, args.max_lag_bytes)
    lines = ["Streaming standbys of %s:" % pgc.describe()]
    for standby in found:
        lines.append(
            "  %-20s %-16s %-10s %-6s %s"
            % (
                standby.name or "(no name)",
                standby.client,
                standby.state,
                standby.sync_state,
                standby_position(standby),
            )
        )
    if not found:
        lines.append("  (no standby streams from this server)")
    lines.extend("Late: %s: %s" % (standby.name or standby.client, why) for standby, why in late)
    data = {"server": pgc.describe(), "standbys": [standby.as_dict() for standby in found], "ok": not late}
    problems = []
    if spool and os.path.isdir(spool):
        state = receiver.read_state(spool)
        problems = receiver.state_problems(
            state, datetime.datetime.now(datetime.timezone.utc), max(args.max_lag_seconds, 300.0)
        )
        lines.append("WAL receiver (%s):" % spool)
        if state:
            lines.append(
                "  %s, %d restart(s), archive %s behind, slot %s (%s held on the server)"
                % (
                    "receiving" if state.get("receiving") else "NOT receiving",
                    state.get("restarts", 0),
                    "%.1f s" % state["archive_behind_seconds"]
                    if state.get("archive_behind_seconds") is not None
                    else "? s",
                    state.get("slot_status"),
                    human_bytes(state.get("slot_retained_bytes") or 0),
                )
            )
        lines.extend("  PROBLEM: %s" % problem for problem in problems)
        data["receiver"] = state
        data["receiver_problems"] = problems
        data["ok"] = data["ok"] and not problems
    return (1 if late or problems else 0), data, "\n".join(lines)


def standby_position(standby):
    """How far behind a standby replays, in words."""
    if not standby.visible:
        return "position hidden from this role"
    if standby.replay_lag_bytes is None:
        return "has not reported what it replayed yet"
    return "replays %s behind, %.1f s" % (human_bytes(standby.replay_lag_bytes), standby.replay_lag_seconds or 0.0)


def _receive(args, pgc, destinations, spool, signing_key, recipients, log):
    worker = receiver.Receiver(
        pgc, destinations, spool, signing_key, recipients, slot=args.slot, partial_seconds=args.partial_seconds, log=log
    )
    stop = threading.Event()
    try:
        if args.duration:
            timer = threading.Timer(args.duration, stop.set)
            timer.daemon = True
            timer.start()
        worker.run(stop)
    except KeyboardInterrupt:
        pass  # run() stored what was received before it returned
    state = worker.state()
    lines = [
        "Received the WAL of %s (system id %s) on slot %s: %d restart(s)"
        % (pgc.describe(), state["system_id"], state["slot"], state["restarts"]),
        "  newest archived: %s at %s" % (state["newest_archived"]["name"], state["newest_archived"]["at"]),
    ]
    if state["gaps"]:
        lines += ["  GAP: %s" % gap["why"] for gap in state["gaps"]]
    return (1 if state["gaps"] or state["destination_errors"] else 0), state, "\n".join(lines)


def _list(arch, public_keys):
    win = recover.window(arch, public_keys)
    lines = ["WAL archive of server %s at %s" % (arch.system_id, arch.describe())]
    for start, end in win.ranges:
        lines.append("  restorable to any second from %s to %s" % (recover.words(start), recover.words(end)))
    if not win.ranges:
        lines.append("  no second can be restored yet (a base backup and the WAL after it are needed)")
    lines.append(
        "  %d WAL file(s), newest %s%s"
        % (win.wal_count, win.newest_wal, " (in progress)" if win.newest_partial else "")
    )
    for doc in win.bases:
        reach = win.reach.get(doc["backup_id"])
        lines.append(
            "  base %s %-11s consistent at %s, reaches %s"
            % (
                doc["backup_id"],
                "incremental" if doc.get("incremental") else "full",
                doc["consistent_at"],
                recover.words(reach[1]) if reach else "nothing yet (its WAL is not all there)",
            )
        )
    lines += ["  GAP: %s to %s (%d segment(s) missing)" % gap for gap in win.gaps]
    lines += ["  PROBLEM: %s" % problem for problem in win.problems]
    code = 1 if (win.gaps or win.problems) else 0
    return code, win.as_dict(), "\n".join(lines)


def restore_at(args):
    """``spp-backup restore <dest>/<database> --to-time T``."""
    settings, pgc, data_dir = cli.settings_for(args)
    identities, _ = cli.key_options(args, settings)
    location = args.backup.rstrip("/")
    root, _, db_name = location.rpartition("/")
    if not root or not db_name:
        raise PreflightError("With --to-time, give <destination>/<database> (for example /var/backups/odoo/registry).")
    storage = catalog.open_location(root, settings)
    options = cli.restore_options(args, pgc, data_dir, tmp_dir=args.tmp_dir, identities=identities, settings=settings)
    result = recover.restore_database_at(
        storage,
        db_name,
        parse_when(args.to_time),
        options,
        _public_keys(args, settings),
        system_id=args.server,
        **cli.reporters(args),
    )
    lines = [
        "Restored %s as it was at %s into database %s in %.1f s"
        % (result.source_db, result.target_time, result.target_db, result.duration),
        "  base backup %s, then WAL %s to %s (%d file(s)%s)"
        % (
            result.base_backup,
            result.wal_first,
            result.wal_last,
            result.wal_files,
            ", the newest in progress" if result.partial_used else "",
        ),
        "  recovery: %s" % (result.reached or "replayed everything received (nothing committed after that second)"),
    ]
    if result.filestore_path:
        lines.append("  filestore: %s (%d files)" % (result.filestore_path, result.filestore_files))
    for what, name in result.renamed_aside.items():
        lines.append("  the previous %s was kept as %s" % (what, name))
    lines += ["  warning: %s" % w for w in result.warnings]
    return (1 if result.warnings else 0), result.to_dict(), "\n".join(lines)
