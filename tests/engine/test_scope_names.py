"""The ``databases`` setting of odoo.conf matches whole names, and only valid database names are matched at all."""

import pytest

from engine.core import scope
from engine.core.config import Settings
from engine.core.errors import PreflightError, RestoreError
from engine.db import pg


def settings(pattern):
    return Settings(section={"databases": pattern})


@pytest.mark.parametrize(
    "name",
    [
        "acc_big\n",  # Python's '$' matches before a final new line: re.search let this through
        "acc_big\n\n",
        "\nacc_big",
        "acc_big ",
        " acc_big",
        "acc_big\x00",
        "acc_big;drop",
        "../acc_big",
        "-acc_big",
        "a" * 64,
        "",
        None,
        b"acc_big",
    ],
)
def test_a_name_that_is_no_database_name_is_refused_before_it_is_matched(name, monkeypatch):
    """With databases = ^acc_big$, nothing but acc_big itself passes: a new line, a space, a NUL are refused."""
    monkeypatch.delenv("SPP_BACKUP_DATABASES", raising=False)
    assert not scope.database_allowed(name, "serving", settings("^acc_big$"))
    assert not scope.database_allowed(name, "serving", settings(".*"))
    with pytest.raises(PreflightError, match="is not a database name"):
        scope.check_database(name, "serving", settings(".*"))
    with pytest.raises(PreflightError, match="is not a database name"):
        scope.check_target_database(name, "serving", settings(".*"))


def test_the_serving_database_must_be_a_name_too(monkeypatch):
    """A serving database name carried with a new line is not taken as the serving database."""
    monkeypatch.delenv("SPP_BACKUP_DATABASES", raising=False)
    assert scope.database_allowed("serving", "serving", settings(""))
    assert not scope.database_allowed("serving\n", "serving\n", settings(""))


@pytest.mark.parametrize(
    "pattern, allowed, refused",
    [
        ("^acc_big$", ["acc_big"], ["acc_big2", "xacc_big", "acc"]),
        ("acc_big", ["acc_big"], ["acc_big2", "xacc_big"]),  # no anchors: still the whole name
        ("prod|staging", ["prod", "staging"], ["prod_old", "old_staging", "prodstaging"]),
        ("^prod$|^staging$", ["prod", "staging"], ["prod_old", "staging2"]),
        ("openspp_.*", ["openspp_a", "openspp_"], ["x_openspp_a", "openspp"]),
        (".*_victim", ["db_victim"], ["db_victim2"]),
        (".*", ["anything", "a.b-c_d"], ["postgres", "template0", "template1"]),  # never a system database
    ],
)
def test_every_pattern_matches_the_whole_name(pattern, allowed, refused, monkeypatch):
    """A pattern allows a name only when it matches all of it, as if written between ^ and $."""
    monkeypatch.delenv("SPP_BACKUP_DATABASES", raising=False)
    for name in allowed:
        assert scope.database_allowed(name, "serving", settings(pattern)), name
        scope.check_database(name, "serving", settings(pattern))
    for name in refused:
        assert not scope.database_allowed(name, "serving", settings(pattern)), name
        with pytest.raises(PreflightError, match="databases setting"):
            scope.check_database(name, "serving", settings(pattern))


def test_the_environment_pattern_matches_whole_names_too(monkeypatch):
    """SPP_BACKUP_DATABASES, which takes precedence over odoo.conf, is read the same way."""
    monkeypatch.setenv("SPP_BACKUP_DATABASES", "^acc_big$")
    assert scope.database_allowed("acc_big", "serving", Settings())
    assert not scope.database_allowed("acc_big\n", "serving", Settings())
    assert not scope.database_allowed("acc_big_2", "serving", Settings())


def test_the_engine_checks_names_with_the_same_rule():
    """pg.check_db_name (every backup, restore and import target) refuses what scope refuses."""
    pg.check_db_name("acc_big")
    for name in ("acc_big\n", "a" * 64, "-x", ""):
        assert not scope.is_database_name(name)
        with pytest.raises(RestoreError, match="not a usable database name"):
            pg.check_db_name(name, error=RestoreError)
