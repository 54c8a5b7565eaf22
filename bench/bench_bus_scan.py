"""Full scan of a 48-slot cabinet over Modbus RTU on a pty: software time next to wire time.

The simulator (``cabinet-sim run``, 6 boards x 8 slots) runs in its own process, as it
would be a separate device; this process scans it with ``drivers.battery_bus.BatteryBus``
(one FC4 read per board, decoded into SlotReadings). A pty has no baud rate, so the time a
scan takes here is software time only (client, relay, server). The wire time of the same
transactions at 115200 baud 8N1 (10 bits per character) with a 3.5-character gap before
every frame is computed from the request and response byte counts.
Goal: software time <= 1/10 of wire time.

Run: ``./dev bench bus_scan`` (or ``.venv/bin/python -m bench.bench_bus_scan [--quick]``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bench.report import write_section
from drivers import register_map as rm
from drivers.battery_bus import BatteryBus

SLOTS, PER_BOARD, BAUD, BITS_PER_CHAR = 48, 8, 115200, 10


def wire_time_s(
    boards: list[tuple[int, int]], baud: int = BAUD, gap_chars: float = 3.5, gap_floor_s: float = 0.0
) -> float:
    """Seconds on the wire for one scan: per board an 8-byte FC4 request and a 5+2n byte reply, each after a gap."""
    char_s = BITS_PER_CHAR / baud
    gap = max(gap_chars * char_s, gap_floor_s)
    total = 0.0
    for _, slots in boards:
        request = 8  # unit, fc, address(2), count(2), crc(2)
        reply = 5 + 2 * rm.board_read_count(slots)  # unit, fc, byte count, data, crc(2)
        total += (request + reply) * char_s + 2 * gap
    return total


async def measure(scans: int) -> dict[str, float]:
    boards = [(u, PER_BOARD) for u in range(1, SLOTS // PER_BOARD + 1)]
    with tempfile.TemporaryDirectory() as tmp:
        tty = Path(tmp) / "ttySIM"
        sim = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "hardware_sim.cli", "run", "--slots", str(SLOTS), "--slots-per-board", str(PER_BOARD),
            "--pty", str(tty), "--control", "0", "--gpio", "0", "--speed", "1",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        try:
            json.loads(await asyncio.wait_for(sim.stdout.readline(), 30))  # type: ignore[union-attr]
            async with BatteryBus(str(tty), boards, baudrate=BAUD, timeout_s=0.5) as bus:
                for _ in range(10):  # warm up
                    await bus.scan()
                times = []
                for _ in range(scans):
                    t0 = time.perf_counter()
                    readings = await bus.scan()
                    times.append(time.perf_counter() - t0)
                if not all(r.known for r in readings) or len(readings) != SLOTS:
                    raise RuntimeError(f"scan incomplete: {bus.stats()}")
                errors = bus.stats()["timeouts"] + bus.stats()["crc_errors"]
        finally:
            sim.terminate()
            await sim.wait()
    times.sort()
    return {
        "median_s": statistics.median(times),
        "p95_s": times[int(0.95 * (len(times) - 1))],
        "wire_s": wire_time_s(boards),
        "wire_spec_gap_s": wire_time_s(boards, gap_floor_s=0.00175),
        "errors": errors,
        "scans": scans,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="bench_bus_scan", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--quick", action="store_true", help="50 scans instead of 500")
    ap.add_argument("--no-write", action="store_true", help="do not update BENCHMARKS.md")
    args = ap.parse_args(argv)
    r = asyncio.run(measure(50 if args.quick else 500))
    ratio = r["median_s"] / r["wire_s"]
    meets = "meets" if ratio <= 0.1 else "MISSES"
    print(
        f"48-slot scan over RTU/pty ({r['scans']} scans): software median {r['median_s'] * 1000:.2f} ms, "
        f"p95 {r['p95_s'] * 1000:.2f} ms; wire at 115200 8N1 {r['wire_s'] * 1000:.1f} ms; "
        f"ratio {ratio:.3f} (goal <= 0.1: {meets}); bus errors {r['errors']}"
    )
    if not args.no_write:
        cmd = ".venv/bin/python -m bench.bench_bus_scan" + (" --quick" if args.quick else "")
        body = (
            f"`{cmd}` ({r['scans']} scans of 6 boards x 8 slots, one FC4 read of "
            f"{rm.board_read_count(PER_BOARD)} registers per board; simulator in its own process)\n\n"
            "| what | ms per scan |\n|---|---|\n"
            f"| wire time at 115200 baud 8N1, 3.5-char gaps (computed, baseline) | {r['wire_s'] * 1000:.1f} |\n"
            f"| wire time with the spec's fixed 1.75 ms gap above 19200 baud | {r['wire_spec_gap_s'] * 1000:.1f} |\n"
            f"| software time, median (BatteryBus.scan over a pty) | {r['median_s'] * 1000:.2f} |\n"
            f"| software time, p95 | {r['p95_s'] * 1000:.2f} |\n"
            f"| ratio software / wire | **{ratio:.3f}** (goal <= 0.1: {meets}) |\n"
        )
        write_section("Slot bus scan (48 slots, RTU on a pty)", body)
    return 0 if ratio <= 0.1 and r["errors"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
