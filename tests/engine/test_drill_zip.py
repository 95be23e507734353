"""Restore drills catch broken backups and always clean up; Odoo database-manager zips round-trip."""

import io
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from conftest import ROOT, query, run_plan, table_contents, tree_digest

from engine.core.errors import RestoreError, UnsafeArchive
from engine.formats import catalog
from engine.ops.backup import run_backup
from engine.ops.drill import run_drill
from engine.ops.odoozip import export_odoo_zip, import_file
from engine.ops.restore import RestoreOptions


def drill(result, sample, pgconf, **kwargs):
    return run_drill(catalog.resolve(result.locations[0]), pgconf, str(sample["tmp"] / "drills"), **kwargs)


def assert_cleaned(out, sample):
    assert out.cleaned_up
    assert query("postgres", "SELECT count(*) FROM pg_database WHERE datname = %s", (out.scratch_db,)) == [(0,)]
    assert not os.path.exists(sample["tmp"] / "drills" / "filestore" / out.scratch_db)


def checks(out):
    return {check.name: check.ok for check in out.checks}


def test_drill_passes_times_the_restore_and_cleans_up(sample, plan_for, pgconf, keys):
    """A good encrypted, signed backup passes every check; the restore time is measured; nothing is left."""
    result = run_backup(plan_for(sample, recipients=[keys["recipient"]], signing_key_file=keys["signing_file"]))
    out = drill(result, sample, pgconf, identities=keys["identities"], public_key=keys["public"])
    assert out.ok, out.text()
    assert checks(out) == {
        "signature": True,
        "checksums": True,
        "restore": True,
        "row counts": True,
        "attachments": True,
        "odoo version/modules": True,
    }
    assert out.restore_seconds > 0 and out.scratch_db.startswith(sample["db"] + "_drill_")
    assert_cleaned(out, sample)


def test_drill_catches_a_missing_attachment_file(sample, plan_for, pgconf):
    """A referenced file that the backup lacks fails the attachments check."""
    store_fname = query(sample["db"], "SELECT store_fname FROM ir_attachment ORDER BY id LIMIT 1")[0][0]
    os.unlink(os.path.join(sample["filestore"], store_fname))
    out = drill(run_backup(plan_for(sample)), sample, pgconf)
    assert not out.ok and checks(out)["attachments"] is False
    assert store_fname in next(c.detail for c in out.checks if c.name == "attachments")
    assert_cleaned(out, sample)


def test_drill_catches_a_changed_attachment(sample, plan_for, pgconf):
    """A file whose content no longer matches Odoo's SHA-1 checksum fails the attachments check."""
    store_fname = query(sample["db"], "SELECT store_fname FROM ir_attachment ORDER BY id LIMIT 1")[0][0]
    with open(os.path.join(sample["filestore"], store_fname), "r+b") as handle:
        handle.write(b"X")
    out = drill(run_backup(plan_for(sample)), sample, pgconf)
    assert not out.ok and checks(out)["attachments"] is False and "SHA-1" in out.text()
    assert_cleaned(out, sample)


def test_drill_catches_row_counts_that_do_not_match(sample, plan_for, pgconf):
    """A manifest whose row counts disagree with the restored database fails the row count check."""
    result = run_backup(plan_for(sample))
    path = Path(result.locations[0]) / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["database"]["row_counts"]["res_partner"] += 1
    path.write_text(json.dumps(manifest))
    out = drill(result, sample, pgconf)
    assert not out.ok and checks(out)["row counts"] is False and "res_partner has 500 rows" in out.text()
    assert_cleaned(out, sample)


def test_drill_catches_a_truncated_dump(sample, plan_for, pgconf):
    """A truncated dump fails the checksums before any restore, and nothing is left behind."""
    result = run_backup(plan_for(sample))
    path = os.path.join(result.locations[0], result.artifacts["database"]["file"])
    with open(path, "r+b") as handle:
        handle.truncate(os.path.getsize(path) // 2)
    out = drill(result, sample, pgconf)
    assert not out.ok and checks(out)["checksums"] is False and "restore" not in checks(out)
    assert_cleaned(out, sample)


def test_drill_catches_a_bad_signature(sample, plan_for, pgconf, keys):
    """A backup signed by another key fails the signature check."""
    from engine.io import crypto

    other_pem, _ = crypto.generate_signing_key()
    other = sample["tmp"] / "other.pem"
    other.write_text(other_pem)
    result = run_backup(plan_for(sample, signing_key_file=str(other)))
    out = drill(result, sample, pgconf, public_key=keys["public"])
    assert not out.ok and checks(out)["signature"] is False
    assert_cleaned(out, sample)


def test_drill_cli_exit_codes(sample, plan_for, keys):
    """A signed backup drilled with its key exits 0; an unsigned one passes with a warning (exit 1)."""

    def drill_cli(location, *extra):
        return subprocess.run(
            [sys.executable, "-m", "engine", "drill", location, "--data-dir", str(sample["tmp"] / "d"), *extra],
            cwd=ROOT,
            capture_output=True,
            text=True,
        )

    signed = run_backup(plan_for(sample, signing_key_file=keys["signing_file"]))
    proc = drill_cli(signed.locations[0], "--verify-key", keys["public"])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "PASSED" in proc.stdout and "measured RTO" in proc.stdout and "warning" not in proc.stdout
    unsigned = run_backup(plan_for(sample))
    proc = drill_cli(unsigned.locations[0])
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "PASSED" in proc.stdout and "warning: this backup is not signed" in proc.stdout


def odoo_zip(sample, path):
    """A zip in exactly the layout Odoo's dump_db writes: dump.sql first, filestore/, manifest.json."""
    dump = subprocess.run(
        ["pg_dump", "--no-owner", sample["db"]], capture_output=True, check=True, env=dict(os.environ)
    ).stdout
    manifest = {
        "odoo_dump": "1",
        "db_name": sample["db"],
        "version": "17.0",
        "version_info": [17, 0, 0, "final", 0, ""],
        "major_version": "17.0",
        "pg_version": "15.0",
        "modules": {"base": "17.0.1.3"},
    }
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("dump.sql", dump)
        for folder, _dirs, files in sorted(os.walk(sample["filestore"])):
            for name in sorted(files):
                full = os.path.join(folder, name)
                archive.write(full, "filestore/" + os.path.relpath(full, sample["filestore"]))
        archive.writestr("manifest.json", json.dumps(manifest, indent=4))
    return path


def test_import_an_odoo_database_manager_zip(sample, dbs, pgconf):
    """An Odoo zip restores into a new database with identical rows and files."""
    path = odoo_zip(sample, str(sample["tmp"] / "odoo.zip"))
    target = dbs.name("fromzip")
    data_dir = str(sample["tmp"] / "zipdata")
    out = import_file(path, RestoreOptions(target_db=target, pg=pgconf, data_dir=data_dir))
    assert out.filestore_files == 40
    assert table_contents(target) == table_contents(sample["db"])
    assert tree_digest(os.path.join(data_dir, "filestore", target)) == tree_digest(sample["filestore"])


def test_export_writes_odoos_layout_and_imports_back(sample, plan_for, dbs, pgconf, keys):
    """An encrypted backup exported as an Odoo zip has dump.sql first and restores identically."""
    result = run_backup(plan_for(sample, recipients=[keys["recipient"]]))
    out_path = str(sample["tmp"] / "export.zip")
    export_odoo_zip(catalog.resolve(result.locations[0]), out_path, pgconf, keys["identities"])
    with zipfile.ZipFile(out_path) as archive:
        names = archive.namelist()
        assert names[0] == "dump.sql" and names[-1] == "manifest.json"
        assert len([n for n in names if n.startswith("filestore/")]) == 40
        # Compressed like Odoo's own zips, every member.
        assert {info.compress_type for info in archive.infolist()} == {zipfile.ZIP_DEFLATED}
        manifest = json.loads(archive.read("manifest.json"))
        assert (
            manifest["odoo_dump"] == "1" and manifest["db_name"] == sample["db"] and manifest["major_version"] == "17.0"
        )
        assert b"CREATE TABLE public.res_partner" in archive.read("dump.sql")
    target = dbs.name("roundzip")
    data_dir = str(sample["tmp"] / "rz")
    import_file(out_path, RestoreOptions(target_db=target, pg=pgconf, data_dir=data_dir))
    assert table_contents(target) == table_contents(sample["db"])
    assert tree_digest(os.path.join(data_dir, "filestore", target)) == tree_digest(sample["filestore"])


def test_hostile_zip_is_refused_and_nothing_is_created(sample, dbs, pgconf, tmp_path):
    """A zip with a member climbing out of the filestore is refused before anything is created."""
    path = tmp_path / "evil.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("dump.sql", "CREATE TABLE x (id int);\n")
        archive.writestr("filestore/../../escaped", b"evil")
    target = dbs.name("evil")
    with pytest.raises(UnsafeArchive, match="climbs out"):
        import_file(str(path), RestoreOptions(target_db=target, pg=pgconf, data_dir=str(tmp_path / "d")))
    assert query("postgres", "SELECT count(*) FROM pg_database WHERE datname LIKE %s", (target + "%",)) == [(0,)]
    assert not (tmp_path / "escaped").exists()


def test_a_zip_without_dump_sql_is_explained(tmp_path, pgconf):
    """Something that is not an Odoo zip gets a sentence, not a traceback."""
    path = tmp_path / "other.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("readme.txt", "hello")
    with pytest.raises(RestoreError, match="has no dump.sql"):
        import_file(str(path), RestoreOptions(target_db="whatever_db", pg=pgconf))
    (tmp_path / "notzip.zip").write_bytes(io.BytesIO(b"not a zip").getvalue())
    with pytest.raises(RestoreError, match="not a readable zip"):
        import_file(str(tmp_path / "notzip.zip"), RestoreOptions(target_db="whatever_db", pg=pgconf))


def test_zip_member_that_is_a_link_is_refused(tmp_path, pgconf):
    """A zip member recorded as a symbolic link is refused."""
    import stat

    path = tmp_path / "link.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("dump.sql", "SELECT 1;\n")
        info = zipfile.ZipInfo("filestore/ab/link")
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        archive.writestr(info, "/etc/passwd")
    with pytest.raises(UnsafeArchive, match="links and special files"):
        import_file(str(path), RestoreOptions(target_db="link_db_x", pg=pgconf, data_dir=str(tmp_path / "d")))


def test_run_restores_and_drills_outside_the_caller(sample, plan_for, dbs, tmp_path):
    """``run`` carries out restore and drill plans as the worker does and reports their results."""
    result = run_backup(plan_for(sample))
    source = {"destination": {"kind": "local", "path": sample["dest"]}, "db_name": sample["db"], "backup_id": "latest"}
    target = dbs.name("runner")
    code, answer = run_plan(
        {"action": "restore", "source": source, "options": {"target_db": target, "new_uuid": True, "neutralize": True}},
        tmp_path,
        data_dir=tmp_path / "rdata",
        database=sample["db"],
    )
    # An unsigned backup restores with a warning (exit 1): nothing proves who made it.
    assert code == 1 and answer["ok"], answer
    assert any("not signed" in w for w in answer["result"]["warnings"]), answer
    assert answer["result"]["backup_id"] == result.backup_id and answer["result"]["target_db"] == target
    assert query(target, "SELECT value FROM ir_config_parameter WHERE key = 'database.is_neutralized'") == [("true",)]
    assert os.path.isdir(tmp_path / "rdata" / "filestore" / target)
    drill = {"action": "drill", "source": source}
    code, answer = run_plan(drill, tmp_path, data_dir=tmp_path / "ddata", database=sample["db"])
    assert code == 1 and answer["ok"] and answer["result"]["ok"] is True
    assert any("not signed" in w for w in answer["result"]["warnings"]), answer
    assert answer["result"]["restore_seconds"] > 0 and answer["result"]["cleaned_up"] is True
    os.unlink(os.path.join(result.locations[0], result.artifacts["application"]["file"]))
    code, answer = run_plan(drill, tmp_path, data_dir=tmp_path / "ddata", database=sample["db"])
    assert code == 2 and not answer["ok"] and "drill failed" in answer["error"]
    assert answer["result"]["cleaned_up"] is True


def test_run_refuses_what_is_out_of_scope(sample, plan_for, dbs, tmp_path):
    """A plan naming a folder outside backup_roots, another database or a system database is refused in words."""
    outside = {"destination": {"kind": "local", "path": "/etc"}, "db_name": sample["db"], "backup_id": "latest"}
    code, answer = run_plan({"action": "drill", "source": outside}, tmp_path, database=sample["db"])
    assert code == 2 and "outside the folders" in answer["error"] and "backup_roots" in answer["error"]
    source = {"destination": {"kind": "local", "path": sample["dest"]}, "db_name": sample["db"], "backup_id": "latest"}
    code, answer = run_plan({"action": "drill", "source": source}, tmp_path, database="another_db")
    assert code == 2 and "databases setting" in answer["error"]
    code, answer = run_plan(
        {"action": "restore", "source": source, "options": {"target_db": "template1", "replace": True}},
        tmp_path,
        database=sample["db"],
    )
    assert code == 2 and "system database" in answer["error"]


def test_drill_counts_every_table(sample, plan_for, pgconf):
    """Every table is counted, not only a list of main ones (ir_config_parameter is in no such list): a backup
    whose manifest says one row more there fails the drill's row counts, naming the table."""
    tables = query(sample["db"], "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
    result = run_backup(plan_for(sample))
    manifest = result.locations[0] + "/manifest.json"
    data = json.loads(Path(manifest).read_text())
    assert set(data["database"]["row_counts"]) == {row[0] for row in tables}
    data["database"]["row_counts"]["ir_config_parameter"] += 1
    Path(manifest).write_text(json.dumps(data))
    out = drill(result, sample, pgconf)
    assert not out.ok and "ir_config_parameter has 4 rows, the manifest says 5" in out.text()


@pytest.mark.parametrize("incremental", [False, True], ids=["archive", "store"])
def test_an_encrypted_set_keeps_the_names_of_missing_files_sealed(
    sample, plan_for, pgconf, keys, incremental, tmp_path
):
    """Odoo names a file by its SHA-1: an encrypted set's plain manifest gives only counts, the names are in an
    encrypted artifact; the job still lists them and the drill still knows the backup already lacked them."""
    store_fname = query(sample["db"], "SELECT store_fname FROM ir_attachment ORDER BY id LIMIT 1")[0][0]
    os.unlink(os.path.join(sample["filestore"], store_fname))
    os.symlink("/etc/passwd", os.path.join(sample["filestore"], os.path.dirname(store_fname), "zz-link"))
    result = run_backup(
        plan_for(
            sample,
            recipients=[keys["recipient"]],
            signing_key_file=keys["signing_file"],
            incremental_filestore=incremental,
            store_key_file=str(tmp_path / "store.key"),
        )
    )
    sha1 = store_fname.split("/")[-1]
    plain = b"".join(
        Path(entry.path).read_bytes()
        for entry in os.scandir(result.locations[0])
        if entry.is_file() and not entry.name.endswith(".age")
    )
    assert sha1.encode() not in plain and b"zz-link" not in plain
    section = json.loads(Path(result.locations[0], "manifest.json").read_text())["filestore"]
    assert section["missing"] == [] and section["missing_count"] == 1
    assert section["skipped_links"] == [] and section["skipped_links_count"] == 1
    assert result.manifest["artifacts"]["names"]["file"] == "filestore.names.json.age"
    assert result.to_dict()["summary"]["missing_files"] == [store_fname]
    out = drill(result, sample, pgconf, identities=keys["identities"], public_key=keys["public"])
    detail = next(c.detail for c in out.checks if c.name == "attachments")
    assert store_fname in detail and "1 of them already missing when the backup was made" in detail
    assert_cleaned(out, sample)


def test_a_plain_set_without_names_to_keep_writes_no_names_artifact(sample, plan_for, keys):
    """Nothing missing, nothing skipped: no names artifact, and the counts say zero."""
    result = run_backup(plan_for(sample, recipients=[keys["recipient"]]))
    assert "names" not in result.manifest["artifacts"]
    assert result.manifest["filestore"]["missing_count"] == 0 and result.manifest["filestore"]["vanished_count"] == 0
