"""Restore drills: prove a backup restores, measure how long it takes, clean up.

A drill restores a backup into a scratch database ``<db>_drill_<id>`` (and
its filestore), neutralized so nothing in it sends mail or runs crons, then
checks it: signature, checksums, pg_restore's exit status, row counts
against the manifest, every referenced attachment present with the SHA-1
Odoo recorded, Odoo version and installed modules as in the manifest. The
time the restore took is the measured RTO. The scratch database and
filestore are dropped afterwards, also when a check failed.
"""

import contextlib
import hashlib
import os
import secrets
import shutil
import time
from dataclasses import asdict, dataclass, field

from ..core import manifest as mf
from ..core.errors import BackupError
from ..core.human import human_duration
from ..core.manifest import filestore_artifact
from ..db import pg
from ..io.stream import CHUNK, ArtifactReader
from .restore import RestoreOptions, restore
from .verify import verify


@dataclass
class DrillCheck:
    name: str
    ok: bool
    detail: str


@dataclass
class DrillResult:
    backup_id: str
    source: str
    scratch_db: str
    ok: bool = False
    checks: list = field(default_factory=list)
    restore_seconds: float | None = None
    total_seconds: float = 0.0
    cleaned_up: bool = False
    error: str | None = None
    warnings: list = field(default_factory=list)

    def to_dict(self):
        return asdict(self)

    def text(self):
        lines = [
            "Drill of backup %s from %s: %s" % (self.backup_id, self.source, "PASSED" if self.ok else "FAILED"),
            "  restore took %s (the measured RTO)"
            % (human_duration(self.restore_seconds) if self.restore_seconds is not None else "-"),
        ]
        for check in self.checks:
            lines.append("  %-22s %s  %s" % (check.name, "ok  " if check.ok else "FAIL", check.detail))
        if self.error:
            lines.append("  error: %s" % self.error)
        lines += ["  warning: %s" % w for w in self.warnings]
        lines.append("  scratch database %s %s" % (self.scratch_db, "dropped" if self.cleaned_up else "NOT dropped"))
        return "\n".join(lines)


def drill_name(db_name, backup_id):
    suffix = "_drill_%s" % secrets.token_hex(3)
    return db_name[: 63 - len(suffix)] + suffix


def run_drill(
    ref,
    pg_config,
    data_dir,
    identities=(),
    public_key=None,
    neutralize_sql=(),
    jobs=1,
    progress=None,
    allow_unsigned=False,
    log=None,
    settings=None,
):
    """Restore ``ref`` into a scratch database, check it, drop it; returns a DrillResult (never raises).

    ``progress(fraction, message)`` follows the work; ``log(message)`` gets one line per step done.
    """
    progress = progress or (lambda fraction, message: None)
    log = log or (lambda message: None)
    started = time.monotonic()
    manifest = None
    scratch = drill_name(ref.db_name, ref.backup_id)
    result = DrillResult(backup_id=ref.backup_id, source=ref.location(), scratch_db=scratch)
    fs_root = os.path.join(data_dir, "filestore") if data_dir else None
    try:
        progress(0.02, "Verifying the signature and checksums")
        report = verify(ref, public_key=public_key, allow_unsigned=allow_unsigned)
        manifest = report.manifest
        result.warnings += report.warnings
        signature_ok = report.signature not in ("BAD", "MISSING")
        result.checks.append(DrillCheck("signature", signature_ok, report.signature))
        bad = [c for c in report.checks if not c.ok]
        result.checks.append(
            DrillCheck(
                "checksums",
                not bad and not report.problems,
                "; ".join(["%s: %s" % (c.name, c.message) for c in bad] + report.problems)
                or "%d artifacts match the manifest" % len(report.checks),
            )
        )
        log("Verified backup %s: %s" % (ref.backup_id, report.summary()))
        if not report.ok:
            raise BackupError("the backup failed verification: %s" % report.failure_text())
        progress(0.1, "Restoring into the scratch database %s" % scratch)
        counted = {}
        options = drill_options(
            scratch,
            pg_config,
            data_dir,
            identities,
            neutralize_sql,
            on_loaded=lambda name, db_pg: counted.update(row_counts(db_pg, name)),
            jobs=jobs,
            public_key=public_key,
            settings=settings,
        )
        t0 = time.monotonic()
        try:
            restored = restore(ref, options, verified=report, log=log)
        except BackupError as exc:
            result.checks.append(DrillCheck("restore", False, str(exc)))
            raise
        result.restore_seconds = round(time.monotonic() - t0, 3)
        result.checks.append(
            DrillCheck("restore", True, "pg_restore exited 0; %d filestore files" % restored.filestore_files)
        )
        log("Restore took %s (the measured RTO)" % human_duration(result.restore_seconds))
        progress(0.8, "Checking %s" % scratch)
        checked = _check_restored(
            pg_config, scratch, manifest, fs_root, counted, known_missing(ref, manifest, identities)
        )
        for check in checked:
            log("Check %s: %s (%s)" % (check.name, "passed" if check.ok else "FAILED", check.detail))
        result.checks += checked
    except BackupError as exc:
        result.error = str(exc)
    except Exception as exc:  # a drill reports; it never crashes its caller
        result.error = "unexpected %s: %s" % (type(exc).__name__, exc)
    finally:
        progress(0.95, "Dropping the scratch database %s" % scratch)
        result.cleaned_up = clean_up_scratch(pg_config, scratch, fs_root)
        log("Scratch database %s %s" % (scratch, "dropped" if result.cleaned_up else "NOT dropped: drop it by hand"))
    result.ok = result.error is None and all(check.ok for check in result.checks) and result.cleaned_up
    result.total_seconds = round(time.monotonic() - started, 3)
    return result


def drill_options(scratch, pg_config, data_dir, identities, neutralize_sql, **more):
    """The RestoreOptions of a drill's copy: a new scratch database, neutralized, with its own identity."""
    return RestoreOptions(
        target_db=scratch,
        pg=pg_config,
        data_dir=data_dir,
        new_uuid=True,
        neutralize=True,
        neutralize_sql=list(neutralize_sql or []),
        identities=list(identities or []),
        **more,
    )


def row_counts(pg_config, dbname):
    """{table: exact row count} of every table in the public schema."""
    with pg.cursor(pg_config, dbname) as cr:
        return pg.row_counts(cr)


def known_missing(ref, manifest, identities):
    """The attachment files the backup already lacked: listed by the manifest, or sealed in its names artifact."""
    art = manifest["artifacts"].get("names")
    if art is None:
        return (manifest.get("filestore") or {}).get("missing") or []
    chunks, total = [], 0
    with ArtifactReader(ref.storage, ref.key(art["file"]), art, identities) as reader:
        while chunk := reader.read(CHUNK):
            total += len(chunk)
            if total > mf.MAX_NAMES_BYTES:
                raise BackupError("%s is larger than a list of filestore names can be" % art["file"])
            chunks.append(chunk)
        reader.finish()
    return mf.parse_names(b"".join(chunks), art["file"])["missing"]


def _check_restored(pg_config, scratch, manifest, fs_root, counted, known):
    """Row counts (as restored, before neutralization: ``counted``), attachments, modules."""
    checks = []
    conn = pg.connect(pg_config, scratch)
    try:
        with conn.cursor() as cr:
            expected = (manifest.get("database") or {}).get("row_counts") or {}
            wrong = []
            for table, count in sorted(expected.items()):
                if table not in counted:
                    wrong.append("%s is missing" % table)
                elif counted[table] != count:
                    wrong.append("%s has %d rows, the manifest says %d" % (table, counted[table], count))
            checks.append(
                DrillCheck("row counts", not wrong, "; ".join(wrong) or "%d tables match the manifest" % len(expected))
            )
            if (
                not (manifest.get("filestore") or {}).get("included", True)
                or not filestore_artifact(manifest["artifacts"])[0]
            ):
                checks.append(DrillCheck("attachments", True, "the backup holds no filestore (not checked)"))
            else:
                checks.append(check_attachments(cr, os.path.join(fs_root, scratch), known))
            checks.append(check_modules(cr, manifest))
    finally:
        conn.close()
    return checks


def _check_attachment(root, store_fname, checksum, missing, mismatched):
    """One attachment file: present under ``root`` (None: no filestore) with Odoo's SHA-1, else listed."""
    parts = store_fname.split("/")
    path = os.path.join(root, *parts) if root else None
    if ".." in parts or store_fname.startswith("/") or not path or not os.path.isfile(path):
        missing.append(store_fname)
        return
    if checksum:
        digest = hashlib.sha1()
        with open(path, "rb") as handle:
            for block in iter(lambda h=handle: h.read(CHUNK), b""):
                digest.update(block)
        if digest.hexdigest() != checksum:
            mismatched.append(store_fname)


def check_attachments(cr, root, known_missing=()):
    """Every file ``ir_attachment`` references is under ``root`` (None: no filestore) with Odoo's SHA-1."""
    if not pg.table_exists(cr, "ir_attachment"):
        return DrillCheck("attachments", True, "no ir_attachment table")
    checked, missing, mismatched = 0, [], []
    # A server-side cursor: the rows come in batches, however many attachments the database has.
    with cr.connection.cursor(name="spp_backup_attachments", withhold=True) as rows:
        rows.itersize = 2000
        rows.execute(
            "SELECT DISTINCT store_fname, checksum FROM ir_attachment "
            "WHERE store_fname IS NOT NULL AND store_fname <> ''"
        )
        for store_fname, checksum in rows:
            checked += 1
            _check_attachment(root, store_fname, checksum, missing, mismatched)
    known = set(known_missing or ())
    problems = []
    if missing:
        already = len([m for m in missing if m in known])
        problems.append(
            "%d attachment file(s) missing (%d of them already missing when the backup was made): %s"
            % (len(missing), already, ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else ""))
        )
    if mismatched:
        problems.append(
            "%d file(s) whose SHA-1 differs from Odoo's checksum: %s"
            % (len(mismatched), ", ".join(mismatched[:5]) + (" ..." if len(mismatched) > 5 else ""))
        )
    return DrillCheck(
        "attachments", not problems, "; ".join(problems) or "%d files present with the right SHA-1" % checked
    )


def check_modules(cr, manifest):
    expected = manifest.get("modules") or {}
    if not pg.table_exists(cr, "ir_module_module"):
        return DrillCheck("odoo version/modules", not expected, "no ir_module_module table")
    cr.execute("SELECT name, latest_version FROM ir_module_module WHERE state = 'installed'")
    found = dict(cr.fetchall())
    problems = []
    if found != expected:
        lost = sorted(set(expected) - set(found))
        extra = sorted(set(found) - set(expected))
        changed = sorted(n for n in set(found) & set(expected) if found[n] != expected[n])
        for label, names in (("not installed", lost), ("unexpected", extra), ("other version", changed)):
            if names:
                problems.append("%s: %s" % (label, ", ".join(names[:10])))
    base = found.get("base") or ""
    major = manifest.get("major_version")
    if major and base and not base.startswith(major):
        problems.append("base is %s, the manifest says Odoo %s" % (base, major))
    return DrillCheck(
        "odoo version/modules",
        not problems,
        "; ".join(problems) or "Odoo %s, %d modules as in the manifest" % (major or "?", len(found)),
    )


def addons_dirs(settings):
    """The addons folders of this server, as odoo.conf's addons_path names them (the engine runs without Odoo:
    Odoo's own addons count only when that path lists them, as packaged installs do)."""
    dirs = [d.strip() for d in ((settings.options if settings else {}).get("addons_path") or "").split(",")]
    return [d for d in dict.fromkeys(dirs) if d and os.path.isdir(d)]


def check_addons(cr, settings):
    """Every installed module of the database is on this server's addons path."""
    if not pg.table_exists(cr, "ir_module_module"):
        return DrillCheck("modules on this server", True, "no ir_module_module table (not an Odoo database)")
    dirs = addons_dirs(settings)
    if not any(os.path.isfile(os.path.join(d, "base", "__manifest__.py")) for d in dirs):
        return DrillCheck(
            "modules on this server",
            True,
            "not checked: this server's addons path is not known (give --conf with an odoo.conf whose addons_path "
            "includes Odoo's own addons)",
        )
    cr.execute("SELECT name FROM ir_module_module WHERE state = 'installed' ORDER BY name")
    names = [row[0] for row in cr.fetchall()]
    absent = [name for name in names if not any(os.path.isfile(os.path.join(d, name, "__manifest__.py")) for d in dirs)]
    return DrillCheck(
        "modules on this server",
        not absent,
        "not on this server's addons path: %s" % ", ".join(absent[:20]) + (" ..." if len(absent) > 20 else "")
        if absent
        else "all %d installed modules are on the addons path" % len(names),
    )


def clean_up_scratch(pg_config, scratch, fs_root):
    ok = True
    try:
        pg.drop_database(pg_config, scratch)
    except Exception:
        ok = False
    if fs_root:
        path = os.path.join(fs_root, scratch)
        with contextlib.suppress(FileNotFoundError):
            shutil.rmtree(path)
        ok = ok and not os.path.exists(path)
    return ok
