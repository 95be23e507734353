"""The two Odoo series' addons agree: one version, the same data files, the same Python, no file left behind.

The repository root is the Odoo 17.0 addon and series/19.0/spp_backup the
Odoo 19.0 one (README, "Two Odoo series, one addon"). These checks read
files only: no Odoo is imported.
"""

import ast
import os
import re

import tomllib

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SERIES19 = os.path.join(ROOT, "series", "19.0", "spp_backup")


def manifest(folder):
    with open(os.path.join(folder, "__manifest__.py"), encoding="utf-8") as handle:
        return ast.literal_eval(handle.read())


def test_one_version_in_pyproject_and_both_manifests():
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as handle:
        version = tomllib.load(handle)["project"]["version"]
    assert manifest(ROOT)["version"] == "17.0." + version
    assert manifest(SERIES19)["version"] == "19.0." + version


def test_both_manifests_say_the_same_but_their_series():
    m17, m19 = manifest(ROOT), manifest(SERIES19)
    for key in set(m17) | set(m19):
        if key not in ("version", "data"):
            assert m17.get(key) == m19.get(key), key
    # The same data files, under the same names (Odoo 19 keeps the wizards' views in views/).
    names17 = [os.path.basename(path) for path in m17["data"]]
    names19 = [re.sub(r"^wizard_", "", os.path.basename(path)) for path in m19["data"]]
    assert names17 == names19


def test_every_data_file_and_asset_of_each_series_exists_inside_its_addon():
    for folder in (ROOT, SERIES19):
        data = manifest(folder)
        for path in data["data"]:
            full = os.path.join(folder, path)
            assert os.path.isfile(full), full
            # Odoo reads data only from inside the addon: a link may point anywhere in the repository, not out.
            assert os.path.realpath(full).startswith(ROOT + os.sep), full
        for paths in data["assets"].values():
            for pattern in paths:
                relative = pattern.split("/", 1)[1]
                folder_part = os.path.join(folder, os.path.dirname(relative))
                assert os.path.isdir(folder_part), folder_part
                if "*" not in relative:
                    assert os.path.isfile(os.path.join(folder, relative)), relative


def test_the_odoo_19_addon_holds_no_python_of_its_own():
    """Its only Python is the manifest and the __init__ that takes the root's: behaviour lives once."""
    python = sorted(
        os.path.relpath(os.path.join(top, name), SERIES19)
        for top, _dirs, names in os.walk(SERIES19)
        for name in names
        if name.endswith(".py")
    )
    assert python == ["__init__.py", "__manifest__.py"]


def read(path):
    with open(path, encoding="utf-8") as handle:
        return handle.read()


def test_odoo_17_views_use_no_odoo_19_syntax_and_back():
    """What each series refuses in the other's XML stays on its own side."""
    for top, _dirs, names in os.walk(os.path.join(SERIES19, "views")):
        for name in names:
            text = read(os.path.join(top, name))
            assert "<tree" not in text and "oe_chatter" not in text and "kanban-box" not in text, name
    for folder in ("views", "wizards"):
        for name in os.listdir(os.path.join(ROOT, folder)):
            if name.endswith(".xml"):
                text = read(os.path.join(ROOT, folder, name))
                assert "<list" not in text and "<chatter" not in text and 't-name="card"' not in text, name
