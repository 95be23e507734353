"""Decryption of age v1 files (https://age-encryption.org/v1) to X25519 identities, on OpenSSL's primitives.

Backups are encrypted by pyrage (the Rust ``age`` crate). Reading them back
is the restore's critical path: here the payload's ChaCha20-Poly1305 chunks
are opened by the ``cryptography`` package (OpenSSL), about four times as fast
as pyrage on this data, and in the caller's own thread, with no pipe between
them. Only what backups use is read: X25519 recipient stanzas. Anything else
in a file, or a file that is not exactly as the format says, is refused.

The format, in short: a text header (the version line, one stanza per
recipient with the 16-byte file key wrapped to it, and an HMAC of the header
under a key derived from the file key), then a 16-byte nonce and the payload
in chunks of 64 KiB of plaintext, each sealed with ChaCha20-Poly1305 under a
key derived from the file key and that nonce; the last chunk is marked in its
nonce, so a truncated file never reads as a shorter one.
"""

import base64
import binascii
import hmac
import io

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import x25519
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from ..core.errors import BackupError, PreflightError, VerifyError

VERSION_LINE = b"age-encryption.org/v1\n"
CHUNK_PLAIN = 64 * 1024
TAG = 16
CHUNK_SEALED = CHUNK_PLAIN + TAG
# A header of a few recipients takes a few hundred bytes; a hostile one cannot make the reader hold more.
MAX_HEADER = 64 * 1024
MAX_STANZAS = 256
READ_BLOCK = 16 * CHUNK_SEALED
_B64 = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")
_BECH32 = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"
_IDENTITY_HRP = "age-secret-key-"


class AgeFormatError(VerifyError):
    """The bytes are not an age file this reader accepts (damaged, not encrypted, or another format)."""


class AgeKeyError(VerifyError):
    """None of the identities opens the file: it was encrypted to other keys."""


class AgeDataError(VerifyError):
    """The payload does not authenticate: truncated, changed or damaged ciphertext."""


def _hkdf(ikm, salt, info):
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=info).derive(ikm)


# ----------------------------------------------------------------- identities


def _bech32_polymod(values):
    generator = (0x3B6A57B2, 0x26508E6D, 0x1EA119FA, 0x3D4233DD, 0x2A1462B3)
    check = 1
    for value in values:
        top = check >> 25
        check = (check & 0x1FFFFFF) << 5 ^ value
        for bit in range(5):
            check ^= generator[bit] if (top >> bit) & 1 else 0
    return check


def _bech32_decode(text):
    """(hrp, data bytes) of a Bech32 string (BIP 173, as age writes its keys); ValueError if it is not one."""
    if text.lower() != text and text.upper() != text:
        raise ValueError("mixed case")
    text = text.lower()
    pos = text.rfind("1")
    if pos < 1 or pos + 7 > len(text):
        raise ValueError("no separator")
    hrp, data = text[:pos], text[pos + 1 :]
    if any(ord(c) < 33 or ord(c) > 126 for c in hrp) or any(c not in _BECH32 for c in data):
        raise ValueError("bad character")
    values = [_BECH32.index(c) for c in data]
    expanded = [ord(c) >> 5 for c in hrp] + [0] + [ord(c) & 31 for c in hrp]
    if _bech32_polymod(expanded + values) != 1:
        raise ValueError("bad checksum")
    acc, bits, out = 0, 0, bytearray()
    for value in values[:-6]:
        acc = (acc << 5) | value
        bits += 5
        if bits >= 8:
            bits -= 8
            out.append((acc >> bits) & 0xFF)
    if bits >= 5 or acc & ((1 << bits) - 1):
        raise ValueError("bad padding")
    return hrp, bytes(out)


class Identity:
    """An age X25519 identity (``AGE-SECRET-KEY-1...``). Its text is never shown: repr names only the kind."""

    __slots__ = ("_private", "public")

    def __init__(self, private_key, public_bytes):
        self._private = private_key
        self.public = public_bytes

    @classmethod
    def from_text(cls, text):
        try:
            hrp, scalar = _bech32_decode(str(text).strip())
        except ValueError as exc:
            raise PreflightError("Not an age secret key (AGE-SECRET-KEY-1...): %s." % exc) from None
        if hrp != _IDENTITY_HRP or len(scalar) != 32:
            raise PreflightError("Not an age X25519 secret key (AGE-SECRET-KEY-1...).")
        private = x25519.X25519PrivateKey.from_private_bytes(scalar)
        public = private.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return cls(private, public)

    def unwrap(self, share, body):
        """The file key of an X25519 stanza (its ephemeral share and wrapped key), or None if not for this key."""
        try:
            shared = self._private.exchange(x25519.X25519PublicKey.from_public_bytes(share))
        except ValueError:
            shared = bytes(32)
        if not any(shared):
            # A share of small order gives the all-zero secret: the format says to abort, not to try the next one.
            raise AgeFormatError("an X25519 stanza's share is a point of small order")
        wrap_key = _hkdf(shared, share + self.public, b"age-encryption.org/v1/X25519")
        try:
            return ChaCha20Poly1305(wrap_key).decrypt(bytes(12), body, None)
        except InvalidTag:
            return None

    def __repr__(self):
        return "<age X25519 identity>"


def identity_of(value):
    """An Identity from one, from its text, or from an object whose text it is (a pyrage identity)."""
    return value if isinstance(value, Identity) else Identity.from_text(str(value))


# ----------------------------------------------------------------- reading


def _b64(data, what):
    """Canonical unpadded base64 (as age writes it), or AgeFormatError."""
    if not data or not set(data) <= _B64 or len(data) % 4 == 1:
        raise AgeFormatError("the header's %s is not base64" % what)
    try:
        raw = base64.b64decode(data + b"=" * (-len(data) % 4), validate=True)
    except binascii.Error:
        raise AgeFormatError("the header's %s is not base64" % what) from None
    if base64.b64encode(raw).rstrip(b"=") != data:
        raise AgeFormatError("the header's %s is not canonical base64" % what)
    return raw


class AgeDecryptor:
    """Pull-style decryption: ``read(size)`` the plaintext of the age file ``source`` (anything with ``read``).

    The header is read and authenticated at the first read. Each chunk is
    authenticated before any of its bytes are returned, and the end is
    checked: a file cut at any point, a chunk swapped, or bytes appended all
    raise AgeDataError, never a short plaintext.
    """

    def __init__(self, source, identities):
        self.source = source
        self.identities = [identity_of(i) for i in identities or []]
        if not self.identities:
            raise BackupError("No age identity was given to decrypt with.")
        self._buffer = bytearray()
        self._pos = 0
        self._error = None
        self._source_done = False
        self._aead = None
        self._counter = 0
        self._finished = False
        self._plain = b""
        self._offset = 0

    # -- raw bytes from the source

    def _available(self):
        return len(self._buffer) - self._pos

    def _fill(self, want):
        if self._pos and self._available() < want:
            del self._buffer[: self._pos]
            self._pos = 0
        while self._available() < want and not self._source_done:
            data = self.source.read(max(READ_BLOCK, want - self._available()))
            if not data:
                self._source_done = True
                break
            self._buffer += data

    def _take(self, count):
        with memoryview(self._buffer) as view:
            data = bytes(view[self._pos : self._pos + count])
        self._pos += count
        return data

    def _line(self, header):
        start = len(header)
        while True:
            newline = self._buffer.find(b"\n", self._pos)
            if newline >= 0:
                break
            if len(header) + self._available() > MAX_HEADER or self._source_done:
                raise AgeFormatError("the header is cut short or longer than %d bytes" % MAX_HEADER)
            self._fill(self._available() + 1)
        line = self._take(newline + 1 - self._pos)
        header += line
        if len(header) > MAX_HEADER:
            raise AgeFormatError("the header is longer than %d bytes" % MAX_HEADER)
        return line[:-1], start

    def _open(self):
        header = bytearray()
        self._fill(len(VERSION_LINE))
        first, _ = self._line(header)
        if first + b"\n" != VERSION_LINE:
            raise AgeFormatError("it does not start with the age v1 header line")
        stanzas = []
        while True:
            line, start = self._line(header)
            if line.startswith(b"-> "):
                if len(stanzas) >= MAX_STANZAS:
                    raise AgeFormatError("the header holds more than %d recipients" % MAX_STANZAS)
                args = line[3:].split(b" ")
                if not all(args) or any(b < 33 or b > 126 for arg in args for b in arg):
                    raise AgeFormatError("a stanza line is malformed")
                body = bytearray()
                while True:
                    body_line, _ = self._line(header)
                    if len(body_line) > 64:
                        raise AgeFormatError("a stanza body line is longer than 64 columns")
                    body += body_line
                    if len(body_line) < 64:
                        break
                stanzas.append((args, _b64(bytes(body), "stanza body") if body else b""))
            elif line.startswith(b"--- "):
                mac = _b64(line[4:], "MAC")
                mac_input = bytes(header[: start + 3])
                break
            else:
                raise AgeFormatError("a header line is neither a stanza nor the MAC line")
        if not stanzas:
            raise AgeFormatError("the header holds no recipient")
        file_key = None
        for args, body in stanzas:
            if args[0] != b"X25519":
                continue
            if len(args) != 2:
                raise AgeFormatError("an X25519 stanza has %d arguments" % (len(args) - 1))
            share, wrapped = _b64(args[1], "X25519 share"), body
            if len(share) != 32 or len(wrapped) != 32:
                raise AgeFormatError("an X25519 stanza has the wrong size")
            for identity in self.identities:
                file_key = identity.unwrap(share, wrapped)
                if file_key is not None:
                    break
            if file_key is not None:
                break
        if file_key is None:
            raise AgeKeyError("no identity matched any of the file's recipients")
        expected = hmac.new(_hkdf(file_key, b"", b"header"), mac_input, "sha256").digest()
        if not hmac.compare_digest(expected, mac):
            raise AgeFormatError("the header's MAC does not match (changed header)")
        self._fill(16)
        if self._available() < 16:
            raise AgeDataError("the payload's nonce is cut short")
        nonce = self._take(16)
        self._aead = ChaCha20Poly1305(_hkdf(file_key, nonce, b"payload"))

    def _next_chunk(self):
        # One byte past a whole chunk tells whether it is the last one.
        self._fill(CHUNK_SEALED + 1)
        last = self._available() <= CHUNK_SEALED
        size = self._available() if last else CHUNK_SEALED
        if size < TAG or (last and size == TAG and self._counter):
            raise AgeDataError("the payload is cut short")
        if self._counter >= 1 << 88:
            raise AgeDataError("the payload has too many chunks")
        nonce = self._counter.to_bytes(11, "big") + (b"\x01" if last else b"\x00")
        try:
            plain = self._aead.decrypt(nonce, self._take(size), None)
        except InvalidTag:
            raise AgeDataError(
                "chunk %d does not authenticate (truncated, changed or damaged)" % self._counter
            ) from None
        self._counter += 1
        self._finished = last
        return plain

    def read(self, size=-1):
        # A failure is final: a retried read never goes on from where the bad bytes left the stream.
        if self._error is not None:
            raise self._error
        try:
            return self._read(size)
        except VerifyError as exc:
            self._error = exc
            raise

    def _read(self, size):
        if self._aead is None:
            self._open()
        if size is None or size < 0:
            size = 1 << 62
        parts = []
        while size > 0:
            if self._offset >= len(self._plain):
                if self._finished:
                    break
                self._plain, self._offset = self._next_chunk(), 0
                continue
            piece = self._plain[self._offset : self._offset + size]
            self._offset += len(piece)
            size -= len(piece)
            parts.append(piece)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def readable(self):
        return True


def decrypt_bytes(data, identities):
    """The plaintext of a whole age file held in memory."""
    return AgeDecryptor(io.BytesIO(data), identities).read()
