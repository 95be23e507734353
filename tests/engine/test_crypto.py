"""age encryption through pyrage (interoperable with the age tool) and Ed25519 manifest signatures."""

import io
import os
import re
import stat
import subprocess

import pytest

from engine.core.errors import PreflightError, VerifyError
from engine.io import crypto


def encrypt(data, recipients):
    out = io.BytesIO()
    writer = crypto.AgeWriter(out, crypto.parse_recipients(recipients))
    for start in range(0, len(data), 300_000):
        writer.write(data[start : start + 300_000])
    writer.close()
    return out.getvalue()


def decrypt(ciphertext, identity_file):
    reader = crypto.AgeReader(io.BytesIO(ciphertext), crypto.load_identities(identity_file), what="the artifact")
    return b"".join(iter(lambda: reader.read(1 << 20), b""))


@pytest.fixture
def age_keys(tmp_path):
    identity, recipient = crypto.generate_identity()
    path = tmp_path / "identity.txt"
    path.write_text("# operations key\n%s\n" % identity)
    return {"identity": identity, "recipient": recipient, "file": str(path)}


def test_stream_round_trip_to_two_recipients(age_keys, tmp_path):
    """Encrypted to two recipients, either identity alone decrypts the stream back exactly."""
    other_identity, other_recipient = crypto.generate_identity()
    other_file = tmp_path / "breakglass.txt"
    other_file.write_text(other_identity + "\n")
    data = os.urandom(5 << 20)
    ciphertext = encrypt(data, [age_keys["recipient"], other_recipient])
    assert ciphertext.startswith(b"age-encryption.org/v1\n")
    assert decrypt(ciphertext, age_keys["file"]) == data
    assert decrypt(ciphertext, str(other_file)) == data


def test_signals_never_cut_a_stream(age_keys):
    """A process that handles signals (Odoo handles SIGCHLD) interrupts pipe writes: nothing may be lost."""
    import signal

    interrupted = []
    previous = signal.signal(signal.SIGALRM, lambda signum, frame: interrupted.append(signum))
    signal.setitimer(signal.ITIMER_REAL, 0.0005, 0.0005)
    try:
        data = os.urandom(24 << 20)
        ciphertext = encrypt(data, [age_keys["recipient"]])
        plain = decrypt(ciphertext, age_keys["file"])
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0, 0)
        signal.signal(signal.SIGALRM, previous)
    assert interrupted, "the test sent no signal"
    assert plain == data


def test_the_age_tool_decrypts_what_the_engine_encrypts(age_keys, tmp_path):
    """Debian's standalone age decrypts the engine's output with the same identity file."""
    data = os.urandom(1 << 20) + b"end"
    path = tmp_path / "x.age"
    path.write_bytes(encrypt(data, [age_keys["recipient"]]))
    out = subprocess.run(["age", "-d", "-i", age_keys["file"], str(path)], capture_output=True, check=True).stdout
    assert out == data


def test_the_engine_decrypts_what_the_age_tool_encrypts(age_keys, tmp_path):
    """And the other way round: a file encrypted by age to the policy's recipient is readable."""
    plain = tmp_path / "plain.bin"
    plain.write_bytes(os.urandom(200_000))
    subprocess.run(["age", "-r", age_keys["recipient"], "-o", str(tmp_path / "p.age"), str(plain)], check=True)
    assert decrypt((tmp_path / "p.age").read_bytes(), age_keys["file"]) == plain.read_bytes()


def test_wrong_identity_truncated_and_changed_ciphertext_are_named(age_keys, tmp_path):
    """Each decryption failure says what is wrong."""
    ciphertext = encrypt(os.urandom(300_000), [age_keys["recipient"]])
    stranger, _ = crypto.generate_identity()
    wrong = tmp_path / "wrong.txt"
    wrong.write_text(stranger + "\n")
    with pytest.raises(VerifyError, match="encrypted to other keys"):
        decrypt(ciphertext, str(wrong))
    with pytest.raises(VerifyError, match="truncated or changed"):
        decrypt(ciphertext[:-100], age_keys["file"])
    flipped = bytearray(ciphertext)
    flipped[len(flipped) // 2] ^= 1
    with pytest.raises(VerifyError, match="truncated or changed"):
        decrypt(bytes(flipped), age_keys["file"])


def test_bad_keys_are_sentences(tmp_path):
    """A malformed recipient, a missing or empty identity file each get a clear error."""
    with pytest.raises(PreflightError, match="not an age public key"):
        crypto.parse_recipients(["age1notreally"])
    with pytest.raises(PreflightError, match="Cannot read the age identity file"):
        crypto.load_identities(str(tmp_path / "none.txt"))
    empty = tmp_path / "empty.txt"
    empty.write_text("# nothing\n")
    with pytest.raises(PreflightError, match="holds no age secret key"):
        crypto.load_identities(str(empty))
    with pytest.raises(PreflightError, match="give the age identity file"):
        crypto.load_identities(None)


def test_a_private_age_key_given_as_recipient_is_refused_without_echo():
    """A pasted identity is refused with advice, and the message never repeats it."""
    secret, public = crypto.generate_identity()
    with pytest.raises(PreflightError) as raised:
        crypto.parse_recipients([public + "\n" + secret])
    assert "private age key" in str(raised.value) and "age-keygen -y" in str(raised.value)
    assert secret[15:40] not in str(raised.value)


def test_signature_round_trip_and_tampering(tmp_path):
    """A signed manifest verifies; one changed byte or another key is refused."""
    pem, public = crypto.generate_signing_key()
    key_file = tmp_path / "signing.pem"
    key_file.write_text(pem)
    data = b'{"format": 1}\n'
    signature = crypto.sign(data, crypto.load_signing_key(str(key_file)))
    crypto.check_signature(data, signature.decode(), public)
    with pytest.raises(VerifyError, match="does not match the trusted signing key"):
        crypto.check_signature(b'{"format": 2}\n', signature.decode(), public)
    _, other_public = crypto.generate_signing_key()
    with pytest.raises(VerifyError, match="does not match"):
        crypto.check_signature(data, signature.decode(), other_public)
    with pytest.raises(PreflightError, match="not an Ed25519 public key"):
        crypto.check_signature(data, signature.decode(), "abc")


def test_signature_checks_against_every_trusted_key(tmp_path):
    """A server trusts each key it has signed with: any one of them verifies, none of them is refused by name."""
    key_file = tmp_path / "signing.pem"
    old_public = crypto.write_signing_key(str(key_file))
    data = b'{"format": 1}\n'
    old_signature = crypto.sign(data, crypto.load_signing_key(str(key_file))).decode()
    new_public = crypto.write_signing_key(str(key_file), replace=True)
    assert new_public != old_public
    new_signature = crypto.sign(data, crypto.load_signing_key(str(key_file))).decode()
    crypto.check_signature(data, old_signature, [new_public, old_public])
    crypto.check_signature(data, new_signature, [new_public, old_public])
    with pytest.raises(VerifyError, match=r"trusted signing key\(s\) %s" % re.escape(new_public[:12])):
        crypto.check_signature(data, old_signature, [new_public])
    with pytest.raises(VerifyError, match="No public key"):
        crypto.check_signature(data, old_signature, ["", None])


def test_signing_key_file_is_written_once_with_mode_0600(tmp_path):
    """The private key goes straight into a new 0600 file; an existing file is never overwritten unless replaced."""
    key_file = tmp_path / "signing.pem"
    public = crypto.write_signing_key(str(key_file))
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert crypto.public_key_text(crypto.load_signing_key(str(key_file)).public_key()) == public
    with pytest.raises(FileExistsError):
        crypto.write_signing_key(str(key_file))
    assert crypto.public_key_text(crypto.load_signing_key(str(key_file)).public_key()) == public
    replaced = crypto.write_signing_key(str(key_file), replace=True)
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert crypto.public_key_text(crypto.load_signing_key(str(key_file)).public_key()) == replaced != public
    assert sorted(path.name for path in tmp_path.iterdir()) == ["signing.pem"], "no temporary file is left"


def test_signing_key_must_be_ed25519_pem(tmp_path):
    """Another kind of key file is refused with the reason."""
    bad = tmp_path / "bad.pem"
    bad.write_text("not a key")
    with pytest.raises(PreflightError, match="not an unencrypted PEM private key"):
        crypto.load_signing_key(str(bad))
