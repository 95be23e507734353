"""Verify a stored backup set: signature, manifest format, every artifact's size and SHA-256.

``deep=True`` also decrypts (with the age identity) and decompresses every
artifact to its end, which checks age's authentication tags and zstd's
checksums: the proof that the backup can be read back, not only that its
bytes are unchanged.
"""

import hashlib
import time
from dataclasses import asdict, dataclass, field

from ..core.errors import BackupError
from ..core.human import count, human_duration
from ..core.manifest import MANIFEST_NAME, OWNER_NAME, loads
from ..formats import packstore
from ..io import crypto
from ..io.stream import CHUNK, ArtifactReader


@dataclass
class ArtifactCheck:
    name: str
    file: str
    ok: bool
    message: str
    expected_size: int | None = None
    size: int | None = None
    expected_sha256: str | None = None
    sha256: str | None = None


@dataclass
class VerifyReport:
    location: str
    backup_id: str
    ok: bool
    checks: list = field(default_factory=list)
    problems: list = field(default_factory=list)
    warnings: list = field(default_factory=list)
    signature: str = "not checked"
    checked_at: float = 0.0
    seconds: float = 0.0
    manifest: dict | None = field(default=None, repr=False)

    @property
    def exit_code(self):
        return 2 if not self.ok else (1 if self.warnings else 0)

    def failed_artifacts(self):
        return [check.name for check in self.checks if not check.ok]

    def to_dict(self):
        data = asdict(self)
        data.pop("manifest")
        data["exit_code"] = self.exit_code
        return data

    def text(self):
        lines = ["Backup %s at %s: %s" % (self.backup_id, self.location, "OK" if self.ok else "FAILED")]
        lines.append("  %-12s %-28s %s" % ("signature", "manifest.sig", self.signature))
        for check in self.checks:
            lines.append(
                "  %-12s %-28s %s  %s" % (check.name, check.file, "ok  " if check.ok else "FAIL", check.message)
            )
        lines += ["  problem: %s" % p for p in self.problems]
        lines += ["  warning: %s" % w for w in self.warnings]
        return "\n".join(lines)

    def summary(self):
        """One line for a log: 'signature VALID, 3 artifacts match the manifest (in 1.2 s)' or what failed."""
        if not self.ok:
            return "FAILED: %s" % self.failure_text()
        return "signature %s, %s match the manifest (in %s)" % (
            self.signature,
            count(len(self.checks), "artifact"),
            human_duration(self.seconds),
        )

    def failure_text(self):
        return "; ".join(self.problems + ["%s: %s" % (c.name, c.message) for c in self.checks if not c.ok])


def _missing_or_new_check(storage, key, name, art):
    """(ArtifactCheck of the artifact, True when its file is missing: the check then says so)."""
    check = ArtifactCheck(
        name=name, file=art["file"], ok=False, message="", expected_size=art["size"], expected_sha256=art["sha256"]
    )
    if not storage.exists(key):
        check.message = "the file is missing"
        return check, True
    return check, False


def check_artifact(storage, key, name, art, streamed=False):
    """Read one artifact back and compare its size and SHA-256 with the manifest.

    ``streamed``: only its stored size, for an artifact whose SHA-256 the caller checks while it reads it.
    """
    check, missing = _missing_or_new_check(storage, key, name, art)
    if missing:
        return check
    if streamed:
        check.size = storage.size(key)
        if check.size != check.expected_size:
            check.message = "size %d differs from the manifest's %d" % (check.size, check.expected_size)
        else:
            check.ok = True
            check.message = "size matches (%d bytes); its SHA-256 is checked while it is restored" % check.size
        return check
    digest = hashlib.sha256()
    size = 0
    with storage.open_reader(key) as reader:
        while True:
            data = reader.read(CHUNK)
            if not data:
                break
            digest.update(data)
            size += len(data)
    return _judge(check, size, digest.hexdigest())


def _judge(check, size, sha256):
    check.size, check.sha256 = size, sha256
    if size != check.expected_size:
        check.message = "size %d differs from the manifest's %d" % (size, check.expected_size)
    elif sha256 != check.expected_sha256:
        check.message = "SHA-256 differs from the manifest (the stored bytes were changed or damaged)"
    else:
        check.ok = True
        check.message = "size and SHA-256 match (%d bytes)" % size
    return check


def deep_check_artifact(storage, key, name, art, identities):
    """Read an artifact through decryption and decompression to its end."""
    check, missing = _missing_or_new_check(storage, key, name, art)
    if missing:
        return check
    reader = ArtifactReader(storage, key, art, identities)
    raw = 0
    try:
        while True:
            data = reader.read(CHUNK)
            if not data:
                break
            raw += len(data)
        while reader.stored.read(CHUNK):
            pass
    except BackupError as exc:
        check.message = str(exc)
        return check
    finally:
        reader.close()
    _judge(check, reader.stored.size, reader.stored.sha256.hexdigest())
    if check.ok:
        check.message += "; %s and decompresses to %d bytes" % ("decrypts" if art.get("encryption") else "reads", raw)
    return check


UNSIGNED_WARNING = (
    "this backup is not signed (no manifest.sig): nothing proves which server made it or that its manifest was "
    "not edited; tick Sign on the policy, with the server's signing key (odoo.conf signing_key_file)"
)


def check_signature(ref, manifest_bytes, manifest, public_key, allow_unsigned=False):
    """(verdict text, problem or None, warning or None) for the manifest's signature."""
    sig_key = ref.key(crypto.SIGNATURE_NAME)
    has_sig = ref.storage.exists(sig_key)
    if public_key:
        if not has_sig and allow_unsigned:
            return "unsigned (accepted)", None, UNSIGNED_WARNING
        if not has_sig:
            return (
                "MISSING",
                "manifest.sig is missing: this backup is not signed, so it cannot be told apart from a forged one "
                "(anyone with the public encryption key can make a backup that decrypts). If it was made before "
                "signing was switched on, repeat the command with --allow-unsigned.",
                None,
            )
        try:
            crypto.check_signature(
                manifest_bytes, ref.storage.read_bytes(sig_key).decode("ascii", "replace"), public_key
            )
        except BackupError as exc:
            return "BAD", str(exc), None
        return "valid (Ed25519)", None, None
    if has_sig or manifest.get("signed"):
        return "not checked", None, "the signature was not checked: no public key was given (--verify-key)"
    return "unsigned", None, UNSIGNED_WARNING


def check_store(ref, manifest, deep=False, identities=None):
    """Problems of the packs a set keeps its filestore in: each present and of its size; deep: every byte.

    A deep check with the identity also reads every blob the set's file list names (restic's
    ``check --read-data``), so a damaged or removed pack is named.
    """
    try:
        store = packstore.store_of(ref, manifest)
        info = packstore.read_set_info(ref)
    except BackupError as exc:
        return [str(exc)]
    try:
        problems = ["filestore store: %s" % p for p in store.check(info["packs"], deep=deep, identities=identities)]
        if deep and identities and not problems:
            problems += _check_file_list(ref, manifest, store, identities)
        return problems
    finally:
        store.close()


def _check_file_list(ref, manifest, store, identities):
    """Every file the signed file list names has its bytes in the store, of the size the list gives."""
    art = manifest["artifacts"].get("filelist")
    if not art:
        return ["the manifest keeps the filestore in a store but lists no file list"]
    index, problems, packs = store.index(), [], set(packstore.read_set_info(ref)["packs"])
    try:
        with ArtifactReader(ref.storage, ref.key(art["file"]), art, identities) as reader:
            for rel, size, bid, _digest in packstore.read_file_list(reader):
                entry = index.in_packs(bid, packs)
                if entry is None:
                    problems.append("filestore store: %s is in the file list but its bytes are in no index" % rel)
                elif entry["size"] != size:
                    problems.append("filestore store: %s does not match the store's index" % rel)
                if len(problems) >= 5:
                    break
    except BackupError as exc:
        problems.append(str(exc))
    return problems


def verify(ref, public_key=None, identities=None, deep=False, allow_unsigned=False, streamed=()):
    """Read every stored byte of a backup set back; a VerifyReport with the verdict.

    ``streamed``: artifacts whose SHA-256 the caller checks as it reads them, before it uses them (a
    restore's filestore, unpacked into a staging folder that is swapped in only once it matches); only
    their presence and size are checked here, so they are not read twice.
    """
    started = time.monotonic()
    report = VerifyReport(location=ref.location(), backup_id=ref.backup_id, ok=False, checked_at=time.time())
    try:
        manifest_bytes = ref.read_manifest_bytes()
        manifest = loads(manifest_bytes, where=ref.storage.describe(ref.key(MANIFEST_NAME)))
    except BackupError as exc:
        report.problems.append(str(exc))
        report.seconds = round(time.monotonic() - started, 3)
        return report
    report.manifest = manifest
    report.signature, problem, warning = check_signature(ref, manifest_bytes, manifest, public_key, allow_unsigned)
    if problem:
        report.problems.append(problem)
    if warning:
        report.warnings.append(warning)
    if manifest["backup_id"] != ref.backup_id or manifest["db_name"] != ref.db_name:
        report.problems.append(
            "the manifest describes backup %s of %s, not %s of %s (files were moved or swapped)"
            % (manifest["backup_id"], manifest["db_name"], ref.backup_id, ref.db_name)
        )
    for name, art in sorted(manifest["artifacts"].items()):
        key = ref.key(art["file"])
        if deep:
            report.checks.append(deep_check_artifact(ref.storage, key, name, art, identities))
        else:
            report.checks.append(check_artifact(ref.storage, key, name, art, streamed=name in streamed))
    expected = {art["file"] for art in manifest["artifacts"].values()} | {
        MANIFEST_NAME,
        OWNER_NAME,
        crypto.SIGNATURE_NAME,
    }
    if (manifest.get("filestore") or {}).get("store"):
        expected.add(packstore.STORE_SET_NAME)
        report.problems += check_store(ref, manifest, deep, identities)
    extra = [name for name in ref.storage.list_dir(ref.prefix) if name not in expected]
    if extra:
        report.warnings.append("files not listed in the manifest: %s" % ", ".join(extra))
    report.ok = not report.problems and all(check.ok for check in report.checks)
    report.seconds = round(time.monotonic() - started, 3)
    return report
