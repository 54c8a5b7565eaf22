"""A cabinet's install has none of the cloud's stack: SQLAlchemy and Alembic are the `cloud` extra."""

from __future__ import annotations

import configparser
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CLOUD_ONLY = ("sqlalchemy", "alembic", "psycopg")
NOT_ON_A_CABINET = (*CLOUD_ONLY, "pandas", "cloud")

#: Imports every module a cabinet runs, with the cloud's packages made unimportable.
PROBE = f"""
import importlib, pkgutil, sys

class Refuse:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {CLOUD_ONLY!r}:
            raise ImportError(f"{{name}} is not installed on a cabinet")
        return None

sys.meta_path.insert(0, Refuse())
for pkg in ("cabinet", "drivers", "sync", "models"):
    mod = importlib.import_module(pkg)
    for info in pkgutil.walk_packages(mod.__path__, pkg + "."):
        if info.name.startswith("models.training") or info.name.endswith(".__main__"):
            continue  # offline training, never on a cabinet; __main__ runs a command
        importlib.import_module(info.name)
loaded = sorted({{m.split(".")[0] for m in sys.modules}} & set({NOT_ON_A_CABINET!r}))
print(",".join(loaded))
"""


def requirements() -> tuple[list[str], dict[str, list[str]]]:
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    base = [r.strip() for r in cfg["options"]["install_requires"].splitlines() if r.strip()]
    extras = {
        name: [r.strip() for r in value.splitlines() if r.strip() and not r.strip().startswith("#")]
        for name, value in cfg["options.extras_require"].items()
    }
    return base, extras


def names(reqs: list[str]) -> set[str]:
    return {r.split("[")[0].split(">")[0].split("=")[0].split("<")[0].strip().lower() for r in reqs}


def test_the_cloud_stack_is_an_extra_not_a_requirement_of_every_install() -> None:
    base, extras = requirements()
    assert not names(base) & set(CLOUD_ONLY), base
    assert {"sqlalchemy", "alembic"} <= names(extras["cloud"])
    assert "psycopg" in names(extras["postgres"])


def test_every_cabinet_module_imports_without_the_cloud_stack_and_loads_none_of_it() -> None:
    out = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip() == "", f"a cabinet loaded: {out.stdout.strip()}"


def test_the_probe_notices_a_cabinet_module_that_needs_sqlalchemy(tmp_path: Path) -> None:
    (tmp_path / "cabinet").mkdir()
    (tmp_path / "cabinet" / "__init__.py").write_text("")
    (tmp_path / "cabinet" / "bad.py").write_text("import sqlalchemy\n")
    for pkg in ("drivers", "sync", "models"):
        (tmp_path / pkg).mkdir()
        (tmp_path / pkg / "__init__.py").write_text("")
    out = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False
    )
    assert out.returncode != 0 and "sqlalchemy is not installed on a cabinet" in out.stderr
