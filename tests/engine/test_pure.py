"""Pure logic: manifest format, ids, configuration reading, sanitizing (no I/O but temp files)."""

import datetime
import time

import pytest

from engine.core import manifest as mf
from engine.core.config import BackupPlan, DestinationConfig, PgConfig, Settings, sanitize_options
from engine.core.errors import PreflightError, VerifyError
from engine.core.human import human_bytes
from engine.ops.backup import odoo_version_keys


def good_manifest():
    return {
        "format": 1,
        "backup_id": "20261126T030000Z-3f9a1c",
        "db_name": "prod",
        "created_at": "2026-11-26T03:00:00Z",
        "finished_at": "2026-11-26T03:10:00Z",
        "artifacts": {"database": {"file": "database.dump.zst", "size": 10, "sha256": "a" * 64, "compression": "zstd"}},
    }


def test_backup_ids_sort_by_time_and_parse_back():
    """Ids are UTC timestamps plus a random suffix, and their time can be read back."""
    moment = datetime.datetime(2026, 11, 26, 3, 0, tzinfo=datetime.timezone.utc)
    backup_id = mf.new_backup_id(moment)
    assert backup_id.startswith("20261126T030000Z-") and mf.is_backup_id(backup_id)
    assert mf.backup_time(backup_id) == moment
    assert not mf.is_backup_id("../etc") and not mf.is_backup_id("20261126T030000Z")


def test_valid_manifest_round_trips():
    """A well-formed manifest loads back equal."""
    manifest = good_manifest()
    assert mf.loads(mf.dumps(manifest)) == manifest


@pytest.mark.parametrize(
    "change, problem",
    [
        (lambda m: m.pop("artifacts"), "missing key 'artifacts'"),
        (lambda m: m.update(format=2), "format version 2 is not supported"),
        (lambda m: m.update(backup_id="x"), "backup_id 'x' is malformed"),
        (lambda m: m["artifacts"]["database"].update(file="../../etc/passwd"), "names file"),
        (lambda m: m["artifacts"]["database"].update(sha256="zz"), "bad sha256"),
        (lambda m: m["artifacts"]["database"].update(size=-1), "bad size"),
        (lambda m: m["artifacts"].update(evil={}), "unknown artifact 'evil'"),
        (lambda m: m["artifacts"]["database"].update(size=True), "bad size"),
        (lambda m: m["artifacts"]["database"].update(raw_size="9" * 30), "bad raw_size"),
        (lambda m: m["artifacts"]["database"].update(raw_size=-5), "bad raw_size"),
        (lambda m: m.update(modules=5), "modules is not an object of module names"),
        (lambda m: m.update(modules=[1, 2]), "modules is not an object of module names"),
        (lambda m: m.update(modules={"base": 17}), "modules is not an object of module names"),
        (lambda m: m.update(warnings="look"), "warnings is not a list of sentences"),
        (lambda m: m.update(db_name=["prod"]), "db_name is not a name"),
        (lambda m: m.update(major_version=17), "major_version is not a version"),
        (lambda m: m.update(database={"row_counts": {"res_partner": "many"}}), "database is not an object of"),
        (lambda m: m.update(database={"encoding": 6}), "database is not an object of"),
        (lambda m: m.update(source="x"), "source is not an object"),
        (lambda m: m.update(filestore=["x"]), "filestore is not an object"),
        (lambda m: m.update(filestore={"files": 2, "bytes": "lots"}), "filestore bytes is not a count"),
        (
            lambda m: m["artifacts"].update(
                filestore={"file": "filestore.tar.zst", "size": 1, "sha256": "b" * 64, "compression": "zstd"},
                filelist={"file": "filestore.list.zst", "size": 1, "sha256": "c" * 64, "compression": "zstd"},
            ),
            "both a filestore archive and a file list",
        ),
    ],
)
def test_malformed_manifests_are_refused_with_the_reason(change, problem):
    """Each kind of malformation is named in the error."""
    manifest = good_manifest()
    change(manifest)
    with pytest.raises(VerifyError, match=problem):
        mf.loads(mf.dumps(manifest))


def test_odoo_version_keys_from_base_module_or_caller():
    """Without Odoo, the version comes from the base module; inside Odoo, from odoo.release."""
    assert odoo_version_keys(None, "17.0.1.3") == {
        "version": "17.0",
        "version_info": [17, 0, 0, "final", 0, ""],
        "major_version": "17.0",
    }
    given = {"version": "17.0+e", "version_info": (17, 0, 0, "final", 0, "e"), "major_version": "17.0"}
    assert odoo_version_keys(given, "17.0.1.3")["version"] == "17.0+e"
    assert odoo_version_keys(None, None)["major_version"] is None


def test_sanitize_removes_credentials_inside_urls():
    """A password inside a URL value (Sentry DSN, Redis URL) is removed too."""
    clean = sanitize_options(
        {"sentry_dsn": "https://abc@o1.ingest.io/1", "redis_host": "redis://:hunter2@redis:6379/0"}
    )
    assert clean == {"redis_host": "redis://<removed>@redis:6379/0", "sentry_dsn": "<removed>"}


def test_sanitize_removes_every_secret():
    """Passwords, secrets, keys and tokens are replaced; other settings stay."""
    clean = sanitize_options(
        {"admin_passwd": "a", "db_password": "b", "smtp_ssl_private_key": "c", "api_token": "d", "workers": "4"}
    )
    assert clean == {
        "admin_passwd": "<removed>",
        "api_token": "<removed>",
        "db_password": "<removed>",
        "smtp_ssl_private_key": "<removed>",
        "workers": "4",
    }


def test_settings_from_odoo_conf_with_environment_override(tmp_path, monkeypatch):
    """odoo.conf gives the connection and [spp_backup]; SPP_BACKUP_* variables win."""
    conf = tmp_path / "odoo.conf"
    conf.write_text(
        "[options]\ndb_host = dbserver\ndb_port = 6543\ndb_user = odoo\ndb_password = pw\ndata_dir = /srv/odoo\n"
        "[spp_backup]\nmin_free_bytes = 100\n"
    )
    settings = Settings.from_config(str(conf))
    assert (settings.pg.host, settings.pg.port, settings.pg.user, settings.pg.password) == (
        "dbserver",
        6543,
        "odoo",
        "pw",
    )
    assert settings.data_dir == "/srv/odoo" and settings.get("min_free_bytes") == "100"
    monkeypatch.setenv("SPP_BACKUP_MIN_FREE_BYTES", "200")
    assert settings.get("min_free_bytes") == "200"
    assert "pw" not in repr(settings.pg)


def test_unreadable_odoo_conf_is_a_sentence(tmp_path):
    """A missing configuration file is named in the error."""
    with pytest.raises(PreflightError, match="Cannot read the Odoo configuration file"):
        Settings.from_config(str(tmp_path / "missing.conf"))


def test_plan_round_trips_without_the_password():
    """A plan written for the worker never carries the database password."""
    plan = BackupPlan(
        db_name="prod", destinations=[DestinationConfig(path="/b")], pg=PgConfig(host="h", password="secret")
    )
    data = plan.to_dict()
    assert "secret" not in repr(data)
    back = BackupPlan.from_dict(data)
    assert back.db_name == "prod" and back.pg.host == "h" and back.pg.password is None
    with pytest.raises(PreflightError, match="Unknown plan settings"):
        BackupPlan.from_dict(dict(data, surprise=1))


def test_human_bytes():
    """Sizes read as a person expects."""
    assert human_bytes(512) == "512 B" and human_bytes(1536) == "1.5 KiB" and human_bytes(3 * 1024**3) == "3.0 GiB"


def test_the_engine_never_imports_odoo():
    """The engine runs with Odoo absent (the command line at 3 a.m.): no module of it imports odoo."""
    import ast
    import pathlib

    engine = pathlib.Path(__file__).resolve().parents[2] / "engine"
    found = []
    for path in sorted(engine.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level:
                names = [node.module or ""]
            found += ["%s:%d %s" % (path.name, node.lineno, n) for n in names if n.split(".")[0] == "odoo"]
    assert found == []


def test_a_set_dated_in_the_future_does_not_stall_backups(monkeypatch):
    """An id of this second is waited out; one dated ahead (a planted folder, another clock) is not."""
    from engine.ops import backup

    monkeypatch.setattr(backup, "FUTURE_ID_SLACK", 0.5)
    started = time.monotonic()
    new = backup.next_backup_id("20991231T235959Z-abcdef")
    assert time.monotonic() - started < 2
    assert new < "20991231T235959Z-abcdef"
    monkeypatch.setattr(backup, "FUTURE_ID_SLACK", 2.0)
    current = backup.mf.new_backup_id()
    assert backup.next_backup_id(current)[:16] > current[:16], "the same second is still waited out"
