"""Backup then restore against a real server: the content must come back identical."""

import json
import os
from pathlib import Path

import pytest
from conftest import query, table_contents, tree_digest

from engine.core.errors import RestoreError
from engine.formats import catalog
from engine.io.storage import LocalStorage
from engine.ops.backup import run_backup
from engine.ops.restore import RestoreOptions, restore
from engine.ops.verify import verify


def ref_of(result, sample):
    return catalog.BackupRef(LocalStorage(sample["dest"]), result.db_name, result.backup_id)


def test_round_trip_restores_identical_rows_and_files(sample, plan_for, dbs, pgconf):
    """Every table's rows and every filestore file come back byte for byte in a new database."""
    result = run_backup(plan_for(sample))
    target = dbs.name("copy")
    restore_dir = str(sample["tmp"] / "restored")
    out = restore(ref_of(result, sample), RestoreOptions(target_db=target, pg=pgconf, data_dir=restore_dir))
    assert out.database_restored and out.filestore_files == 40
    source_rows = table_contents(sample["db"])
    assert set(source_rows) >= {"res_partner", "mail_message", "ir_attachment", "ir_module_module"}
    assert table_contents(target) == source_rows
    assert tree_digest(os.path.join(restore_dir, "filestore", target)) == tree_digest(sample["filestore"])


def test_parallel_restore_gives_the_same_content(sample, plan_for, dbs, pgconf):
    """--jobs 2 (pg_restore -j through a temporary file) restores the same rows."""
    result = run_backup(plan_for(sample, include_filestore=False))
    target = dbs.name("par")
    restore(
        ref_of(result, sample),
        RestoreOptions(
            target_db=target, pg=pgconf, data_dir=str(sample["tmp"] / "r"), jobs=2, tmp_dir=str(sample["tmp"])
        ),
    )
    assert table_contents(target) == table_contents(sample["db"])


def test_manifest_describes_the_snapshot(sample, plan_for):
    """The manifest carries Odoo's keys, exact row counts and the filestore figures."""
    result = run_backup(plan_for(sample))
    manifest = json.loads(Path(os.path.join(result.locations[0], "manifest.json")).read_text())
    assert manifest["odoo_dump"] == "1" and manifest["db_name"] == sample["db"]
    assert manifest["version"] == "17.0" and manifest["major_version"] == "17.0"
    assert manifest["modules"]["base"] == "17.0.1.3" and "website" not in manifest["modules"]
    assert manifest["pg_version"].startswith(str(query(sample["db"], "SHOW server_version_num")[0][0])[:2])
    # Every table of the database, exactly (ir_config_parameter is not in any list of "main" tables).
    assert manifest["database"]["row_counts"] == {
        "ir_config_parameter": 4,
        "res_partner": 500,
        "ir_attachment": 40,
        "mail_message": 2000,
        "ir_module_module": 8,
        "g2p_program": 5,
        "g2p_program_membership": 500,
    }
    assert manifest["filestore"]["files"] == 40 and manifest["filestore"]["referenced"] == 40
    assert manifest["filestore"]["missing"] == []
    for name in ("database", "filestore", "application"):
        art = manifest["artifacts"][name]
        assert os.path.getsize(os.path.join(result.locations[0], art["file"])) == art["size"]
    app = json.loads(Path(os.path.join(result.locations[0], "application.json")).read_text())
    assert app["modules"]["mail"] == "17.0.1.15" and "PostgreSQL" in app["pg_dump"]


def test_referenced_but_missing_files_are_evidence_not_a_crash(sample, plan_for):
    """A file the database references but the disk lacks is listed, and the backup still completes."""
    store_fname = query(sample["db"], "SELECT store_fname FROM ir_attachment ORDER BY id LIMIT 1")[0][0]
    os.unlink(os.path.join(sample["filestore"], store_fname))
    result = run_backup(plan_for(sample))
    assert result.manifest["filestore"]["missing"] == [store_fname]
    assert result.manifest["filestore"]["files"] == 39
    assert any("missing" in w for w in result.warnings)
    assert verify(ref_of(result, sample)).ok


def test_odoo_conf_secrets_never_reach_the_application_snapshot(sample, plan_for, tmp_path):
    """The application snapshot keeps odoo.conf's settings but not one password, secret or key."""
    conf = tmp_path / "odoo.conf"
    conf.write_text(
        "[options]\nadmin_passwd = SuperSecret1\ndb_password = SuperSecret2\nsmtp_password = SuperSecret3\n"
        "addons_path = /srv/addons\n[spp_backup]\naws_secret_access_key = SuperSecret4\n"
    )
    result = run_backup(plan_for(sample, odoo_conf=str(conf), include_database=False, include_filestore=False))
    text = Path(os.path.join(result.locations[0], "application.json")).read_text()
    assert "SuperSecret" not in text
    assert json.loads(text)["odoo_conf"]["addons_path"] == "/srv/addons"
    assert "SuperSecret" not in Path(os.path.join(result.locations[0], "manifest.json")).read_text()


def test_restore_refuses_an_existing_target_and_changes_nothing(sample, plan_for, dbs, pgconf):
    """Without replace, an existing database is left alone and the restore says so."""
    result = run_backup(plan_for(sample))
    before = table_contents(sample["db"])
    with pytest.raises(RestoreError, match="already exist"):
        restore(ref_of(result, sample), RestoreOptions(target_db=sample["db"], pg=pgconf, data_dir=sample["data_dir"]))
    assert table_contents(sample["db"]) == before


def test_replace_renames_the_old_database_aside(sample, plan_for, dbs, pgconf):
    """Replacing keeps the previous database and filestore under a new name, never drops them."""
    result = run_backup(plan_for(sample))
    query(sample["db"], "DELETE FROM mail_message WHERE id > 1000")
    changed = table_contents(sample["db"])
    out = restore(
        ref_of(result, sample),
        RestoreOptions(target_db=sample["db"], pg=pgconf, data_dir=sample["data_dir"], replace=True),
    )
    aside = out.renamed_aside["database"]
    assert aside.startswith(sample["db"] + "_replaced_")
    # The old database is closed to new connections, so its crons cannot run; opened here to compare.
    assert query("postgres", "SELECT datallowconn FROM pg_database WHERE datname = %s", (aside,)) == [(False,)]
    query("postgres", 'ALTER DATABASE "%s" WITH ALLOW_CONNECTIONS true' % aside)
    assert table_contents(aside) == changed
    assert query(sample["db"], "SELECT count(*) FROM mail_message")[0][0] == 2000
    assert os.path.isdir(out.renamed_aside["filestore"])
    assert tree_digest(out.renamed_aside["filestore"]) == tree_digest(sample["filestore"])


def test_copy_gets_a_new_database_uuid(sample, plan_for, dbs, pgconf):
    """A restore made as a copy has its own database.uuid; a plain restore keeps the original."""
    result = run_backup(plan_for(sample, include_filestore=False))
    original = query(sample["db"], "SELECT value FROM ir_config_parameter WHERE key = 'database.uuid'")[0][0]
    same, copy = dbs.name("same"), dbs.name("copy")
    restore(ref_of(result, sample), RestoreOptions(target_db=same, pg=pgconf, include_filestore=False))
    restore(ref_of(result, sample), RestoreOptions(target_db=copy, pg=pgconf, include_filestore=False, new_uuid=True))
    assert query(same, "SELECT value FROM ir_config_parameter WHERE key = 'database.uuid'")[0][0] == original
    assert query(copy, "SELECT value FROM ir_config_parameter WHERE key = 'database.uuid'")[0][0] != original


def test_database_only_backup_restores_without_filestore(sample, plan_for, dbs, pgconf):
    """A policy without the filestore stores no filestore artifact and restores the database alone."""
    result = run_backup(plan_for(sample, include_filestore=False))
    assert set(result.artifacts) == {"database", "application"}
    target = dbs.name("db")
    out = restore(
        ref_of(result, sample), RestoreOptions(target_db=target, pg=pgconf, data_dir=str(sample["tmp"] / "x"))
    )
    assert out.filestore_path is None and table_contents(target) == table_contents(sample["db"])


def test_leftovers_of_an_interrupted_restore_of_the_same_target_are_reported(sample, plan_for, dbs, pgconf):
    """A scratch database left by a killed restore of this target is named in the warnings; others are not."""
    result = run_backup(plan_for(sample, include_filestore=False))
    target = dbs.name("left")
    leftover = target + "__restoring_abc123"
    other = dbs.name("other") + "__restoring_def456"
    dbs.names += [leftover, other]
    for name in (leftover, other):
        query("postgres", 'CREATE DATABASE "%s"' % name)
    out = restore(ref_of(result, sample), RestoreOptions(target_db=target, pg=pgconf, include_filestore=False))
    text = " ".join(out.warnings)
    assert leftover in text and other not in text
