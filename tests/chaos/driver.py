"""The people and the bad luck: renters, a hand at the cabinet, and the chaos monkey.

- App renters rent through the cloud API (``POST /api/rentals``): the cloud signs an eject
  that travels over MQTT to the cabinet.
- Pass renters scan an offline pass at the cabinet's local API (``POST /api/scan``).
- The hand (the people at the cabinet) takes whatever pack the simulator presents (most of
  the time: sometimes nobody takes it) and puts packs back into empty slots a little later.
- The monkey SIGKILLs the broker, the cabinet or the cloud at random and starts it again,
  and makes the cabinet's link slow, stalled or cut.

Every failure a person would see (cloud down, cabinet down, refused) is counted, never
raised: the run goes on, and the invariants are checked at the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, ClassVar

import aiohttp

from tests.chaos.rig import CABINET_ID, ApiFailure, Rig


@dataclass
class Tally:
    """What happened, for the summary."""

    counts: Counter[str] = field(default_factory=Counter)
    faults: list[str] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)

    def note(self, what: str) -> None:
        self.faults.append(f"{time.monotonic() - self.started:6.1f}s {what}")


class Hand:
    """The people at the cabinet: take presented packs, return held ones to empty slots."""

    def __init__(self, rig: Rig, rng: random.Random, tally: Tally, take_p: float = 0.9) -> None:
        self.rig, self.rng, self.tally, self.take_p = rig, rng, tally, take_p
        self.held: dict[str, float] = {}  # sn -> when to bring it back (monotonic)
        self.hold_s = (0.5, 4.0)
        self.ignored: dict[int, float] = {}  # slot -> until when nobody looks at it
        self.presented = 0

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.step()
            except Exception as e:  # the hand keeps going whatever the simulator says
                self.tally.counts["hand_errors"] += 1
                self.tally.note(f"hand: {e!r}")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.1)

    async def step(self) -> None:
        state = await self.rig.sim_state()
        now = time.monotonic()
        slots = state["slots"]
        self.presented = sum(1 for s in slots if s["presented"])
        for s in slots:
            if not s["presented"] or self.ignored.get(s["slot"], 0) > now:
                continue
            if self.rng.random() > self.take_p:
                self.ignored[s["slot"]] = now + 5.0  # nobody there: the cabinet takes it back
                self.tally.counts["packs_left"] += 1
                continue
            status, body = await self.rig.sim_post("/take", {"slot": s["slot"]})
            if status == 200:
                self.held[body["sn"]] = now + self.rng.uniform(*self.hold_s)
                self.tally.counts["packs_taken"] += 1
        for sn, due in list(self.held.items()):
            if due > now:
                continue
            empty = [s["slot"] for s in slots if s["battery"] is None]
            if not empty:
                continue
            slot = self.rng.choice(empty)
            status, _ = await self.rig.sim_post("/insert", {"slot": slot, "sn": sn})
            if status == 200:
                del self.held[sn]
                slots = [dict(x, battery={"sn": sn}) if x["slot"] == slot else x for x in slots]
                self.tally.counts["packs_returned"] += 1


@dataclass
class Renter:
    email: str
    token: str
    pass_text: str | None = None  # a pass renter scans this at the kiosk


class Renters:
    """App and pass renters, each renting again a few seconds after its last try."""

    def __init__(self, rig: Rig, rng: random.Random, tally: Tally) -> None:
        self.rig, self.rng, self.tally = rig, rng, tally
        self.app: list[Renter] = []
        self.passes: list[Renter] = []

    async def create(self, n_app: int, n_pass: int) -> None:
        for i in range(n_app):
            self.app.append(Renter(f"app{i}@chaos.invalid", await self.rig.renter(f"app{i}@chaos.invalid")))
        for i in range(n_pass):
            email = f"pass{i}@chaos.invalid"
            token = await self.rig.renter(email)
            p = await self.rig.call("POST", "/api/me/passes", token, {"max_rentals": 1})
            self.passes.append(Renter(email, token, p["qr_text"]))

    @property
    def everyone(self) -> list[Renter]:
        return [*self.app, *self.passes]

    async def run(self, stop: asyncio.Event, pause_s: tuple[float, float] = (1.0, 4.0)) -> None:
        tasks = [asyncio.create_task(self._loop(r, stop, pause_s)) for r in self.everyone]
        await asyncio.gather(*tasks)

    async def _loop(self, r: Renter, stop: asyncio.Event, pause_s: tuple[float, float]) -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.rng.uniform(*pause_s))
            if stop.is_set():
                return
            if r.pass_text is None:
                await self._app_rent(r)
            else:
                await self._scan(r)

    async def _app_rent(self, r: Renter) -> None:
        try:
            await self.rig.call("POST", "/api/rentals", r.token, {"cabinet_id": CABINET_ID})
            self.tally.counts["app_rent_requested"] += 1
        except ApiFailure as e:
            self.tally.counts[f"app_rent_http_{e.status}"] += 1
        except (aiohttp.ClientError, TimeoutError, OSError):
            self.tally.counts["app_rent_cloud_unreachable"] += 1

    async def _scan(self, r: Renter) -> None:
        assert self.rig.http is not None and r.pass_text is not None
        try:
            async with self.rig.http.post(
                self.rig.cabinet_url + "/api/scan", json={"code": r.pass_text},
                timeout=aiohttp.ClientTimeout(total=20),
            ) as resp:  # fmt: skip
                out: dict[str, Any] = await resp.json()
            key = out["status"] if out["status"] != "refused" else f"refused_{out.get('reason')}"
            self.tally.counts[f"pass_{key}"] += 1
        except (aiohttp.ClientError, TimeoutError, OSError, ValueError):
            self.tally.counts["pass_cabinet_unreachable"] += 1


class Monkey:
    """Kills and restarts parts at random; degrades the cabinet's link."""

    WEIGHTS: ClassVar[dict[str, int]] = {
        "broker": 2,
        "cabinet": 3,
        "cloud": 3,
        "link_cut": 2,
        "link_stall": 2,
        "link_slow": 2,
    }

    def __init__(
        self, rig: Rig, rng: random.Random, tally: Tally, gap_s: tuple[float, float] = (1.5, 4.0)
    ) -> None:
        self.rig, self.rng, self.tally, self.gap_s = rig, rng, tally, gap_s

    async def run(self, stop: asyncio.Event) -> None:
        kinds, weights = zip(*self.WEIGHTS.items(), strict=True)
        first = ["broker", "cabinet", "cloud", "link_cut", "link_stall", "link_slow"]
        self.rng.shuffle(first)  # every kind early, so even a short run sees each of them
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.rng.uniform(*self.gap_s))
            if stop.is_set():
                return
            kind = first.pop() if first else self.rng.choices(kinds, weights)[0]
            try:
                await self.strike(kind)
            except Exception as e:  # a part that will not come back is the end of the run
                self.tally.note(f"{kind}: could not recover: {e}")
                raise

    async def strike(self, kind: str) -> None:
        rig, link = self.rig, self.rig.link
        assert link is not None
        down = self.rng.uniform(0.2, 2.5)
        self.tally.counts[f"fault_{kind}"] += 1
        self.tally.note(f"{kind} for {down:.1f} s")
        if kind in ("broker", "cabinet", "cloud"):
            proc = getattr(rig, kind)
            await proc.kill()
            await asyncio.sleep(down)
            await getattr(rig, f"start_{kind}")()
        elif kind == "link_cut":
            link.cut()
        elif kind == "link_stall":
            link.stall(True)
            await asyncio.sleep(down)
            link.stall(False)
        elif kind == "link_slow":
            link.profile.delay_s, link.profile.jitter_s = (
                self.rng.uniform(0.1, 0.5),
                self.rng.uniform(0.0, 0.5),
            )
            await asyncio.sleep(down * 2)
            link.profile.delay_s, link.profile.jitter_s = 0.02, 0.03

    async def heal(self) -> None:
        """Everything up, the link clean."""
        rig, link = self.rig, self.rig.link
        assert link is not None
        link.stall(False)
        link.profile.delay_s = link.profile.jitter_s = 0.0
        for kind in ("broker", "cloud", "cabinet"):
            if not getattr(rig, kind).alive:
                await getattr(rig, f"start_{kind}")()
