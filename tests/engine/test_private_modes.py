"""What a restore, an import or an export writes in clear is its owner's only: files 0600, folders 0700.

Each test runs under the usual umask (022), with which a file made without a mode of its own is 0644:
whatever the umask, restored attachments and exported zips hold personal data in clear.
"""

import io
import os
import stat
import tarfile
import zipfile

import pytest
from conftest import tree_digest
from test_drill_zip import odoo_zip

from engine.formats import catalog, filestore
from engine.ops.backup import run_backup
from engine.ops.odoozip import export_odoo_zip, import_file
from engine.ops.restore import RestoreOptions, restore


@pytest.fixture(autouse=True)
def usual_umask():
    previous = os.umask(0o022)
    yield
    os.umask(previous)


def modes(root):
    """{relative path: mode} of ``root`` itself ('.') and of everything under it."""
    found = {".": stat.S_IMODE(os.lstat(root).st_mode)}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = os.path.join(folder, name)
            found[os.path.relpath(path, root)] = stat.S_IMODE(os.lstat(path).st_mode)
    return found


def assert_private(root, files):
    """Every folder under ``root`` (and root) is 0700, every file 0600; ``files`` of them are files."""
    found = modes(root)
    folders = {rel: mode for rel, mode in found.items() if os.path.isdir(os.path.join(root, rel))}
    plain = {rel: mode for rel, mode in found.items() if rel not in folders}
    assert len(plain) == files
    assert set(folders.values()) == {0o700}, {rel: oct(mode) for rel, mode in folders.items() if mode != 0o700}
    assert set(plain.values()) == {0o600}, {rel: oct(mode) for rel, mode in plain.items() if mode != 0o600}


@pytest.mark.parametrize("incremental", [False, True], ids=["archive", "store"])
def test_a_restored_filestore_is_its_owners_only(sample, plan_for, dbs, pgconf, tmp_path, incremental):
    """The source's files are 0644 in 0755 folders; restored (archive or store), files are 0600, folders 0700."""
    assert set(modes(sample["filestore"]).values()) == {0o644, 0o755}, "the source is world-readable"
    extra = {"incremental_filestore": True, "store_key_file": str(tmp_path / "store.key")} if incremental else {}
    result = run_backup(plan_for(sample, **extra))
    target = dbs.name("private")
    data_dir = str(tmp_path / "restored")
    out = restore(catalog.resolve(result.locations[0]), RestoreOptions(target_db=target, pg=pgconf, data_dir=data_dir))
    assert out.filestore_files == 40
    assert tree_digest(out.filestore_path) == tree_digest(sample["filestore"]), "the same files"
    assert_private(out.filestore_path, 40)
    assert modes(os.path.join(data_dir, "filestore"))["."] == 0o700, "the filestore folder the restore made"


def test_an_imported_zips_filestore_is_its_owners_only(sample, dbs, pgconf, tmp_path):
    """An Odoo zip whose members say 0644 is imported with files 0600 and folders 0700."""
    path = odoo_zip(sample, str(tmp_path / "odoo.zip"))
    with zipfile.ZipFile(path) as archive:
        assert {info.external_attr >> 16 & 0o777 for info in archive.infolist() if "filestore/" in info.filename} == {
            0o644
        }
    target = dbs.name("privzip")
    out = import_file(path, RestoreOptions(target_db=target, pg=pgconf, data_dir=str(tmp_path / "zipdata")))
    assert out.filestore_files == 40
    assert_private(out.filestore_path, 40)


def test_an_exported_zip_is_its_owners_only(sample, plan_for, pgconf, tmp_path):
    """export-odoo-zip writes the whole registry in clear: the zip is 0600, and so are its members' modes."""
    result = run_backup(plan_for(sample))
    out_path = str(tmp_path / "export.zip")
    export_odoo_zip(catalog.resolve(result.locations[0]), out_path, pgconf)
    assert stat.S_IMODE(os.stat(out_path).st_mode) == 0o600
    with zipfile.ZipFile(out_path) as archive:
        members = [info for info in archive.infolist() if info.filename.startswith("filestore/")]
        assert len(members) == 40
        assert {info.external_attr >> 16 & 0o777 for info in members} == {0o600}


def test_a_partial_export_left_world_readable_becomes_private(sample, plan_for, pgconf, tmp_path):
    """A partial zip a killed export left with mode 0644 is reused as 0600, not kept readable by all."""
    result = run_backup(plan_for(sample, include_filestore=False))
    out_path = str(tmp_path / "export.zip")
    with open(out_path + ".partial", "wb") as handle:
        handle.write(b"left by a killed export")
    assert stat.S_IMODE(os.stat(out_path + ".partial").st_mode) == 0o644
    export_odoo_zip(catalog.resolve(result.locations[0]), out_path, pgconf)
    assert stat.S_IMODE(os.stat(out_path).st_mode) == 0o600
    assert not os.path.exists(out_path + ".partial")


def test_archive_members_modes_are_not_restored(tmp_path):
    """A filestore archive whose members say 0777 (and a folder 0777) still extracts to 0600 files, 0700 folders."""
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w") as tar:
        folder = tarfile.TarInfo("ab")
        folder.type, folder.mode = tarfile.DIRTYPE, 0o777
        tar.addfile(folder)
        for name in ("ab/one", "cd/two", "ef/gh/three"):
            info = tarfile.TarInfo(name)
            info.size, info.mode = 3, 0o777
            tar.addfile(info, io.BytesIO(b"abc"))
    data.seek(0)
    target = str(tmp_path / "fresh" / "filestore" / "db")
    stats = filestore.extract_tar(data, target)
    assert stats.files == 3
    assert_private(target, 3)
    assert modes(str(tmp_path / "fresh"))["."] == 0o700, "missing parents are made private too"
