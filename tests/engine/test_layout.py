"""The engine's shape: sub-packages by concern, no import cycle between its modules, and no Odoo."""

import ast
import pathlib

ENGINE = pathlib.Path(__file__).resolve().parents[2] / "engine"

# Each sub-package imports only from those of a lower rank (io and db do not import each other).
RANKS = {"core": 0, "io": 1, "db": 1, "formats": 2, "ops": 3, "pitr": 4, "service": 5}


def module_name(path):
    parts = ("engine",) + path.relative_to(ENGINE).with_suffix("").parts
    return ".".join(parts[:-1]) if parts[-1] == "__init__" else ".".join(parts)


def engine_modules():
    return {module_name(path): path for path in sorted(ENGINE.rglob("*.py"))}


def imports(text, name, modules, is_package=False):
    """The engine modules that module ``name`` (source ``text``) imports, at module level or inside a function."""
    package = name if is_package else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name in modules)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            for alias in node.names:
                if "%s.%s" % (source, alias.name) in modules:
                    found.add("%s.%s" % (source, alias.name))
                elif source in modules:
                    found.add(source)
    found.discard(name)
    return found


def graph():
    modules = engine_modules()
    return {
        name: imports(path.read_text(encoding="utf-8"), name, modules, path.name == "__init__.py")
        for name, path in modules.items()
    }


def find_cycles(edges):
    """Each import cycle of ``edges`` (module -> modules it imports), as the chain that closes it."""
    cycles, state = [], {}

    def visit(name, chain):
        state[name] = "open"
        for target in sorted(edges[name]):
            if state.get(target) == "open":
                cycles.append(" -> ".join(chain[chain.index(target) :] + [target]))
            elif target not in state:
                visit(target, chain + [target])
        state[name] = "done"

    for name in sorted(edges):
        if name not in state:
            visit(name, [name])
    return cycles


def test_no_import_cycle_between_engine_modules():
    """No engine module imports, directly or through others, a module that imports it back."""
    edges = graph()
    assert len(edges) > 30
    assert find_cycles(edges) == []


def test_the_cycle_check_sees_imports_hidden_in_functions():
    """Two modules importing each other inside functions, as runner.py and worker.py once did, are a cycle the
    check names; a one-way import is none."""
    modules = {"engine", "engine.runner", "engine.worker", "engine.core", "engine.core.errors"}
    runner = "def run_plan_file():\n    from .errors import BackupError\n    from .worker import execute\n"
    worker = "import json\n\ndef _backup():\n    from .runner import apply_retention\n"
    edges = {
        "engine.runner": imports(runner, "engine.runner", modules),
        "engine.worker": imports(worker, "engine.worker", modules),
    }
    assert edges == {"engine.runner": {"engine.worker"}, "engine.worker": {"engine.runner"}}
    assert find_cycles(edges) == ["engine.runner -> engine.worker -> engine.runner"]
    one_way = {"engine.ops.x": imports("from ..core import errors\n", "engine.ops.x", modules)}
    assert one_way == {"engine.ops.x": {"engine.core.errors"}}
    assert find_cycles({**one_way, "engine.core.errors": set()}) == []


def test_sub_packages_import_only_from_lower_ranks():
    """core <- io / db <- formats <- ops <- pitr <- service: a module imports from its own sub-package or from one of
    a lower rank, never from above (the engine root's version numbers are everyone's)."""
    wrong = []
    for name, targets in graph().items():
        own = name.split(".")[1] if name.count(".") else None
        for target in targets:
            theirs = target.split(".")[1] if target.count(".") else None
            if own is None or theirs is None or own == theirs or own not in RANKS:
                continue
            if RANKS[theirs] >= RANKS[own]:
                wrong.append("%s imports %s" % (name, target))
    assert set(RANKS) <= {path.name for path in ENGINE.iterdir() if path.is_dir() and path.name != "__pycache__"}
    assert wrong == []


def test_the_engine_never_imports_odoo():
    """Not one engine module imports odoo, anywhere in its file: the engine runs with Odoo stopped."""
    found = []
    for name, path in engine_modules().items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                roots = [alias.name.split(".")[0] for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level:
                roots = [(node.module or "").split(".")[0]]
            else:
                continue
            if "odoo" in roots:
                found.append("%s:%d" % (name, node.lineno))
    assert found == []


def test_every_sub_package_is_in_the_installed_command():
    """pyproject.toml names each engine package, so the installed spp-backup command has all of them."""
    import tomllib

    with open(ENGINE.parent / "pyproject.toml", "rb") as handle:
        listed = set(tomllib.load(handle)["tool"]["setuptools"]["packages"])
    found = {
        ".".join(("spp_backup_engine",) + path.parent.relative_to(ENGINE).parts) for path in ENGINE.rglob("__init__.py")
    }
    assert found == listed
