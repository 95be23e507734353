"""The engine's own age decryption (engine.io.age): the same plaintext as pyrage and the age tool, and every
damaged, cut, extended or hostile file refused with a VerifyError, in bounded memory."""

import base64
import hmac
import io
import os
import subprocess
import tracemalloc

import pyrage
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from engine.core.errors import PreflightError, VerifyError
from engine.io import age, crypto

BOUNDARY_SIZES = (0, 1, 100, 65535, 65536, 65537, 131072, 131073, 3 * 65536 + 5)


def b64(data):
    return base64.b64encode(data).rstrip(b"=")


def hkdf(ikm, salt, info):
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=info).derive(ikm)


def seal(plaintext, publics, extra_stanzas=(), empty_last_chunk=False, file_key=None):
    """An age v1 file written from the specification with OpenSSL's primitives: an oracle independent of the
    reader, which can also write what no encryptor would (an unknown stanza, an empty chunk after full ones)."""
    file_key = file_key or os.urandom(16)
    lines = [b"age-encryption.org/v1"]

    def stanza(args, body):
        lines.append(b"-> " + b" ".join(args))
        encoded = b64(body)
        rows = [encoded[i : i + 64] for i in range(0, len(encoded), 64)] or [b""]
        if len(rows[-1]) == 64:
            rows.append(b"")
        lines.extend(rows)

    for public in publics:
        ephemeral = X25519PrivateKey.generate()
        share = ephemeral.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        shared = ephemeral.exchange(X25519PublicKey.from_public_bytes(public))
        wrap_key = hkdf(shared, share + public, b"age-encryption.org/v1/X25519")
        stanza([b"X25519", b64(share)], ChaCha20Poly1305(wrap_key).encrypt(bytes(12), file_key, None))
    for args, body in extra_stanzas:
        stanza(args, body)
    header = b"\n".join(lines) + b"\n---"
    mac = hmac.new(hkdf(file_key, b"", b"header"), header, "sha256").digest()
    nonce = os.urandom(16)
    aead = ChaCha20Poly1305(hkdf(file_key, nonce, b"payload"))
    pieces = [plaintext[i : i + 65536] for i in range(0, len(plaintext), 65536)] or [b""]
    if empty_last_chunk:
        pieces.append(b"")
    out = [header, b" ", b64(mac), b"\n", nonce]
    for counter, piece in enumerate(pieces):
        last = counter == len(pieces) - 1
        out.append(aead.encrypt(counter.to_bytes(11, "big") + (b"\x01" if last else b"\x00"), piece, None))
    return b"".join(out)


class Trickle:
    """A source that returns at most ``step`` bytes per read, as a network stream may."""

    def __init__(self, data, step):
        self.data, self.step, self.position = data, step, 0

    def read(self, size=-1):
        size = self.step if size is None or size < 0 else min(size, self.step)
        piece = self.data[self.position : self.position + size]
        self.position += len(piece)
        return piece


@pytest.fixture(scope="module")
def keys():
    mine, other = pyrage.x25519.Identity.generate(), pyrage.x25519.Identity.generate()
    return {
        "pyrage": mine,
        "other": other,
        "identity": age.Identity.from_text(str(mine)),
        "other_identity": age.Identity.from_text(str(other)),
    }


def decrypt(data, identities, read_size=1 << 20):
    reader = age.AgeDecryptor(io.BytesIO(data), identities)
    return b"".join(iter(lambda: reader.read(read_size), b""))


@pytest.mark.parametrize("size", BOUNDARY_SIZES)
def test_same_plaintext_as_pyrage_and_the_oracle_at_chunk_boundaries(keys, size):
    data = os.urandom(size)
    by_pyrage = pyrage.encrypt(data, [keys["other"].to_public(), keys["pyrage"].to_public()])
    assert pyrage.decrypt(by_pyrage, [keys["pyrage"]]) == data
    assert decrypt(by_pyrage, [keys["identity"]]) == data
    assert decrypt(by_pyrage, [keys["other_identity"]], read_size=4097) == data
    assert age.decrypt_bytes(seal(data, [keys["identity"].public]), [keys["identity"]]) == data


def test_files_of_the_age_tool_to_several_recipients(keys, tmp_path):
    data = os.urandom(300_000)
    publics = [str(keys["other"].to_public())] + [str(pyrage.x25519.Identity.generate().to_public()) for _ in range(3)]
    args = ["age"] + [part for public in publics + [str(keys["pyrage"].to_public())] for part in ("-r", public)]
    sealed = subprocess.run(args, input=data, capture_output=True, check=True).stdout
    assert decrypt(sealed, [keys["identity"]]) == data
    assert decrypt(sealed, [keys["other_identity"]]) == data
    # And the age tool reads the oracle's files: the test's encryptor is the format, not the reader's mirror.
    (tmp_path / "id.txt").write_text(str(keys["pyrage"]) + "\n")
    (tmp_path / "x.age").write_bytes(seal(data, [keys["identity"].public]))
    out = subprocess.run(
        ["age", "-d", "-i", str(tmp_path / "id.txt"), str(tmp_path / "x.age")], capture_output=True, check=True
    ).stdout
    assert out == data


def test_unknown_stanzas_are_skipped_and_bodies_of_48_bytes_wrap_with_an_empty_line(keys):
    data = os.urandom(1000)
    sealed = seal(
        data,
        [keys["other_identity"].public, keys["identity"].public],
        extra_stanzas=[([b"grease-x", b"a", b"b"], os.urandom(48)), ([b"ssh-ed25519", b"AAAA"], os.urandom(20))],
    )
    assert age.decrypt_bytes(sealed, [keys["identity"]]) == data
    # An unknown stanza's body is still base64 as the format writes it, or the header is refused.
    marker = b"-> grease-x a b\n"
    start = sealed.index(marker) + len(marker)
    for bad in (b"!!!!", b"AA==", b"AB"):
        broken = sealed[:start] + bad + b"\n" + sealed[sealed.index(b"\n", sealed.index(b"\n", start) + 1) + 1 :]
        with pytest.raises(age.AgeFormatError, match="base64"):
            age.decrypt_bytes(broken, [keys["identity"]])


def test_every_cut_of_a_small_file_is_refused(keys):
    """Cut anywhere, a file of two chunks never reads as a shorter plaintext: every byte of the header, the
    nonce, around the chunk boundary and the end, and every 31st byte between."""
    sealed = pyrage.encrypt(os.urandom(70_000), [keys["pyrage"].to_public()])
    boundary = len(sealed) - (70_000 - 65536) - age.TAG
    edges = set(range(400)) | set(range(boundary - 200, boundary + 200)) | set(range(len(sealed) - 200, len(sealed)))
    for cut in sorted(edges | set(range(0, len(sealed), 31))):
        with pytest.raises(VerifyError):
            age.decrypt_bytes(sealed[:cut], [keys["identity"]])


def test_flips_swaps_extra_bytes_and_an_empty_last_chunk_are_refused(keys):
    data = os.urandom(3 * 65536 + 100)
    sealed = pyrage.encrypt(data, [keys["pyrage"].to_public()])
    header_end = sealed.index(b"\n---") + 48  # the MAC line and the payload nonce
    for position in list(range(header_end + 20)) + [header_end + 70_000, len(sealed) - 1]:
        flipped = bytearray(sealed)
        flipped[position] ^= 0x01
        with pytest.raises(VerifyError):
            age.decrypt_bytes(bytes(flipped), [keys["identity"]])
    payload_start = sealed.index(b"\n", sealed.index(b"\n---") + 1) + 1 + 16
    first, second = payload_start, payload_start + age.CHUNK_SEALED
    swapped = (
        sealed[:first]
        + sealed[second : second + age.CHUNK_SEALED]
        + sealed[first:second]
        + sealed[second + age.CHUNK_SEALED :]
    )
    with pytest.raises(VerifyError, match="does not authenticate"):
        age.decrypt_bytes(swapped, [keys["identity"]])
    for extended in (sealed + b"\0", sealed + sealed[-age.CHUNK_SEALED :]):
        with pytest.raises(VerifyError):
            age.decrypt_bytes(extended, [keys["identity"]])
    with pytest.raises(VerifyError, match="cut short"):
        age.decrypt_bytes(seal(os.urandom(65536), [keys["identity"].public], empty_last_chunk=True), [keys["identity"]])


def test_no_plaintext_before_its_chunk_authenticates_and_failures_stick(keys):
    data = os.urandom(65536 + 10)
    sealed = bytearray(pyrage.encrypt(data, [keys["pyrage"].to_public()]))
    sealed[-(10 + age.TAG + age.CHUNK_SEALED // 2)] ^= 1  # inside the first chunk
    reader = age.AgeDecryptor(io.BytesIO(bytes(sealed)), [keys["identity"]])
    with pytest.raises(VerifyError, match="chunk 0"):
        reader.read(1)
    with pytest.raises(VerifyError, match="chunk 0"):
        reader.read(1)  # a retry does not go on with the next chunk
    # A header for another key followed by a whole file for this one: the first error is final too.
    other = pyrage.encrypt(b"a", [keys["other"].to_public()])
    reader = age.AgeDecryptor(
        io.BytesIO(other + pyrage.encrypt(b"SECRET", [keys["pyrage"].to_public()])), [keys["identity"]]
    )
    for _ in range(2):
        with pytest.raises(age.AgeKeyError):
            reader.read()


def test_reads_are_whole_from_a_trickling_source(keys):
    data = os.urandom(200_003)
    sealed = pyrage.encrypt(data, [keys["pyrage"].to_public()])
    for step in (1, 7, 65553):  # one byte per read takes about as long as one source call per byte, no more
        reader = age.AgeDecryptor(Trickle(sealed, step), [keys["identity"]])
        assert reader.read(100_000) == data[:100_000]
        assert reader.read(3) == data[100_000:100_003]
        assert reader.read() == data[100_003:]
        assert reader.read(10) == b""


def test_wrong_key_is_a_key_error_and_a_low_order_share_a_format_error(keys):
    sealed = pyrage.encrypt(b"secret", [keys["other"].to_public()])
    with pytest.raises(age.AgeKeyError):
        age.decrypt_bytes(sealed, [keys["identity"]])
    # A share that is a point of small order makes the all-zero secret: refused, not used as a key.
    # A share that is a point of small order makes the all-zero secret: the file is refused, even with a good
    # stanza after it (as age and pyrage do).
    for point in (bytes(32), (1).to_bytes(32, "little")):
        zero_share = [b"X25519", b64(point)], os.urandom(32)
        sealed = seal(b"x", [], extra_stanzas=[zero_share])
        with pytest.raises(age.AgeFormatError, match="small order"):
            age.decrypt_bytes(sealed, [keys["identity"]])


@pytest.mark.parametrize(
    "header",
    [
        b"age-encryption.org/v2\n-> X25519 AAAA\n\n--- AAAA\n",
        b"age-encryption.org/v1\n--- " + b64(bytes(32)) + b"\n",  # no recipient
        b"age-encryption.org/v1\n-> X25519\n\n--- " + b64(bytes(32)) + b"\n",  # no share
        b"age-encryption.org/v1\n-> X25519 "
        + b64(bytes(31))
        + b"\n"
        + b64(bytes(32))
        + b"\n--- "
        + b64(bytes(32))
        + b"\n",
        b"age-encryption.org/v1\n-> X25519 " + b64(bytes(32)) + b"=\n" + b64(bytes(32)) + b"\n--- AAAA\n",
        b"age-encryption.org/v1\n-> X25519 \xc3\xa9\n\n--- AAAA\n",
        b"age-encryption.org/v1\n-> X25519 " + b64(bytes(32)) + b"\n" + b"A" * 65 + b"\n--- AAAA\n",
        b"age-encryption.org/v1\nhello\n",
        b"age-encryption.org/v1\n-> X25519 " + b64(bytes(32)) + b"\r\n",
        b"",
    ],
)
def test_malformed_headers_are_format_errors(keys, header):
    with pytest.raises((age.AgeFormatError, age.AgeKeyError)):
        age.decrypt_bytes(header + os.urandom(100), [keys["identity"]])


def test_hostile_headers_stay_bounded(keys):
    """No newline in 32 MiB, or thousands of stanzas: refused after reading at most a little past the limit."""
    source = Trickle(b"age-encryption.org/v1\n-> X25519 " + b"A" * (32 << 20), 1 << 20)
    tracemalloc.start()
    try:
        with pytest.raises(age.AgeFormatError, match="longer than"):
            age.AgeDecryptor(source, [keys["identity"]]).read(1)
        assert source.position <= age.MAX_HEADER + 2 * age.READ_BLOCK
        many = b"age-encryption.org/v1\n" + b"-> x\n\n" * 5000 + b"--- AAAA\n"
        with pytest.raises(age.AgeFormatError):
            age.decrypt_bytes(many, [keys["identity"]])
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20


def test_identity_text_is_checked_and_never_shown(keys):
    text = str(keys["pyrage"])
    identity = age.Identity.from_text(text.lower())
    assert identity.public == keys["identity"].public
    assert text not in repr(identity) and text[20:40] not in repr(identity)
    for bad in (
        text[:-1] + ("q" if text[-1] != "Q" else "P"),
        text[:20] + text[20:].lower(),
        "AGE-SECRET-KEY-1",
        "age1xyz",
    ):
        with pytest.raises(PreflightError) as raised:
            age.Identity.from_text(bad)
        assert text[16:40] not in str(raised.value)


def test_crypto_reader_names_the_artifact(keys, tmp_path):
    """Through crypto.AgeReader, each failure is a sentence naming what could not be read."""
    path = tmp_path / "id.txt"
    path.write_text("# key\n%s\n" % keys["pyrage"])
    identities = crypto.load_identities(str(path))
    sealed = pyrage.encrypt(b"z" * 100_000, [keys["pyrage"].to_public()])
    with pytest.raises(VerifyError, match="database.dump.zst.age failed to decrypt"):
        crypto.AgeReader(io.BytesIO(sealed[:-1]), identities, what="database.dump.zst.age").read()
    with pytest.raises(VerifyError, match="is not a valid age file"):
        crypto.AgeReader(io.BytesIO(b"PGDMP" + sealed), identities, what="database.dump.zst.age").read()
    assert crypto.decrypt_bytes(sealed, identities) == b"z" * 100_000
