"""Start-up: `config check` refuses exactly what `cabinet run` refuses (exit 78, one line), and a
start that fails halfway closes what it had opened (ledger lock, bus, GPIO link, web listeners)."""

from __future__ import annotations

import fcntl
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from cabinet import config as cfg
from cabinet.service import Cabinet
from cabinet.sync_agent import SyncAgent
from tests.conftest import free_port, until

EX_CONFIG = 78


def base_config(tmp_path: Path) -> dict[str, dict[str, Any]]:
    """A config `cabinet run` accepts on any machine (nothing here is opened before the checks)."""
    return {
        "cabinet": {"id": "CAB-S1", "data_dir": str(tmp_path / "data"), "slots": 4},
        "bus": {"url": f"serial://{tmp_path / 'no-such-tty'}"},
        "locks": {"pin_factory": "mock"},
        "sync": {"enabled": False},
        "web": {"enabled": False},
    }


def toml(data: dict[str, dict[str, Any]]) -> str:
    def value(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, str):
            return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
        if isinstance(v, list):
            return "[" + ", ".join(value(x) for x in v) + "]"
        return repr(v)

    return "".join(
        f"[{section}]\n" + "".join(f"{k} = {value(v)}\n" for k, v in body.items()) + "\n"
        for section, body in data.items()
    )


def not_a_cert(tmp_path: Path) -> str:
    p = tmp_path / "garbage.pem"
    p.write_text("this is not a certificate\n")
    return str(p)


def a_file(tmp_path: Path) -> str:
    p = tmp_path / "a-file"
    p.write_text("")
    return str(p)


_UNLOADABLE = next((n for n in ("rpigpio", "lgpio") if cfg.pin_factory_problem(n)), None)

#: (id, the key named in the refusal, overrides built from tmp_path)
BAD: list[tuple[str, str, Any]] = [
    ("unknown bus scheme", "bus.url", lambda t: {"bus": {"url": "usb:///dev/ttyUSB0"}}),
    ("tcp bus without port", "bus.url", lambda t: {"bus": {"url": "tcp://10.0.0.5"}}),
    ("tcp bus with bad port", "bus.url", lambda t: {"bus": {"url": "tcp://10.0.0.5:99999"}}),
    ("serial bus without device", "bus.url", lambda t: {"bus": {"url": "serial://"}}),
    ("cloud key without id", "sync.cloud_keys", lambda t: {"sync": {"cloud_keys": ["AAAA"]}}),
    ("cloud key too short", "sync.cloud_keys", lambda t: {"sync": {"cloud_keys": ["k1:AAAA"]}}),
    (
        "missing broker CA",
        "sync.ca_file",
        lambda t: {"sync": {"enabled": True, "tls": True, "ca_file": str(t / "nope.pem")}},
    ),
    (
        "client cert that is no cert",
        "sync.cert_file",
        lambda t: {"sync": {"enabled": True, "cert_file": not_a_cert(t), "key_file": not_a_cert(t)}},
    ),
    (
        "client cert without key",
        "sync.cert_file",
        lambda t: {"sync": {"enabled": True, "cert_file": not_a_cert(t)}},
    ),
    ("missing model file", "health.model_path", lambda t: {"health": {"model_path": str(t / "m.onnx")}}),
    ("data dir is a file", "cabinet.data_dir", lambda t: {"cabinet": {"data_dir": a_file(t)}}),
    ("plain HTTP on the network", "web.host", lambda t: {"web": {"enabled": True, "host": "0.0.0.0"}}),
    (
        "HTTPS on the plain port",
        "web.tech_port",
        lambda t: {"web": {"enabled": True, "port": 8080, "tech_port": 8080}},
    ),
    (
        "missing HTTPS certificate",
        "web.tls_cert_file",
        lambda t: {"web": {"enabled": True, "tls_cert_file": str(t / "c.pem"), "tls_key_file": a_file(t)}},
    ),
    pytest.param(
        "pin factory not loadable here",
        "locks.pin_factory",
        lambda t: {"locks": {"pin_factory": _UNLOADABLE}},
        id="pin factory not loadable here",
        marks=pytest.mark.skipif(_UNLOADABLE is None, reason="every pin factory loads on this machine"),
    ),  # type: ignore[list-item]
]


def cabinet(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cabinet.cli", *args], capture_output=True, text=True, timeout=60
    )


def write_config(tmp_path: Path, over: dict[str, dict[str, Any]]) -> Path:
    data = base_config(tmp_path)
    for section, body in over.items():
        data.setdefault(section, {}).update(body)
    p = tmp_path / "cabinet.toml"
    p.write_text(toml(data))
    return p


def test_the_base_config_passes_config_check(tmp_path: Path) -> None:
    r = cabinet("config", "check", str(write_config(tmp_path, {})))
    assert r.returncode == 0, r.stderr
    assert "OK" in r.stdout


@pytest.mark.parametrize(
    ("case", "key", "over"),
    [pytest.param(*b, id=b[0]) if type(b) is tuple else b for b in BAD],
)
def test_config_check_and_run_refuse_the_same_bad_values_with_78_and_one_line(
    tmp_path: Path, case: str, key: str, over: Any
) -> None:
    path = write_config(tmp_path, over(tmp_path))
    for argv in (("config", "check", str(path)), ("run", "--config", str(path))):
        r = cabinet(*argv)
        lines = [line for line in r.stderr.splitlines() if line.strip()]
        assert r.returncode == EX_CONFIG, f"{argv[0]}: exit {r.returncode}\n{r.stderr[-2000:]}"
        assert len(lines) == 1, f"{argv[0]} must say it in one line:\n{r.stderr[-2000:]}"
        assert key in lines[0] and "config error" in lines[0], lines[0]
        assert str(path) in lines[0], "the line names the file"


def ledger_lock_free(data_dir: Path) -> bool:
    """Nobody holds the ledger's writer lock (flock conflicts across open files, even in one process)."""
    fd = os.open(data_dir / "ledger.db.lock", os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(fd)
    return True


def listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


async def test_a_start_that_fails_halfway_closes_what_it_opened(
    make_rig: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The sync agent (started after the ledger, bus, locks and web UI) fails: its broker CA file
    is missing (a config `cabinet run` would refuse up front; built here directly to reach start)."""
    from tests.web.conftest import test_pki

    pki = test_pki()
    opened: dict[str, Any] = {}
    real_begin, real_sync_start = Cabinet._start, SyncAgent.start

    async def remember(self: Cabinet) -> None:
        opened["cab"] = self
        await real_begin(self)

    async def start_after_the_web_listens(self: SyncAgent) -> None:
        web = opened["cab"].web
        await until(lambda: web.bound_port and web.tech_bound_port, what="both web listeners")
        await real_sync_start(self)

    monkeypatch.setattr(Cabinet, "_start", remember)
    monkeypatch.setattr(SyncAgent, "start", start_after_the_web_listens)
    port, tech_port = free_port(), free_port()
    with pytest.raises(OSError):  # paho: the CA file is not there
        await make_rig(
            sync={"enabled": True, "tls": True, "ca_file": str(tmp_path / "missing-ca.pem"),
                  "broker_host": "127.0.0.1", "broker_port": free_port()},
            web={"enabled": True, "host": "127.0.0.1", "port": port, "tech_host": "127.0.0.1",
                 "tech_port": tech_port, "tls_cert_file": str(pki.cert_file), "tls_key_file": str(pki.key_file)},
        )  # fmt: skip
    cab = opened["cab"]
    assert ledger_lock_free(cab.config.data_dir), "the ledger's writer lock is still held"
    assert not cab.bus._client.connected, "the slot board bus is still open"
    assert cab.pin_factory._sock.fileno() == -1, "the GPIO link to the simulator is still open"
    assert not listening(port) and not listening(tech_port), "a web listener is still open"
