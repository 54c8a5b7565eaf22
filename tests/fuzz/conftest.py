"""Fixtures for the fuzz tests: a cabinet's command and pass path on a real ledger file.

Hypothesis runs many examples inside one test function, so these fixtures give a plain
event loop (``Desk.run``) instead of an async test: each example awaits the real cabinet
code on that loop, against one ledger file kept for the whole test.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from cabinet.commands import CommandHandler
from cabinet.controller import Controller, RentSettings
from cabinet.ledger import AsyncLedger, Ledger, verify
from cabinet.passes import PassDesk
from cabinet.trust import Trust
from sync.signing import Signer, generate_private_key, public_key_b64

CABINET = "CAB-FZ1"


class NoLocks:
    """The cabinet's lock bank when no slot holds a battery: renting never reaches a lock."""

    async def open(self, slot: int, timeout: float) -> Any:
        raise AssertionError(f"slot {slot}: a lock was pulsed, but the ledger knows no battery")

    def is_seated(self, slot: int) -> bool:
        return False


@dataclass
class Desk:
    """The cabinet's command handler and pass desk over one real ledger file."""

    loop: asyncio.AbstractEventLoop
    ledger: AsyncLedger
    path: Path
    signer: Signer
    commands: CommandHandler
    passes: PassDesk

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    def events(self, type_: str | None = None) -> list[Any]:
        evs = self.run(self.ledger.events_after(0, limit=1_000_000, max_bytes=1 << 40))
        return [e for e in evs if type_ is None or e.type == type_]

    def last_seq(self) -> int:
        return self.run(self.ledger.run(lambda lg: lg.last_seq))


@pytest.fixture
def desk(tmp_path: Path) -> Iterator[Desk]:
    """A cabinet without batteries (so renting ends in a clean abort), its ledger, and the cloud's key."""
    loop = asyncio.new_event_loop()
    signer = Signer(generate_private_key(), "k1")
    ledger = loop.run_until_complete(AsyncLedger.open(tmp_path / "ledger.db", CABINET))
    trust = Trust(CABINET, [f"k1:{public_key_b64(signer.public_key)}"], tmp_path, skew_s=600.0)
    controller = Controller(ledger, NoLocks(), RentSettings(eject_timeout_s=1.0, jam_timeout_s=0.1))
    commands = CommandHandler(ledger, controller, trust)
    passes = PassDesk(controller, trust.verifier, lambda: trust.revoked)
    d = Desk(loop, ledger, tmp_path / "ledger.db", signer, commands, passes)
    try:
        yield d
    finally:
        loop.run_until_complete(ledger.close())
        loop.close()
    report = verify(tmp_path / "ledger.db")
    assert report.ok, report.summary()


def now() -> float:
    return time.time()


__all__ = ["CABINET", "Desk", "Ledger", "now"]
