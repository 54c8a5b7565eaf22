"""Crash harness: a simulator process, a cabinet process killed at random points, a renter.

* The simulator runs as its own process (``cabinet-sim run`` with an RTU pty, the GPIO link
  and the control API), so the batteries' physical truth survives every crash.
* The cabinet runs as another process (``workload.py``, a real ``cabinet.service.Cabinet``
  that rents in a loop), forked by a small fork server so a restart costs no imports.
* A renter (here, over the simulator's control API) takes presented batteries at random
  moments, or leaves them, and brings batteries back into empty slots, whether the cabinet
  is alive or not: a person at the cabinet does not know it just crashed.

The harness SIGKILLs the cabinet at random points of rent and return (right after start,
after a rent request, after a take, after a return, after an outcome), restarts it each
time, and at the end checks the ledger against the simulator (:func:`check_run`).

Used by ``tests/crash/test_crash_safety.py`` (about a hundred kills) and, as a script, by
``bench/soak_crash.py`` (thousands)::

    python -m tests.crash.harness --kills 2000 --seed 7 [--work DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import signal
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from sync.passes import OfflinePass
from sync.signing import Signer, generate_private_key, public_key_b64
from tests.crash.checks import (
    CABINET_ID,
    check_run,
    ledger_slots,
    recovery_counts,
    requested_rentals,
    verify_cli,
)

ROOT = Path(__file__).resolve().parents[2]
WORKLOAD = Path(__file__).with_name("workload.py")
BIN = Path(sys.executable).parent
SLOTS = 8
PACKS = 6  # batteries in the cabinet at the start
RESEAT_S = 0.5  # the simulator pushes an untaken pack back after this (real seconds)
EJECT_TIMEOUT_S = 1.5  # the cabinet gives up on a presented pack after this: > RESEAT_S + a tick
TAKE_WITHIN_S = 0.35  # the renter takes (when it does) within this of seeing the pack presented
TRIGGERS = ("start", "req", "take", "insert", "out")


@dataclass
class Stats:
    """What happened during a run (printed as the soak's summary)."""

    kills: int = 0
    kill_points: Counter[str] = field(default_factory=Counter)
    fallback_kills: int = 0  # the trigger did not come in time: killed anyway
    takes: list[tuple[str, int]] = field(default_factory=list)  # (sn, slot), in order
    missed_takes: int = 0  # the pack was pushed back before the renter's hand got there
    inserts: list[tuple[str, int]] = field(default_factory=list)
    acks: list[tuple[str, str, str, int, str]] = field(
        default_factory=list
    )  # rental, status, reason, slot, sn
    unhealthy: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    seconds: float = 0.0
    timeline: list[str] = field(
        default_factory=list
    )  # what happened when (CLOCK_BOOTTIME, as the ledger's at_mono)

    def note(self, what: str) -> None:
        self.timeline.append(f"{time.clock_gettime(time.CLOCK_BOOTTIME):.3f} {what}")

    def summary(self) -> dict[str, Any]:
        return {
            "kills": self.kills,
            "kill_points": dict(self.kill_points),
            "fallback_kills": self.fallback_kills,
            "takes": len(self.takes),
            "missed_takes": self.missed_takes,
            "returns": len(self.inserts),
            "acknowledged_outcomes": dict(Counter(a[1] for a in self.acks)),
            "seconds": round(self.seconds, 1),
            "kills_per_s": round(self.kills / self.seconds, 2) if self.seconds else None,
        }


async def spawn(*args: str, log: Path, **kwargs: Any) -> asyncio.subprocess.Process:
    """A child process whose stderr is appended to ``log`` (our copy of the file is closed at once)."""
    with open(log, "ab") as err:  # noqa: ASYNC230  a local file, opened once per process start
        return await asyncio.create_subprocess_exec(*args, stderr=err, **kwargs)


# ---- the simulator process ----------------------------------------------------------------


class SimProcess:
    """``cabinet-sim run`` on free ports, with a pty symlink under ``work``."""

    def __init__(self, work: Path, seed: int, reseat_s: float = RESEAT_S) -> None:
        self.work, self.seed, self.reseat_s = work, seed, reseat_s
        self.proc: asyncio.subprocess.Process | None = None
        self.info: dict[str, Any] = {}

    async def start(self) -> SimProcess:
        self.proc = await spawn(
            str(BIN / "cabinet-sim"),
            "run",
            "--slots",
            str(SLOTS),
            "--slots-per-board",
            "4",
            "--seed",
            str(self.seed),
            "--fill",
            "0",
            "--reseat",
            str(self.reseat_s),
            "--pty",
            str(self.work / "ttySIM"),
            "--control",
            "0",
            "--gpio",
            "0",
            stdout=asyncio.subprocess.PIPE,
            log=self.work / "sim.log",
        )
        assert self.proc.stdout is not None
        line = await asyncio.wait_for(self.proc.stdout.readline(), 20)
        if not line:
            raise RuntimeError(f"simulator did not start: {(self.work / 'sim.log').read_text()[-2000:]}")
        self.info = json.loads(line)
        async with aiohttp.ClientSession() as http:
            for n in range(1, PACKS + 1):  # fleet packs, full enough to rent, two slots left free
                async with http.post(
                    self.url + "/insert",
                    json={"slot": n, "sn": f"PB{self.seed % 256:02X}{n:04X}", "soc": 0.9},
                ) as r:
                    assert r.status == 200, await r.text()
        return self

    @property
    def url(self) -> str:
        return str(self.info["control"])

    async def stop(self) -> None:
        if self.proc and self.proc.returncode is None:
            self.proc.terminate()
            try:
                await asyncio.wait_for(self.proc.wait(), 10)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()


# ---- the cabinet's fork server ----------------------------------------------------------------


class Launcher:
    """Drives workload.py's fork server and follows what its cabinet processes report."""

    def __init__(self, work: Path, sim: SimProcess, stats: Stats) -> None:
        self.work, self.sim, self.stats = work, sim, stats
        self.proc: asyncio.subprocess.Process | None = None
        self.lines: asyncio.Queue[list[str]] = asyncio.Queue()
        self.listeners: list[asyncio.Queue[list[str]]] = []
        self._reader: asyncio.Task[None] | None = None
        self._started_at: dict[str, float] = {}  # pid -> when it was forked
        self.last_ready_start = 0.0  # fork time of the newest cabinet that finished start-up
        self.acked_at: dict[str, float] = {}  # battery -> when a cabinet last acknowledged its rental

    async def start(self) -> Launcher:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self.proc = await spawn(
            sys.executable,
            str(WORKLOAD),
            "serve",
            str(self.work / "cabinet.toml"),
            "--passes",
            str(self.work / "passes.txt"),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            log=self.work / "cabinet.log",
            env=env,
            cwd=str(ROOT),
        )
        self._reader = asyncio.create_task(self._read())
        return self

    async def _read(self) -> None:
        assert self.proc and self.proc.stdout
        while line := await self.proc.stdout.readline():
            words = line.decode(errors="replace").split()
            if not words:
                continue
            now = time.monotonic()
            if words[0] == "started":
                self._started_at[words[1]] = now
            elif words[0] == "ready":
                self.last_ready_start = max(self.last_ready_start, self._started_at.get(words[1], 0.0))
            elif words[0] == "out" and len(words) == 7:
                self.stats.acks.append((words[2], words[3], words[4], int(words[5]), words[6]))
                if words[3] == "started":
                    self.acked_at[words[6]] = now
            elif words[0] == "unhealthy":
                self.stats.unhealthy.append(" ".join(words[1:]))
            self.stats.note(" ".join(words))
            for q in [self.lines, *self.listeners]:
                q.put_nowait(words)

    async def expect(self, kind: str, timeout: float = 20.0) -> list[str]:
        """The next line of ``kind`` (``started``, ``exit``) from the fork server."""
        deadline = time.monotonic() + timeout
        while True:
            words = await asyncio.wait_for(self.lines.get(), max(0.01, deadline - time.monotonic()))
            if words[0] == kind:
                return words

    async def spawn(self, mode: str, seed: int) -> int:
        """Fork one cabinet process (``run``: renting, ``idle``: not); returns its pid."""
        assert self.proc and self.proc.stdin
        self.proc.stdin.write(f"{mode} {seed}\n".encode())
        await self.proc.stdin.drain()
        return int((await self.expect("started"))[1])

    async def stop(self) -> None:
        if self.proc and self.proc.returncode is None:
            assert self.proc.stdin
            self.proc.stdin.close()
            try:
                await asyncio.wait_for(self.proc.wait(), 15)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        if self._reader:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader


# ---- the renter ---------------------------------------------------------------------------------


class Renter:
    """A person at the cabinet, through the simulator's control API.

    Takes a presented pack with probability ``p_take`` at a random moment within
    TAKE_WITHIN_S of seeing it (the cabinet waits EJECT_TIMEOUT_S, the simulator pushes the
    pack back after RESEAT_S, so a take is never later than the cabinet's patience), and
    brings a battery it holds back into a random empty slot now and then.

    With a ``launcher``, a battery is brought back only once a cabinet could have seen it
    gone: its rental was acknowledged, or a cabinet forked after the take finished start-up
    (its recovery scan came after the take). A battery taken and put back while no cabinet
    was looking leaves no trace any cabinet could find, so no check could ask for one.
    """

    def __init__(
        self,
        url: str,
        stats: Stats,
        rng: random.Random,
        p_take: float = 0.85,
        returns_per_s: float = 1.5,
        poll_s: float = 0.02,
        launcher: Launcher | None = None,
    ) -> None:
        self.url, self.stats, self.rng, self.launcher = url, stats, rng, launcher
        self._taken_at: dict[str, float] = {}
        self.p_take, self.returns_per_s, self.poll_s = p_take, returns_per_s, poll_s
        self.events: list[asyncio.Queue[tuple[str, str, int]]] = []
        self._plans: dict[tuple[int, str], float | None] = {}  # (slot, sn) presented -> take at
        self._task: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> Renter:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        self._task = asyncio.create_task(self._run())
        return self

    async def state(self) -> dict[str, Any]:
        assert self._session
        async with self._session.get(self.url + "/state") as r:
            return await r.json()  # type: ignore[no-any-return]

    async def _post(self, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        assert self._session
        async with self._session.post(self.url + path, json=body) as r:
            return r.status, await r.json()

    def _tell(self, what: str, sn: str, slot: int) -> None:
        for q in self.events:
            q.put_nowait((what, sn, slot))

    async def _run(self) -> None:
        last = time.monotonic()
        while True:
            await asyncio.sleep(self.poll_s)
            st = await self.state()
            now = time.monotonic()
            presented = {
                (s["slot"], s["battery"]["sn"]) for s in st["slots"] if s["presented"] and s["battery"]
            }
            for key in list(self._plans):
                if key not in presented:
                    del self._plans[key]
            for key in presented:
                if key not in self._plans:
                    take = self.rng.random() < self.p_take
                    self._plans[key] = now + self.rng.uniform(0, TAKE_WITHIN_S) if take else None
            for (slot, sn), at in list(self._plans.items()):
                if at is not None and now >= at:
                    self._plans[(slot, sn)] = None
                    status, body = await self._post("/take", {"slot": slot})
                    if status == 200:
                        self.stats.takes.append((body["sn"], slot))
                        self._taken_at[body["sn"]] = time.monotonic()
                        self.stats.note(f"renter took {body['sn']} from slot {slot}")
                        self._tell("take", body["sn"], slot)
                    else:
                        self.stats.missed_takes += 1
                        self.stats.note(f"renter missed slot {slot}: {body}")
            if st["out"] and self.rng.random() < self.returns_per_s * (now - last):
                empty = [s["slot"] for s in st["slots"] if s["battery"] is None]
                held = [sn for sn in st["out"] if self._seen_gone(sn)]
                if empty and held:
                    sn, slot = self.rng.choice(held), self.rng.choice(empty)
                    status, body = await self._post("/insert", {"slot": slot, "sn": sn})
                    if status == 200:
                        self.stats.inserts.append((sn, slot))
                        self.stats.note(f"renter put {sn} into slot {slot}")
                        self._tell("insert", sn, slot)
            last = now

    def _seen_gone(self, sn: str) -> bool:
        taken = self._taken_at.get(sn)
        if self.launcher is None or taken is None:
            return True
        return self.launcher.acked_at.get(sn, 0.0) > taken or self.launcher.last_ready_start > taken

    async def pause(self) -> None:
        """Stop acting (a take already decided is dropped: the pack goes back)."""
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def close(self) -> None:
        await self.pause()
        if self._session:
            await self._session.close()


# ---- set-up -------------------------------------------------------------------------------------


def write_config(work: Path, pty: str, cloud_key: str, gpio: str) -> Path:
    """The cabinet's TOML config: fast scans and short timeouts; sync and web off (no broker, no port)."""
    text = f"""\
[cabinet]
id = "{CABINET_ID}"
data_dir = "{work / "data"}"
slots = {SLOTS}
backup_interval_s = 3600

[bus]
url = "serial://{pty}"
slots_per_board = 4
timeout_s = 0.1
retries = 0
poll_interval_s = 0.05

[locks]
sim_address = "{gpio}"
pin_factory = "cabinetsim"
pulse_s = 0.05
jam_timeout_s = 0.4

[rent]
min_soc = 5
eject_timeout_s = {EJECT_TIMEOUT_S}

[sync]
enabled = false
cloud_keys = ["{cloud_key}"]

[web]
enabled = false
"""
    path = work / "cabinet.toml"
    path.write_text(text)
    return path


def write_passes(work: Path, signer: Signer, n: int = 3) -> list[str]:
    """``n`` offline passes valid for a day, one rental at a time each."""
    now = time.time()
    texts = [
        signer.sign_pass(OfflinePass(f"PASS-{i}", f"pass-user-{i}", now, now + 86400, 1)) for i in range(n)
    ]
    (work / "passes.txt").write_text("\n".join(texts) + "\n")
    return texts


# ---- the kill loop -----------------------------------------------------------------------------


async def _wait_trigger(launcher: Launcher, renter: Renter, pid: int, trigger: str, timeout: float) -> bool:
    """Wait for ``trigger`` in cabinet ``pid``'s life; False when it did not come in time."""
    if trigger == "start":
        return True
    lines: asyncio.Queue[list[str]] = asyncio.Queue()
    acts: asyncio.Queue[tuple[str, str, int]] = asyncio.Queue()
    launcher.listeners.append(lines)
    renter.events.append(acts)
    try:
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            if trigger in ("take", "insert"):
                with contextlib.suppress(TimeoutError):
                    if (await asyncio.wait_for(acts.get(), left))[0] == trigger:
                        return True
            else:
                with contextlib.suppress(TimeoutError):
                    words = await asyncio.wait_for(lines.get(), left)
                    if words[0] in (trigger, "pass" if trigger == "req" else "") and words[1] == str(pid):
                        return True
        return False
    finally:
        launcher.listeners.remove(lines)
        renter.events.remove(acts)


async def kill_loop(
    launcher: Launcher,
    renter: Renter,
    stats: Stats,
    kills: int,
    rng: random.Random,
    deadline: float | None = None,
    verify_every: int = 0,
    ledger_path: Path | None = None,
) -> None:
    """Start a renting cabinet, SIGKILL it at a random point, again, ``kills`` times."""
    for i in range(kills):
        if deadline is not None and time.monotonic() > deadline:
            break
        pid = await launcher.spawn("run", rng.randrange(1 << 30))
        trigger = rng.choice(TRIGGERS)
        delays = {"start": 0.3, "req": 0.15, "take": 0.1, "insert": 0.15, "out": 0.05}
        if not await _wait_trigger(launcher, renter, pid, trigger, timeout=3.0):
            stats.fallback_kills += 1
        await asyncio.sleep(rng.uniform(0, delays[trigger]))
        with contextlib.suppress(ProcessLookupError):
            stats.note(f"SIGKILL {pid} ({trigger})")
            os.kill(pid, signal.SIGKILL)
        words = await launcher.expect("exit")
        if words[1] != str(pid) or words[2] != "-9":
            stats.errors.append(
                f"kill {i}: cabinet {pid} ended with {words[2]} before the kill (see cabinet.log)"
            )
        stats.kills += 1
        stats.kill_points[trigger] += 1
        if verify_every and ledger_path is not None and stats.kills % verify_every == 0:
            rc, out = await verify_cli(ledger_path)  # between two cabinets: nobody writes
            if rc:
                stats.errors.append(
                    f"after kill {stats.kills}: cabinet ledger verify exit {rc}: {out[-2000:]}"
                )


async def settle(launcher: Launcher, renter: Renter, ledger_path: Path, timeout: float = 15.0) -> int:
    """Run one last (idle) cabinet until its ledger shows the simulator's slots; returns its pid."""
    pid = await launcher.spawn("idle", 0)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        st = await renter.state()
        if not any(s["presented"] for s in st["slots"]):
            want = {s["slot"]: s["battery"]["sn"] if s["battery"] else None for s in st["slots"]}
            if ledger_slots(ledger_path, SLOTS) == want and not requested_rentals(ledger_path):
                break
        await asyncio.sleep(0.1)
    await asyncio.sleep(0.3)  # a few more scans: anything still to record is recorded
    os.kill(pid, signal.SIGTERM)
    words = await launcher.expect("exit")
    if words[2] != "0":
        raise AssertionError(f"the last cabinet {pid} did not stop cleanly on SIGTERM: exit {words[2]}")
    return pid


@dataclass
class RunResult:
    stats: Stats
    problems: list[str]
    verify_rc: int
    verify_out: str
    recovery: dict[str, int]


async def run_crash(
    work: Path, kills: int, seed: int, max_seconds: float | None = None, verify_every: int = 0
) -> RunResult:
    """The whole crash run in ``work``: start everything, kill ``kills`` times, settle, check."""
    await asyncio.to_thread(work.mkdir, parents=True, exist_ok=True)
    rng = random.Random(seed)
    stats = Stats()
    t0 = time.monotonic()
    signer = Signer(generate_private_key(), "k1")
    sim = await SimProcess(work, seed).start()
    launcher = renter = None
    try:
        write_config(work, sim.info["pty"], f"k1:{public_key_b64(signer.public_key)}", sim.info["gpio"])
        write_passes(work, signer)
        launcher = await Launcher(work, sim, stats).start()
        renter = await Renter(sim.url, stats, random.Random(seed + 1), launcher=launcher).start()
        deadline = None if max_seconds is None else t0 + max_seconds
        ledger_path = work / "data" / "ledger.db"
        await kill_loop(launcher, renter, stats, kills, rng, deadline, verify_every, ledger_path)
        await renter.pause()
        await settle(launcher, renter, ledger_path)
        sim_state = await renter.state()
        stats.seconds = time.monotonic() - t0
        await asyncio.to_thread((work / "timeline.log").write_text, "\n".join(stats.timeline) + "\n")
        rc, out = await verify_cli(ledger_path)
        problems = stats.errors + [f"cabinet unhealthy: {u}" for u in stats.unhealthy]
        problems += check_run(ledger_path, sim_state, stats)
        return RunResult(stats, problems, rc, out, recovery_counts(ledger_path, stats))
    finally:
        if renter:
            await renter.close()
        if launcher:
            await launcher.stop()
        await sim.stop()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kills", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=int(time.time()) % 100_000)
    ap.add_argument("--max-seconds", type=float, help="stop killing after this long")
    ap.add_argument("--work", type=Path, help="keep the run's files here (default: a temporary dir)")
    ap.add_argument("--verify-every", type=int, default=0, help="also run ledger verify after every N kills")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="crash-") as tmp:
        work = args.work or Path(tmp)
        res = asyncio.run(run_crash(work, args.kills, args.seed, args.max_seconds, args.verify_every))
    summary = {
        "seed": args.seed,
        **res.stats.summary(),
        **res.recovery,
        "verify_exit": res.verify_rc,
        "problems": len(res.problems),
    }
    print(json.dumps(summary, indent=2))
    for p in res.problems[:50]:
        print("PROBLEM:", p)
    if res.verify_rc:
        print(res.verify_out)
    return 1 if res.problems or res.verify_rc else 0


if __name__ == "__main__":
    sys.exit(main())
