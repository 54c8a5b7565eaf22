"""Fixtures for the sync tests.

pytest (rootdir conftest, no ``tests/__init__.py``) puts ``tests/`` on ``sys.path``, where the
folder ``tests/sync`` would shadow the real ``sync`` package as an empty namespace package.
Putting the repository root first makes ``import sync`` find the real one (a regular package
wins over namespace portions) when this folder is collected first. If another folder's tests
imported ``sync`` earlier, the namespace package is already cached, so these tests import
from the submodules (``sync.messages``...), which resolve either way. The lasting fix is
``pythonpath = .`` in setup.cfg's pytest section.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = str(Path(__file__).resolve().parents[2])
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from collections.abc import AsyncIterator, Callable, Iterable, Iterator  # noqa: E402
from typing import Any  # noqa: E402

import pytest  # noqa: E402

from sync.transport import MqttOptions, MqttTransport  # noqa: E402
from tests.helpers import Broker, start_broker  # noqa: E402

FAST = dict(backoff_initial_s=0.05, backoff_max_s=0.4, keepalive_s=5, connect_timeout_s=2.0)


@pytest.fixture
async def transports() -> AsyncIterator[Callable[..., MqttTransport]]:
    """Make transports with fast reconnects; every one made is closed after the test."""
    made: list[MqttTransport] = []

    def make(
        host: str, port: int, client_id: str, subscriptions: Iterable[tuple[str, int]] = (), **over: Any
    ) -> MqttTransport:
        t = MqttTransport(
            MqttOptions(host=host, port=port, client_id=client_id, **{**FAST, **over}), subscriptions
        )
        made.append(t)
        return t

    yield make
    for t in made:
        await t.close(publish_will=False, timeout=2)


@pytest.fixture
def make_broker(tmp_path: Path) -> Iterator[Callable[[str], Broker]]:
    """Start Mosquitto with extra config lines (TLS, passwords, ACLs); all are stopped after the test."""
    started: list[Broker] = []

    def make(extra_conf: str) -> Broker:
        d = tmp_path / f"broker{len(started)}"
        d.mkdir()
        # as root, Mosquitto drops to user "mosquitto" before reading certificates, which then
        # cannot read pytest's private tmp dir
        b = start_broker(d, extra_conf + ("user root\n" if os.geteuid() == 0 else ""))
        started.append(b)
        return b

    yield make
    for b in started:
        b.stop()
