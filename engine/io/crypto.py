"""Encryption (age, X25519 recipients, via pyrage; decryption in ``age``) and manifest signing (Ed25519).

The server that makes backups holds only public keys: the age recipients and
the Ed25519 signing key's public half travel with the policy, while the age
identity (the private key) and the signing key are files named in odoo.conf.
A backup decrypts with the standalone ``age`` tool::

    age -d -i identity.txt database.dump.zst.age | zstd -d > database.dump

Streams stay bounded: pyrage encrypts from a pipe in a helper thread while
the caller writes to the other end; decryption (``age``, on OpenSSL's
ChaCha20-Poly1305) runs in the reader's own thread, chunk by chunk.
"""

import base64
import binascii
import contextlib
import hashlib
import io
import os
import threading

from ..core.errors import BackupError, PreflightError, VerifyError
from . import age

AGE_SUFFIX = ".age"
SIGNATURE_NAME = "manifest.sig"
PIPE_CHUNK = 1 << 20


def _pyrage():
    try:
        import pyrage
    except ImportError as exc:  # pragma: no cover - a missing dependency is a setup error
        raise PreflightError("Encryption needs the Python package pyrage (pip install pyrage).") from exc
    return pyrage


# ----------------------------------------------------------------- age keys


def generate_identity():
    """A new age X25519 key pair: (identity ``AGE-SECRET-KEY-1...``, recipient ``age1...``)."""
    identity = _pyrage().x25519.Identity.generate()
    return str(identity), str(identity.to_public())


def key_lines(text):
    """The non-empty, non-comment lines of a key list or key file."""
    for line in str(text).splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            yield line


def parse_recipients(values):
    """pyrage recipients from ``age1...`` strings (one per item or per line); a sentence if one is wrong."""
    pyrage = _pyrage()
    recipients = []
    for value in values or []:
        for number, line in enumerate(key_lines(value), 1):
            if "SECRET-KEY" in line.upper():
                # Never echo it: a message may be shown, logged or mailed.
                raise PreflightError(
                    "A private age key (AGE-SECRET-KEY-1...) was given where a public key belongs: never paste it "
                    "into the server; give its public key (age1...), which 'age-keygen -y identity.txt' prints."
                )
            try:
                recipients.append(pyrage.x25519.Recipient.from_str(line))
            except Exception as exc:
                # The line itself is not repeated: it may be a private key of another kind.
                raise PreflightError(
                    "Recipient %d is not an age public key: it should look like age1... (62 characters)." % number
                ) from exc
    return recipients


def recipient_fingerprint(recipient):
    """A short, stable name for a recipient, recorded in manifests."""
    return hashlib.sha256(str(recipient).strip().encode("ascii")).hexdigest()[:16]


def load_identities(path):
    """age identities from an identity file (lines ``AGE-SECRET-KEY-1...``, ``#`` comments)."""
    if not path:
        raise PreflightError(
            "This backup is encrypted: give the age identity file (--identity, or identity_file in the "
            "[spp_backup] section of odoo.conf, or SPP_BACKUP_IDENTITY_FILE)."
        )
    try:
        with open(os.path.expanduser(path), encoding="utf-8") as handle:
            lines = handle.read().splitlines()
    except OSError as exc:
        raise PreflightError("Cannot read the age identity file %s: %s." % (path, exc.strerror or exc)) from exc
    identities = []
    for line in key_lines("\n".join(lines)):
        try:
            identities.append(age.Identity.from_text(line))
        except PreflightError:
            raise PreflightError("The identity file %s holds a line that is not an age secret key." % path) from None
    if not identities:
        raise PreflightError("The identity file %s holds no age secret key (AGE-SECRET-KEY-1...)." % path)
    return identities


# ----------------------------------------------------------------- streams


class _PipeThread:
    """Runs ``work(reader_or_writer)`` in a thread against one end of an os.pipe."""

    def __init__(self):
        read_fd, write_fd = os.pipe()
        self.pipe_reader = os.fdopen(read_fd, "rb", buffering=PIPE_CHUNK)
        # Buffered, so that every write is whole: a raw write to a pipe may write only part of the data when
        # a signal arrives (a host process with a SIGCHLD handler, such as Odoo), and the rest would be lost.
        self.pipe_writer = os.fdopen(write_fd, "wb", buffering=PIPE_CHUNK)
        self.error = None
        self.thread = None

    def start(self, target):
        def run():
            try:
                target()
            except BaseException as exc:  # reported to the caller's thread
                self.error = exc

        self.thread = threading.Thread(target=run, name="spp_backup-age", daemon=True)
        self.thread.start()


class _Downstream:
    """A minimal file-like for pyrage to write into."""

    def __init__(self, sink):
        self.sink = sink

    def write(self, data):
        self.sink.write(bytes(data))
        return len(data)

    def flush(self):
        pass


class AgeWriter:
    """Push-style encryption: ``write()`` plaintext, ciphertext goes to ``downstream.write``."""

    def __init__(self, downstream, recipients):
        if not recipients:
            raise PreflightError("Encryption is on but no age recipient (public key) is configured.")
        pyrage = _pyrage()
        self._pipe = _PipeThread()
        reader, out = self._pipe.pipe_reader, _Downstream(downstream)

        def work():
            try:
                pyrage.encrypt_io(reader, out, recipients)
            finally:
                reader.close()

        self._pipe.start(work)
        self.closed = False

    def write(self, data):
        try:
            self._pipe.pipe_writer.write(data)
        except (BrokenPipeError, ValueError, OSError) as exc:
            self._pipe.thread.join()
            raise self._failure() from exc
        return len(data)

    def _failure(self):
        error = self._pipe.error
        if isinstance(error, BackupError):
            return error
        return BackupError("Encryption failed: %s" % (error or "the encrypting thread stopped"))

    def close(self):
        if self.closed:
            return
        self.closed = True
        with contextlib.suppress(OSError):
            self._pipe.pipe_writer.close()
        self._pipe.thread.join()
        if self._pipe.error is not None:
            raise self._failure()

    def abort(self):
        if not self.closed:
            self.closed = True
            with contextlib.suppress(OSError):
                self._pipe.pipe_writer.close()
            self._pipe.thread.join()


class AgeReader:
    """Pull-style decryption of a ciphertext reader (``age.AgeDecryptor``), with this module's error sentences."""

    def __init__(self, source, identities, what="artifact"):
        self.what = what
        self._reader = age.AgeDecryptor(source, identities)

    def read(self, size=-1):
        try:
            return self._reader.read(size)
        except VerifyError as exc:
            raise VerifyError(describe_decrypt_error(exc, self.what)) from exc

    def readable(self):
        return True

    def close(self):
        pass


def decrypt_bytes(data, identities, what="artifact"):
    """The plaintext of a small age file held in memory."""
    reader = AgeReader(io.BytesIO(data), identities, what)
    return reader.read()


def describe_decrypt_error(error, what):
    if isinstance(error, age.AgeKeyError):
        return "%s cannot be decrypted with the given identity: it was encrypted to other keys." % what
    if isinstance(error, age.AgeFormatError):
        return "%s is not a valid age file (damaged or not encrypted): %s" % (what, error)
    return "%s failed to decrypt (truncated or changed ciphertext): %s" % (what, error)


# ----------------------------------------------------------------- signing


def generate_signing_key():
    """A new Ed25519 key pair: (private key as PKCS#8 PEM text, public key as base64 text)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode("ascii")
    return pem, public_key_text(key.public_key())


def public_key_text(public_key):
    from cryptography.hazmat.primitives import serialization

    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode("ascii")


def load_signing_key(path):
    """The Ed25519 private key from a PEM file named in odoo.conf / the environment."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    try:
        with open(os.path.expanduser(path), "rb") as handle:
            data = handle.read()
    except OSError as exc:
        raise PreflightError("Cannot read the signing key file %s: %s." % (path, exc.strerror or exc)) from exc
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise PreflightError("The signing key file %s is not an unencrypted PEM private key." % path) from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise PreflightError("The signing key in %s is not an Ed25519 key." % path)
    return key


def load_public_key(text):
    """An Ed25519 public key from its base64 text (as shown on the policy)."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        raw = base64.b64decode((text or "").strip(), validate=True)
        if len(raw) != 32:
            raise ValueError("length")
        return Ed25519PublicKey.from_public_bytes(raw)
    except (ValueError, binascii.Error) as exc:
        raise PreflightError(
            "%r is not an Ed25519 public key: expected 44 characters of base64." % (text or "")[:60]
        ) from exc


def sign(data, private_key):
    """The signature file's content: base64 of the 64-byte Ed25519 signature, and a newline."""
    return base64.b64encode(private_key.sign(data)) + b"\n"


def public_key_list(keys):
    """Trusted public keys as a list: a text of keys (separated by spaces, commas or lines) or a list of them."""
    if not keys:
        return []
    if isinstance(keys, str):
        keys = [keys]
    return [part for key in keys if key for part in str(key).replace(",", " ").split()]


def check_signature(data, signature_text, public_keys):
    """Raise VerifyError unless ``signature_text`` is a valid signature of ``data`` by one of ``public_keys``.

    ``public_keys`` is one key's base64 text or a list of them: a server trusts every key it has signed with,
    so a backup made before its signing key was replaced still verifies.
    """
    from cryptography.exceptions import InvalidSignature

    texts = public_key_list(public_keys)
    if not texts:
        raise VerifyError("No public key to check the manifest's signature with.")
    keys, bad = [], None
    for text in texts:
        try:
            keys.append(load_public_key(text))
        except PreflightError as exc:
            bad = exc  # one malformed key must not stop the others from verifying
    if not keys:
        raise bad
    try:
        signature = base64.b64decode(signature_text.strip(), validate=True)
    except (ValueError, binascii.Error) as exc:
        raise VerifyError("manifest.sig is not a base64 signature.") from exc
    for public_key in keys:
        try:
            public_key.verify(signature, data)
            return
        except InvalidSignature:
            continue
    raise VerifyError(
        "The manifest's signature does not match the trusted signing key(s) %s: the manifest was changed, "
        "or it was signed by another key." % ", ".join(fingerprint(text) for text in public_key_list(public_keys))
    )


def fingerprint(public_key_text_value):
    """A short name for a signing public key in messages: its first 12 characters."""
    return (public_key_text_value or "").strip()[:12] + "\u2026"


def write_signing_key(path, replace=False):
    """Make a new Ed25519 key pair straight into ``path`` (mode 0600); return its public key text.

    The private key goes from memory to the file and nowhere else. An existing file is kept unless
    ``replace``; a replacement is written beside it and renamed over it, so a crash leaves the old key or the
    new one, never half a file.
    """
    path = os.path.abspath(os.path.expanduser(path))
    pem, public = generate_signing_key()
    if not replace:
        write_secret_file(path, pem)
        return public
    temp = "%s.new-%d" % (path, os.getpid())
    write_secret_file(temp, pem)
    try:
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise
    return public


def write_secret_file(path, text):
    """Write ``text`` to a new file ``path`` readable by its owner only (0600); an existing file is an error."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
