"""deploy/install-pi.sh: release switching, rollback and the automatic switch back after a
failed start, run for real in a fake root (CABINET_ROOT) with systemctl replaced by a stub
(there is no systemd here; the stub fails `restart` for releases marked broken)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from .support import REPO

SCRIPT = REPO / "deploy" / "install-pi.sh"

SYSTEMCTL_STUB = """#!/bin/sh
echo "$*" >> "$CABINET_ROOT/systemctl.log"
cur=$(basename "$(readlink "$CABINET_ROOT/opt/cabinet/current")")
case "$1" in
    restart) [ -e "$CABINET_ROOT/broken-$cur" ] && exit 1; exit 0 ;;
    *) exit 0 ;;
esac
"""


@pytest.fixture
def fake_root(tmp_path: Path) -> Path:
    """Two installed releases (1.0.0, 1.1.0) and a stub systemctl on PATH."""
    for version in ("1.0.0", "1.1.0"):
        cabinet = tmp_path / "opt/cabinet/releases" / version / "venv/bin/cabinet"
        cabinet.parent.mkdir(parents=True)
        cabinet.write_text(f"#!/bin/sh\necho {version}\n")
        cabinet.chmod(0o755)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "systemctl").write_text(SYSTEMCTL_STUB)
    (bin_dir / "systemctl").chmod(0o755)
    return tmp_path


def run(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CABINET_ROOT": str(root), "PATH": f"{root / 'bin'}:{os.environ['PATH']}"}
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, env=env, timeout=60)


def link(root: Path, name: str) -> str:
    return os.readlink(root / "opt/cabinet" / name)


def runs(root: Path) -> str:
    """What /opt/cabinet/venv/bin/cabinet (the units' ExecStart) resolves to and prints."""
    return subprocess.run(
        [str(root / "opt/cabinet/venv/bin/cabinet")], capture_output=True, text=True, check=True
    ).stdout.strip()


def test_activate_switches_the_release_the_units_run(fake_root: Path) -> None:
    assert run(fake_root, "activate", "1.0.0").returncode == 0
    assert runs(fake_root) == "1.0.0"
    r = run(fake_root, "activate", "1.1.0")
    assert r.returncode == 0, r.stderr
    assert runs(fake_root) == "1.1.0"
    assert link(fake_root, "current") == "releases/1.1.0" and link(fake_root, "previous") == "releases/1.0.0"
    assert (fake_root / "systemctl.log").read_text().count("restart cabinet.service") == 2


def test_rollback_returns_to_the_release_that_ran_before(fake_root: Path) -> None:
    run(fake_root, "activate", "1.0.0")
    run(fake_root, "activate", "1.1.0")
    r = run(fake_root, "rollback")
    assert r.returncode == 0, r.stderr
    assert runs(fake_root) == "1.0.0" and link(fake_root, "previous") == "releases/1.1.0"
    status = run(fake_root, "status").stdout
    assert "1.0.0 (current)" in status and "1.1.0 (previous)" in status


def test_a_release_that_fails_to_start_is_switched_back_by_itself(fake_root: Path) -> None:
    run(fake_root, "activate", "1.0.0")
    (fake_root / "broken-1.1.0").touch()
    r = run(fake_root, "activate", "1.1.0")
    assert r.returncode != 0
    assert "rolled back to release 1.0.0" in r.stderr
    assert runs(fake_root) == "1.0.0"


def test_unknown_release_and_missing_previous_are_refused(fake_root: Path) -> None:
    r = run(fake_root, "activate", "9.9.9")
    assert r.returncode != 0 and "9.9.9 is not installed" in r.stderr
    r = run(fake_root, "rollback")
    assert r.returncode != 0 and "no previous release" in r.stderr


def test_cabinet_toml_example_is_a_valid_config() -> None:
    from cabinet import config

    c = config.load(REPO / "deploy" / "cabinet.toml.example")
    assert c["sync.broker_port"] == 8883 and c["sync.tls"] is True
    assert c["sync.key_file"].startswith("/etc/cabinet/tls/")
