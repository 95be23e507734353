"""Command line: works with Odoo stopped. Exit codes: 0 ok, 1 warning, 2 error."""

import argparse
import json
import resource
import sys

from . import catalog
from .backup import human_bytes, run_backup
from .config import BackupPlan, DestinationConfig, Settings, default_data_dir
from .errors import BackupError
from .restore import RestoreOptions, restore
from .runner import run_plan_file
from .storage import open_storage
from .verify import verify

EPILOG = """\
examples:
  back up:    python3 -m engine --conf /etc/odoo/odoo.conf backup --database prod --dest /var/backups/odoo
  list:       python3 -m engine list /var/backups/odoo --database prod
  verify:     python3 -m engine verify /var/backups/odoo/prod/latest
  restore:    python3 -m engine --conf /etc/odoo/odoo.conf restore /var/backups/odoo/prod/latest \
                  --target prod_copy --copy

Connection settings come from odoo.conf ([options] db_host, db_port, db_user,
db_password, data_dir) when --conf (or $ODOO_RC) is given, then from the
--db-* options, then from libpq's PG* environment variables.
exit codes: 0 ok, 1 finished with warnings, 2 error (nothing was changed
unless the message says otherwise).
"""


def build_parser():
    parser = argparse.ArgumentParser(
        prog="python3 -m engine",
        description="spp_backup: back up, list, verify and restore an Odoo database and its filestore.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--conf", metavar="ODOO_CONF", help="odoo.conf to read the connection, data_dir and [spp_backup] from"
    )
    parser.add_argument("--json", action="store_true", help="print the result as JSON on stdout")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    def connection(p):
        group = p.add_argument_group("PostgreSQL connection (password: odoo.conf or $PGPASSWORD)")
        group.add_argument("--db-host", help="server host (default: odoo.conf, then $PGHOST)")
        group.add_argument("--db-port", type=int, help="server port")
        group.add_argument("--db-user", help="user name")
        group.add_argument(
            "--data-dir",
            help="Odoo data_dir holding filestore/<database> (default: odoo.conf, then ~/.local/share/Odoo)",
        )

    p = sub.add_parser(
        "backup",
        help="back up a database and its filestore now",
        description="Back up a database, its filestore and an application snapshot into a destination directory.",
    )
    p.add_argument("--database", "-d", required=True, help="database to back up")
    p.add_argument("--dest", required=True, action="append", help="destination directory (repeat for several copies)")
    p.add_argument("--no-database", action="store_true", help="leave the database dump out")
    p.add_argument("--no-filestore", action="store_true", help="leave the filestore out")
    p.add_argument("--no-application", action="store_true", help="leave the application snapshot out")
    p.add_argument(
        "--compression", choices=["zstd", "none"], default="zstd", help="zstd (default) or none (pg_dump's own)"
    )
    connection(p)

    p = sub.add_parser(
        "list",
        help="list the backups in a destination",
        description="List backup sets; only those with a manifest are restorable.",
    )
    p.add_argument("dest", help="destination directory")
    p.add_argument("--database", "-d", help="only this database")

    p = sub.add_parser(
        "verify",
        help="check a backup's sizes and SHA-256s",
        description="Read every stored byte of a backup back and compare it with the manifest.",
    )
    p.add_argument("backup", help="<dest>/<database>/<backup id>, or <dest>/<database>/latest")

    p = sub.add_parser(
        "restore",
        help="restore a backup into a database (Odoo may be stopped)",
        description="Verify a backup, then restore it into a NEW database and filestore. An existing target is only "
        "replaced with --replace, and then renamed aside, never dropped.",
    )
    p.add_argument("backup", help="<dest>/<database>/<backup id>, or <dest>/<database>/latest")
    p.add_argument("--target", "-t", required=True, help="database name to restore into")
    p.add_argument(
        "--replace", action="store_true", help="replace an existing target (it is renamed to <target>_replaced_<time>)"
    )
    p.add_argument(
        "--copy",
        action="store_true",
        help="give the restored database a new database.uuid and secret (a copy, not a move)",
    )
    p.add_argument("--no-filestore", action="store_true", help="restore the database only")
    p.add_argument(
        "--jobs", "-j", type=int, default=1, help="parallel pg_restore jobs (needs temporary disk space for the dump)"
    )
    p.add_argument(
        "--tmp-dir", help="where the dump is unpacked for --jobs > 1 (default: the system temporary directory)"
    )
    connection(p)

    p = sub.add_parser("run", help="(used by Odoo) run a backup plan and report into a status file")
    p.add_argument("--plan", required=True)
    p.add_argument("--status", required=True)
    return parser


def settings_for(args):
    settings = Settings.from_config(args.conf)
    pg = settings.pg
    for attr, value in (
        ("host", getattr(args, "db_host", None)),
        ("port", getattr(args, "db_port", None)),
        ("user", getattr(args, "db_user", None)),
    ):
        if value:
            setattr(pg, attr, value)
    data_dir = getattr(args, "data_dir", None) or settings.data_dir or default_data_dir()
    return settings, pg, data_dir


def cmd_backup(args):
    settings, pg, data_dir = settings_for(args)
    plan = BackupPlan(
        db_name=args.database,
        destinations=[DestinationConfig(kind="local", path=d) for d in args.dest],
        pg=pg,
        data_dir=data_dir,
        include_database=not args.no_database,
        include_filestore=not args.no_filestore,
        include_application=not args.no_application,
        compression=args.compression,
        odoo_conf=args.conf,
        min_free_bytes=int(settings.get("min_free_bytes", 0) or 0),
    )
    result = run_backup(plan, progress=None if args.json else progress_printer())
    data = result.to_dict()
    lines = ["Backup %s of %s done in %.1f s" % (result.backup_id, result.db_name, result.duration)]
    for name, art in result.artifacts.items():
        lines.append("  %-12s %-22s %10s  sha256 %s" % (name, art["file"], human_bytes(art["size"]), art["sha256"]))
    lines += ["  stored at %s" % loc for loc in result.locations]
    lines += ["  warning: %s" % w for w in result.warnings]
    return (1 if result.warnings else 0), data, "\n".join(lines)


def cmd_list(args):
    storage = open_storage(DestinationConfig(kind="local", path=args.dest))
    entries = catalog.list_backups(storage, args.database)
    data = [e.as_dict() for e in entries]
    lines = ["%-28s %-24s %10s  %s" % ("DATABASE", "BACKUP ID", "SIZE", "STATE")]
    for e in entries:
        lines.append(
            "%-28s %-24s %10s  %s"
            % (
                e.db_name,
                e.backup_id,
                human_bytes(e.size),
                "restorable" if e.restorable else "INCOMPLETE (not restorable)",
            )
        )
    if not entries:
        lines.append("(no backups in %s)" % storage.describe())
    return 0, data, "\n".join(lines)


def cmd_verify(args):
    report = verify(catalog.resolve(args.backup))
    return report.exit_code, report.to_dict(), report.text()


def cmd_restore(args):
    settings, pg, data_dir = settings_for(args)
    ref = catalog.resolve(args.backup)
    options = RestoreOptions(
        target_db=args.target,
        pg=pg,
        data_dir=data_dir,
        replace=args.replace,
        include_filestore=not args.no_filestore,
        new_uuid=args.copy,
        jobs=max(1, args.jobs),
        tmp_dir=args.tmp_dir,
    )
    result = restore(ref, options, progress=None if args.json else progress_printer())
    lines = ["Restored backup %s into database %s in %.1f s" % (result.backup_id, result.target_db, result.duration)]
    if result.filestore_path:
        lines.append("  filestore: %s (%d files)" % (result.filestore_path, result.filestore_files))
    for what, name in result.renamed_aside.items():
        lines.append("  the previous %s was kept as %s" % (what, name))
    lines += ["  warning from the backup: %s" % w for w in result.warnings]
    return 0, result.to_dict(), "\n".join(lines)


def progress_printer():
    last = {"message": None}

    def show(fraction, message):
        head = message.split(":")[0]
        if head != last["message"]:
            print("[%3d%%] %s" % (int(fraction * 100), message), file=sys.stderr, flush=True)
            last["message"] = head

    return show


COMMANDS = {"backup": cmd_backup, "list": cmd_list, "verify": cmd_verify, "restore": cmd_restore}


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.command == "run":
        return run_plan_file(args.plan, args.status)
    try:
        code, data, text = COMMANDS[args.command](args)
    except BackupError as exc:
        if args.json:
            print(json.dumps({"ok": False, "error": str(exc)}))
        print("error: %s" % exc, file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("error: interrupted; nothing was marked complete", file=sys.stderr)
        return 2
    if args.json:
        if isinstance(data, dict):
            data["peak_rss_kb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print(json.dumps(data, indent=2, default=str))
    else:
        print(text)
    return code
