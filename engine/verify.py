"""Verify a stored backup set: manifest format, every artifact's size and SHA-256."""

import hashlib
import time
from dataclasses import asdict, dataclass, field

from .errors import BackupError
from .manifest import MANIFEST_NAME
from .stream import CHUNK


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
    checked_at: float = 0.0
    seconds: float = 0.0

    @property
    def exit_code(self):
        return 2 if not self.ok else (1 if self.warnings else 0)

    def failed_artifacts(self):
        return [check.name for check in self.checks if not check.ok]

    def to_dict(self):
        data = asdict(self)
        data["exit_code"] = self.exit_code
        return data

    def text(self):
        lines = ["Backup %s at %s: %s" % (self.backup_id, self.location, "OK" if self.ok else "FAILED")]
        for check in self.checks:
            lines.append(
                "  %-12s %-24s %s  %s" % (check.name, check.file, "ok  " if check.ok else "FAIL", check.message)
            )
        lines += ["  problem: %s" % p for p in self.problems]
        lines += ["  warning: %s" % w for w in self.warnings]
        return "\n".join(lines)


def check_artifact(storage, key, name, art):
    """Read one artifact back and compare its size and SHA-256 with the manifest."""
    check = ArtifactCheck(
        name=name, file=art["file"], ok=False, message="", expected_size=art["size"], expected_sha256=art["sha256"]
    )
    if not storage.exists(key):
        check.message = "the file is missing"
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
    check.size, check.sha256 = size, digest.hexdigest()
    if size != art["size"]:
        check.message = "size %d differs from the manifest's %d" % (size, art["size"])
    elif check.sha256 != art["sha256"]:
        check.message = "SHA-256 differs from the manifest (the stored bytes were changed or damaged)"
    else:
        check.ok = True
        check.message = "size and SHA-256 match (%d bytes)" % size
    return check


def verify(ref):
    """Read every stored byte of a backup set back; a VerifyReport with the verdict."""
    started = time.monotonic()
    report = VerifyReport(location=ref.location(), backup_id=ref.backup_id, ok=False, checked_at=time.time())
    try:
        manifest = ref.read_manifest()
    except BackupError as exc:
        report.problems.append(str(exc))
        report.seconds = round(time.monotonic() - started, 3)
        return report
    if manifest["backup_id"] != ref.backup_id or manifest["db_name"] != ref.db_name:
        report.problems.append(
            "the manifest describes backup %s of %s, not %s of %s (files were moved or swapped)"
            % (manifest["backup_id"], manifest["db_name"], ref.backup_id, ref.db_name)
        )
    for name, art in sorted(manifest["artifacts"].items()):
        report.checks.append(check_artifact(ref.storage, ref.key(art["file"]), name, art))
    expected = {art["file"] for art in manifest["artifacts"].values()} | {MANIFEST_NAME, "manifest.sig"}
    extra = [name for name in ref.storage.list_dir(ref.prefix) if name not in expected]
    if extra:
        report.warnings.append("files not listed in the manifest: %s" % ", ".join(extra))
    report.ok = not report.problems and all(check.ok for check in report.checks)
    report.seconds = round(time.monotonic() - started, 3)
    return report
