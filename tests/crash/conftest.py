"""A simulator process and the cabinet's fork server, for crash tests that script each step."""

from __future__ import annotations

import contextlib
import random
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from sync.signing import Signer, generate_private_key, public_key_b64
from tests.crash.harness import Launcher, Renter, SimProcess, Stats, write_config, write_passes


@dataclass
class CrashRig:
    """The simulator (own process), the fork server, and a renter that acts only when told."""

    work: Path
    sim: SimProcess
    launcher: Launcher
    renter: Renter
    stats: Stats

    @property
    def ledger_path(self) -> Path:
        return self.work / "data" / "ledger.db"

    async def post(self, path: str, **body: Any) -> tuple[int, dict[str, Any]]:
        return await self.renter._post(path, body)


@pytest.fixture
async def make_crash_rig(tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    """``await make_crash_rig(reseat_s=...)``: a rig whose renter does nothing by itself."""
    stack = contextlib.AsyncExitStack()

    async def make(reseat_s: float = 0.5) -> CrashRig:
        stats = Stats()
        sim = await SimProcess(tmp_path, seed=11, reseat_s=reseat_s).start()
        stack.push_async_callback(sim.stop)
        signer = Signer(generate_private_key(), "k1")
        write_config(tmp_path, sim.info["pty"], f"k1:{public_key_b64(signer.public_key)}", sim.info["gpio"])
        write_passes(tmp_path, signer)
        launcher = await Launcher(tmp_path, sim, stats).start()
        stack.push_async_callback(launcher.stop)
        renter = Renter(sim.url, stats, random.Random(1))
        await renter.start()
        await renter.pause()  # keep the HTTP session, act only when the test says
        stack.push_async_callback(renter.close)
        return CrashRig(tmp_path, sim, launcher, renter, stats)

    try:
        yield make
    finally:
        await stack.aclose()
