"""Odoo database-manager zips: import them, and export any backup as one.

Odoo's own database manager writes a zip with ``dump.sql`` first (plain SQL
from ``pg_dump --no-owner``), the database's filestore under ``filestore/``
and a ``manifest.json`` (odoo_dump, db_name, version, version_info,
major_version, pg_version, modules). Importing one goes through the same
checks and the same swap-in and roll-back as a restore; exporting turns a
backup set (decrypted and decompressed as it streams) into that layout, so
people who need Odoo's format are served.
"""

import contextlib
import json
import os
import stat
import subprocess
import tempfile
import threading
import time
import zipfile

from ..core.errors import BackupError, RestoreError, UnsafeArchive
from ..db import pg, sqlguard, sqlimport
from ..formats import filestore, packstore
from ..io.stream import CHUNK, ArtifactReader
from .drill import DrillCheck, check_addons, check_attachments, check_modules
from .restore import RestoreResult, Target, accepted_warnings

ODOO_KEYS = ("odoo_dump", "db_name", "version", "version_info", "major_version", "pg_version", "modules")


def check_zip_member(info):
    """Refuse a zip member that is absolute, climbs out with '..', or is a link or special file."""
    name = info.filename
    parts = filestore.safe_parts(name, "zip member")
    kind = stat.S_IFMT(info.external_attr >> 16)  # 0 when the zip records no Unix file type
    if kind and kind not in (stat.S_IFREG, stat.S_IFDIR):
        raise UnsafeArchive("Refused zip member %r: links and special files are not allowed." % name)
    return parts


def read_odoo_manifest(archive):
    try:
        with archive.open("manifest.json") as handle:
            return json.load(handle)
    except KeyError:
        return {}
    except ValueError as exc:
        raise RestoreError("The zip's manifest.json is not valid JSON: %s" % exc) from exc


def detect_format(path):
    """'zip' (Odoo's database manager), 'custom' (pg_dump -Fc, Odoo's "pg_dump custom format") or 'sql'."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(512)
    except OSError as exc:
        raise RestoreError("Cannot read %s: %s" % (path, exc.strerror or exc)) from exc
    if head.startswith(b"PK\x03\x04"):
        return "zip"
    if path.lower().endswith(".zip"):
        raise RestoreError("%s is not a readable zip file (it does not start like one)." % path)
    if head.startswith(b"PGDMP"):
        return "custom"
    if head.startswith(b"\x1f\x8b") and path.lower().endswith((".tar.gz", ".tgz")):
        raise RestoreError("%s is a .tar.gz: give a filestore archive with --filestore, beside the dump." % path)
    if head.startswith(b"\x1f\x8b") or head.startswith(b"\x28\xb5\x2f\xfd"):
        raise RestoreError("%s is compressed (gzip or zstd): decompress it first, then import the .sql file." % path)
    if head[257:262] == b"ustar":
        raise RestoreError("%s is a tar-format pg_dump: only zips, custom-format (.dump) and plain .sql import." % path)
    if b"\x00" in head:
        raise RestoreError(
            "%s is neither an Odoo zip, a custom-format dump (.dump) nor plain SQL: it cannot be imported." % path
        )
    return "sql"


def import_file(path, options, strict=False, settings=None, progress=None, filestore_archive=None):
    """Import an Odoo zip, a custom-format ``.dump`` or a plain ``.sql`` into ``options.target_db``.

    ``filestore_archive`` is a ``.tar.gz`` of the filestore that goes with a
    ``.dump`` or ``.sql`` (what OpenSPP 2's backup script writes beside its
    dump): it is extracted into the staging folder swapped in with the database.

    The SQL is read twice: once through the guard before anything is made
    (commands, statements, completeness), then into psql as an import role
    that owns only the scratch database. The checks a drill makes run on the
    result before it is swapped in; ``strict`` makes their failures fatal.
    Returns a RestoreResult.
    """
    progress = progress or (lambda fraction, message: None)
    started = time.monotonic()
    kind = detect_format(path)
    archive, manifest, fs_members, fs_tar = None, {}, [], None
    with contextlib.ExitStack() as stack:
        if kind == "zip":
            archive = stack.enter_context(_open_zip(path))
            manifest, fs_members = _zip_contents(archive, path)
        if filestore_archive:
            fs_tar = stack.enter_context(_open_filestore_archive(filestore_archive, kind, options))
        expected = options.expected_major_version
        if expected and manifest.get("major_version") and manifest["major_version"] != expected:
            raise RestoreError(
                "This zip was made with Odoo %s and this server runs Odoo %s." % (manifest["major_version"], expected)
            )
        do_fs = options.include_filestore and (bool(fs_members) or fs_tar is not None)
        fs_stats = filestore.FilestoreStats(files=len(fs_members))

        def script():
            if kind == "zip":
                return archive.open("dump.sql")
            if kind == "custom":
                return sqlimport.ScriptOfDump(options.pg, path)
            return open(path, "rb")

        sqlimport.check_psql(options.pg)
        progress(0.02, "Reading the dump for commands and completeness")
        try:
            with script() as lines:
                first = sqlguard.scan(lines)
        except BackupError as exc:
            raise RestoreError("Refused %s, nothing was changed: %s" % (path, exc)) from exc
        target = Target(options, True, do_fs)
        role = stack.enter_context(sqlimport.ImportRole(options.pg, settings))
        seconds, checks = {}, []

        def fill(target):
            t0 = time.monotonic()
            progress(0.1, "Loading the dump into %s as role %s" % (target.scratch, role.name))
            target.accepted = sqlimport.load_into_scratch(
                options.pg, role, target, script, first, accepted=options.accepted_code
            )
            target.prepare_copy()
            seconds["database"] = round(time.monotonic() - t0, 3)
            if do_fs:
                t0 = time.monotonic()
                progress(0.7, "Extracting the filestore into %s" % target.staging)
                if fs_tar is not None:
                    fs_stats.files = _extract_tar_filestore(fs_tar, target, filestore_archive).files
                else:
                    _extract_zip_filestore(archive, fs_members, target)
                seconds["filestore"] = round(time.monotonic() - t0, 3)
            progress(0.85, "Checking the imported database")
            checks.extend(_import_checks(options, target, manifest, do_fs, settings))
            failed = [c for c in checks if not c.ok]
            if strict and failed:
                raise RestoreError(
                    "The import failed its checks (--strict), so it was rolled back and nothing was changed: %s"
                    % "; ".join("%s: %s" % (c.name, c.detail) for c in failed)
                )
            sqlimport.hand_over(role, target)

        try:
            target.run(fill, progress)
        except RestoreError as exc:
            if "nothing was changed" in str(exc).lower():
                raise
            raise RestoreError("%s The import was rolled back: nothing was changed." % exc) from exc
    warnings = ["check %s failed: %s" % (c.name, c.detail) for c in checks if not c.ok]
    if kind == "custom" and fs_tar is None:
        warnings.append("a custom-format dump holds the database only: no filestore was imported")
    elif kind == "sql" and fs_tar is None:
        warnings.append("a plain .sql file holds the database only: no filestore was imported")
    if kind == "zip" and not fs_members and options.include_filestore:
        warnings.append("the zip holds no filestore: only the database was imported")
    duration = round(time.monotonic() - started, 3)
    return RestoreResult(
        backup_id=manifest.get("db_name") and "odoo-zip:%s" % manifest.get("db_name") or "odoo-%s" % kind,
        source=os.path.abspath(path),
        target_db=target.name,
        filestore_path=target.fs_target,
        database_restored=True,
        filestore_files=fs_stats.files if do_fs else 0,
        renamed_aside=target.renamed,
        seconds=seconds,
        duration=duration,
        signature="none (Odoo's backups are not signed)",
        warnings=warnings + target.replaced_warning() + accepted_warnings(target.accepted),
        checks=[vars(c) for c in checks],
        in_flight_closed=target.in_flight_closed,
    )


def _open_filestore_archive(path, kind, options):
    """The filestore ``.tar.gz`` that goes with a dump, checked before anything is made."""
    if kind == "zip":
        raise RestoreError(
            "A zip from Odoo's database manager holds its own filestore: --filestore goes with a .dump or .sql file."
        )
    if not options.include_filestore:
        raise RestoreError("--filestore and --no-filestore ask for opposite things: give one of them.")
    return filestore.open_tar_gz(path)


def _open_zip(path):
    try:
        return zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile) as exc:
        raise RestoreError("%s is not a readable zip file: %s" % (path, exc)) from exc


def _zip_contents(archive, path):
    infos = archive.infolist()
    for info in infos:
        check_zip_member(info)
    names = {info.filename for info in infos}
    if "dump.sql" not in names:
        raise RestoreError(
            "%s has no dump.sql: it is not a zip made by Odoo's database manager%s."
            % (
                path,
                " (it holds a custom-format dump.dump: extract it and import the .dump file)"
                if "dump.dump" in names
                else "",
            )
        )
    manifest = read_odoo_manifest(archive)
    fs_members = [i for i in infos if i.filename.startswith("filestore/") and not i.is_dir()]
    return manifest, fs_members


def _extract_zip_filestore(archive, fs_members, target):
    filestore.new_private_folder(target.staging)
    for info in fs_members:
        parts = check_zip_member(info)[1:]
        if not parts:
            continue
        with archive.open(info) as source:
            _path, out = filestore.open_new_file(target.staging, "/".join(parts), "zip member")
            with out:
                while True:
                    block = source.read(CHUNK)
                    if not block:
                        break
                    out.write(block)
    os.sync()


def _extract_tar_filestore(source, target, path):
    stats = filestore.extract_folder_tar(source, target.staging, path)
    os.sync()
    return stats


def _import_checks(options, target, manifest, do_fs, settings):
    """What a drill checks, on the imported scratch database and staging folder."""
    conn = pg.connect(target.db_pg, target.scratch)
    try:
        with conn.cursor() as cr:
            checks = []
            if options.include_filestore:
                checks.append(check_attachments(cr, target.staging if do_fs else None, []))
            else:
                checks.append(DrillCheck("attachments", True, "not checked: the filestore was left out"))
            if manifest:
                checks.append(check_modules(cr, manifest))
            checks.append(check_addons(cr, settings))
            return checks
    finally:
        conn.close()


def export_odoo_zip(ref, out_path, pg_config, identities=(), progress=None):
    """Write backup ``ref`` as an Odoo database-manager zip at ``out_path``; returns its size."""
    progress = progress or (lambda fraction, message: None)
    manifest = ref.read_manifest()
    artifacts = manifest["artifacts"]
    if "database" not in artifacts:
        raise RestoreError("This backup holds no database dump, so it cannot become an Odoo zip.")
    if os.path.exists(out_path):
        raise RestoreError("%s exists already: choose a new file name." % out_path)
    pg.tool_version(pg_config, "pg_restore")
    partial = out_path + ".partial"
    try:
        # The zip holds the whole database in clear: readable by its owner only (0600), as a backup's files are.
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0), 0o600)
        os.fchmod(fd, 0o600)  # a partial file a killed export left keeps no other mode
        with (
            os.fdopen(fd, "wb") as handle,
            zipfile.ZipFile(handle, "w", compression=zipfile.ZIP_DEFLATED, allowZip64=True) as archive,
        ):
            progress(0.05, "Converting the dump to plain SQL (dump.sql)")
            info = zipfile.ZipInfo("dump.sql", time.gmtime()[:6])
            info.compress_type = zipfile.ZIP_DEFLATED
            with archive.open(info, "w", force_zip64=True) as out:
                _dump_to_sql(ref, artifacts["database"], identities, pg_config, out)
            if "filestore" in artifacts:
                progress(0.6, "Adding the filestore")
                with ArtifactReader(
                    ref.storage, ref.key(artifacts["filestore"]["file"]), artifacts["filestore"], identities
                ) as reader:
                    _tar_to_zip(reader, archive)
                    reader.finish()
            elif "filelist" in artifacts:
                progress(0.6, "Adding the filestore (from the destination's store)")
                _store_to_zip(ref, manifest, artifacts["filelist"], identities, archive)
            odoo_manifest = {key: manifest.get(key) for key in ODOO_KEYS}
            odoo_manifest["odoo_dump"] = "1"
            archive.writestr("manifest.json", json.dumps(odoo_manifest, indent=4))
        os.replace(partial, out_path)
    except BaseException:
        if os.path.exists(partial):
            os.unlink(partial)
        raise
    return os.path.getsize(out_path)


def _store_to_zip(ref, manifest, art, identities, archive):
    """The files a set keeps in its store, restored into a temporary folder and added as filestore/<name>."""
    store = packstore.store_of(ref, manifest)
    with tempfile.TemporaryDirectory(prefix="spp_backup_zip_") as tmp:
        staging = os.path.join(tmp, "filestore")
        try:
            with ArtifactReader(ref.storage, ref.key(art["file"]), art, identities) as reader:
                packstore.extract_store(reader, store, identities, staging, packstore.read_set_info(ref)["packs"])
                reader.finish()
        finally:
            store.close()
        for dirpath, _dirs, files in os.walk(staging):
            for name in sorted(files):
                path = os.path.join(dirpath, name)
                rel = os.path.relpath(path, staging).replace(os.sep, "/")
                archive.write(path, "filestore/" + rel, compress_type=zipfile.ZIP_DEFLATED)


def _dump_to_sql(ref, art, identities, pg_config, out):
    """pg_restore the custom-format dump to plain SQL (no owners), streamed into ``out``."""
    args = [pg.tool(pg_config, "pg_restore"), "--no-owner", "--file=-"]
    with (
        ArtifactReader(ref.storage, ref.key(art["file"]), art, identities) as reader,
        tempfile.TemporaryFile() as errfile,
    ):
        proc = subprocess.Popen(
            args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=errfile, env=pg_config.env()
        )
        feed_error = []

        def feed():
            try:
                while True:
                    block = reader.read(CHUNK)
                    if not block:
                        break
                    proc.stdin.write(block)
                reader.finish()
            except BrokenPipeError:
                pass
            except BaseException as exc:
                feed_error.append(exc)
            finally:
                with contextlib.suppress(OSError):
                    proc.stdin.close()

        feeder = threading.Thread(target=feed, daemon=True)
        feeder.start()
        try:
            while True:
                block = proc.stdout.read(CHUNK)
                if not block:
                    break
                out.write(block)
        except BaseException:
            proc.kill()
            raise
        finally:
            feeder.join()
            code = proc.wait()
        if feed_error:
            raise feed_error[0]
        if code != 0:
            raise RestoreError(
                "pg_restore could not convert the dump (exit %d): %s" % (code, pg.last_lines(pg.read_tail(errfile)))
            )


def _tar_to_zip(reader, archive):
    for member, parts, blocks in filestore.iter_tar(reader):
        if blocks is None:
            continue
        info = zipfile.ZipInfo("filestore/" + "/".join(parts), time.gmtime(member.mtime)[:6])
        info.compress_type = zipfile.ZIP_DEFLATED  # as Odoo's own database manager writes them
        info.external_attr = (stat.S_IFREG | 0o600) << 16
        with archive.open(info, "w", force_zip64=member.size > (1 << 31)) as out:
            for block in blocks():
                out.write(block)
