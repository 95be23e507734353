"""Incremental filestore backups against a real server: each set keeps only what changed, each restores whole."""

import hashlib
import io
import json
import os
import subprocess
import sys
import zipfile

import pytest
from conftest import table_contents, tree_digest

from engine.core.config import DestinationConfig
from engine.core.errors import BackupError
from engine.formats import catalog, packstore
from engine.io import crypto
from engine.io.storage import LocalStorage
from engine.ops.backup import run_backup
from engine.ops.odoozip import export_odoo_zip
from engine.ops.restore import RestoreOptions, restore
from engine.ops.verify import verify


def ref_of(result, sample):
    return catalog.resolve(result.locations[0])


def add_file(root, content):
    sha1 = hashlib.sha1(content).hexdigest()
    folder = os.path.join(root, sha1[:2])
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, sha1), "wb") as handle:
        handle.write(content)
    return "%s/%s" % (sha1[:2], sha1)


def store_bytes(sample):
    total = 0
    for dirpath, _dirs, files in os.walk(sample["dest"]):
        if "/.store-" in dirpath + "/" and "/packs" in dirpath:
            total += sum(os.path.getsize(os.path.join(dirpath, name)) for name in files)
    return total


@pytest.fixture
def incremental(sample, plan_for, keys, tmp_path):
    """A plan maker for encrypted, signed, incremental backups of the sample."""
    store_key = str(tmp_path / "store.key")

    def make(**overrides):
        values = dict(
            recipients=[keys["recipient"]],
            signing_key_file=keys["signing_file"],
            incremental_filestore=True,
            store_key_file=store_key,
            owner={"database_uuid": "uuid-test", "policy_id": 1},
        )
        values.update(overrides)
        return plan_for(sample, **values)

    return make


def test_a_chain_of_five_backups_each_restores_byte_identically(sample, incremental, keys, dbs, pgconf, tmp_path):
    """Five backups with files added and removed between them: the later ones store only the new files, and
    every one restores its own filestore exactly, encrypted and signed; a zip export carries it too."""
    identities = crypto.load_identities(keys["identity_file"])
    public = crypto.public_key_text(crypto.load_signing_key(keys["signing_file"]).public_key())
    results, digests, sizes = [], [], []
    for step in range(5):
        if step:
            for i in range(2):
                add_file(sample["filestore"], os.urandom(3000 + step * 10 + i))
        if step == 3:
            first = sorted(os.listdir(sample["filestore"]))[0]
            for name in os.listdir(os.path.join(sample["filestore"], first)):
                os.unlink(os.path.join(sample["filestore"], first, name))
        before = store_bytes(sample)
        results.append(run_backup(incremental()))
        sizes.append(store_bytes(sample) - before)
        digests.append(tree_digest(sample["filestore"]))
    manifest = results[-1].manifest
    assert "filelist" in manifest["artifacts"] and "filestore" not in manifest["artifacts"]
    assert manifest["filestore"]["store"]["encrypted"] is True
    assert sizes[0] > 40 * 10000, "the first backup stores every file"
    for added in sizes[1:]:
        assert 0 < added < sizes[0] / 10, "a later backup stores only the new files (%s)" % sizes
    # no name in the destination reveals an Odoo SHA-1
    names = {name for _d, dirs, files in os.walk(sample["dest"]) for name in dirs + files}
    sha1s = {name for _d, _dirs, files in os.walk(sample["filestore"]) for name in files}
    assert not sha1s & names
    for index, result in enumerate(results):
        ref = ref_of(result, sample)
        report = verify(ref, public_key=public, identities=identities, deep=True)
        assert report.ok, report.problems + [c.message for c in report.checks if not c.ok]
        assert not any("not listed in the manifest" in w for w in report.warnings), report.warnings
        target = dbs.name("inc%d" % index)
        restore_dir = str(tmp_path / ("restored%d" % index))
        out = restore(
            ref,
            RestoreOptions(target_db=target, pg=pgconf, data_dir=restore_dir, identities=identities, public_key=public),
        )
        assert tree_digest(os.path.join(restore_dir, "filestore", target)) == digests[index], "backup %d" % index
        assert out.filestore_files == result.manifest["filestore"]["files"]
    assert table_contents(target) == table_contents(sample["db"])
    zip_path = str(tmp_path / "last.zip")
    export_odoo_zip(ref_of(results[-1], sample), zip_path, pgconf, identities=identities)
    with zipfile.ZipFile(zip_path) as archive:
        members = [name for name in archive.namelist() if name.startswith("filestore/")]
    assert len(members) == results[-1].manifest["filestore"]["files"]


def test_a_damaged_or_removed_pack_is_named_and_the_restore_changes_nothing(
    sample, incremental, keys, dbs, pgconf, tmp_path
):
    identities = crypto.load_identities(keys["identity_file"])
    result = run_backup(incremental())
    ref = ref_of(result, sample)
    info = json.loads(LocalStorage(sample["dest"]).read_bytes(ref.key(packstore.STORE_SET_NAME)))
    store_dir = os.path.join(sample["dest"], sample["db"], ".store-" + info["store"])
    pack = info["packs"][0]
    path = os.path.join(store_dir, "packs", pack[:2], pack)
    with open(path, "r+b") as handle:
        handle.seek(500)
        byte = handle.read(1)
        handle.seek(500)
        handle.write(bytes([byte[0] ^ 0x55]))
    report = verify(ref, identities=identities, deep=True)
    assert not report.ok and any("pack %s is damaged" % pack in p for p in report.problems), report.problems
    assert verify(ref).ok, "sizes still match: only a deep check reads the bytes"
    target = dbs.name("dmg")
    restore_dir = str(tmp_path / "restored")
    with pytest.raises(BackupError, match=pack):
        restore(ref, RestoreOptions(target_db=target, pg=pgconf, data_dir=restore_dir, identities=identities))
    assert not os.path.exists(os.path.join(restore_dir, "filestore", target)), "nothing swapped in"
    os.unlink(path)
    report = verify(ref)
    assert any("pack %s is missing from the store" % pack in p for p in report.problems), report.problems


def test_a_hostile_file_list_cannot_write_outside_the_target(sample, incremental, keys, tmp_path):
    """A file list naming ../ or an absolute path is refused before anything is written for it."""
    from engine.core.errors import UnsafeArchive

    identities = crypto.load_identities(keys["identity_file"])
    result = run_backup(incremental())
    ref = ref_of(result, sample)
    store = packstore.store_of(ref, result.manifest)
    bid = store.index().db.execute("SELECT id FROM blob LIMIT 1").fetchone()[0]
    for rel in ("../escape", "/etc/passwd", "ab/../../x"):
        listing = packstore.file_list_line(rel, 1, bid)
        target = str(tmp_path / ("t%d" % abs(hash(rel))))
        with pytest.raises(UnsafeArchive):
            packstore.extract_store(io.BytesIO(listing), store, identities, target, store.index().pack_names())
        assert not os.path.exists(target)
    assert not os.path.exists(str(tmp_path / "escape"))
    twice = packstore.file_list_line("ab/cd", 1, bid) * 2
    with pytest.raises(UnsafeArchive, match="appears twice"):
        packstore.extract_store(
            io.BytesIO(twice), store, identities, str(tmp_path / "twice"), store.index().pack_names()
        )
    store.close()


def test_one_blob_under_two_names_is_restored_under_both(sample, incremental, keys, tmp_path):
    """The same bytes listed under two names (with their SHA-256, as for files not named by content): both
    files are restored, the second copied from the first, each checked."""
    identities = crypto.load_identities(keys["identity_file"])
    result = run_backup(incremental())
    store = packstore.store_of(ref_of(result, sample), result.manifest)
    bid, size = store.index().db.execute("SELECT id, size FROM blob LIMIT 1").fetchone()
    entry = store.index().in_packs(bid, set(store.index().pack_names()))
    content = store.read_files([entry], identities)[bid]
    plain = hashlib.sha256(content).hexdigest()
    listing = packstore.file_list_line("aa/first", size, bid, plain) + packstore.file_list_line(
        "bb/second", size, bid, plain
    )
    target = str(tmp_path / "two")
    stats = packstore.extract_store(io.BytesIO(listing), store, identities, target, store.index().pack_names())
    assert stats.files == 2
    for rel in ("aa/first", "bb/second"):
        with open(os.path.join(target, rel), "rb") as handle:
            assert handle.read() == content
    store.close()


def test_a_store_on_s3_is_read_back_by_another_process_with_only_the_identity_and_the_key(
    sample, incremental, keys, s3_bucket, dbs, pgconf, tmp_path
):
    """Two incremental backups to a bucket; then the command line, in a process of its own that knows only
    the identity file and the verify key (no store key), verifies the second deeply and restores it."""
    from conftest import ROOT

    from engine.core.config import DestinationConfig

    endpoint, bucket = s3_bucket
    destination = DestinationConfig(kind="s3", endpoint_url=endpoint, region="us-east-1", bucket=bucket, prefix="odoo")
    run_backup(incremental(destinations=[destination]))
    add_file(sample["filestore"], os.urandom(7000))
    second = run_backup(incremental(destinations=[destination]))
    assert second.copies[0]["ok"], second.copies
    public = crypto.public_key_text(crypto.load_signing_key(keys["signing_file"]).public_key())
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPP_BACKUP_")}
    env.update(
        SPP_BACKUP_BACKUP_ROOTS=str(tmp_path), SPP_BACKUP_S3_ENDPOINT_URL=endpoint, SPP_BACKUP_S3_ENDPOINTS=endpoint
    )
    location = second.locations[0]
    common = ["--identity", keys["identity_file"], "--verify-key", public]

    def cli(*args):
        return subprocess.run(
            [sys.executable, "-m", "engine", *args, *common],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )

    checked = cli("--json", "verify", location, "--deep")
    report = json.loads(checked.stdout)
    assert checked.returncode == 0 and report["ok"] and report["signature"] == "valid (Ed25519)", checked.stdout
    target = dbs.name("s3inc")
    restore_dir = str(tmp_path / "restored")
    restored = cli("restore", location, "--target", target, "--data-dir", restore_dir)
    assert restored.returncode in (0, 1), restored.stdout + restored.stderr
    assert tree_digest(os.path.join(restore_dir, "filestore", target)) == tree_digest(sample["filestore"])


def test_retention_removes_the_packs_only_pruned_sets_used_and_the_last_set_stays_whole(
    sample, incremental, keys, dbs, pgconf, tmp_path
):
    """Five backups, files replaced between them; keep_last 1: the packs of the four pruned sets that the
    fifth does not use are removed after the sets, and the fifth still verifies deeply and restores exactly."""
    from engine.ops.prune import apply_retention

    identities = crypto.load_identities(keys["identity_file"])
    results, previous = [], None
    for step in range(5):
        # Each backup adds a file and the previous backup's new file is gone (Odoo's garbage collector).
        if previous:
            os.unlink(os.path.join(sample["filestore"], previous))
        previous = add_file(sample["filestore"], os.urandom(50000 + step))
        results.append(run_backup(incremental()))
    only_pruned = set()
    for result in results[1:4]:
        info = json.loads(LocalStorage(sample["dest"]).read_bytes(ref_of(result, sample).key(packstore.STORE_SET_NAME)))
        only_pruned |= set(info["packs"])
    kept_info = json.loads(
        LocalStorage(sample["dest"]).read_bytes(ref_of(results[-1], sample).key(packstore.STORE_SET_NAME))
    )
    only_pruned -= set(kept_info["packs"])
    assert len(only_pruned) == 3, "backups 2 to 4 each wrote a pack that only they use"
    storage = LocalStorage(sample["dest"])
    before = store_bytes(sample)
    plan = incremental(retention={"keep_last": 1})
    logged = []
    reports = apply_retention(plan, results[-1], lambda *a: None, logged.append)
    assert sorted(reports[0]["deleted"]) == sorted(r.backup_id for r in results[:4]), reports
    (store,) = reports[0]["stores"]
    assert set(store["deleted"]) == only_pruned and store["freed_bytes"] > 0, store
    assert store_bytes(sample) == before - store["freed_bytes"]
    assert any("no set uses removed" in line for line in logged), logged
    ref = ref_of(results[-1], sample)
    info = json.loads(storage.read_bytes(ref.key(packstore.STORE_SET_NAME)))
    assert not set(info["packs"]) & set(store["deleted"]), "no pack the kept set uses was removed"
    report = verify(ref, identities=identities, deep=True)
    assert report.ok, report.problems
    target = dbs.name("kept")
    restore_dir = str(tmp_path / "restored")
    restore(ref, RestoreOptions(target_db=target, pg=pgconf, data_dir=restore_dir, identities=identities))
    assert tree_digest(os.path.join(restore_dir, "filestore", target)) == tree_digest(sample["filestore"])


def test_collection_waits_while_a_backup_writes_to_the_store(sample, incremental, keys, pgconf):
    """A backup holds its store's lock shared while it adds files; the collector then leaves the store alone,
    so a pack the backup counts on (one no finished set references yet) is never removed under it."""
    import psycopg2

    from engine.db import pg
    from engine.ops.prune import collect_stores

    first = run_backup(incremental())
    ref = ref_of(first, sample)
    storage = LocalStorage(sample["dest"])
    sid = json.loads(storage.read_bytes(ref.key(packstore.STORE_SET_NAME)))["store"]
    key = packstore.lock_key(sid)
    seen = []
    original = packstore.StoreWriter.add

    def add(self, *args):
        with psycopg2.connect(**pgconf.dsn_kwargs(sample["db"])) as conn, conn.cursor() as cr:
            cr.execute(
                "SELECT mode FROM pg_locks WHERE locktype = 'advisory' AND classid = %s AND objid = %s",
                (key >> 32, key & 0xFFFFFFFF),
            )
            seen.extend(row[0] for row in cr.fetchall())
        return original(self, *args)

    packstore.StoreWriter.add = add
    try:
        run_backup(incremental())
    finally:
        packstore.StoreWriter.add = original
    assert seen and set(seen) == {"ShareLock"}, "the backup held its store's lock shared while it wrote"
    # Its set gone, the first backup's packs are unreferenced; a backup writing now keeps them.
    storage.remove_tree(ref.prefix)
    for name in storage.list_dir(sample["db"]):
        if not name.startswith("."):
            storage.remove_tree("%s/%s" % (sample["db"], name))
    holder = pg.connect(pgconf, sample["db"])
    try:
        pg.advisory(holder, "pg_advisory_lock_shared", key)
        reports = collect_stores(incremental(), storage, "disk", lambda message: None)
        assert reports == [{"store": sid, "skipped": "a backup is writing to it"}]
        assert store_bytes(sample) > 0
    finally:
        holder.close()
    reports = collect_stores(incremental(), storage, "disk", lambda message: None)
    assert reports[0]["deleted"] and store_bytes(sample) == 0, "once the backup is over, they go"


def test_bytes_swapped_in_the_store_with_a_rewritten_index_are_refused(sample, incremental, dbs, pgconf, tmp_path):
    """Whoever can write the destination can rewrite the plain index: a blob replaced together with its index
    entry still fails, since each restored file is checked against the signed file list (its SHA-1 name, or
    the SHA-256 the list gives for a file not named by its content)."""
    import zstandard

    odd = os.path.join(sample["filestore"], "custom", "notes.txt")
    os.makedirs(os.path.dirname(odd))
    with open(odd, "wb") as handle:
        handle.write(b"not named by its content")
    result = run_backup(incremental(recipients=[]))
    ref = ref_of(result, sample)
    storage = LocalStorage(sample["dest"])
    info = json.loads(storage.read_bytes(ref.key(packstore.STORE_SET_NAME)))
    store_prefix = "%s/.store-%s" % (sample["db"], info["store"])
    (index_name,) = storage.list_dir(store_prefix + "/index")
    index_key = "%s/index/%s" % (store_prefix, index_name)
    index = json.loads(storage.read_bytes(index_key))
    for victim in ("odoo", "custom"):
        data = json.loads(json.dumps(index))
        custom = len(b"not named by its content")
        blob = next(b for b in data["blobs"] if (b[5] == custom) == (victim == "custom"))
        forged = zstandard.ZstdCompressor().compress(os.urandom(blob[5]) if victim == "odoo" else b"x" * blob[5])
        pack_path = os.path.join(sample["dest"], store_prefix, "packs", blob[1][:2], blob[1])
        with open(pack_path, "ab") as handle:
            offset = handle.tell()
            handle.write(forged)
        blob[2:5] = [offset, len(forged), hashlib.sha256(forged).hexdigest()]
        for pack in data["packs"]:  # the index made consistent with the packs as they now are
            with open(os.path.join(sample["dest"], store_prefix, "packs", pack[:2], pack), "rb") as handle:
                whole = handle.read()
            data["packs"][pack] = {"size": len(whole), "sha256": hashlib.sha256(whole).hexdigest()}
        with storage.open_writer(index_key) as writer:
            writer.write(json.dumps(data).encode())
        target = dbs.name("forged_" + victim)
        restore_dir = str(tmp_path / ("restored_" + victim))
        with pytest.raises(BackupError, match="does not match the backup's file list"):
            restore(ref, RestoreOptions(target_db=target, pg=pgconf, data_dir=restore_dir))
        assert not os.path.exists(os.path.join(restore_dir, "filestore", target)), "nothing swapped in"
    with storage.open_writer(index_key) as writer:
        writer.write(json.dumps(index).encode())


def test_what_a_hostile_destination_tries_on_the_store_fails_safe(sample, incremental, keys, dbs, pgconf, tmp_path):
    """A pack deleted under an intact index is stored again by the next backup; an index object that places
    a blob elsewhere is not deduplicated against; an oversized index object is refused unread; a set whose
    store.json is gone stops collection; a deep verify walks the file list."""
    from engine.ops.prune import collect_stores

    identities = crypto.load_identities(keys["identity_file"])
    storage = LocalStorage(sample["dest"])
    first = run_backup(incremental())
    info = json.loads(storage.read_bytes(ref_of(first, sample).key(packstore.STORE_SET_NAME)))
    prefix = "%s/.store-%s" % (sample["db"], info["store"])
    # a pack gone, its index left: the next backup does not count on it
    (pack,) = info["packs"]
    storage.delete("%s/packs/%s/%s" % (prefix, pack[:2], pack))
    with pytest.raises(BackupError, match="pack %s is missing from the store" % pack):
        restore(
            ref_of(first, sample),
            RestoreOptions(target_db=dbs.name("gone"), pg=pgconf, data_dir=str(tmp_path / "g"), identities=identities),
        )
    second = run_backup(incremental())
    second_info = json.loads(storage.read_bytes(ref_of(second, sample).key(packstore.STORE_SET_NAME)))
    assert second_info["new_files"] == first.manifest["filestore"]["files"] and pack not in second_info["packs"]
    report = verify(ref_of(second, sample), identities=identities, deep=True)
    assert report.ok, report.problems
    # an index object placing one blob elsewhere: that file is stored again rather than trusted
    (index_name,) = [
        name
        for name in storage.list_dir(prefix + "/index")
        if set(json.loads(storage.read_bytes("%s/index/%s" % (prefix, name)))["packs"]) & set(second_info["packs"])
    ]
    data = json.loads(storage.read_bytes("%s/index/%s" % (prefix, index_name)))
    planted = json.loads(json.dumps(data))
    planted["blobs"] = [planted["blobs"][0][:2] + [planted["blobs"][0][2] + 1] + planted["blobs"][0][3:]]
    planted["packs"] = {planted["blobs"][0][1]: data["packs"][planted["blobs"][0][1]]}
    with storage.open_writer(prefix + "/index/0.json") as writer:
        writer.write(json.dumps(planted).encode())
    third = run_backup(incremental())
    third_info = json.loads(storage.read_bytes(ref_of(third, sample).key(packstore.STORE_SET_NAME)))
    assert third_info["new_files"] == 1, "the blob two index objects disagree on is stored again"
    storage.delete(prefix + "/index/0.json")
    # a deep verify walks the file list: bytes the store's index has lost are named
    with storage.open_writer(prefix + "/index/" + index_name) as writer:
        writer.write(json.dumps(dict(data, blobs=data["blobs"][1:])).encode())
    report = verify(ref_of(second, sample), identities=identities, deep=True)
    assert any("bytes are in no index" in p for p in report.problems), report.problems
    # an index object too large to be one of ours is refused, read no further than the limit
    with storage.open_writer(prefix + "/index/huge.json") as writer:
        writer.write(b" " * (packstore.INDEX_MAX_BYTES + 1))
    with pytest.raises(BackupError, match="more than an index object may be"):
        packstore.PackStore(storage, sample["db"], info["store"]).index()
    storage.delete(prefix + "/index/huge.json")
    # a set that keeps its filestore in the store but lost its store.json: nothing is collected
    storage.delete(ref_of(third, sample).key(packstore.STORE_SET_NAME))
    for result in (first, second):
        storage.remove_tree(ref_of(result, sample).prefix)
    before = store_bytes(sample)
    (report,) = collect_stores(incremental(), storage, "disk", lambda message: None)
    assert "store.json is missing" in report["skipped"] and store_bytes(sample) == before


def test_a_drill_of_an_incremental_set_checks_every_attachment(sample, incremental, keys, pgconf, tmp_path):
    """The drill restores the files from the store and checks each referenced attachment's SHA-1 (a set with a
    file list is not a set without a filestore); an attachment changed before the backup fails the check."""
    from conftest import query

    from engine.ops.drill import run_drill

    def drill(result):
        return run_drill(
            ref_of(result, sample),
            pgconf,
            str(tmp_path / "drills"),
            identities=keys["identities"],
            public_key=keys["public"],
        )

    out = drill(run_backup(incremental()))
    found = {check.name: check for check in out.checks}
    assert out.ok, out.text()
    assert found["attachments"].ok and "not checked" not in found["attachments"].detail
    store_fname = query(sample["db"], "SELECT store_fname FROM ir_attachment ORDER BY id LIMIT 1")[0][0]
    with open(os.path.join(sample["filestore"], store_fname), "r+b") as handle:
        handle.write(b"X")
    (tmp_path / "other").mkdir()
    plan = incremental(
        destinations=[DestinationConfig(path=str(sample["dest"])), DestinationConfig(path=str(tmp_path / "other"))]
    )
    first = run_backup(plan)
    assert any("1 filestore file(s) do not have the content their name" in w for w in first.warnings), first.warnings
    assert first.manifest["filestore"]["misnamed_count"] == 1
    second = run_backup(plan)  # the next night finds the copy kept then, and does not store it again
    assert [packstore.read_set_info(catalog.resolve(loc))["new_files"] for loc in second.locations] == [0, 0]
    for result in (first, second):
        for location in result.locations:
            out = run_drill(
                catalog.resolve(location),
                pgconf,
                str(tmp_path / "drills"),
                identities=keys["identities"],
                public_key=keys["public"],
            )
            found = {check.name: check for check in out.checks}
            assert found["restore"].ok, out.text()
            assert not out.ok and not found["attachments"].ok and store_fname in found["attachments"].detail
            assert "SHA-1" in found["attachments"].detail
