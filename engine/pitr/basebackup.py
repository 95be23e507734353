"""Base backups of a PostgreSQL server with ``pg_basebackup``, checked with ``pg_verifybackup``, stored with the
WAL range they need.

``pg_basebackup -Fp -X none`` writes the cluster into a private staging folder (the WAL it needs comes from the
archive the receiver keeps); ``pg_verifybackup -n`` checks every file against the backup's manifest; the folder
is then streamed as one tar through the engine's compression, encryption and checksums to every destination,
with the backup's manifest beside it and a signed ``base.json`` written last (without it the backup is not
used). From PostgreSQL 17 on, with ``summarize_wal = on``, a backup may be incremental: only the blocks changed
since the previous backup of the chain, whose manifest the receiver's spool keeps (``pg_combinebackup`` joins
them at restore).
"""

import contextlib
import datetime
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
import time

from ..core import manifest as mf
from ..core.errors import BackupError, PreflightError
from ..core.human import human_bytes, human_duration
from ..db import pg
from ..db.walcheck import identify_system
from . import archive, walnames
from .receiver import conninfo

APPLICATION_NAME = "spp_backup_base"
CHAIN_FILE = "base_chain.json"
FULL_EVERY = 7


def _run(args, env, what):
    done = subprocess.run(args, env=env, capture_output=True, text=True)  # noqa: S603 - fixed argv, no shell
    if done.returncode != 0:
        raise BackupError("%s failed: %s" % (what, pg.last_lines(done.stderr or done.stdout) or "no detail"))
    return done


def wal_range(manifest_path):
    """(timeline, start LSN, end LSN) of a backup_manifest (its WAL-Ranges: the newest timeline's)."""
    with open(manifest_path, encoding="utf-8") as handle:
        ranges = json.load(handle)["WAL-Ranges"]
    first = ranges[0]
    return int(first["Timeline"]), first["Start-LSN"], first["End-LSN"]


def _tar_folder(folder, sink):
    with tarfile.open(fileobj=sink, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        for entry in sorted(os.listdir(folder)):
            tar.add(os.path.join(folder, entry), arcname=entry, recursive=True)


def _chain(spool):
    try:
        with open(os.path.join(spool, CHAIN_FILE), encoding="utf-8") as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return None


def take_base_backup(
    pgc,
    destinations,
    signing_key,
    recipients=(),
    tmp_dir=None,
    spool=None,
    incremental=True,
    level=3,
    threads=2,
    log=None,
):
    """One base backup to every destination ({name: storage}); returns its base.json document.

    Incremental when the server is PostgreSQL 17 or later, summarizes WAL, ``incremental`` is asked, and the
    spool holds the manifest of the previous backup of this server (``spool``: the receiver's folder).
    """
    log = log or (lambda message: None)
    if signing_key is None:
        raise PreflightError(
            "Base backups are signed: set signing_key_file in odoo.conf's [spp_backup] section (or --sign-key)."
        )
    system_id, _timeline, _pos = identify_system(pgc)
    tools = pg.client_tools(pgc)
    with pg.cursor(pgc, pgc.maintenance_db) as cr:
        cr.execute(
            "SELECT current_setting('server_version'), "
            "(SELECT setting::bigint FROM pg_settings WHERE name = 'wal_segment_size'), "
            "coalesce((SELECT setting FROM pg_settings WHERE name = 'summarize_wal'), 'off')"
        )
        server_text, segment_size, summarize = cr.fetchone()
        cr.execute("SELECT spcname FROM pg_tablespace WHERE spcname NOT IN ('pg_default', 'pg_global')")
        spaces = [row[0] for row in cr.fetchall()]
        if spaces:
            raise PreflightError(
                "The server has tablespaces outside its data directory (%s): base backups of such a cluster are "
                "not supported yet; the nightly dumps still cover its databases." % ", ".join(spaces)
            )
        cr.execute("SELECT datname FROM pg_database WHERE datallowconn ORDER BY datname")
        databases = [row[0] for row in cr.fetchall()]
    chain = _chain(spool) if spool else None
    parent = None
    if (
        incremental
        and tools.server_major >= 17
        and summarize == "on"
        and chain
        and chain.get("system_id") == system_id
        # A full backup every FULL_EVERY: a restore combines at most that many, and retention can let old ones go.
        and int(chain.get("length") or 1) < FULL_EVERY
        and os.path.exists(os.path.join(spool, chain.get("manifest", "")))
    ):
        parent = chain
    backup_id = mf.new_backup_id()
    staging = tempfile.mkdtemp(prefix="spp_backup_base_", dir=tmp_dir)
    data = os.path.join(staging, "data")
    started_wall, started = time.time(), time.monotonic()
    try:
        args = [
            pg.tool(pgc, "pg_basebackup"),
            "-d",
            conninfo(pgc, APPLICATION_NAME),
            "-D",
            data,
            "-Fp",
            "-X",
            "none",
            "-c",
            "fast",
            "--no-password",
            "-l",
            "spp_backup %s" % backup_id,
        ]
        if parent:
            args.append("--incremental=%s" % os.path.join(spool, parent["manifest"]))
        _run(args, pgc.env(), "pg_basebackup")
        # The backup is consistent from its end position on, which was written before this moment.
        finished_wall = time.time()
        copied = time.monotonic() - started
        _run([pg.tool(pgc, "pg_verifybackup"), "-n", "-q", data], pgc.env(), "pg_verifybackup")
        manifest_path = os.path.join(data, "backup_manifest")
        timeline, start_lsn, end_lsn = wal_range(manifest_path)
        log(
            "pg_basebackup wrote %s %s in %s; pg_verifybackup found every file as its manifest says"
            % (
                "an incremental backup (after %s)" % parent["backup_id"] if parent else "a full backup",
                backup_id,
                human_duration(copied),
            )
        )
        prefix = archive.base_prefix(system_id, backup_id)

        def key_of(file):
            return "%s/%s" % (prefix, file)

        with archive.StoreSink(destinations, key_of, "base.tar", recipients, level, threads) as sink:
            _tar_folder(data, sink)
        base = sink.result()
        alive = {name: destinations[name] for name in destinations if name not in base.failures}
        with open(manifest_path, "rb") as source:
            manifest_art = archive.store_stream(alive, key_of, "backup_manifest", source, recipients, level)
        alive = {name: s for name, s in alive.items() if name not in manifest_art.failures}
        doc = {
            "format": archive.FORMAT,
            "kind": "base",
            "backup_id": backup_id,
            "system_id": system_id,
            "server_version": server_text,
            "pg_major": tools.server_major,
            "segment_size": segment_size,
            "incremental": bool(parent),
            "parent": parent["backup_id"] if parent else None,
            "timeline": timeline,
            "start_lsn": start_lsn,
            "end_lsn": end_lsn,
            "start_wal": walnames.segment_of(walnames.parse_lsn(start_lsn), timeline, segment_size),
            "end_wal": walnames.segment_of(walnames.parse_lsn(end_lsn), timeline, segment_size),
            "started_at": mf.utc_iso(started_wall),
            # The backup is consistent from end_lsn on, written before this moment: a restore to a second after
            # it may start from this backup.
            "consistent_at": datetime.datetime.fromtimestamp(finished_wall, datetime.timezone.utc).strftime(
                "%Y-%m-%dT%H:%M:%S.%fZ"
            ),
            "databases": databases,
            "artifacts": {"base": base.art, "manifest": manifest_art.art},
            "raw_sha256": {"base": base.raw_sha256, "manifest": manifest_art.raw_sha256},
        }
        failures = archive.write_small(alive, key_of("base.json"), archive.signed_bytes(doc, signing_key))
        failures = {**base.failures, **manifest_art.failures, **failures}
        if len(failures) == len(destinations):
            raise BackupError(
                "The base backup could not be stored anywhere: %s"
                % "; ".join("%s: %s" % item for item in failures.items())
            )
        if spool and not failures:
            # Only a backup every destination holds is a parent: an incremental after a missing one restores
            # nowhere it is missing.
            kept = "backup_manifest.%s" % backup_id
            shutil.copyfile(manifest_path, os.path.join(spool, kept))
            previous = _chain(spool)
            with open(os.path.join(spool, CHAIN_FILE + ".new"), "w", encoding="utf-8") as handle:
                length = int(parent.get("length") or 1) + 1 if parent else 1
                json.dump({"system_id": system_id, "backup_id": backup_id, "manifest": kept, "length": length}, handle)
            os.replace(os.path.join(spool, CHAIN_FILE + ".new"), os.path.join(spool, CHAIN_FILE))
            if previous and previous.get("manifest") and previous["manifest"] != kept:
                with contextlib.suppress(OSError):
                    os.unlink(os.path.join(spool, previous["manifest"]))
        doc["failures"] = failures
        doc["seconds"] = round(time.monotonic() - started, 3)
        log(
            "Base backup %s stored: %s of cluster as %s, WAL %s to %s needed, in %s"
            % (
                backup_id,
                human_bytes(base.art["raw_size"]),
                human_bytes(base.art["size"]),
                doc["start_wal"],
                doc["end_wal"],
                human_duration(doc["seconds"]),
            )
        )
        return doc
    finally:
        shutil.rmtree(staging, ignore_errors=True)
