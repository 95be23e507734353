"""The content-addressed filestore store: dedup across backups, keyed names, reading back, checks, collection."""

import hashlib
import json
import os
import subprocess

import pytest

from engine.core.errors import PreflightError, VerifyError
from engine.formats import packstore
from engine.io import crypto
from engine.io.storage import LocalStorage


def odoo_file(root, content):
    sha1 = hashlib.sha1(content).hexdigest()
    rel = "%s/%s" % (sha1[:2], sha1)
    path = os.path.join(root, rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as handle:
        handle.write(content)
    return rel


def back_up(store, key, recipients, root, backup_id):
    """What a backup does with the store: every file added, the set's store.json and file list returned."""
    writer = packstore.StoreWriter(store, key, recipients)
    listing = []
    for dirpath, _dirs, files in os.walk(root):
        for name in sorted(files):
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, root).replace(os.sep, "/")
            st = os.stat(path)
            listing.append((rel, st.st_size, writer.add(rel, path, st.st_size, st.st_mtime_ns)))
    return writer.finish(backup_id), sorted(listing)


def restore_all(store, listing, identities=None):
    """Every file of a listing, read pack by pack: {rel: bytes}."""
    index = store.index()
    by_pack = {}
    for rel, _size, bid in listing:
        entry = index.get(bid)
        by_pack.setdefault(entry["pack"], []).append(dict(entry, rel=rel))
    data = store.read_files([entry for entries in by_pack.values() for entry in entries], identities)
    return {entry["rel"]: data[entry["id"]] for entries in by_pack.values() for entry in entries}


@pytest.fixture
def setup(tmp_path):
    root = tmp_path / "filestore"
    root.mkdir()
    storage = LocalStorage(str(tmp_path / "dest"))
    os.makedirs(str(tmp_path / "dest"))
    key = packstore.load_store_key(str(tmp_path / "store.key"), create=True)
    return root, storage, key


@pytest.mark.parametrize("encrypted", [False, True])
def test_second_backup_stores_only_what_changed_and_both_read_back(setup, tmp_path, encrypted):
    root, storage, key = setup
    identity, recipient = crypto.generate_identity()
    recipients = crypto.parse_recipients([recipient]) if encrypted else []
    identities = [crypto._pyrage().x25519.Identity.from_str(identity)] if encrypted else None
    fingerprints = [crypto.recipient_fingerprint(recipient)] if encrypted else []
    files = [odoo_file(str(root), os.urandom(3000 + i * 37)) for i in range(200)]
    odoo_file(str(root), os.urandom(6 << 20))  # one large file, streamed
    sid = packstore.store_id(key, "uuid-1", fingerprints)
    store = packstore.PackStore(storage, "db", sid, recipients)
    store.ensure_config(fingerprints)
    first, first_list = back_up(store, key, recipients, str(root), "B1")
    assert first["new_files"] == 201
    for i in range(2):
        files.append(odoo_file(str(root), os.urandom(5000 + i)))
    store.close()
    store = packstore.PackStore(storage, "db", sid, recipients)  # a later run knows the store from its index
    second, second_list = back_up(store, key, recipients, str(root), "B2")
    assert second["new_files"] == 2
    assert second["new_bytes"] < first["new_bytes"] / 50
    assert set(first["packs"]) <= set(second["packs"])
    for listing in (first_list, second_list):
        restored = restore_all(store, listing, identities)
        for rel, _size, _bid in listing:
            with open(os.path.join(str(root), rel), "rb") as handle:
                assert restored[rel] == handle.read(), rel
    # no name in the store reveals an Odoo SHA-1
    names = []
    for dirpath, dirs, filenames in os.walk(str(tmp_path / "dest")):
        names += dirs + filenames
        for filename in filenames:
            with open(os.path.join(dirpath, filename), "rb") as handle:
                content = handle.read()
            assert files[0].split("/")[1].encode() not in content, filename
    assert not any(rel.split("/")[1] in names for rel in files)
    store.close()


def test_a_store_for_other_recipients_is_refused(setup):
    root, storage, key = setup
    store = packstore.PackStore(storage, "db", "0" * 16)
    store.ensure_config(["aaaa"])
    with pytest.raises(PreflightError, match="other age recipients"):
        store.ensure_config(["bbbb"])
    assert packstore.store_id(key, "uuid", ["aaaa"]) != packstore.store_id(key, "uuid", ["bbbb"])
    assert packstore.store_id(key, "uuid", []) != packstore.store_id(key, "other-uuid", [])


def test_damaged_and_missing_packs_are_named(setup):
    root, storage, key = setup
    for i in range(20):
        odoo_file(str(root), os.urandom(2000 + i))
    store = packstore.PackStore(storage, "db", packstore.store_id(key, "u", []))
    store.ensure_config([])
    info, listing = back_up(store, key, [], str(root), "B1")
    assert store.check(info["packs"], deep=True) == []
    (pack,) = info["packs"]
    path = os.path.join(storage.root, store.pack_key(pack))
    with open(path, "r+b") as handle:
        handle.seek(100)
        byte = handle.read(1)
        handle.seek(100)
        handle.write(bytes([byte[0] ^ 1]))
    assert store.check(info["packs"]) == [], "sizes match: only a deep check reads the bytes"
    assert "pack %s is damaged" % pack in store.check(info["packs"], deep=True)[0]
    with pytest.raises(VerifyError, match="damaged"):
        restore_all(store, listing)
    with open(path, "r+b") as handle:
        handle.truncate(50)
    assert "truncated or changed" in store.check(info["packs"])[0]
    os.unlink(path)
    assert store.check(info["packs"]) == ["pack %s is missing from the store" % pack]


def test_collection_removes_only_packs_no_set_references(setup):
    root, storage, key = setup
    store = packstore.PackStore(storage, "db", packstore.store_id(key, "u", []))
    store.ensure_config([])
    old_rels = [odoo_file(str(root), os.urandom(4000)) for _ in range(5)]
    first, _ = back_up(store, key, [], str(root), "B1")
    for rel in old_rels:
        os.unlink(os.path.join(str(root), rel))
    odoo_file(str(root), os.urandom(4000))
    second, second_list = back_up(store, key, [], str(root), "B2")
    assert set(first["packs"]).isdisjoint(second["packs"])
    dry = store.collect(second["packs"] + first["packs"], dry_run=True)
    assert dry["deleted"] == []
    report = store.collect(second["packs"])
    assert report["deleted"] == first["packs"] and report["freed_bytes"] > 0
    assert store.check(second["packs"], deep=True) == []
    assert len(store.index_names()) == 1, "the index was rewritten into one object"
    fresh = packstore.PackStore(storage, "db", store.sid)
    assert fresh.index().pack(first["packs"][0]) is None
    assert len(restore_all(fresh, second_list)) == 1
    # a pack under Object Lock stays
    third, _ = back_up(fresh, key, [], str(root), "B3")
    odoo_file(str(root), os.urandom(100))
    fourth, _ = back_up(fresh, key, [], str(root), "B4")
    only_fourth = sorted(set(fourth["packs"]) - set(third["packs"]))
    report = fresh.collect(third["packs"], locked_until=lambda key: 4102444800)
    assert report["deleted"] == [] and report["kept_locked"] == only_fourth


def test_store_key_file(tmp_path):
    path = str(tmp_path / "k")
    key = packstore.load_store_key(path, create=True)
    assert len(key) == 32 and oct(os.stat(path).st_mode & 0o777) == "0o600"
    assert packstore.load_store_key(path) == key
    with open(path, "w") as handle:
        handle.write("short")
    with pytest.raises(PreflightError, match="64 hex digits"):
        packstore.load_store_key(path)
    with pytest.raises(PreflightError, match="store_key_file"):
        packstore.load_store_key(None)


def test_a_blob_opens_with_age_and_zstd_alone(setup, tmp_path):
    """The documented way without this code: cut the blob's bytes out of its pack, age -d, zstd -d."""
    root, storage, key = setup
    identity, recipient = crypto.generate_identity()
    id_file = tmp_path / "id.txt"
    id_file.write_text(identity + "\n")
    content = os.urandom(5000)
    rel = odoo_file(str(root), content)
    recipients = crypto.parse_recipients([recipient])
    store = packstore.PackStore(storage, "db", "1" * 16, recipients)
    info, listing = back_up(store, key, recipients, str(root), "B1")
    (index_name,) = store.index_names()
    index = json.loads(storage.read_bytes(store.key("index", index_name + ".json")))
    bid, pack, offset, length, _sha, size = index["blobs"][0]
    assert (bid, size) == (listing[0][2], 5000) and listing[0][0] == rel
    with open(os.path.join(storage.root, store.pack_key(pack)), "rb") as handle:
        handle.seek(offset)
        blob = handle.read(length)
    plain = subprocess.run(["age", "-d", "-i", str(id_file)], input=blob, capture_output=True, check=True).stdout
    out = subprocess.run(["zstd", "-d", "-c"], input=plain, capture_output=True, check=True).stdout
    assert out == content


def test_an_index_from_storage_is_checked_and_sizes_cannot_blow_up_memory(setup):
    """A damaged or hostile index is refused in words; a compressible file of any size streams back, and a
    blob that decompresses to more than its index says is refused instead of filling memory or disk."""
    root, storage, key = setup
    zeros = b"\0" * (12 << 20)  # compresses to a few KiB: restored by streaming, not in memory
    rel = odoo_file(str(root), zeros)
    store = packstore.PackStore(storage, "db", packstore.store_id(key, "u", []))
    store.ensure_config([])
    info, listing = back_up(store, key, [], str(root), "B1")
    (index_name,) = store.index_names()
    index_key = store.key("index", index_name + ".json")
    data = json.loads(storage.read_bytes(index_key))
    (blob,) = data["blobs"]
    assert blob[3] < 1 << 20 and blob[5] == len(zeros)
    assert restore_all(store, listing)[rel] == zeros
    store.close()

    def rewrite(change):
        damaged = json.loads(json.dumps(data))
        change(damaged)
        with storage.open_writer(index_key) as writer:
            writer.write(json.dumps(damaged).encode())
        return packstore.PackStore(storage, "db", store.sid)

    for change, words in (
        (lambda d: d["blobs"][0].__setitem__(2, -5), "negative or missing offset"),
        (lambda d: d["blobs"][0].__setitem__(1, "../../etc"), "names no valid pack"),
        (lambda d: d["packs"].update({"x/../y": {"size": 1, "sha256": "0" * 64}}), "not named as packs are"),
    ):
        with pytest.raises(VerifyError, match=words):
            rewrite(change).index()
    for size, words in ((1000, "does not decompress"), (5 << 20, "more than the index says")):
        lying = rewrite(lambda d, size=size: d["blobs"][0].__setitem__(5, size))
        with pytest.raises(VerifyError, match=words):
            restore_all(lying, listing)
        lying.close()


def test_an_index_object_from_a_destination_is_read_no_further_than_the_limit(setup):
    """An index object far larger than any a backup writes (a hostile destination) is refused after at most
    INDEX_MAX_BYTES + 1 bytes are read, so it cannot fill memory; one of the largest size stores wrote before
    (20,000 blobs) still reads."""
    root, storage, key = setup
    store = packstore.PackStore(storage, "db", packstore.store_id(key, "u", []))
    store.ensure_config([])
    huge = store.key("index", "huge.json")
    with storage.open_writer(huge) as writer:
        for _ in range(24):
            writer.write(b" " * (1 << 20))
    read = []
    opened = storage.open_reader

    def counting(key_):
        reader = opened(key_)
        original = reader.read

        def read_counted(size=-1):
            data = original(size)
            read.append(len(data))
            return data

        reader.read = read_counted
        return reader

    storage.open_reader = counting
    with pytest.raises(VerifyError, match="more than an index object may be"):
        store.read_index("huge")
    assert 0 < sum(read) <= packstore.INDEX_MAX_BYTES + 1
    storage.open_reader = opened
    storage.delete(huge)
    pack = "0" * 32
    old = {
        "format": packstore.STORE_FORMAT,
        "packs": {pack: {"size": 20000 * 1000, "sha256": "0" * 64}},
        "blobs": [["%064x" % i, pack, i * 1000, 1000, "%064x" % i, 990] for i in range(20000)],
    }
    with storage.open_writer(store.key("index", "old.json")) as writer:
        writer.write(json.dumps(old, separators=(",", ":")).encode())
    assert len(store.read_index("old")["blobs"]) == 20000
    store.close()
