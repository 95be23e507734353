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

from . import filestore, pg
from .errors import RestoreError, UnsafeArchive
from .restore import RestoreResult, Target
from .stream import CHUNK, ArtifactReader

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


def import_odoo_zip(zip_path, options, progress=None):
    """Restore an Odoo database-manager zip into ``options.target_db``; returns a RestoreResult."""
    progress = progress or (lambda fraction, message: None)
    started = time.monotonic()
    try:
        archive = zipfile.ZipFile(zip_path)
    except (OSError, zipfile.BadZipFile) as exc:
        raise RestoreError("%s is not a readable zip file: %s" % (zip_path, exc)) from exc
    with archive:
        infos = archive.infolist()
        for info in infos:
            check_zip_member(info)
        names = {info.filename for info in infos}
        if "dump.sql" not in names:
            raise RestoreError(
                "%s has no dump.sql: it is not a zip made by Odoo's database manager%s."
                % (zip_path, " (it holds a custom-format dump.dump: use pg_restore)" if "dump.dump" in names else "")
            )
        manifest = read_odoo_manifest(archive)
        expected = options.expected_major_version
        if expected and manifest.get("major_version") and manifest["major_version"] != expected:
            raise RestoreError(
                "This zip was made with Odoo %s and this server runs Odoo %s." % (manifest["major_version"], expected)
            )
        fs_members = [i for i in infos if i.filename.startswith("filestore/") and not i.is_dir()]
        do_fs = options.include_filestore and bool(fs_members)
        pg.tool_version(options.pg, "psql")
        target = Target(options, True, do_fs)
        seconds = {}

        def fill(target):
            t0 = time.monotonic()
            progress(0.1, "Loading dump.sql into %s" % target.scratch)
            target.create_scratch()
            with archive.open("dump.sql") as dump:
                run_psql(options.pg, target.scratch, dump)
            target.prepare_copy()
            seconds["database"] = round(time.monotonic() - t0, 3)
            if do_fs:
                t0 = time.monotonic()
                progress(0.7, "Extracting the filestore into %s" % target.staging)
                os.makedirs(target.fs_root, exist_ok=True)
                os.makedirs(target.staging)
                for info in fs_members:
                    parts = check_zip_member(info)[1:]
                    if not parts:
                        continue
                    path = os.path.join(target.staging, *parts)
                    os.makedirs(os.path.dirname(path), exist_ok=True)
                    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o644)
                    with archive.open(info) as source, os.fdopen(fd, "wb") as out:
                        while True:
                            block = source.read(CHUNK)
                            if not block:
                                break
                            out.write(block)
                os.sync()
                seconds["filestore"] = round(time.monotonic() - t0, 3)

        target.run(fill, progress)
    duration = round(time.monotonic() - started, 3)
    return RestoreResult(
        backup_id=manifest.get("db_name") and "odoo-zip:%s" % manifest.get("db_name") or "odoo-zip",
        source=os.path.abspath(zip_path),
        target_db=target.name,
        filestore_path=target.fs_target,
        database_restored=True,
        filestore_files=len(fs_members) if do_fs else 0,
        renamed_aside=target.renamed,
        seconds=seconds,
        duration=duration,
        signature="none (Odoo zips are not signed)",
        warnings=target.replaced_warning(),
    )


def run_psql(pg_config, dbname, source):
    """Feed plain SQL to psql, stopping at the first error."""
    args = [
        pg_config.tool("psql"),
        "--no-psqlrc",
        "--quiet",
        "--no-password",
        "-v",
        "ON_ERROR_STOP=1",
        "--dbname=%s" % pg.conninfo_dbname(dbname),
        "-f",
        "-",
    ]
    pg.feed_process(args, source, pg_config.env(), "psql (loading dump.sql)")


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
        with zipfile.ZipFile(partial, "w", compression=zipfile.ZIP_DEFLATED, allowZip64=True) as archive:
            progress(0.05, "Converting the dump to plain SQL (dump.sql)")
            with archive.open(zipfile.ZipInfo("dump.sql", time.gmtime()[:6]), "w", force_zip64=True) as out:
                _dump_to_sql(ref, artifacts["database"], identities, pg_config, out)
            if "filestore" in artifacts:
                progress(0.6, "Adding the filestore")
                with ArtifactReader(
                    ref.storage, ref.key(artifacts["filestore"]["file"]), artifacts["filestore"], identities
                ) as reader:
                    _tar_to_zip(reader, archive)
                    reader.finish()
            odoo_manifest = {key: manifest.get(key) for key in ODOO_KEYS}
            odoo_manifest["odoo_dump"] = "1"
            archive.writestr("manifest.json", json.dumps(odoo_manifest, indent=4))
        os.replace(partial, out_path)
    except BaseException:
        if os.path.exists(partial):
            os.unlink(partial)
        raise
    return os.path.getsize(out_path)


def _dump_to_sql(ref, art, identities, pg_config, out):
    """pg_restore the custom-format dump to plain SQL (no owners), streamed into ``out``."""
    args = [pg_config.tool("pg_restore"), "--no-owner", "--file=-"]
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
    import tarfile

    with tarfile.open(fileobj=reader, mode="r|") as tar:
        for member in tar:
            parts = filestore.check_member(member)
            if member.isdir():
                continue
            info = zipfile.ZipInfo("filestore/" + "/".join(parts), time.gmtime(member.mtime)[:6])
            info.compress_type = zipfile.ZIP_STORED
            info.external_attr = (stat.S_IFREG | 0o644) << 16
            source = tar.extractfile(member)
            with archive.open(info, "w", force_zip64=member.size > (1 << 31)) as out:
                while True:
                    block = source.read(CHUNK)
                    if not block:
                        break
                    out.write(block)
            tar.members.clear()
