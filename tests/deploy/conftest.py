"""Fixtures for the deployment tests: a fake root for ``systemd-analyze verify``."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from .support import UNITS, exec_binaries, require_tool


@pytest.fixture(scope="session")
def verify_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory to pass as ``systemd-analyze verify --root``.

    ``verify`` refuses a unit whose ExecStart= binary does not exist, and the cabinet's
    binaries (/opt/cabinet/venv/bin/cabinet, /usr/bin/cage, ...) are not installed on the
    test machine. Rather than rewriting the units, the test verifies them *unchanged* inside
    a fake root: the distribution's own units (so sysinit.target, network-online.target ...
    resolve), our units in etc/systemd/system, and an executable stub at every path our
    units run. Everything else (keys, values, dependencies, sandbox options) is checked
    as on a real system.
    """
    require_tool("systemd-analyze")
    root = tmp_path_factory.mktemp("verify-root")
    for dist in (Path("/usr/lib/systemd/system"), Path("/lib/systemd/system")):
        if dist.is_dir():
            shutil.copytree(dist, root / "usr/lib/systemd/system", symlinks=True, dirs_exist_ok=True)
            break
    etc = root / "etc/systemd/system"
    etc.mkdir(parents=True)
    for unit in UNITS:
        shutil.copy(unit, etc / unit.name)
        for program in exec_binaries(unit):
            stub = root / program.lstrip("/")
            stub.parent.mkdir(parents=True, exist_ok=True)
            stub.write_text("#!/bin/sh\nexit 0\n")
            stub.chmod(0o755)
    return root
