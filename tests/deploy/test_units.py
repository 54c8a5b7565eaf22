"""The systemd units: they verify, cabinet.service is sandboxed tightly, and the cabinet's
libraries still work inside that sandbox's seccomp rules."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .support import REPO, UNIT_DIR, UNITS, exec_binaries, require_tool

SANDBOX = Path(__file__).with_name("sandbox.py")
WORKLOAD = Path(__file__).with_name("workload.py")
MAX_EXPOSURE = {"cabinet.service": 2.5, "cabinet-cloud.service": 2.5}


def analyze(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [require_tool("systemd-analyze"), *args], capture_output=True, text=True, timeout=60, cwd=cwd
    )


def unit_settings(unit: Path) -> dict[str, list[str]]:
    """Key -> values of a unit file (continuation lines joined, every section merged)."""
    text = re.sub(r"\\\n\s*", " ", unit.read_text())
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith(("#", ";", "[")) and "=" in line:
            key, value = line.split("=", 1)
            out.setdefault(key.strip(), []).append(value.strip())
    return out


def exposure(unit: Path) -> float:
    """The 'Overall exposure level' that ``systemd-analyze security --offline=true`` gives the unit."""
    r = analyze("security", "--offline=true", "--no-pager", str(unit), cwd=unit.parent)
    m = re.search(rf"Overall exposure level for {re.escape(unit.name)}:\s*([0-9.]+)", r.stdout)
    assert m, f"no exposure level in systemd-analyze output:\n{r.stdout}\n{r.stderr}"
    return float(m.group(1))


def test_the_units_are_all_there() -> None:
    names = {u.name for u in UNITS}
    assert {"cabinet.service", "cabinet-cloud.service", "cabinet-kiosk.service"} <= names


@pytest.mark.parametrize("unit", UNITS, ids=lambda u: u.name)
def test_unit_passes_systemd_analyze_verify(unit: Path, verify_root: Path) -> None:
    r = analyze("verify", f"--root={verify_root}", unit.name)
    # verify only *warns* about unknown keys and bad values (exit code 0), so any output fails too.
    assert r.returncode == 0 and not r.stderr.strip() and not r.stdout.strip(), r.stderr + r.stdout


def test_verify_check_catches_a_misspelt_key(verify_root: Path, tmp_path: Path) -> None:
    """The verify test can fail: the same check on a unit with a typo reports it."""
    root = tmp_path / "root"
    shutil.copytree(verify_root, root, symlinks=True)
    unit = root / "etc/systemd/system/cabinet.service"
    unit.write_text(unit.read_text().replace("WatchdogSec=", "WatchDogSec="))
    r = analyze("verify", f"--root={root}", "cabinet.service")
    assert "Unknown key 'WatchDogSec'" in r.stderr


@pytest.mark.parametrize("name", sorted(MAX_EXPOSURE))
def test_service_exposure_is_at_most_2_5(name: str) -> None:
    level = exposure(UNIT_DIR / name)
    assert level <= MAX_EXPOSURE[name], f"{name} exposure {level} > {MAX_EXPOSURE[name]}"


def test_exposure_rises_without_the_sandbox(tmp_path: Path) -> None:
    """The exposure parser reads a real number: stripping the sandbox makes it fail the bar."""
    bare = tmp_path / "cabinet.service"
    keep = ("Type=", "ExecStart=", "User=", "Group=", "[", "Description=")
    bare.write_text(
        "\n".join(
            line for line in (UNIT_DIR / "cabinet.service").read_text().splitlines() if line.startswith(keep)
        )
    )
    assert exposure(bare) > MAX_EXPOSURE["cabinet.service"]


def test_cabinet_service_contract() -> None:
    """What the cabinet process and the field rely on, beyond what systemd-analyze scores."""
    s = unit_settings(UNIT_DIR / "cabinet.service")
    assert s["Type"] == ["notify"] and s["NotifyAccess"] == ["main"]
    assert s["WatchdogSec"] and s["Restart"] == ["on-failure"]
    assert s["StartLimitBurst"] and s["StartLimitIntervalSec"]
    assert s["ExecStart"] == ["/opt/cabinet/venv/bin/cabinet run --config /etc/cabinet/cabinet.toml"]
    assert s["User"] == ["cabinet"] and "DynamicUser" not in s
    assert set(" ".join(s["SupplementaryGroups"]).split()) == {"dialout", "gpio"}
    assert s["DevicePolicy"] == ["closed"]
    assert {v.split()[0] for v in s["DeviceAllow"]} == {"char-ttyAMA", "char-ttyUSB", "char-gpiochip"}
    for d in ("StateDirectory", "ConfigurationDirectory", "LogsDirectory"):
        assert s[d] == ["cabinet"], d
    assert s["CapabilityBoundingSet"] == [""] and s["ProtectSystem"] == ["strict"]
    assert s["RestrictAddressFamilies"] == ["AF_INET AF_INET6 AF_UNIX"]
    # lgpio writes its notify FIFOs into the working directory: it must be writable.
    assert s["WorkingDirectory"] == ["/run/cabinet"] and s["RuntimeDirectory"] == ["cabinet"]


def test_sysusers_files_create_the_service_users(tmp_path: Path) -> None:
    tool = require_tool("systemd-sysusers")
    files = sorted((UNIT_DIR / "sysusers.d").glob("*.conf"))
    r = subprocess.run(
        [tool, "--dry-run", f"--root={tmp_path}", *map(str, files)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.returncode == 0, r.stderr
    for user in ("cabinet", "cabinet-kiosk", "cabinet-cloud"):
        assert f"Creating user '{user}'" in r.stderr + r.stdout
    needed = {
        u
        for unit in UNITS
        for key in ("User", "SupplementaryGroups")
        for v in unit_settings(unit).get(key, [])
        for u in v.split()
    }
    assert all(f"'{n}'" in r.stderr + r.stdout for n in needed), needed


def test_every_exec_line_runs_from_the_venv_or_the_os() -> None:
    for unit in UNITS:
        for program in exec_binaries(unit):
            assert program.startswith(("/opt/cabinet/venv/bin/", "/usr/bin/")), f"{unit.name}: {program}"


# --- the seccomp half of the sandbox, applied for real ---------------------------------------


@pytest.fixture(scope="module")
def onnx_models(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """Two small models of the kinds the cabinet runs: a dense layer and a tree ensemble."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    from skl2onnx import to_onnx
    from sklearn.ensemble import RandomForestClassifier

    d = tmp_path_factory.mktemp("models")
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((16, 64)).astype(np.float32), "W")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["h"]), helper.make_node("Sigmoid", ["h"], ["y"])],
        "dense",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 64])],
        [w],
    )
    dense = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    dense.ir_version = 8
    onnx.save(dense, d / "dense.onnx")
    x = rng.standard_normal((200, 6)).astype(np.float32)
    forest = RandomForestClassifier(n_estimators=5, max_depth=4, random_state=0).fit(x, x[:, 0] > 0)
    onnx.save(to_onnx(forest, x[:1], options={id(forest): {"zipmap": False}}, target_opset=17), d / "rf.onnx")
    shipped = sorted(str(p) for p in (REPO / "models").glob("*.onnx"))
    return [str(d / "dense.onnx"), str(d / "rf.onnx"), *shipped]


def sandboxed(unit: Path, *cmd: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SANDBOX), str(unit), "--", *cmd],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
    )


def test_cabinet_libraries_work_under_the_units_seccomp_filters(
    broker, onnx_models: list[str], tmp_path: Path
) -> None:
    """MemoryDenyWriteExecute=yes and the SystemCallFilter= of cabinet.service leave onnxruntime,
    numpy, cryptography, SQLite, pyserial, paho, aiohttp and gpiozero working."""
    pytest.importorskip("ctypes")
    r = sandboxed(
        UNIT_DIR / "cabinet.service",
        sys.executable,
        str(WORKLOAD),
        broker.host,
        str(broker.port),
        str(tmp_path),
        *onnx_models,
    )
    assert r.returncode == 0, f"{r.stdout}\n{r.stderr}"
    result = json.loads(r.stdout.strip().splitlines()[-1])
    assert result["passed"] == [
        "numpy",
        "onnxruntime",
        "crypto",
        "sqlite",
        "serial",
        "mqtt",
        "web",
        "gpio",
        "cbor",
        "project_imports",
    ]


PROBE = """
import json, mmap, os
out = {}
try:
    mmap.mmap(-1, 4096, prot=mmap.PROT_WRITE | mmap.PROT_EXEC); out["wx_mmap"] = 0
except OSError as e:
    out["wx_mmap"] = e.errno
try:
    os.chroot("/nonexistent-dir-for-the-probe"); out["chroot"] = 0
except OSError as e:
    out["chroot"] = e.errno
print(json.dumps(out))
"""


def test_the_sandbox_launcher_really_denies(tmp_path: Path) -> None:
    """Control for the test above: W+X memory and a @privileged call fail only inside the sandbox."""
    import errno

    free = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=30)
    assert json.loads(free.stdout) == {"wx_mmap": 0, "chroot": errno.ENOENT}
    jailed = sandboxed(UNIT_DIR / "cabinet.service", sys.executable, "-c", PROBE)
    assert json.loads(jailed.stdout) == {"wx_mmap": errno.EPERM, "chroot": errno.EPERM}, jailed.stderr


def test_docs_state_the_measured_exposure() -> None:
    """docs/deploy.md quotes the exposure levels; they must be the ones systemd-analyze gives now."""
    text = (REPO / "docs" / "deploy.md").read_text()
    m = re.search(r"rates it \*\*([0-9.]+)\*\* \(`cabinet-cloud.service`: ([0-9.]+)\)", text)
    assert m, "docs/deploy.md no longer quotes the exposure levels"
    assert float(m.group(1)) == exposure(UNIT_DIR / "cabinet.service")
    assert float(m.group(2)) == exposure(UNIT_DIR / "cabinet-cloud.service")
