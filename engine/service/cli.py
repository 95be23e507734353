"""Command line: works with Odoo stopped. Exit codes: 0 ok, 1 warning, 2 error."""

import argparse
import json
import os
import resource
import signal
import sys
import traceback

from ..core.config import BackupPlan, Settings
from ..core.errors import BackupError
from ..core.human import human_bytes
from ..formats import catalog
from ..io import crypto
from ..ops import inflight
from ..ops.backup import run_backup
from ..ops.drill import run_drill
from ..ops.odoozip import export_odoo_zip, import_file
from ..ops.restore import restore
from ..ops.verify import verify
from . import cli_pitr
from .cli_common import key_options, progress_printer, reporters, restore_options, settings_for
from .dispatch import WorkerContext, execute
from .worker import Worker

EPILOG = """\
examples:
  back up:    spp-backup --conf /etc/odoo/odoo.conf backup --database prod --dest /var/backups/odoo
  list:       spp-backup list /var/backups/odoo --database prod
  verify:     spp-backup verify /var/backups/odoo/prod/latest
  restore:    spp-backup --conf /etc/odoo/odoo.conf restore /var/backups/odoo/prod/latest \\
                  --target prod_copy --copy
  S3:         a destination may be s3://bucket/prefix (endpoint: $AWS_ENDPOINT_URL or s3_endpoint_url
              in odoo.conf's [spp_backup]; credentials: boto3's usual chain or s3_* keys there)

Connection settings come from odoo.conf ([options] db_host, db_port, db_user,
db_password, data_dir) when --conf (or $ODOO_RC) is given, then from the
--db-* options, then from libpq's PG* environment variables. Keys: the age
identity file (to decrypt) and the signature public key come from --identity
and --verify-key, or identity_file / verify_key in odoo.conf's [spp_backup]
section (SPP_BACKUP_IDENTITY_FILE / SPP_BACKUP_VERIFY_KEY).
exit codes: 0 ok, 1 finished with warnings, 2 error (nothing was changed
unless the message says otherwise).
"""


def build_parser():
    parser = argparse.ArgumentParser(
        prog="spp-backup",
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

    def target_options(p):
        p.add_argument("--target", "-t", required=True, help="database name to restore into")
        p.add_argument(
            "--replace",
            action="store_true",
            help="replace an existing target (renamed <target>_replaced_<time>, never dropped)",
        )
        p.add_argument("--copy", action="store_true", help="give the restored database a new database.uuid and secret")
        p.add_argument("--no-filestore", action="store_true", help="restore the database only")
        p.add_argument(
            "--neutralize", action="store_true", help="switch off crons and outgoing/incoming mail in the copy"
        )
        p.add_argument(
            "--confirm",
            metavar="TARGET",
            help="the target's name again: needed with --replace when an Odoo server is using that database",
        )
        p.add_argument(
            "--accept-code",
            metavar="FILE",
            help="a dump from outside (or an unsigned set) may hold these code objects: a file of the sha256 lines "
            "a refusal printed, one per line, that you have read and trust",
        )

    def keys(p, identity=True, unsigned=True):
        group = p.add_argument_group("keys")
        group.add_argument("--verify-key", help="Ed25519 public key (base64) the manifest must be signed with")
        if unsigned:
            group.add_argument(
                "--allow-unsigned",
                action="store_true",
                help="accept a backup without manifest.sig although a verify key is set (made before signing was "
                "on); it is still reported as unproven",
            )
        if identity:
            group.add_argument("--identity", help="age identity file (private key) to decrypt an encrypted backup")

    p = sub.add_parser(
        "backup",
        help="back up a database and its filestore now",
        description="Back up a database, its filestore and an application snapshot into one or more destinations.",
    )
    p.add_argument("--database", "-d", required=True, help="database to back up")
    p.add_argument(
        "--dest", required=True, action="append", help="destination directory or s3://bucket/prefix (repeat for copies)"
    )
    p.add_argument("--no-database", action="store_true", help="leave the database dump out")
    p.add_argument("--no-filestore", action="store_true", help="leave the filestore out")
    p.add_argument("--no-application", action="store_true", help="leave the application snapshot out")
    p.add_argument("--compression", choices=["zstd", "none"], default="zstd", help="zstd (default) or none")
    p.add_argument(
        "--incremental",
        action="store_true",
        help="keep the filestore in each destination's content-addressed store: write only the files it lacks "
        "(its store key: --store-key, else odoo.conf's store_key_file, else spp_backup/store.key in the data "
        "directory; the file is made on first use)",
    )
    p.add_argument("--store-key", help="the store key file (default: odoo.conf's store_key_file)")
    p.add_argument(
        "--encrypt-to", action="append", default=[], metavar="AGE_RECIPIENT", help="encrypt to this age public key"
    )
    p.add_argument("--sign-key", help="Ed25519 private key file (PEM) to sign the manifest with")
    connection(p)

    p = sub.add_parser(
        "list",
        help="list the backups in a destination",
        description="List backup sets; only those with a manifest are restorable.",
    )
    p.add_argument("dest", help="destination directory or s3://bucket/prefix")
    p.add_argument("--database", "-d", help="only this database")

    p = sub.add_parser(
        "verify",
        help="check a backup's signature, sizes and SHA-256s",
        description="Read every stored byte of a backup back and compare it with the manifest; with --deep also "
        "decrypt and decompress every artifact to its end.",
    )
    p.add_argument("backup", help="<dest>/<database>/<backup id>, or <dest>/<database>/latest")
    p.add_argument("--deep", action="store_true", help="also decrypt (needs --identity) and decompress everything")
    keys(p)

    p = sub.add_parser(
        "restore",
        help="restore a backup into a database (Odoo may be stopped)",
        description="Verify a backup, then restore it into a NEW database and filestore. An existing target is only "
        "replaced with --replace, and then renamed aside, never dropped.",
    )
    p.add_argument("backup", help="<dest>/<database>/<backup id>, or <dest>/<database>/latest")
    target_options(p)
    p.add_argument(
        "--jobs", "-j", type=int, default=1, help="parallel pg_restore jobs (needs temporary disk space for the dump)"
    )
    p.add_argument(
        "--tmp-dir",
        help="where the dump is unpacked for --jobs > 1, or the scratch cluster of --to-time is made (default: the "
        "system temporary folder)",
    )
    p.add_argument(
        "--to-time",
        help="restore the database as it was at this second, from the WAL archive: give <destination>/<database> "
        "as the backup; %s" % cli_pitr.WHEN_HELP,
    )
    p.add_argument("--server", help="with --to-time: the server's system id, when the destination holds several")
    keys(p)
    connection(p)

    p = sub.add_parser(
        "drill",
        help="restore a backup into a scratch database, check it, time it, drop it",
        description="A restore drill: restore into <db>_drill_<id> (neutralized: no mail, no crons), check signature, "
        "checksums, pg_restore, row counts, every attachment's SHA-1, Odoo version and modules; print the measured "
        "restore time (RTO); drop the scratch database and filestore, also when a check fails.",
    )
    p.add_argument("backup", help="<dest>/<database>/<backup id>, or <dest>/<database>/latest")
    p.add_argument("--jobs", "-j", type=int, default=1, help="parallel pg_restore jobs")
    keys(p)
    connection(p)

    p = sub.add_parser(
        "import",
        aliases=["import-odoo-zip"],
        help="import a backup made by Odoo's database manager (zip or .dump) or a plain .sql dump",
        description="Import a zip made by Odoo's database manager (dump.sql, filestore/, manifest.json), its "
        "custom-format .dump (database only) or a plain .sql dump into a NEW database. The file is treated as "
        "hostile: the SQL is read for psql commands, statements acting outside the new database and truncation "
        "before anything is made, then loaded by psql as a role that owns only that database. The drill's checks "
        "(attachments and their SHA-1, Odoo version and modules) run before the swap-in. A .dump or .sql comes "
        "with its filestore through --filestore: OpenSPP 2's backup script writes <db>_<time>.dump and "
        "<db>_filestore_<time>.tar.gz, imported together as one restore.",
    )
    p.add_argument("zip", metavar="FILE", help="the .zip, .dump or .sql file")
    p.add_argument(
        "--filestore",
        metavar="ARCHIVE.tar.gz",
        help="the filestore that goes with a .dump or .sql: a .tar.gz of its folder (<db>/ab/<sha1>, as OpenSPP 2's "
        "backup script makes it, or ./ab/<sha1>), extracted and swapped in with the database",
    )
    p.add_argument("--strict", action="store_true", help="a failed check refuses the import (rolled back)")
    target_options(p)
    connection(p)

    p = sub.add_parser(
        "export-odoo-zip",
        help="write a backup as a zip in Odoo's database-manager format",
        description="Write a backup as a zip that Odoo's database manager can restore (dump.sql, filestore/, "
        "manifest.json).",
    )
    p.add_argument("backup", help="<dest>/<database>/<backup id>, or <dest>/<database>/latest")
    p.add_argument("--out", required=True, help="the zip file to write (must not exist)")
    keys(p, unsigned=False)

    p = sub.add_parser("keys", help="make a new age key pair or Ed25519 signing key", description="Generate keys.")
    p.add_argument("kind", choices=["age", "signing"], help="age: encryption identity; signing: manifest signing key")
    p.add_argument("--out", required=True, help="file to write the PRIVATE key to (mode 0600; must not exist)")

    p = sub.add_parser(
        "worker",
        help="execute the backups, restores, drills and verifications that Odoo queues (a service beside Odoo)",
        description="Claims the runs Odoo queues in its databases and executes them, holding a PostgreSQL "
        "advisory lock per run as its proof of life. Connect it to PostgreSQL directly, not through a "
        "transaction-pooling PgBouncer (session locks and LISTEN need a session).",
    )
    p.add_argument(
        "--database",
        action="append",
        help="a database to serve (repeatable; default: odoo.conf's db_name, else every database with spp_backup)",
    )
    p.add_argument("--data-dir", help="Odoo's data_dir (default: odoo.conf's)")
    p.add_argument("--once", action="store_true", help="exit once no run is queued (Odoo's embedded one-shot mode)")
    p.add_argument("--poll", type=float, default=10.0, help="seconds between two looks when no NOTIFY came")
    cli_pitr.add_parsers(sub, connection, target_options, keys)

    p = sub.add_parser("run", help="execute one plan file (JSON, as Odoo queues them) and print the result")
    p.add_argument("--plan", required=True)
    p.add_argument("--database", help="the database the plan belongs to (its scope)")
    p.add_argument("--data-dir", help="Odoo's data_dir (default: odoo.conf's)")
    return parser


def cmd_backup(args):
    settings, pg, data_dir = settings_for(args)
    try:
        min_free = int(settings.get("min_free_bytes", 0) or 0)
    except ValueError:
        raise BackupError("min_free_bytes in odoo.conf's [spp_backup] section must be a whole number of bytes.")
    destinations = [catalog.destination_for(d, settings)[0] for d in args.dest]
    for config in destinations:
        # A folder named on the command line is made when missing (the server never makes one: an unmounted
        # disk must not fill its own).
        if config.kind == "local" and not os.path.isdir(config.path):
            os.makedirs(config.path, mode=0o700, exist_ok=True)
    plan = BackupPlan(
        db_name=args.database,
        destinations=destinations,
        pg=pg,
        data_dir=data_dir,
        include_database=not args.no_database,
        include_filestore=not args.no_filestore,
        include_application=not args.no_application,
        compression=args.compression,
        odoo_conf=args.conf,
        min_free_bytes=min_free,
        recipients=args.encrypt_to,
        signing_key_file=args.sign_key or settings.get("signing_key_file"),
        incremental_filestore=args.incremental,
        store_key_file=args.store_key or settings.store_key_file(data_dir),
    )
    result = run_backup(plan, **reporters(args))
    data = result.to_dict()
    lines = ["Backup %s of %s done in %.1f s" % (result.backup_id, result.db_name, result.duration)]
    for name, art in result.artifacts.items():
        lines.append("  %-12s %-26s %10s  sha256 %s" % (name, art["file"], human_bytes(art["size"]), art["sha256"]))
    for copy in result.copies:
        lines.append("  %s %s" % ("stored at" if copy["ok"] else "FAILED   ", copy["location"]))
    lines += ["  warning: %s" % w for w in result.warnings]
    code = 2 if result.failed_copies else (1 if result.warnings else 0)
    return code, data, "\n".join(lines)


def cmd_list(args):
    settings = Settings.from_config(args.conf)
    storage = catalog.open_location(args.dest, settings)
    if storage.kind == "local" and not os.path.isdir(storage.root):
        raise BackupError(
            "The folder %s does not exist (is its disk mounted?): there is nothing to list." % storage.root
        )
    entries = catalog.list_backups(storage, args.database)
    data = [e.as_dict() for e in entries]
    lines = ["%-28s %-24s %10s  %s" % ("DATABASE", "BACKUP ID", "SIZE", "STATE")]
    for e in entries:
        state = "restorable" if e.restorable else "INCOMPLETE (not restorable)"
        lines.append("%-28s %-24s %10s  %s" % (e.db_name, e.backup_id, human_bytes(e.size), state))
    if not entries:
        lines.append("(no backups in %s)" % storage.describe())
    return 0, data, "\n".join(lines)


def cmd_verify(args):
    settings = Settings.from_config(args.conf)
    identities, public_key = key_options(args, settings)
    ref = catalog.resolve(args.backup, settings)
    report = verify(
        ref, public_key=public_key, identities=identities, deep=args.deep, allow_unsigned=args.allow_unsigned
    )
    return report.exit_code, report.to_dict(), report.text()


def cmd_restore(args):
    if args.to_time:
        return cli_pitr.restore_at(args)
    settings, pg, data_dir = settings_for(args)
    identities, public_key = key_options(args, settings)
    ref = catalog.resolve(args.backup, settings)
    options = restore_options(
        args,
        pg,
        data_dir,
        jobs=max(1, args.jobs),
        tmp_dir=args.tmp_dir,
        identities=identities,
        public_key=public_key,
        allow_unsigned=args.allow_unsigned,
        settings=settings,
    )
    result = restore(ref, options, **reporters(args))
    lines = ["Restored backup %s into database %s in %.1f s" % (result.backup_id, result.target_db, result.duration)]
    lines.append("  signature: %s" % result.signature)
    if result.filestore_path:
        lines.append("  filestore: %s (%d files)" % (result.filestore_path, result.filestore_files))
    for what, name in result.renamed_aside.items():
        lines.append("  the previous %s was kept as %s" % (what, name))
    if result.in_flight_closed:
        lines.append("  %s" % inflight.closed_text(result.in_flight_closed))
    lines += ["  warning: %s" % w for w in result.warnings]
    return (1 if result.warnings else 0), result.to_dict(), "\n".join(lines)


def cmd_drill(args):
    settings, pg, data_dir = settings_for(args)
    identities, public_key = key_options(args, settings)
    ref = catalog.resolve(args.backup, settings)
    result = run_drill(
        ref,
        pg,
        data_dir,
        identities=identities,
        public_key=public_key,
        jobs=max(1, args.jobs),
        allow_unsigned=args.allow_unsigned,
        settings=settings,
        **reporters(args),
    )
    return (2 if not result.ok else 1 if result.warnings else 0), result.to_dict(), result.text()


def cmd_import(args):
    settings, pg, data_dir = settings_for(args)
    options = restore_options(args, pg, data_dir)
    result = import_file(
        args.zip,
        options,
        strict=args.strict,
        settings=settings,
        progress=None if args.json else progress_printer(),
        filestore_archive=args.filestore,
    )
    lines = ["Imported %s into database %s in %.1f s" % (result.source, result.target_db, result.duration)]
    if result.filestore_path:
        lines.append("  filestore: %s (%d files)" % (result.filestore_path, result.filestore_files))
    for check in result.checks:
        lines.append("  %-24s %s  %s" % (check["name"], "ok  " if check["ok"] else "FAIL", check["detail"]))
    for what, name in result.renamed_aside.items():
        lines.append("  the previous %s was kept as %s" % (what, name))
    lines += ["  warning: %s" % w for w in result.warnings]
    return (1 if result.warnings else 0), result.to_dict(), "\n".join(lines)


def cmd_export_odoo_zip(args):
    settings = Settings.from_config(args.conf)
    identities, _public_key = key_options(args, settings)
    ref = catalog.resolve(args.backup, settings)
    size = export_odoo_zip(ref, args.out, settings.pg, identities, progress=None if args.json else progress_printer())
    return (
        0,
        {"file": args.out, "size": size},
        "Wrote %s (%s), restorable by Odoo's database manager" % (args.out, human_bytes(size)),
    )


def cmd_keys(args):
    if os.path.exists(args.out):
        raise BackupError("%s exists already: choose a new file (keys are never overwritten)." % args.out)
    if args.kind == "age":
        secret, public = crypto.generate_identity()
        crypto.write_secret_file(args.out, "# spp_backup age identity; public key: %s\n%s\n" % (public, secret))
        what = "age identity (private key)"
        advice = (
            "keep it on the host that restores (identity_file in its odoo.conf) and a copy offline, never on the "
            "server that makes the backups: whoever holds it reads every backup encrypted to it, and without it "
            "none can be restored"
        )
        lines = ["public key (recipient), to paste into the policy's Recipients: %s" % public]
    else:
        public = crypto.write_signing_key(args.out)
        what = "Ed25519 signing key"
        advice = (
            "the server that makes the backups signs with it: keep it there, readable only by Odoo's user, and "
            "name it in odoo.conf's [spp_backup] section (signing_key_file); Odoo then shows its public key"
        )
        lines = ["public key, for --verify-key on other hosts: %s" % public]
    lines.insert(0, "wrote the %s to %s (mode 0600); %s" % (what, args.out, advice))
    return 0, {"file": args.out, "public_key": public}, "\n".join(lines)


COMMANDS = {
    "backup": cmd_backup,
    "list": cmd_list,
    "verify": cmd_verify,
    "restore": cmd_restore,
    "drill": cmd_drill,
    "import": cmd_import,
    "import-odoo-zip": cmd_import,
    "export-odoo-zip": cmd_export_odoo_zip,
    "keys": cmd_keys,
    "pitr": cli_pitr.cmd_pitr,
}


def peak_rss_kb():
    """This process's own peak memory (VmHWM); ru_maxrss would include a parent's peak inherited at fork."""
    try:
        with open("/proc/self/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _terminate(signum, frame):
    raise KeyboardInterrupt("signal %d" % signum)


# glibc's mallopt parameters (malloc.h).
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3


def tune_malloc():
    """Keep the engine's 1 MiB stream buffers in the heap: True when done (glibc only).

    By default glibc maps every buffer of 1 MiB on its own and unmaps it when freed, and trims freed heap
    memory back to the kernel; a stream then faults in 256 new pages for every MiB it moves. On a virtual
    machine whose free memory goes back to its host, that cost 0.7 CPU seconds for 880 MB of filestore
    restored (measured), on the cores the database server needs. Heap chunks up to 4 MiB and 8 MiB of free
    heap kept for reuse: the peak RSS did not change.
    """
    import platform

    if platform.libc_ver()[0] != "glibc":
        return False
    try:
        import ctypes

        libc = ctypes.CDLL(None)
        return bool(libc.mallopt(M_MMAP_THRESHOLD, 4 << 20)) and bool(libc.mallopt(M_TRIM_THRESHOLD, 8 << 20))
    except (ImportError, OSError, AttributeError):
        return False


def main(argv=None):
    args = build_parser().parse_args(argv)
    tune_malloc()
    # A service manager stops with SIGTERM: unwind like Ctrl-C so partial work is cleaned up.
    signal.signal(signal.SIGTERM, _terminate)
    if args.command == "run":
        return run_plan_file(args.plan, args.conf, args.database, args.data_dir)
    if args.command == "worker":
        return cmd_worker(args)
    try:
        code, data, text = COMMANDS[args.command](args)
    except BackupError as exc:
        return _fail(args, str(exc))
    except KeyboardInterrupt:
        return _fail(args, "interrupted; partial work was removed and nothing was marked complete")
    except OSError as exc:
        return _fail(args, "%s%s" % (exc.strerror or exc, " (%s)" % exc.filename if exc.filename else ""))
    except Exception as exc:  # the traceback is for the logs; the person gets a sentence and exit code 2
        traceback.print_exc(file=sys.stderr)
        return _fail(args, "unexpected %s: %s" % (type(exc).__name__, str(exc).strip() or "no detail"))
    try:
        if args.json:
            if isinstance(data, dict):
                data["peak_rss_kb"] = peak_rss_kb()
            print(json.dumps(data, indent=2, default=str))
        else:
            print(text)
        sys.stdout.flush()
    except BrokenPipeError:
        # The reader (head, a pager) stopped reading: end quietly, as other command-line tools do.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return code


def run_plan_file(plan_path, conf_path=None, database=None, data_dir=None):
    """``spp-backup run --plan FILE``: one plan file executed by hand, with the settings of the odoo.conf given,
    the result printed as JSON; the exit code: 0 done, 1 done with warnings, 2 failed."""
    with open(plan_path, encoding="utf-8") as handle:
        data = json.load(handle)
    action = data.pop("action", "backup")
    ctx = WorkerContext.from_config(conf_path, data_dir=data_dir)
    serving = database or data.get("db_name") or (data.get("source") or {}).get("db_name")

    def progress(fraction, message):
        print("%3d%% %s" % (round(fraction * 100), message), file=sys.stderr)

    def log(message):
        print("     %s" % message, file=sys.stderr)

    try:
        result, error, warnings = execute(action, data, ctx, serving, progress, log)
    except BackupError as exc:
        print(json.dumps({"ok": False, "error": str(exc)}))
        return exc.exit_code
    print(json.dumps({"ok": not error, "error": error, "result": result}, default=str))
    if error:
        return 2
    return 1 if warnings else 0


def cmd_worker(args):
    import logging

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s")
    try:
        ctx = WorkerContext.from_config(args.conf, data_dir=args.data_dir)
        worker = Worker(ctx, databases=args.database, once=args.once, poll_seconds=args.poll)
        return worker.serve()
    except BackupError as exc:
        return _fail(args, str(exc))
    except KeyboardInterrupt:
        return 0


def _fail(args, message):
    if args.json:
        print(json.dumps({"ok": False, "error": message}))
    print("error: %s" % message, file=sys.stderr)
    return 2
