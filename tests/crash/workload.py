"""The cabinet process of the crash test: a real ``cabinet.service.Cabinet`` that rents in a loop.

It builds the cabinet exactly as ``cabinet run`` does (same config file, the simulator's
``cabinetsim`` pin factory over the GPIO link, Modbus RTU over the simulator's pty), so
start-up, ``Controller.recover()``, the bus poller and returns all run for real. On top it
asks for a rental every few tens of milliseconds (cloud requests and, when pass texts are
given, offline passes through the PassDesk) while a "renter" elsewhere takes batteries and
brings them back through the simulator's control API.

It reports on stdout, one line per fact, each written with a single ``write`` so lines from
several processes sharing the pipe never interleave::

    ready PID                        start-up (ledger open, first scan, recover) is done
    req PID RENTAL                   a cloud rent request is about to be made
    pass PID PASS_ID                 a pass is about to be submitted
    out PID RENTAL STATUS REASON SLOT SN   what rent() returned (the controller's acknowledgement)
    unhealthy PID WHY                a part of the cabinet stopped (e.g. the bus poller died)

Usage (from the repository root)::

    python tests/crash/workload.py run CONFIG [--passes FILE] [--no-rent] [--seed N]
    python tests/crash/workload.py serve CONFIG [--passes FILE]

``serve`` is a fork server: it imports everything once, then for each ``run SEED`` or
``idle SEED`` line on stdin forks one cabinet process, prints ``started PID``, waits for it
and prints ``exit PID STATUS`` (STATUS is ``-9`` after a SIGKILL). Forking saves the ~0.5 s
of imports per start, so a test can kill and restart a cabinet a hundred times in a minute.
The forked child is a separate process holding the ledger, the pty and the GPIO link: a
SIGKILL to it is a real crash. The test kills the child by its pid, never the server.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import random
import signal
import sys
import uuid
from pathlib import Path

# Imported before forking so that each child starts without import cost; gpiozero loads the
# cabinetsim factory from its entry point by name, as in a real ``cabinet run``.
import drivers.battery_bus
from cabinet import config as cfg
from cabinet.controller import RentRequest
from cabinet.service import Cabinet

import drivers.locks  # noqa: F401  isort: skip
import cabinet.assemble  # noqa: F401  isort: skip
import hardware_sim.pins  # noqa: F401  isort: skip


def say(line: str) -> None:
    """One stdout line in one write(): atomic on a pipe (shorter than PIPE_BUF)."""
    os.write(1, (line + "\n").encode())


async def rent_loop(cab: Cabinet, rng: random.Random, passes: list[str]) -> None:
    """Rent one battery after another; every third request uses an offline pass (if any)."""
    pid = os.getpid()
    assert cab.controller is not None
    n = 0
    while True:
        n += 1
        if passes and n % 3 == 0 and cab.passes is not None:
            text = rng.choice(passes)
            say(f"pass {pid} {text[-12:]}")
            out = await cab.passes.submit(text)
        else:
            rid = f"R-{uuid.uuid4().hex[:12]}"
            say(f"req {pid} {rid}")
            out = await cab.controller.rent(RentRequest(rid, "cloud", user=f"u{n % 5}"))
        say(
            f"out {pid} {out.rental_id or '-'} {out.status} {out.reason or '-'} {out.slot or 0} {out.sn or '-'}"
        )
        # nothing to rent: wait for a return rather than fill the ledger with refusals
        await asyncio.sleep(
            rng.uniform(0.15, 0.3) if out.reason == "no_rentable_battery" else rng.uniform(0.01, 0.08)
        )


async def watch_health(cab: Cabinet) -> None:
    """Report once when a part of the cabinet stops (the watchdog would stop pinging systemd)."""
    while True:
        await asyncio.sleep(0.1)
        problem = cab._health_problem()
        if problem:
            say(f"unhealthy {os.getpid()} {problem}")
            return


async def run_cabinet(config_path: Path, seed: int, passes: list[str], rent: bool) -> int:
    """Start a cabinet from ``config_path``, then rent until SIGTERM (or SIGKILL)."""
    config = cfg.load(config_path)
    cab = Cabinet(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await cab.start()
    try:
        # renting before the first scan would find nothing rentable (the cabinet has no event for it)
        while not cab.last_scan_at:  # noqa: ASYNC110
            await asyncio.sleep(0.005)
        say(f"ready {os.getpid()}")
        tasks = [asyncio.create_task(watch_health(cab))]
        if rent:
            tasks.append(asyncio.create_task(rent_loop(cab, random.Random(seed), passes)))
        await stop.wait()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        await cab.stop()
    return 0


def child_main(config_path: Path, seed: int, passes: list[str], rent: bool) -> int:
    logging.basicConfig(
        level=logging.WARNING, format=f"%(asctime)s [{os.getpid()}] %(levelname)s %(name)s: %(message)s"
    )
    return asyncio.run(run_cabinet(config_path, seed, passes, rent))


def serve(config_path: Path, passes: list[str]) -> int:
    """Fork server: one cabinet process per ``run SEED`` / ``idle SEED`` line on stdin."""
    for line in sys.stdin:
        words = line.split()
        if not words:
            continue
        if words[0] not in ("run", "idle") or len(words) != 2:
            say(f"error unknown command {line.strip()!r}")
            continue
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
                code = child_main(config_path, int(words[1]), passes, words[0] == "run")
            except BaseException:
                import traceback

                traceback.print_exc()
            finally:
                with contextlib.suppress(Exception):
                    sys.stderr.flush()
                os._exit(code)
        say(f"started {pid}")
        _, status = os.waitpid(pid, 0)
        say(f"exit {pid} {os.waitstatus_to_exitcode(status)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mode", choices=("run", "serve"))
    ap.add_argument("config", type=Path)
    ap.add_argument("--passes", type=Path, help="file of signed offline pass texts, one a line")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--no-rent", action="store_true", help="run the cabinet without renting")
    args = ap.parse_args(argv)
    passes = [t for t in args.passes.read_text().splitlines() if t.strip()] if args.passes else []
    if args.mode == "serve":
        return serve(args.config, passes)
    return child_main(args.config, args.seed, passes, not args.no_rent)


if __name__ == "__main__":
    sys.exit(main())
