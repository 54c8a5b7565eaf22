"""The cabinet: rent decision-to-unlock latency for an offline pass, resident memory, start-up time.

1. Latency: a real ``Cabinet`` (ledger on disk, WAL + FULL; bus over the simulator's RTU pty;
   locks on the simulator's GPIO link) rents with offline passes: the time from
   ``PassDesk.submit`` to the slot's lock output going high (measured on the cabinet's own
   gpiozero pin, so the lock pulse and the person are excluded). Each battery is taken and
   put back, so every rent is a full one. Baseline in the same run and loop: the bare
   pass signature check plus one raw durable sqlite3 insert (WAL, synchronous=FULL).
   Goal: p99 < 20 ms.
2. ``cabinet run --config FILE`` as its own process (sync off, web UI on a free port):
   start-up time from process start to ``READY=1`` on a NOTIFY_SOCKET made here, resident
   memory (VmRSS) right after READY and after N bus scans. Baselines: a bare Python start
   and the import of the cabinet's modules.

Run: ``./dev bench cabinet`` (or ``.venv/bin/python -m bench.bench_cabinet [--quick]``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.report import write_section
from cabinet import config as cfg
from cabinet.service import Cabinet
from hardware_sim.cabinet import SimCabinet, SimConfig
from hardware_sim.server import SimServer
from sync.passes import OfflinePass
from sync.signing import Signer, generate_private_key, public_key_b64

BIN = Path(sys.executable).parent
SLOTS = 8
PACKS = 6
POLL_S = 0.05


def pct(values: list[float], q: float) -> float:
    """The q-quantile (0..1), nearest rank."""
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q * len(s)) - 1))]


def config_data(
    data_dir: Path, pty: str, cloud_key: str, web_port: int | None, gpio: str
) -> dict[str, dict[str, Any]]:
    return {
        "cabinet": {"id": "CAB-BENCH", "data_dir": str(data_dir), "slots": SLOTS, "backup_interval_s": 3600},
        "bus": {
            "url": f"serial://{pty}",
            "slots_per_board": 4,
            "timeout_s": 0.1,
            "retries": 0,
            "poll_interval_s": POLL_S,
        },
        "locks": {"pin_factory": "cabinetsim", "sim_address": gpio, "pulse_s": 0.05, "jam_timeout_s": 0.5},
        "rent": {"min_soc": 50, "eject_timeout_s": 5.0},
        "sync": {"enabled": False, "cloud_keys": [cloud_key]},
        "web": {"enabled": web_port is not None, "host": "127.0.0.1", "port": web_port or 8080},
    }


def fill(sim: SimCabinet) -> None:
    for k in range(1, PACKS + 1):
        sim.insert(k, sn=f"PB{k:06X}", soc=0.95)


async def until(pred: Callable[[], Any], timeout: float = 20.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while not (r := (await pred()) if asyncio.iscoroutinefunction(pred) else pred()):
        if time.monotonic() > deadline:
            raise TimeoutError(f"waited {timeout} s for {what}")
        await asyncio.sleep(0.001)
    return r


# ---- 1. decision-to-unlock latency -----------------------------------------------------------


class Baseline:
    """The least any offline rent must do: check the pass signature, make one durable write."""

    def __init__(self, path: Path, cab: Cabinet) -> None:
        self.conn = sqlite3.connect(str(path), isolation_level=None)
        self.conn.execute("PRAGMA journal_mode = WAL")
        self.conn.execute("PRAGMA synchronous = FULL")
        self.conn.execute("CREATE TABLE events (seq INTEGER PRIMARY KEY, body BLOB)")
        self.verifier = cab.trust.verifier

    def once(self, text: str) -> float:
        t0 = time.perf_counter()
        p = self.verifier().verify_pass(text, ())
        self.conn.execute("BEGIN")
        self.conn.execute("INSERT INTO events (body) VALUES (?)", (p.pass_id.encode() * 4,))
        self.conn.execute("COMMIT")
        return time.perf_counter() - t0


async def measure_latency(n: int, tmp: Path) -> dict[str, Any]:
    signer = Signer(generate_private_key(), "k1")
    async with SimServer(SimConfig(slots=SLOTS, slots_per_board=4, seed=1, fill=0.0), speed=1.0) as sim:
        fill(sim.cabinet)
        cab = Cabinet(
            cfg.from_dict(
                config_data(
                    tmp / "lat",
                    str(sim.pty_path),
                    f"k1:{public_key_b64(signer.public_key)}",
                    None,
                    sim.gpio_address,
                ),
                "<bench>",
            )
        )
        await cab.start()
        try:
            assert cab.ledger is not None and cab.passes is not None and cab.locks is not None

            async def all_known() -> bool:
                return sum(1 for s in await cab.ledger.slots() if s.sn) == PACKS

            await until(all_known, what="the cabinet to record every battery")
            # probe: the cabinet's own lock output pins (gpiozero) report every level change here
            factory = cab.locks._locks[0].pin_factory
            forward = factory.on_output
            unlocked: list[float] = []

            def probe(name: str, level: bool) -> None:
                if level and name.startswith("LOCK"):
                    unlocked.append(time.perf_counter())
                forward(name, level)

            factory.on_output = probe
            base = Baseline(tmp / "baseline.db", cab)
            ours, bare = [], []
            now = time.time()
            for i in range(n):
                text = signer.sign_pass(OfflinePass(f"BENCH-{i}", f"user-{i}", now - 60, now + 3600, 1))
                bare.append(base.once(text))
                seen = len(unlocked)
                t0 = time.perf_counter()
                task = asyncio.create_task(cab.passes.submit(text))
                await until(lambda seen=seen: len(unlocked) > seen, 10, "the lock to open")
                ours.append(unlocked[seen] - t0)
                slot = await until(
                    lambda: next((s.number for s in sim.cabinet.slots if s.presented), None), 10, "the pack"
                )
                sn = sim.cabinet.take(slot)
                out = await asyncio.wait_for(task, 10)
                assert out.status == "started", out
                sim.cabinet.insert(slot, sn=sn)

                async def back(sn: str = sn) -> bool:
                    b = await cab.ledger.battery(sn)
                    return b is not None and b.place == "slot"

                await until(back, 10, "the return")
        finally:
            await cab.stop()
    ms = [x * 1000 for x in ours]
    bms = [x * 1000 for x in bare]
    return {
        "n": n,
        "p50": pct(ms, 0.5),
        "p99": pct(ms, 0.99),
        "max": max(ms),
        "base_p50": pct(bms, 0.5),
        "base_p99": pct(bms, 0.99),
    }


# ---- 2. the process: start-up and memory ------------------------------------------------------


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def run_process(config_path: Path, scans: int, log: Path) -> dict[str, float]:
    """One ``cabinet run``: seconds to READY, RSS at READY and after ``scans`` scan intervals."""
    sock_path = config_path.with_name(f"notify-{time.monotonic_ns()}.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(sock_path))
    sock.setblocking(False)
    env = {**os.environ, "NOTIFY_SOCKET": str(sock_path)}
    loop = asyncio.get_running_loop()
    with open(log, "ab") as err:  # noqa: ASYNC230  opened once per process start
        t0 = time.perf_counter()
        proc = await asyncio.create_subprocess_exec(
            str(BIN / "cabinet"),
            "run",
            "--config",
            str(config_path),
            "--log-level",
            "WARNING",
            env=env,
            stdout=err,
            stderr=err,
        )
    try:
        while True:
            msg = await asyncio.wait_for(loop.sock_recv(sock, 4096), 60)
            if b"READY=1" in msg.split(b"\n"):
                ready_s = time.perf_counter() - t0
                break
        rss_ready = rss_mb(proc.pid)
        await asyncio.sleep(scans * POLL_S)  # the poller scans every POLL_S: let it do `scans` of them
        rss_after = rss_mb(proc.pid)
        proc.send_signal(signal.SIGTERM)
        t1 = time.perf_counter()
        rc = await asyncio.wait_for(proc.wait(), 30)
        if rc != 0:
            raise RuntimeError(f"cabinet run exited {rc} on SIGTERM; see {log}")
        return {
            "ready_s": ready_s,
            "rss_ready": rss_ready,
            "rss_after": rss_after,
            "stop_s": time.perf_counter() - t1,
        }
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        sock.close()
        with contextlib.suppress(FileNotFoundError):
            sock_path.unlink()


IMPORTS = "import cabinet.service, cabinet.assemble, cabinet.web, drivers.battery_bus, drivers.locks, hardware_sim.pins"


def timed_python(code: str) -> float:
    """Seconds for ``python -c code`` (a baseline for the process start)."""
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True)
    return time.perf_counter() - t0


async def measure_process(scans: int, starts: int, tmp: Path) -> dict[str, Any]:
    signer = Signer(generate_private_key(), "k1")
    async with SimServer(SimConfig(slots=SLOTS, slots_per_board=4, seed=1, fill=0.0), speed=1.0) as sim:
        fill(sim.cabinet)
        data = config_data(
            tmp / "proc",
            str(sim.pty_path),
            f"k1:{public_key_b64(signer.public_key)}",
            free_port(),
            str(sim.gpio_address),
        )
        path = tmp / "cabinet.toml"
        path.write_text(to_toml(data))
        runs, bare, imports = [], [], []
        for i in range(starts):  # baselines interleaved with the starts: the machine's load drifts
            bare.append(await asyncio.to_thread(timed_python, "pass"))
            imports.append(await asyncio.to_thread(timed_python, IMPORTS))
            last = i == starts - 1
            runs.append(await run_process(path, scans if last else 0, tmp / "cabinet.log"))
    return {
        "runs": runs,
        "scans": scans,
        "bare": statistics.median(bare),
        "imports": statistics.median(imports),
    }


def to_toml(data: dict[str, dict[str, Any]]) -> str:
    def value(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, str):
            return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
        if isinstance(v, list):
            return "[" + ", ".join(value(x) for x in v) + "]"
        return repr(v)

    return "".join(
        f"[{s}]\n" + "".join(f"{k} = {value(v)}\n" for k, v in kv.items()) + "\n" for s, kv in data.items()
    )


# ---- report -------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer rents and scans")
    ap.add_argument("--rents", type=int, default=0, help="offline-pass rents (default 200, quick 30)")
    ap.add_argument(
        "--scans",
        type=int,
        default=0,
        help="bus scans before the second RSS reading (default 1200, quick 100)",
    )
    args = ap.parse_args(argv)
    rents = args.rents or (30 if args.quick else 200)
    scans = args.scans or (100 if args.quick else 1200)
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_TMP")) as tmp_s:
        tmp = Path(tmp_s)
        lat = asyncio.run(measure_latency(rents, tmp))
        print(
            f"decision-to-unlock: p50 {lat['p50']:.2f} ms, p99 {lat['p99']:.2f} ms, max {lat['max']:.2f} ms "
            f"(baseline p50 {lat['base_p50']:.2f} ms, p99 {lat['base_p99']:.2f} ms), {rents} rents"
        )
        proc = asyncio.run(measure_process(scans, 3, tmp))
    base = {"bare": proc["bare"], "imports": proc["imports"]}
    runs = proc["runs"]
    for i, r in enumerate(runs):
        print(
            f"start {i + 1}: READY after {r['ready_s']:.2f} s, RSS {r['rss_ready']:.1f} MB"
            + (f", after {scans} scans {r['rss_after']:.1f} MB" if i == len(runs) - 1 else "")
            + f", stop {r['stop_s']:.2f} s"
        )
    print(f"baselines: bare python {base['bare']:.2f} s, imports {base['imports']:.2f} s")
    verdict = "meets" if lat["p99"] < 20 else "MISSES"
    last = runs[-1]
    write_section(
        "Cabinet: rent latency, memory, start-up",
        f"`.venv/bin/python -m bench.bench_cabinet{' --quick' if args.quick else ''}` "
        f"(8 slots on the simulator: RTU over a pty, locks over the GPIO link; load average "
        f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores at the end)\n\n"
        f"Offline-pass rent, `PassDesk.submit` to the lock output going high ({rents} rents, each taken and put back; "
        "ledger on disk, WAL + FULL):\n\n"
        "| what | p50 ms | p99 ms |\n|---|---|---|\n"
        f"| baseline: pass signature check + one raw durable sqlite3 insert | {lat['base_p50']:.2f} | {lat['base_p99']:.2f} |\n"
        f"| decision to unlock (verify, pass use check, `rental_requested`, slot choice, lock on) | {lat['p50']:.2f} | **{lat['p99']:.2f}** |\n"
        f"| ratio to baseline | {lat['p50'] / lat['base_p50']:.1f} | {lat['p99'] / lat['base_p99']:.1f} |\n\n"
        f"p99 goal < 20 ms: **{verdict}** (max {lat['max']:.1f} ms).\n\n"
        "`cabinet run --config FILE` as its own process (sync off, web UI on, fault model loaded), "
        "start-up = process start to `READY=1` on a NOTIFY_SOCKET:\n\n"
        "| what | seconds | RSS MB |\n|---|---|---|\n"
        f"| baseline: bare `python -c pass` | {base['bare']:.2f} | |\n"
        f"| baseline: `python -c 'import ...'` of the cabinet's modules | {base['imports']:.2f} | |\n"
        f"| first start (new ledger) | {runs[0]['ready_s']:.2f} | {runs[0]['rss_ready']:.1f} |\n"
        + "".join(
            f"| restart {i} | {r['ready_s']:.2f} | {r['rss_ready']:.1f} |\n"
            for i, r in enumerate(runs[1:], 1)
        )
        + f"| after {scans} bus scans ({scans * POLL_S:.0f} s) | | **{last['rss_after']:.1f}** |\n"
        f"| stop on SIGTERM | {last['stop_s']:.2f} | |\n",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
