"""Bad input and faults: each fails with a sentence, leaves nothing restorable behind."""

import dataclasses
import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest
from conftest import ROOT, conn_kwargs, query, run_plan

from engine.core.config import DestinationConfig, PgConfig
from engine.core.errors import BackupError, LockBusy, PreflightError, RestoreError, UnsafeArchive
from engine.db import pg
from engine.formats import catalog, filestore
from engine.io.storage import LocalStorage
from engine.io.stream import ArtifactReader
from engine.ops.backup import run_backup
from engine.ops.restore import RestoreOptions, restore
from engine.ops.verify import verify


def cli(*args, env_extra=None, **kwargs):
    env = dict(os.environ, **(env_extra or {}))
    return subprocess.run(
        [sys.executable, "-m", "engine", *args], cwd=ROOT, env=env, capture_output=True, text=True, **kwargs
    )


def test_missing_database_is_named(sample, plan_for, dbs):
    """Backing up a database that does not exist says which one, and writes nothing."""
    missing = dbs.name("nope")
    with pytest.raises(PreflightError, match="database '%s' does not exist" % missing):
        run_backup(plan_for(sample, db_name=missing))
    assert not os.path.exists(os.path.join(sample["dest"], missing))


def test_missing_database_through_the_cli_exits_2(sample, dbs):
    """The CLI turns the same failure into exit code 2 and one line on stderr, no traceback."""
    proc = cli("backup", "-d", dbs.name("nope"), "--dest", sample["dest"], "--data-dir", sample["data_dir"])
    assert proc.returncode == 2
    assert "does not exist" in proc.stderr and "Traceback" not in proc.stderr


def test_pg_dump_missing(sample, plan_for, pgconf, tmp_path):
    """Without pg_dump the error says so and how to fix it."""
    empty = tmp_path / "nobin"
    empty.mkdir()
    conf = PgConfig(host=pgconf.host, port=pgconf.port, user=pgconf.user, bin_dir=str(empty))
    with pytest.raises(PreflightError, match="pg_dump was not found.*postgresql-client"):
        run_backup(plan_for(sample, pg=conf))


def test_pg_dump_older_than_the_server_names_both_versions(sample, plan_for, pgconf, tmp_path):
    """An older pg_dump (a stand-in script: no older client can be installed here) is refused before dumping."""
    bindir = tmp_path / "oldbin"
    bindir.mkdir()
    fake = bindir / "pg_dump"
    fake.write_text("#!/bin/sh\necho 'pg_dump (PostgreSQL) 12.9'\n")
    fake.chmod(0o755)
    conf = PgConfig(host=pgconf.host, port=pgconf.port, user=pgconf.user, bin_dir=str(bindir))
    with pytest.raises(PreflightError) as err:
        run_backup(plan_for(sample, pg=conf))
    assert "12.9" in str(err.value) and "PostgreSQL 15" in str(err.value)
    assert not os.path.exists(sample["dest"]) or not os.listdir(sample["dest"])


def test_check_dump_compatible_is_pure():
    """Equal or newer pg_dump passes; older fails."""
    pg.check_dump_compatible(15, "15.1", 15, "15.1")
    pg.check_dump_compatible(16, "16.0", 15, "15.1")
    with pytest.raises(PreflightError):
        pg.check_dump_compatible(14, "14.0", 15, "15.1")


def test_unwritable_destination(sample, plan_for, tmp_path):
    """A destination that cannot be written is refused before the dump, with the reason."""
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(PreflightError, match="a-file/backups does not exist"):
        run_backup(plan_for(sample, destinations=[DestinationConfig(path=str(blocker / "backups"))]))


def test_not_enough_free_space(sample, plan_for):
    """A configured minimum larger than the free space stops the run before it starts."""
    with pytest.raises(PreflightError, match="Not enough free space"):
        run_backup(plan_for(sample, min_free_bytes=1 << 60))


def test_lock_held_by_another_run(sample, plan_for):
    """Two runs of one policy never overlap: the second finds the advisory lock taken."""
    conn = pg.connect(plan_for(sample).pg, sample["db"])
    try:
        with conn.cursor() as cr:
            cr.execute("SELECT pg_advisory_lock(424242)")
        with pytest.raises(LockBusy, match="still running"):
            run_backup(plan_for(sample, lock_key=424242))
    finally:
        conn.close()
    assert run_backup(plan_for(sample, lock_key=424242)).backup_id


def test_killed_backup_is_never_listed_as_restorable(dbs, tmp_path, pgconf):
    """A backup killed in the middle of the dump leaves no manifest: list says incomplete, restore refuses."""
    import sampledb

    name = dbs.name("big")
    data_dir = str(tmp_path / "data")
    sampledb.build(
        conn_kwargs(), name, data_dir, partners=1000, messages=400000, files=5, file_size=1000, body_repeat=8
    )
    dest = str(tmp_path / "backups")
    proc = subprocess.Popen(
        [sys.executable, "-m", "engine", "backup", "-d", name, "--dest", dest, "--data-dir", data_dir], cwd=ROOT
    )
    deadline = time.time() + 60
    partial = None
    while time.time() < deadline and partial is None:
        for folder, _dirs, files in os.walk(dest):
            if (
                ".database.dump.zst.partial" in files
                and os.path.getsize(os.path.join(folder, ".database.dump.zst.partial")) > 0
            ):
                partial = folder
        time.sleep(0.01)
    assert partial, "the dump never started"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    entries = catalog.list_backups(LocalStorage(dest), name)
    assert len(entries) == 1 and not entries[0].restorable
    with pytest.raises(PreflightError, match="no complete backup"):
        catalog.resolve(os.path.join(dest, name, "latest"))
    with pytest.raises(Exception, match="no manifest.json"):
        restore(
            catalog.BackupRef(LocalStorage(dest), name, entries[0].backup_id),
            RestoreOptions(target_db=dbs.name("x"), pg=pgconf),
        )
    listing = cli("list", dest)
    assert "INCOMPLETE" in listing.stdout


@pytest.mark.parametrize("artifact", ["database", "filestore", "application"])
def test_one_flipped_byte_fails_verify_and_names_the_artifact(sample, plan_for, artifact):
    """Any single changed byte in any artifact makes verify fail on exactly that artifact."""
    result = run_backup(plan_for(sample))
    path = os.path.join(result.locations[0], result.artifacts[artifact]["file"])
    with open(path, "r+b") as handle:
        handle.seek(os.path.getsize(path) // 2)
        byte = handle.read(1)
        handle.seek(-1, 1)
        handle.write(bytes([byte[0] ^ 0x01]))
    report = verify(catalog.resolve(result.locations[0]))
    assert not report.ok and report.failed_artifacts() == [artifact]
    assert report.exit_code == 2
    proc = cli("verify", result.locations[0])
    assert proc.returncode == 2 and "FAIL" in proc.stdout and artifact in proc.stdout


def test_verify_passes_and_cli_reports_json(sample, plan_for, keys):
    """An untouched signed backup verifies with exit 0 and machine-readable output."""
    result = run_backup(plan_for(sample, signing_key_file=keys["signing_file"]))
    proc = cli("--json", "verify", os.path.join(sample["dest"], sample["db"], "latest"), "--verify-key", keys["public"])
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["ok"] and data["backup_id"] == result.backup_id and len(data["checks"]) == 3
    assert data["signature"] == "valid (Ed25519)" and data["warnings"] == []


def test_edited_manifest_of_an_unsigned_backup_is_unproven(sample, plan_for, keys):
    """A manifest edited into other valid JSON: unsigned, verify warns (exit 1); signed, the signature fails."""
    for signing in (None, keys["signing_file"]):
        result = run_backup(plan_for(sample, signing_key_file=signing))
        manifest_path = os.path.join(result.locations[0], "manifest.json")
        data = json.loads(Path(manifest_path).read_text())
        data["warnings"] = ["nothing to see here"]
        Path(manifest_path).write_text(json.dumps(data))
        if signing:
            proc = cli("verify", result.locations[0], "--verify-key", keys["public"])
            assert proc.returncode == 2 and "BAD" in proc.stdout, proc.stdout
        else:
            proc = cli("verify", result.locations[0])
            assert proc.returncode == 1 and "not signed" in proc.stdout, proc.stdout


def test_tampered_manifest_is_reported(sample, plan_for):
    """A manifest that is not valid JSON or lists a wrong size fails verification with the reason."""
    result = run_backup(plan_for(sample))
    manifest_path = os.path.join(result.locations[0], "manifest.json")
    data = json.loads(Path(manifest_path).read_text())
    data["artifacts"]["database"]["size"] += 1
    Path(manifest_path).write_text(json.dumps(data))
    report = verify(catalog.resolve(result.locations[0]))
    assert not report.ok and report.failed_artifacts() == ["database"]
    Path(manifest_path).write_text("{not json")
    report = verify(catalog.resolve(result.locations[0]))
    assert not report.ok and "not valid JSON" in report.problems[0]


def test_restore_of_a_damaged_backup_touches_nothing(sample, plan_for, dbs, pgconf):
    """Verification runs before any change: a damaged dump creates no database."""
    result = run_backup(plan_for(sample))
    path = os.path.join(result.locations[0], result.artifacts["database"]["file"])
    with open(path, "r+b") as handle:
        handle.truncate(os.path.getsize(path) - 10)
    target = dbs.name("dmg")
    with pytest.raises(RestoreError, match="failed verification.*database"):
        restore(
            catalog.resolve(result.locations[0]),
            RestoreOptions(target_db=target, pg=pgconf, data_dir=sample["data_dir"]),
        )
    assert not pg.database_exists(pgconf, target)
    assert not os.path.exists(os.path.join(sample["data_dir"], "filestore", target))


def test_a_filestore_archive_changed_after_the_manifest_is_caught_while_it_streams(sample, plan_for, dbs, pgconf):
    """The filestore's SHA-256 is checked while it unpacks (not in a pass before): a same-size change fails the
    restore, the target being replaced is still there unchanged, and nothing is left behind."""
    result = run_backup(plan_for(sample))
    location = result.locations[0]
    report = verify(catalog.resolve(location), streamed=("filestore",))
    assert report.ok
    assert "checked while it is restored" in [c.message for c in report.checks if c.name == "filestore"][0]
    target = dbs.name("fsflip")
    options = RestoreOptions(target_db=target, pg=pgconf, data_dir=sample["data_dir"])
    restore(catalog.resolve(location), options)
    fs_target = os.path.join(sample["data_dir"], "filestore", target)
    before = sorted(str(p.relative_to(fs_target)) for p in Path(fs_target).rglob("*"))
    path = os.path.join(location, result.artifacts["filestore"]["file"])
    with open(path, "r+b") as handle:
        handle.seek(os.path.getsize(path) // 2)
        byte = handle.read(1)
        handle.seek(-1, os.SEEK_CUR)
        handle.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(RestoreError, match="filestore.tar.zst (does not match|is damaged)"):
        restore(catalog.resolve(location), dataclasses.replace(options, replace=True))
    assert sorted(str(p.relative_to(fs_target)) for p in Path(fs_target).rglob("*")) == before
    root = os.path.join(sample["data_dir"], "filestore")
    assert not [name for name in os.listdir(root) if ".restoring-" in name or "_replaced_" in name]
    assert pg.databases_like(pgconf, target + "%") == [target]


def test_an_artifact_longer_than_its_manifest_says_stops_at_the_limit(sample, plan_for):
    """A stream that unpacks to more than the manifest's raw size is refused as soon as it passes it."""
    result = run_backup(plan_for(sample))
    ref = catalog.resolve(result.locations[0])
    art = dict(ref.read_manifest()["artifacts"]["filestore"], raw_size=1000)
    with ArtifactReader(ref.storage, ref.key(art["file"]), art) as reader:
        with pytest.raises(BackupError, match="longer than the manifest says"):
            while reader.read(1 << 16):
                pass
        assert reader.raw_size <= 1000 + (1 << 16)


def hostile_tar(kind):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        ok = tarfile.TarInfo("ab/good")
        ok.size = 4
        tar.addfile(ok, io.BytesIO(b"good"))
        if kind == "absolute":
            info = tarfile.TarInfo("/tmp/spp_backup_evil")
            info.size = 4
            tar.addfile(info, io.BytesIO(b"evil"))
        elif kind == "dotdot":
            info = tarfile.TarInfo("ab/../../escaped")
            info.size = 4
            tar.addfile(info, io.BytesIO(b"evil"))
        elif kind == "symlink":
            info = tarfile.TarInfo("cd/link")
            info.type = tarfile.SYMTYPE
            info.linkname = "/etc"
            tar.addfile(info)
        elif kind == "hardlink":
            info = tarfile.TarInfo("cd/hard")
            info.type = tarfile.LNKTYPE
            info.linkname = "/etc/passwd"
            tar.addfile(info)
        elif kind == "device":
            info = tarfile.TarInfo("cd/dev")
            info.type = tarfile.CHRTYPE
            info.devmajor, info.devminor = 1, 3
            tar.addfile(info)
        elif kind == "sparse":
            info = tarfile.TarInfo("cd/sparse")
            info.type = tarfile.GNUTYPE_SPARSE
            tar.addfile(info)
        elif kind == "nul":
            info = tarfile.TarInfo("cd/ab")
            info.pax_headers = {"path": "cd/a\x00b"}  # a pax path may hold what a ustar name cannot
            info.size = 4
            tar.addfile(info, io.BytesIO(b"evil"))
        elif kind in ("file_then_child", "file_then_folder"):
            info = tarfile.TarInfo("ab/good/child" if kind == "file_then_child" else "ab/good/")
            if kind == "file_then_child":
                info.size = 4
            else:
                info.type = tarfile.DIRTYPE
            tar.addfile(info, io.BytesIO(b"evil") if info.size else None)
    buf.seek(0)
    return buf


@pytest.mark.parametrize(
    "kind",
    ["absolute", "dotdot", "symlink", "hardlink", "device", "sparse", "nul", "file_then_child", "file_then_folder"],
)
def test_hostile_archive_member_is_refused(tmp_path, kind):
    """Absolute paths, '..', links and devices are refused; the partial target is removed."""
    target = tmp_path / "fs" / "db"
    with pytest.raises(UnsafeArchive, match="Refused archive member"):
        filestore.extract_tar(hostile_tar(kind), str(target))
    assert not target.exists()
    assert not (tmp_path / "escaped").exists() and not (tmp_path / "fs" / "escaped").exists()
    assert not os.path.exists("/tmp/spp_backup_evil")


class _Trickle(io.BytesIO):
    def read(self, size=-1):
        return super().read(min(size, 777) if size and size > 0 else 777)


def test_archive_from_short_reads_and_cut_archives(tmp_path):
    """Members come out whole from a source that returns a few hundred bytes per read; an archive cut inside a
    member, or a member's padding, is an error and the partial target is removed."""
    buf = io.BytesIO()
    files = {"ab/%02d" % i: os.urandom(1000 * i + 1) for i in range(12)}
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    data = buf.getvalue()
    stats = filestore.extract_tar(_Trickle(data), str(tmp_path / "whole"))
    assert stats.files == 12
    assert {name: (tmp_path / "whole" / name).read_bytes() for name in files} == files
    end_of_last = data.index(files["ab/11"]) + len(files["ab/11"])
    for cut in (end_of_last - 1, end_of_last + 1, 700):
        target = tmp_path / ("cut%d" % cut)
        with pytest.raises(tarfile.ReadError):
            filestore.extract_tar(io.BytesIO(data[:cut]), str(target))
        assert not target.exists()


def test_restore_refuses_a_backup_with_a_hostile_filestore(sample, plan_for, dbs, pgconf):
    """A backup set whose (checksummed) filestore archive climbs out is refused and rolled back."""
    import hashlib

    import zstandard

    result = run_backup(plan_for(sample))
    location = result.locations[0]
    data = zstandard.ZstdCompressor().compress(hostile_tar("dotdot").getvalue())
    art_path = os.path.join(location, result.artifacts["filestore"]["file"])
    Path(art_path).write_bytes(data)
    manifest_path = os.path.join(location, "manifest.json")
    manifest = json.loads(Path(manifest_path).read_text())
    manifest["artifacts"]["filestore"].update(size=len(data), sha256=hashlib.sha256(data).hexdigest())
    Path(manifest_path).write_text(json.dumps(manifest))
    target = dbs.name("hostile")
    restore_dir = sample["tmp"] / "rdata"
    with pytest.raises(RestoreError, match="Refused archive member"):
        restore(catalog.resolve(location), RestoreOptions(target_db=target, pg=pgconf, data_dir=str(restore_dir)))
    assert not pg.database_exists(pgconf, target), "the half-restored database must be dropped"
    assert os.listdir(restore_dir / "filestore") == []
    assert not (restore_dir / "escaped").exists()


def test_run_reports_done_and_failed_in_words(sample, tmp_path, plan_for):
    """``run`` of a plan prints the result, or the error in words, with the exit code."""
    plan = plan_for(sample)
    code, answer = run_plan(plan.to_dict(), tmp_path, data_dir=sample["data_dir"], database=sample["db"])
    assert code == 0 and answer["ok"] and answer["result"]["summary"]["filestore_files"] == 40
    bad = plan.to_dict()
    bad["db_name"] = "no_such_database_here"
    code, answer = run_plan(bad, tmp_path, data_dir=sample["data_dir"], database="no_such_database_here")
    assert code == 2 and not answer["ok"]
    assert "does not exist" in answer["error"] and "Traceback" not in answer["error"]


def test_cli_help_reads_for_a_person():
    """--help names every command and the exit codes."""
    proc = cli("--help")
    assert proc.returncode == 0
    for word in ("backup", "list", "verify", "restore", "exit codes"):
        assert word in proc.stdout
    proc = cli("restore", "--help")
    assert "--replace" in proc.stdout and "renamed" in proc.stdout


def test_bad_backup_location_is_explained():
    """A path that is not <dest>/<db>/<id> gets a sentence with an example."""
    proc = cli("verify", "/nonexistent/place")
    assert proc.returncode == 2 and "is not a backup location" in proc.stderr


def test_backup_files_are_private(sample, plan_for):
    """A backup holds the whole database: its folder is 0700 and its files 0600."""
    import stat

    result = run_backup(plan_for(sample))
    location = result.locations[0]
    assert stat.S_IMODE(os.stat(location).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(os.path.dirname(location)).st_mode) == 0o700
    for name in os.listdir(location):
        assert stat.S_IMODE(os.stat(os.path.join(location, name)).st_mode) == 0o600, name


def test_file_removed_after_the_snapshot_is_recorded_missing(sample, plan_for):
    """A referenced file that disappears between the snapshot and archiving is listed as missing."""
    store_fname = query(sample["db"], "SELECT store_fname FROM ir_attachment ORDER BY id LIMIT 1")[0][0]
    removed = []

    def progress(fraction, message):
        if message.startswith("Dumping the database") and not removed:
            os.unlink(os.path.join(sample["filestore"], store_fname))
            removed.append(store_fname)

    result = run_backup(plan_for(sample), progress=progress)
    assert removed
    assert result.manifest["filestore"]["missing"] == [store_fname]
    assert result.manifest["filestore"]["missing_count"] == 1 and result.manifest["filestore"]["files"] == 39


def test_unreadable_setting_is_a_sentence_and_exit_2(sample):
    """A malformed setting ends with exit code 2 and a sentence, never a traceback."""
    proc = cli(
        "backup",
        "-d",
        sample["db"],
        "--dest",
        sample["dest"],
        "--data-dir",
        sample["data_dir"],
        env_extra={"SPP_BACKUP_MIN_FREE_BYTES": "10G"},
    )
    assert proc.returncode == 2 and "min_free_bytes" in proc.stderr and "Traceback" not in proc.stderr


def test_database_names_odoo_would_refuse_are_refused(sample):
    """A name that is not a valid Odoo database name is refused before anything runs."""
    for name in ("a=b", "..", ".hidden", "x/y"):
        proc = cli("backup", "-d", name, "--dest", sample["dest"], "--data-dir", sample["data_dir"])
        assert proc.returncode == 2 and "not a usable database name" in proc.stderr, name


def test_keys_command_writes_private_keys_once(tmp_path):
    """`keys` writes a private key file (0600), prints the public key, and never overwrites."""
    import stat

    proc = cli("keys", "age", "--out", str(tmp_path / "id.txt"))
    assert proc.returncode == 0 and "age1" in proc.stdout
    assert stat.S_IMODE(os.stat(tmp_path / "id.txt").st_mode) == 0o600
    assert "AGE-SECRET-KEY-1" in (tmp_path / "id.txt").read_text()
    again = cli("keys", "age", "--out", str(tmp_path / "id.txt"))
    assert again.returncode == 2 and "exists already" in again.stderr
    proc = cli("keys", "signing", "--out", str(tmp_path / "sign.pem"))
    assert proc.returncode == 0 and "BEGIN PRIVATE KEY" in (tmp_path / "sign.pem").read_text()


def test_a_huge_pax_header_is_refused_before_it_is_read(tmp_path):
    """A pax header that claims 64 MiB is refused after its 512-byte header, not read into memory."""
    header = tarfile.TarInfo("././@PaxHeader")
    header.type = tarfile.XHDTYPE
    header.size = 64 << 20

    class Counting(io.BytesIO):
        read_bytes = 0

        def read(self, size=-1):
            data = super().read(size)
            Counting.read_bytes += len(data)
            return data

    source = Counting(header.tobuf(format=tarfile.USTAR_FORMAT) + b"9 a=b\n" * 1000)
    with pytest.raises(UnsafeArchive, match="member header of more than"):
        filestore.extract_tar(source, str(tmp_path / "pax"))
    assert Counting.read_bytes <= 512
    assert not (tmp_path / "pax").exists()


def _extended_headers(count, kind):
    """``count`` extended headers of about 1,000 bytes each, then one member: a global pax header repeated, or a
    chain of per-member ones."""
    out = io.BytesIO()
    record = b"%d comment=%s\n"
    for index in range(count):
        body = b"x" * 980
        line = record % (0, body)
        line = record % (len(line) + len(str(len(line))) - 1, body)
        header = tarfile.TarInfo("././@PaxHeader%d" % index)
        header.type = tarfile.XGLTYPE if kind == "global" else tarfile.XHDTYPE
        header.size = len(line)
        out.write(header.tobuf(format=tarfile.USTAR_FORMAT))
        out.write(line + b"\0" * (-len(line) % 512))
    member = tarfile.TarInfo("ab/f")
    member.size = 4
    out.write(member.tobuf(format=tarfile.USTAR_FORMAT) + b"data" + b"\0" * 508 + b"\0" * 1024)
    out.seek(0)
    return out


@pytest.mark.parametrize("kind", ["global", "chain"])
def test_piled_up_extended_headers_are_refused_as_they_are_met(tmp_path, kind):
    """tarfile keeps every global pax header for all later members (a 7 MB archive of them held 2.5 GB) and
    parses a chain of extended headers by recursion (thousands end in RecursionError): both are refused, early."""
    source = _extended_headers(5000, kind)
    match = "global pax header" if kind == "global" else "extended headers in a row"
    with pytest.raises(UnsafeArchive, match=match):
        filestore.extract_tar(source, str(tmp_path / "fs"))
    assert source.tell() < 20 * 1024  # stopped at the first (global) or the ninth (chain) header
    assert not (tmp_path / "fs").exists()


def test_a_few_extended_headers_before_a_member_are_read(tmp_path):
    filestore.extract_tar(_extended_headers(3, "chain"), str(tmp_path / "fs"))
    assert (tmp_path / "fs" / "ab" / "f").read_bytes() == b"data"
