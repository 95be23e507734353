"""Restores from the WAL archive: one database to a chosen second, or the whole cluster.

``window`` says which seconds can be reached (from the oldest base backup's consistent point to the newest
WAL received, cut at the first gap) and names the gaps. ``restore_database_at`` puts the base backup before T
into a scratch cluster, replays the archived WAL to T, takes the one database out with ``pg_dump`` and restores
it through the usual path (scratch database, in-flight runs closed, neutralize or a new identity when asked, a
new name or the typed replace); the filestore is the files the database at T references, taken from the live
filestore when their content matches their name, and those found nowhere are named. ``restore_cluster`` replays
into a data directory of the caller's choosing and leaves it ready to start.
"""

import contextlib
import datetime
import hashlib
import os
import shutil
import subprocess
import time
from dataclasses import asdict, dataclass, field

from ..core.errors import PreflightError, RestoreError, VerifyError
from ..core.human import count, human_bytes, human_duration
from ..db import pg
from ..ops import restore as restore_ops
from . import archive as arch_mod
from . import scratch as scratch_mod
from . import walnames

# Room for the WAL a recovery keeps in pg_wal between restartpoints, besides the cluster itself.
WAL_ROOM = 1 << 30


def parse_time(value):
    """An aware datetime from ISO 8601 text (a time without an offset is UTC) or a datetime."""
    if isinstance(value, datetime.datetime):
        moment = value
    else:
        text = str(value or "").strip()
        if text.upper().endswith(" UTC"):  # as this engine prints times
            text = text[:-4] + "+00:00"
        text = text.replace("Z", "+00:00")
        try:
            moment = datetime.datetime.fromisoformat(text)
        except ValueError as exc:
            raise PreflightError(
                "%r is not a date and time: write it as 2026-12-07 14:03:12 (UTC) or with its offset, "
                "2026-12-07 16:03:12+02:00." % value
            ) from exc
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.timezone.utc)
    return moment.astimezone(datetime.timezone.utc)


def iso(moment):
    return moment.astimezone(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f+00")


def words(moment):
    return moment.astimezone(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


@dataclass
class Window:
    """What a server's archive at one destination can restore to."""

    system_id: str
    start: datetime.datetime | None
    end: datetime.datetime | None
    bases: list = field(default_factory=list)  # verified base.json documents, oldest first
    problems: list = field(default_factory=list)  # base backups that do not verify, in words
    gaps: list = field(default_factory=list)  # (first missing, last missing, count)
    newest_wal: str | None = None
    newest_partial: bool = False
    wal_count: int = 0
    reach: dict = field(default_factory=dict)  # base id -> (last segment it reaches, its time)
    ranges: list = field(default_factory=list)  # [(first second, last second)] reachable without a gap

    def as_dict(self):
        data = asdict(self)
        data["start"] = words(self.start) if self.start else None
        data["end"] = words(self.end) if self.end else None
        data["bases"] = [
            {k: b[k] for k in ("backup_id", "consistent_at", "incremental", "parent", "start_wal", "end_wal")}
            for b in self.bases
        ]
        data["reach"] = {k: [v[0], words(v[1]) if v[1] else None] for k, v in self.reach.items()}
        data["ranges"] = [[words(a), words(b)] for a, b in self.ranges]
        return data


def _segments(names, timeline, newest):
    """The segments of ``timeline`` a restore may use: complete ones, and a partial one only as the newest of all
    (a partial kept in the middle, where a complete segment failed to be stored, is a gap)."""
    return sorted(
        n
        for n, partial in names.items()
        if walnames.SEGMENT_RE.fullmatch(n) and int(n[:8], 16) == timeline and (not partial or n == newest)
    )


def _reached(archive, public_keys, names, segments, last, floor):
    """(segment, the second the archive is known complete until) walking back from ``last`` to ``floor`` over
    entries that verify and say it (one the receiver stored while catching up says nothing); (None, None)."""
    index = segments.index(last)
    while index >= 0 and segments[index] >= floor:
        name = segments[index]
        try:
            entry = archive.entry(name, public_keys, partial=names.get(name, False))
        except VerifyError:
            return None, None  # a file that does not verify ends what can be used
        if entry.get("complete_until"):
            return name, parse_time(entry["complete_until"])
        index -= 1
    return None, None


def window(archive, public_keys):
    """The Window of ``archive`` (an archive.Archive); entries are verified for the times it states. ``ranges``
    are the stretches of seconds reachable without a gap; ``start`` and ``end`` their outer bounds."""
    names = archive.wal_names()
    result = Window(system_id=archive.system_id, start=None, end=None, wal_count=len(names))
    for _backup_id, doc, problem in archive.bases(public_keys):
        if doc is None:
            result.problems.append(problem)
        else:
            result.bases.append(doc)
    newest = max((n for n in names if walnames.SEGMENT_RE.fullmatch(n)), default=None)
    result.newest_wal, result.newest_partial = newest, bool(newest and names[newest])
    gaps, spans = set(), []
    for doc in result.bases:
        if doc.get("parent") and not _chain(result.bases, doc):
            result.problems.append("base backup %s: a backup of its chain is missing" % doc["backup_id"])
            continue
        size = doc.get("segment_size") or walnames.DEFAULT_SEGMENT_SIZE
        segments = _segments(names, doc["timeline"], newest)
        later = [n for n in segments if n >= doc["start_wal"]]
        if not later:
            continue
        found = walnames.gaps(later, doc["start_wal"], later[-1], size)
        gaps.update(found)
        last = (
            walnames.segment_name(doc["timeline"], walnames.parse_segment(found[0][0], size)[1] - 1, size)
            if found
            else later[-1]
        )
        if last < doc["end_wal"]:
            continue  # the WAL that makes it consistent is not all there
        name, reached = _reached(archive, public_keys, names, segments, last, doc["end_wal"])
        consistent = parse_time(doc["consistent_at"])
        if reached is None or reached < consistent:
            continue
        result.reach[doc["backup_id"]] = (name, reached)
        spans.append((consistent, reached))
    result.gaps = sorted(gaps)
    for start, end in sorted(spans):
        if result.ranges and start <= result.ranges[-1][1]:
            result.ranges[-1] = (result.ranges[-1][0], max(end, result.ranges[-1][1]))
        else:
            result.ranges.append((start, end))
    if result.ranges:
        result.start, result.end = result.ranges[0][0], result.ranges[-1][1]
    return result


def _chain(bases, doc):
    """[full, incremental, ...] ending with ``doc``, or None when one of them is missing."""
    by_id = {b["backup_id"]: b for b in bases}
    chain = [doc]
    while chain[0].get("parent"):
        parent = by_id.get(chain[0]["parent"])
        if parent is None:
            return None
        chain.insert(0, parent)
    return chain


def choose_base(win, moment):
    """The chain of the newest base backup that reaches ``moment``, or a RestoreError in words."""
    if win.start is None:
        raise RestoreError(
            "The archive of server %s has no base backup with the WAL after it: no second can be restored yet."
            % win.system_id
        )
    if not any(start <= moment <= end for start, end in win.ranges):
        raise RestoreError(
            "%s is outside the window this archive covers (%s): choose a second inside it."
            % (words(moment), "; ".join("%s to %s" % (words(a), words(b)) for a, b in win.ranges))
        )
    fitting = [
        doc
        for doc in win.bases
        if doc["backup_id"] in win.reach
        and parse_time(doc["consistent_at"]) <= moment <= win.reach[doc["backup_id"]][1]
    ]
    if not fitting:
        raise RestoreError(
            "No base backup reaches %s without a gap in the WAL (gaps: %s)."
            % (words(moment), "; ".join("%s to %s" % (a, b) for a, b, _n in win.gaps) or "none")
        )
    return _chain(win.bases, fitting[-1])


def server_bin(pgc, major):
    """The folder of PostgreSQL ``major``'s server (postgres, pg_combinebackup), or a RestoreError."""
    for folder in pg.candidate_folders(pgc):
        version = pg._folder_version(folder)
        if version and version[0] == major:
            binary = os.path.join(folder, "postgres") if folder else shutil.which("postgres")
            if binary and os.access(binary, os.X_OK):
                return folder
    raise RestoreError(
        "Replaying this archive needs PostgreSQL %d's server (its own major version), which is not installed here: "
        "apt-get install postgresql-%d (or set pg_bin_dir in odoo.conf's [spp_backup] section to its folder). "
        "Nothing was changed." % (major, major)
    )


def open_archive(storage, system_id=None):
    found = arch_mod.servers(storage)
    if system_id:
        if str(system_id) not in found:
            raise PreflightError("%s holds no WAL archive of server %s." % (storage.describe(), system_id))
        return arch_mod.Archive(storage, system_id)
    if not found:
        raise PreflightError("%s holds no WAL archive (see 'spp-backup pitr receive')." % storage.describe())
    if len(found) > 1:
        raise PreflightError(
            "%s holds the WAL archives of several servers (%s): choose one with --server."
            % (storage.describe(), ", ".join(found))
        )
    return arch_mod.Archive(storage, found[0])


def _prepare_scratch(archive, chain, scratch, identities, log):
    """The chain's backups unpacked (and combined) into the scratch data directory."""
    if len(chain) == 1:
        with archive.open_base_artifact(chain[0], "base", identities) as reader:
            scratch_mod.extract_base(reader, scratch.data)
        return
    folders = []
    for doc in chain:
        folder = os.path.join(scratch.root, "chain", doc["backup_id"])
        with archive.open_base_artifact(doc, "base", identities) as reader:
            scratch_mod.extract_base(reader, folder)
        folders.append(folder)
    done = subprocess.run(  # noqa: S603 - fixed argv
        [scratch.binary("pg_combinebackup"), "-o", scratch.data, *folders], capture_output=True, text=True
    )
    if done.returncode != 0:
        raise RestoreError("pg_combinebackup failed: %s" % pg.last_lines(done.stderr))
    shutil.rmtree(os.path.join(scratch.root, "chain"), ignore_errors=True)
    log("Combined %s (a full backup and %d incremental)" % (", ".join(d["backup_id"] for d in chain), len(chain) - 1))


def _space_needed(chain):
    raw = [doc["artifacts"]["base"].get("raw_size") or doc["artifacts"]["base"]["size"] for doc in chain]
    # A chain is unpacked next to the combined cluster (about as big as its full backup).
    return sum(raw) + (raw[0] if len(chain) > 1 else 0) + WAL_ROOM


def replay(
    archive,
    chain,
    moment,
    identities,
    public_keys,
    pgc,
    tmp_dir=None,
    keep_data=None,
    log=None,
    progress=None,
    fsync=False,
):
    """A ScratchCluster replayed to ``moment`` (None: to the end of the archive) and promoted: (scratch, the
    line that says where recovery stopped or None, the WAL files served). The caller removes the scratch."""
    log = log or (lambda message: None)
    major = chain[-1]["pg_major"]
    bin_dir = server_bin(pgc, major)
    scratch_mod.check_scratch_space(tmp_dir if not keep_data else os.path.dirname(keep_data), _space_needed(chain))
    scratch = scratch_mod.ScratchCluster(bin_dir, major, tmp_dir, keep_data=keep_data)
    try:
        started = time.monotonic()
        _prepare_scratch(archive, chain, scratch, identities, log)
        log(
            "Base backup %s unpacked into the scratch cluster in %s"
            % (chain[-1]["backup_id"], human_duration(time.monotonic() - started))
        )
        scratch.configure(iso(moment) if moment else None, fsync=fsync)
        server = scratch_mod.WalServer(
            archive, scratch.exchange, identities, public_keys, scratch.owner, archive.wal_names()
        )
        server.start()
        try:
            started = time.monotonic()
            scratch.start()
            line = scratch.wait_open(
                server,
                progress=(lambda n: progress(0.2, "Replaying WAL: %d files" % n)) if progress else None,
                complete_until=lambda: bool(
                    moment and server.complete_until and parse_time(server.complete_until) >= moment
                ),
            )
        finally:
            server.close()
        if server.error is not None:
            raise RestoreError("A WAL file could not be used: %s" % server.error)
        log(
            "Replayed %s from the archive in %s%s"
            % (
                count(len(server.served), "WAL file"),
                human_duration(time.monotonic() - started),
                ": %s" % line if line else "",
            )
        )
        return scratch, line, server
    except BaseException:
        scratch.remove()
        raise


@dataclass
class PitrRestoreResult:
    target_db: str
    source_db: str
    target_time: str
    base_backup: str
    base_chain: list
    wal_first: str | None
    wal_last: str | None
    wal_files: int
    partial_used: bool
    reached: str | None
    filestore_path: str | None
    filestore_files: int
    missing_files: list
    renamed_aside: dict
    seconds: dict
    duration: float
    warnings: list = field(default_factory=list)
    in_flight_closed: dict = field(default_factory=dict)

    def to_dict(self):
        return asdict(self)


def restore_database_at(
    storage,
    db_name,
    moment,
    options,
    public_keys,
    system_id=None,
    source_data_dir=None,
    progress=None,
    log=None,
    neutralize_modules=None,
):
    """Restore database ``db_name`` as it was at ``moment`` into ``options.target_db`` (a RestoreOptions:
    target, replace/confirm, neutralize, new identity, data_dir for the filestore); a PitrRestoreResult.

    ``neutralize_modules`` ({module: [SQL]}): the neutralization of each module, of which those installed in the
    copy at that second are run (instead of ``options.neutralize_sql``)."""
    progress = progress or (lambda fraction, message: None)
    log = log or (lambda message: None)
    pg.check_db_name(db_name, error=RestoreError)
    moment = parse_time(moment)
    if not public_keys:
        raise PreflightError(
            "The WAL archive is trusted only once its signed entries verify: give the server's public key "
            "(--verify-key, or verify_key / signing_key_file in odoo.conf's [spp_backup] section)."
        )
    started = time.monotonic()
    seconds = {}
    archive = open_archive(storage, system_id)
    progress(0.01, "Reading the archive of server %s" % archive.system_id)
    win = window(archive, public_keys)
    chain = choose_base(win, moment)
    base = chain[-1]
    if db_name not in base.get("databases", []):
        raise RestoreError(
            "Database %r is not in base backup %s of server %s (it has: %s)."
            % (db_name, base["backup_id"], archive.system_id, ", ".join(base.get("databases", [])))
        )
    do_fs = bool(options.include_filestore)
    target = restore_ops.Target(options, True, do_fs)
    log(
        "Restoring %s as it was at %s from base backup %s and the WAL after it"
        % (db_name, words(moment), base["backup_id"])
    )
    t0 = time.monotonic()
    scratch, line, server = replay(
        archive, chain, moment, options.identities, public_keys, options.pg, options.tmp_dir, log=log, progress=progress
    )
    seconds["replay"] = round(time.monotonic() - t0, 3)
    files = {"count": 0, "missing": []}
    try:
        source = scratch.pgconfig(scratch.superuser([options.pg.user, os.environ.get("PGUSER")]))
        with pg.cursor(source, "template1") as cr:
            cr.execute(
                "SELECT pg_encoding_to_char(encoding), datcollate, datctype FROM pg_database WHERE datname = %s",
                (db_name,),
            )
            row = cr.fetchone()
        if row is None:
            raise RestoreError(
                "Database %r did not exist at %s on server %s." % (db_name, words(moment), archive.system_id)
            )

        def fill(target):
            t1 = time.monotonic()
            progress(0.5, "Copying %s out of the scratch cluster into %s" % (db_name, target.scratch))
            target.create_scratch(*row)
            _dump_into(source, db_name, options.pg, target.scratch)
            if options.neutralize and neutralize_modules is not None:
                options.neutralize_sql = restore_ops.neutralization_for(options.pg, target.scratch, neutralize_modules)
            seconds["database"] = round(time.monotonic() - t1, 3)
            log("Database copied out of the scratch cluster in %s" % human_duration(seconds["database"]))
            target.prepare_copy(log)
            if do_fs:
                t2 = time.monotonic()
                stats = filestore_at(
                    options.pg, target.scratch, source_data_dir or options.data_dir, db_name, target.staging
                )
                files["count"], files["missing"] = stats
                seconds["filestore"] = round(time.monotonic() - t2, 3)
                log(
                    "Filestore as of %s: %s copied%s"
                    % (
                        words(moment),
                        count(files["count"], "file"),
                        "; %d referenced file(s) found nowhere" % len(files["missing"]) if files["missing"] else "",
                    )
                )

        target.run(fill, progress, log)
    finally:
        scratch.remove()
    duration = round(time.monotonic() - started, 3)
    served = [n for n in server.served if walnames.SEGMENT_RE.fullmatch(n)]
    warnings = target.replaced_warning()
    if files["missing"]:
        warnings.append(
            "%d attachment file(s) the database references at that second are in no filestore: %s"
            % (len(files["missing"]), ", ".join(files["missing"][:20]))
        )
    if line is None:
        warnings.append("recovery ended at the end of the archive before any transaction after the chosen second")
    log("Restored %s at %s into %s in %s" % (db_name, words(moment), target.name, human_duration(duration)))
    return PitrRestoreResult(
        target_db=target.name,
        source_db=db_name,
        target_time=words(moment),
        base_backup=base["backup_id"],
        base_chain=[d["backup_id"] for d in chain],
        wal_first=served[0] if served else None,
        wal_last=served[-1] if served else None,
        wal_files=len(served),
        partial_used=server.partial_served is not None,
        reached=line,
        filestore_path=target.fs_target,
        filestore_files=files["count"],
        missing_files=files["missing"],
        renamed_aside=target.renamed,
        in_flight_closed=target.in_flight_closed,
        seconds=seconds,
        duration=duration,
        warnings=warnings,
    )


def _dump_into(source, db_name, target_pg, scratch_db):
    """pg_dump of ``db_name`` in the scratch cluster piped into pg_restore of ``scratch_db``."""
    dump = subprocess.Popen(  # noqa: S603 - fixed argv
        [pg.tool(source, "pg_dump"), "-Fc", "-Z0", "--no-password", "--dbname=%s" % pg.conninfo_dbname(db_name)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=source.env(),
    )
    try:
        pg.run_restore(target_pg, scratch_db, source=dump.stdout)
    finally:
        dump.stdout.close()
        err = dump.stderr.read().decode("utf-8", "replace")
        dump.stderr.close()
        code = dump.wait()
    if code != 0:
        raise RestoreError("pg_dump of the scratch cluster failed: %s" % pg.last_lines(err))


def filestore_at(target_pg, dbname, data_dir, source_db, staging):
    """The files database ``dbname`` references, copied from the live filestore of ``source_db`` when their
    content matches their name (Odoo names a file by its SHA-1): (files copied, names found nowhere)."""
    os.makedirs(staging, mode=0o700, exist_ok=True)
    with pg.cursor(target_pg, dbname) as cr:
        if not pg.table_exists(cr, "ir_attachment"):
            return 0, []
        cr.execute("SELECT DISTINCT store_fname FROM ir_attachment WHERE store_fname IS NOT NULL AND store_fname <> ''")
        names = [row[0] for row in cr.fetchall()]
    live = os.path.join(data_dir, "filestore", source_db) if data_dir else None
    copied, missing = 0, []
    for name in sorted(names):
        parts = name.split("/")
        if len(parts) != 2 or any(p in ("", ".", "..") for p in parts):
            missing.append(name)
            continue
        path = os.path.join(live, *parts) if live else None
        if path and os.path.isfile(path) and _sha1(path) == parts[1]:
            os.makedirs(os.path.join(staging, parts[0]), mode=0o700, exist_ok=True)
            shutil.copyfile(path, os.path.join(staging, *parts))
            copied += 1
        else:
            missing.append(name)
    return copied, missing


def _sha1(path):
    digest = hashlib.sha1()  # noqa: S324 - Odoo's own file naming, not a security check
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def restore_cluster(
    storage, data_dir, public_keys, identities, pgc, moment=None, system_id=None, tmp_dir=None, log=None, progress=None
):
    """The whole cluster, replayed to ``moment`` (None: the newest second received) into the new folder
    ``data_dir``, shut down cleanly, with its own postgresql.auto.conf back: ready to start. A dict of what was
    done."""
    log = log or (lambda message: None)
    started = time.monotonic()
    data_dir = os.path.abspath(data_dir)
    if os.path.exists(data_dir) and os.listdir(data_dir):
        raise RestoreError(
            "%s is not empty: restore the cluster into a new, empty folder. Nothing was changed." % data_dir
        )
    archive = open_archive(storage, system_id)
    win = window(archive, public_keys)
    target = parse_time(moment) if moment else win.end
    if target is None:
        raise RestoreError("The archive of server %s has nothing to restore yet." % archive.system_id)
    chain = choose_base(win, target)
    parent = os.path.dirname(data_dir)
    if not os.path.isdir(parent):
        raise RestoreError("The folder %s does not exist: create it first. Nothing was changed." % parent)
    owner = scratch_mod.owner_ids()
    if os.geteuid() == 0 and scratch_mod.writable_by(parent, *owner):
        # Root writes the new cluster before giving it to that user: a folder that user may change could
        # redirect those writes (a link swapped in on the way) anywhere on this host.
        raise RestoreError(
            "As root, restore the cluster into a folder the database server's OS user cannot change (%s can): for "
            "example --into /srv/restore/%s, then move it into place. Nothing was changed."
            % (parent, os.path.basename(data_dir))
        )
    created = not os.path.exists(data_dir)
    if created:
        os.makedirs(data_dir, mode=0o700)
    try:
        scratch, line, server = replay(
            archive,
            chain,
            parse_time(moment) if moment else None,
            identities,
            public_keys,
            pgc,
            # Beside the data directory: the postmaster's restore_command moves each WAL file into it by rename.
            tmp_dir or parent,
            keep_data=data_dir,
            log=log,
            progress=progress,
            fsync=True,
        )
    except BaseException:
        if created:
            shutil.rmtree(data_dir, ignore_errors=True)
        raise
    try:
        scratch.shutdown("fast")
        scratch.restore_settings()
        for name in ("recovery.signal", "standby.signal"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(data_dir, name))
        reached = line or scratch.replayed_to_line()
    finally:
        shutil.rmtree(scratch.root, ignore_errors=True)
    served = [n for n in server.served if walnames.SEGMENT_RE.fullmatch(n)]
    duration = round(time.monotonic() - started, 3)
    log("Cluster restored into %s in %s" % (data_dir, human_duration(duration)))
    return {
        "data_dir": data_dir,
        "system_id": archive.system_id,
        "pg_major": chain[-1]["pg_major"],
        "base_backup": chain[-1]["backup_id"],
        "wal_files": len(served),
        "wal_last": served[-1] if served else None,
        "partial_used": server.partial_served is not None,
        "reached": reached,
        "target_time": words(target) if moment else "the newest second received (%s)" % words(win.end),
        "duration": duration,
        "bytes": human_bytes(chain[-1]["artifacts"]["base"].get("raw_size") or 0),
    }
