"""The tests' own layout, checked on the source with ``ast``:

- no conftest.py imports another conftest (by ``import``, ``from ... import`` or loaded by path):
  what several areas share lives in a plain module, a fixture in a plugin that
  ``tests/conftest.py`` registers (``pytest_plugins``);
- no conftest.py defines again a fixture of those plugins (one rig, not copies);
- no test module reads a cabinet's private ``_tasks`` (``Cabinet.task(name)`` is public); an
  object's own ``self._tasks`` is its business.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent

_CONFTEST_NAME = re.compile(r"(^|[./\\])conftest(\.py)?$")


def _docstrings(tree: ast.AST) -> set[int]:
    """ids of the string constants that are docstrings or bare expression statements."""
    return {
        id(node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
    }


def conftest_imports(source: str) -> list[str]:
    """Where ``source`` (a conftest) imports a conftest module or names a conftest file: 'line: what'."""
    tree = ast.parse(source)
    found: list[str] = []
    docs = _docstrings(tree)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [f"{node.lineno}: import {a.name}" for a in node.names if _CONFTEST_NAME.search(a.name)]
        elif isinstance(node, ast.ImportFrom):
            module = "." * node.level + (node.module or "")
            if _CONFTEST_NAME.search(module) or any(a.name == "conftest" for a in node.names):
                found.append(f"{node.lineno}: from {module} import ...")
        elif (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and id(node) not in docs
            and _CONFTEST_NAME.search(node.value)
        ):
            found.append(f"{node.lineno}: {node.value!r}")  # loaded by path or by name
    return sorted(found, key=lambda hit: int(hit.split(":")[0]))


def private_task_reads(source: str) -> list[str]:
    """Where ``source`` reads ``_tasks`` of something other than ``self``: 'line: what'."""
    tree = ast.parse(source)
    found: list[str] = []

    def not_self(node: ast.expr) -> bool:
        return not (isinstance(node, ast.Name) and node.id == "self")

    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr == "_tasks" and not_self(node.value):
            found.append(f"{node.lineno}: {ast.unparse(node)}")
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in ("getattr", "hasattr", "setattr", "delattr")
            and len(node.args) >= 2
            and isinstance(node.args[1], ast.Constant)
            and node.args[1].value == "_tasks"
            and not_self(node.args[0])
        ):
            found.append(f"{node.lineno}: {ast.unparse(node)}")
        elif (
            isinstance(node, ast.Subscript)
            and isinstance(node.slice, ast.Constant)
            and node.slice.value == "_tasks"
        ):
            found.append(f"{node.lineno}: {ast.unparse(node)}")  # vars(x)["_tasks"], x.__dict__[...]
    return sorted(found, key=lambda hit: int(hit.split(":")[0]))


def fixtures_defined(source: str) -> set[str]:
    """Names of the pytest fixtures a module defines (``@pytest.fixture``, with or without arguments)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        for dec in node.decorator_list:
            call = dec if isinstance(dec, ast.Call) else None
            target = call.func if call else dec
            if not (
                (isinstance(target, ast.Attribute) and target.attr == "fixture")
                or (isinstance(target, ast.Name) and target.id == "fixture")
            ):
                continue
            named = [k.value for k in (call.keywords if call else []) if k.arg == "name"]
            if named and isinstance(named[0], ast.Constant) and isinstance(named[0].value, str):
                names.add(named[0].value)
            else:
                names.add(node.name)
    return names


def registered_plugins() -> list[str]:
    """``pytest_plugins`` of tests/conftest.py (module names)."""
    for node in ast.parse((TESTS / "conftest.py").read_text()).body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "pytest_plugins" for t in node.targets
        ):
            value = ast.literal_eval(node.value)
            return [value] if isinstance(value, str) else list(value)
    return []


def _conftests() -> Iterator[Path]:
    return iter(sorted(TESTS.rglob("conftest.py")))


def _rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


def test_no_conftest_imports_another_conftest() -> None:
    found = [f"{_rel(p)}:{hit}" for p in _conftests() for hit in conftest_imports(p.read_text())]
    assert not found, (
        "a conftest imports another conftest (put shared fixtures in a plugin registered in "
        "tests/conftest.py, shared helpers in a plain module):\n" + "\n".join(found)
    )


def test_the_plugins_fixtures_are_defined_once() -> None:
    plugins = registered_plugins()
    assert "tests.rigs" in plugins and "tests.cloud_db" in plugins
    theirs: dict[str, str] = {}
    for module in plugins:
        path = ROOT / (module.replace(".", "/") + ".py")
        for name in fixtures_defined(path.read_text()):
            assert name not in theirs, f"fixture {name} in both {theirs[name]} and {module}"
            theirs[name] = module
    assert {"cloud_keys", "make_rig", "rig", "db_url"} <= set(theirs)
    again = [
        f"{_rel(p)}: {name} (from {theirs[name]})"
        for p in _conftests()
        for name in sorted(fixtures_defined(p.read_text()) & set(theirs))
    ]
    assert not again, "a conftest defines a plugin's fixture again:\n" + "\n".join(again)


def test_no_test_reads_a_cabinets_private_tasks() -> None:
    found = [
        f"{_rel(p)}:{hit}" for p in sorted(TESTS.rglob("*.py")) for hit in private_task_reads(p.read_text())
    ]
    assert not found, "a test reads another object's _tasks (use Cabinet.task(name)):\n" + "\n".join(found)


def test_the_checks_find_what_they_look_for() -> None:
    bad_conftest = (
        '"""A conftest.py docstring is fine."""\n'
        "import tests.cabinet.conftest\n"
        "from tests.cabinet.conftest import rig\n"
        "from tests.cabinet import conftest\n"
        "from .conftest import make_rig\n"
        "from tests.conftest import until\n"
        "def load():\n"
        "    import conftest\n"
        "    spec = spec_from_file_location('x', ROOT / 'tests' / 'cabinet' / 'conftest.py')\n"
        "    return import_module('tests.web.conftest')\n"
    )
    assert [hit.split(":")[0] for hit in conftest_imports(bad_conftest)] == [
        str(n) for n in range(2, 11) if n != 7
    ]
    good_conftest = (
        '"""Loads nothing of tests/cabinet/conftest.py."""\n'
        "from tests.rigs import Rig\nfrom tests.helpers import until\nimport conftest_like\n"
    )
    assert conftest_imports(good_conftest) == []

    bad_test = (
        "poller = next(t for t in cab._tasks if t.get_name() == 'bus-poller')\n"
        "for t in getattr(self.cab, '_tasks', ()):\n"
        "    t.cancel()\n"
        "tasks = vars(cab)['_tasks']\n"
    )
    assert [hit.split(":")[0] for hit in private_task_reads(bad_test)] == ["1", "2", "4"]
    own = "class Link:\n    def stop(self):\n        for t in list(self._tasks):\n            t.cancel()\n"
    assert private_task_reads(own) == [] and private_task_reads("cab.task('bus-poller')") == []

    fixtures = (
        "@pytest.fixture\ndef a(): ...\n"
        "@pytest.fixture(scope='session')\nasync def b(): ...\n"
        "@fixture(name='c')\ndef make_c(): ...\n"
        "def helper(): ...\n"
    )
    assert fixtures_defined(fixtures) == {"a", "b", "c"}
