"""OpenSPP 2's reference backup: a custom-format dump and a tar.gz of the filestore, imported as one restore.

The pair is made with the commands OpenSPP 2's backup script runs (``pg_dump -Fc -Z6`` with the database named
by PGDATABASE, and ``tar -czf ... -C <data_dir>/filestore <db>``), under the names it gives them, and goes
through the same guard, import role and checks as any dump from outside. Real PostgreSQL, real pg_dump, tar
and gzip.
"""

import gzip
import json
import os
import shutil
import subprocess
import zipfile

import pytest
from conftest import query, table_contents, tree_digest
from test_untrusted import cli, leftovers

from engine.core.errors import RestoreError, UnsafeArchive
from engine.db import pg
from engine.formats import filestore
from engine.ops.odoozip import import_file
from engine.ops.restore import RestoreOptions

STAMP = "20260315_020000"


def script_pair(sample, folder, pg_config=None):
    """What OpenSPP 2's backup script leaves in its daily folder for the sample database: (dump, filestore).
    ``pg_config`` names the server and client tools when they are not libpq's defaults and the PATH's."""
    os.makedirs(folder, exist_ok=True)
    db = sample["db"]
    dump = os.path.join(folder, "%s_%s.dump" % (db, STAMP))
    pg_dump, env = (pg.tool(pg_config, "pg_dump"), pg_config.env()) if pg_config else ("pg_dump", os.environ)
    subprocess.run([pg_dump, "-Fc", "-Z6", "-f", dump], check=True, env=dict(env, PGDATABASE=db))
    archive = os.path.join(folder, "%s_filestore_%s.tar.gz" % (db, STAMP))
    tar_folder(sample["filestore"], archive)
    return dump, archive


def tar_folder(root, archive, *extra, options=()):
    """``tar -czf ARCHIVE -C <parent> <folder>``, as the script archives the filestore folder itself."""
    subprocess.run(
        ["tar", *options, "-czf", archive, "-C", os.path.dirname(root), os.path.basename(root), *extra], check=True
    )
    return archive


def test_the_script_pair_imports_as_one_restore(sample, dbs, tmp_path, pgconf):
    """The dump and the filestore tar.gz become one database and its filestore folder: the same tables, the same
    file tree, every attachment present with its SHA-1, no 'database only' warning, the import role gone."""
    dump, archive = script_pair(sample, str(tmp_path / "backups" / "daily"))
    target = dbs.name("o2")
    data_dir = str(tmp_path / "restored")
    out = import_file(dump, RestoreOptions(target, pg=pgconf, data_dir=data_dir), filestore_archive=archive)
    assert table_contents(target) == table_contents(sample["db"])
    restored = os.path.join(data_dir, "filestore", target)
    assert out.filestore_path == restored
    assert tree_digest(restored) == tree_digest(sample["filestore"])
    assert out.filestore_files == len(tree_digest(sample["filestore"])) == 40
    checks = {c["name"]: c for c in out.checks}
    assert checks["attachments"]["ok"] and "40 files present with the right SHA-1" in checks["attachments"]["detail"]
    assert not any("database only" in w for w in out.warnings), out.warnings
    assert query("postgres", "SELECT count(*) FROM pg_roles WHERE rolname LIKE 'spp\\_import\\_%%'") == [(0,)]
    assert os.listdir(os.path.join(data_dir, "filestore")) == [target]


def test_the_cli_takes_the_pair_as_a_copy_and_neutralizes_it(sample, dbs, tmp_path):
    """``spp-backup import DUMP --filestore ARCHIVE --copy --neutralize``: the copy gets its own database.uuid,
    is marked neutralized (crons and mail off), and its filestore is the script's."""
    dump, archive = script_pair(sample, str(tmp_path / "daily"))
    target = dbs.name("o2cli")
    data_dir = str(tmp_path / "restored")
    proc = cli(
        "--json", "import", dump, "--filestore", archive, "--target", target, "--data-dir", data_dir, "--copy",
        "--neutralize",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(proc.stdout)
    assert result["warnings"] == []
    assert result["filestore_files"] == 40 and {c["name"]: c["ok"] for c in result["checks"]}["attachments"]
    assert tree_digest(os.path.join(data_dir, "filestore", target)) == tree_digest(sample["filestore"])
    uuid = "SELECT value FROM ir_config_parameter WHERE key = 'database.uuid'"
    assert query(target, uuid) != query(sample["db"], uuid)
    neutralized = "SELECT value FROM ir_config_parameter WHERE key = 'database.is_neutralized'"
    assert query(target, neutralized) == [("true",)] and query(sample["db"], neutralized) == []


def test_the_pair_goes_through_the_guard(sample, dbs, tmp_path, pgconf):
    """A function running with its owner's rights in the script's dump refuses the pair, as in any dump from
    outside: no database, no filestore folder, no role is left."""
    query(sample["db"], "CREATE FUNCTION public.f() RETURNS int LANGUAGE sql SECURITY DEFINER AS $$ SELECT 1 $$")
    dump, archive = script_pair(sample, str(tmp_path / "daily"))
    target = dbs.name("o2definer")
    data_dir = str(tmp_path / "restored")
    with pytest.raises(RestoreError, match="owner's rights"):
        import_file(dump, RestoreOptions(target, pg=pgconf, data_dir=data_dir), filestore_archive=archive)
    assert leftovers(target, data_dir) == []


def hostile_copy(sample, tmp_path, kind):
    """A tar.gz of the sample's filestore folder, made by tar, with one hostile member after the good ones."""
    folder = tmp_path / "hostile" / sample["db"]
    shutil.copytree(sample["filestore"], folder)
    outside = tmp_path / "hostile" / "outside.txt"
    outside.write_text("evil")
    archive = str(tmp_path / "hostile.tar.gz")
    if kind == "symlink":
        os.symlink("/etc", folder / "zz-link")
        return tar_folder(str(folder), archive)
    if kind == "hardlink":
        first = sorted(tree_digest(str(folder)))[0]
        os.link(folder / first, folder / "zz")
        return tar_folder(str(folder), archive)
    # tar -P keeps the names as given: '..' and absolute paths
    extra = os.path.join(sample["db"], "..", "outside.txt") if kind == "dotdot" else str(outside)
    return tar_folder(str(folder), archive, extra, options=("-P",))


@pytest.mark.parametrize("kind", ["dotdot", "absolute", "symlink", "hardlink"])
def test_a_hostile_member_in_the_filestore_is_refused_and_nothing_is_left(kind, sample, dbs, tmp_path, pgconf):
    """A '..', absolute, symbolic or hard link member refuses the whole import after the database was loaded:
    no database, no scratch database, no filestore or staging folder, no role, nothing written beside it."""
    dump, _archive = script_pair(sample, str(tmp_path / "daily"))
    archive = hostile_copy(sample, tmp_path, kind)
    target = dbs.name("o2bad")
    data_dir = tmp_path / "restored"
    with pytest.raises(RestoreError) as caught:
        import_file(dump, RestoreOptions(target, pg=pgconf, data_dir=str(data_dir)), filestore_archive=archive)
    message = str(caught.value)
    assert "Refused archive member" in message and "nothing was changed" in message, message
    assert leftovers(target, str(data_dir)) == []
    assert os.listdir(data_dir / "filestore") == [] and os.listdir(data_dir) == ["filestore"]


def test_a_filestore_missing_files_is_named_and_strict_refuses(sample, dbs, tmp_path, pgconf):
    """A tar.gz lacking a file the database references: the attachment check names it; --strict rolls back."""
    dump, _archive = script_pair(sample, str(tmp_path / "daily"))
    store_fname = query(sample["db"], "SELECT store_fname FROM ir_attachment ORDER BY id LIMIT 1")[0][0]
    folder = tmp_path / "partial" / sample["db"]
    shutil.copytree(sample["filestore"], folder)
    os.unlink(folder / store_fname)
    archive = tar_folder(str(folder), str(tmp_path / "partial.tar.gz"))
    target = dbs.name("o2miss")
    data_dir = str(tmp_path / "restored")
    options = RestoreOptions(target, pg=pgconf, data_dir=data_dir)
    with pytest.raises(RestoreError) as caught:
        import_file(dump, options, strict=True, filestore_archive=archive)
    assert store_fname in str(caught.value) and "--strict" in str(caught.value)
    assert "nothing was changed" in str(caught.value)
    assert leftovers(target, data_dir) == []
    out = import_file(dump, options, filestore_archive=archive)
    assert any("1 attachment file(s) missing" in w and store_fname in w for w in out.warnings), out.warnings
    assert out.filestore_files == 39
    assert table_contents(target) == table_contents(sample["db"])


def test_a_cut_filestore_archive_is_refused_after_the_load_and_nothing_is_left(sample, dbs, tmp_path, pgconf):
    """A tar.gz cut short (a copy that stopped) is said to be cut; the loaded database is rolled back."""
    dump, archive = script_pair(sample, str(tmp_path / "daily"))
    with open(archive, "rb") as handle:
        data = handle.read()
    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes(data[: len(data) // 2])
    target = dbs.name("o2cut")
    data_dir = str(tmp_path / "restored")
    with pytest.raises(RestoreError) as caught:
        import_file(dump, RestoreOptions(target, pg=pgconf, data_dir=data_dir), filestore_archive=str(cut))
    assert "damaged or cut short" in str(caught.value) and "nothing was changed" in str(caught.value)
    assert leftovers(target, data_dir) == []


def test_wrong_files_are_refused_in_sentences_before_anything_is_made(sample, dbs, tmp_path, pgconf):
    """A missing archive, one that is not gzip, an uncompressed tar, a gzip that holds no tar, the archive given
    as the dump, a file that is no dump, a zip with --filestore, --filestore with --no-filestore: a sentence each,
    nothing made; on the command line exit 2 and no traceback."""
    dump, archive = script_pair(sample, str(tmp_path / "daily"))
    data_dir = str(tmp_path / "restored")
    plain_tar = str(tmp_path / "fs.tar")
    subprocess.run(["tar", "-cf", plain_tar, "-C", os.path.dirname(sample["filestore"]), sample["db"]], check=True)
    not_tar = tmp_path / "notes.tar.gz"
    not_tar.write_bytes(gzip.compress(b"these are notes, not a tar archive\n" * 40))
    junk = tmp_path / "junk.dump"
    junk.write_bytes(b"\x00\x01binary" * 100)
    a_zip = tmp_path / "odoo.zip"
    with zipfile.ZipFile(a_zip, "w") as odoo_zip:
        odoo_zip.writestr("dump.sql", "SELECT 1;\n")
    cases = [
        (dump, str(tmp_path / "nowhere.tar.gz"), {}, "Cannot read the filestore archive .*No such file"),
        (dump, dump, {}, "is not a gzip file: it must be a .tar.gz"),
        (dump, plain_tar, {}, "is an uncompressed tar: it must be a .tar.gz"),
        (dump, str(not_tar), {}, "is not a whole tar archive"),
        (archive, archive, {}, r"is a .tar.gz: give a filestore archive with --filestore"),
        (str(junk), archive, {}, "neither an Odoo zip, a custom-format dump"),
        (str(tmp_path / "nowhere.dump"), archive, {}, "Cannot read .*nowhere.dump"),
        (str(a_zip), archive, {}, "holds its own filestore: --filestore goes with a .dump or .sql"),
        (dump, archive, {"include_filestore": False}, "--filestore and --no-filestore ask for opposite things"),
    ]
    for path, fs_archive, extra, expected in cases:
        target = dbs.name("o2err")
        options = RestoreOptions(target, pg=pgconf, data_dir=data_dir, **extra)
        with pytest.raises(RestoreError, match=expected):
            import_file(path, options, filestore_archive=fs_archive)
        assert leftovers(target, data_dir) == [], expected
    proc = cli("import", dump, "--filestore", dump, "--target", dbs.name("o2err"), "--data-dir", data_dir)
    assert proc.returncode == 2 and "is not a gzip file" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize("layout", ["folder", "content", "from the data dir", "absolute"])
def test_the_filestore_folder_is_found_in_each_layout(layout, sample, tmp_path):
    """The folder itself (the script's ``<db>/``), its content (``./``), ``filestore/<db>/`` and an absolute
    path tar shortened: each extracts to the same tree as the sample's filestore."""
    root = sample["filestore"]
    archive = str(tmp_path / "fs.tar.gz")
    if layout == "folder":
        tar_folder(root, archive)
    elif layout == "content":
        subprocess.run(["tar", "-czf", archive, "-C", root, "."], check=True)
    elif layout == "from the data dir":
        subprocess.run(["tar", "-czf", archive, "-C", sample["data_dir"], "filestore/" + sample["db"]], check=True)
    else:
        subprocess.run(["tar", "-czf", archive, root], check=True, capture_output=True)
    target = str(tmp_path / "out")
    with filestore.open_tar_gz(archive) as source:
        stats = filestore.extract_folder_tar(source, target, archive)
    assert stats.files == 40 and tree_digest(target) == tree_digest(root)


def test_a_member_outside_the_folder_is_refused(sample, tmp_path):
    """An archive holding something beside the filestore folder is not one database's filestore: refused by name,
    and nothing is left; one whose first file is not where Odoo keeps files is refused in words."""
    other = os.path.join(os.path.dirname(sample["filestore"]), "other")
    os.makedirs(other)
    with open(os.path.join(other, "x"), "w") as handle:
        handle.write("x")
    archive = tar_folder(sample["filestore"], str(tmp_path / "two.tar.gz"), "other")
    target = tmp_path / "out"
    with filestore.open_tar_gz(archive) as source, pytest.raises(UnsafeArchive, match="outside the filestore folder"):
        filestore.extract_folder_tar(source, str(target), archive)
    assert not target.exists()
    odd = tar_folder(other, str(tmp_path / "odd.tar.gz"))
    with filestore.open_tar_gz(odd) as source, pytest.raises(RestoreError, match="not an archive of a filestore"):
        filestore.extract_folder_tar(source, str(target), odd)
    assert not target.exists()
