"""cabinet-sim: run a simulated cabinet, act on it as a user, inject faults, check scenarios."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import urllib.error
import urllib.request
from typing import Any

from hardware_sim.cabinet import SimConfig
from hardware_sim.faults import FAULT_KINDS, ScenarioError, load_scenario
from hardware_sim.server import SimServer

DEFAULT_URL = "http://127.0.0.1:8765"

DESCRIPTION = """\
Simulated power-bank cabinet: slot boards as Modbus slaves (RTU on a pty and/or Modbus TCP),
lock outputs and seat switches on a GPIO link for gpiozero (GPIOZERO_PIN_FACTORY=cabinetsim),
battery physics and fault injection, and a local JSON control API.

sub-commands:
  run              run a cabinet until Ctrl-C (prints where its pty/ports are)
  scenario check   validate a scenario file (TOML or JSON) and list its faults
  state            print the running cabinet's state (JSON)
  take SLOT        take the presented pack from SLOT (open the lock first)
  insert SLOT      push a pack into SLOT (--sn to return a known one, --soc 0..1)
  inject KIND      inject a fault, e.g. `inject lock_jam slot=3`, `inject silent_board board=2`
  clear ID         clear an injected fault by its id
  advance SECONDS  run the physics forward SECONDS sim seconds at once
  kinds            list fault kinds and their parameters

The client sub-commands talk to --url (default $CABINET_SIM_URL or http://127.0.0.1:8765).
"""


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (also used by the docs)."""
    p = argparse.ArgumentParser(
        prog="cabinet-sim", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = p.add_subparsers(dest="cmd", required=True, metavar="COMMAND")
    run = sub.add_parser("run", help="run a simulated cabinet")
    run.add_argument("--slots", type=int, default=24, help="slots in the cabinet, 8..48 (default 24)")
    run.add_argument("--slots-per-board", type=int, default=4, help="slots per slot board, 1..8 (default 4)")
    run.add_argument("--seed", type=int, default=1, help="random seed: same seed, same cabinet")
    run.add_argument(
        "--fill", type=float, default=0.75, help="share of slots holding a pack at start (default 0.75)"
    )
    run.add_argument("--speed", type=float, default=1.0, help="sim seconds per real second for the physics")
    run.add_argument(
        "--reseat", type=float, default=20.0, help="real seconds before an untaken pack is pushed back"
    )
    run.add_argument("--scenario", help="TOML/JSON scenario file of timed faults")
    run.add_argument(
        "--pty", help="create the RTU pty and a symlink to its client end at this path (e.g. /tmp/cab/ttySIM)"
    )
    run.add_argument("--no-pty", action="store_true", help="no RTU pty")
    run.add_argument("--tcp", type=int, help="also serve Modbus TCP on this port (0 = any free port)")
    run.add_argument("--control", type=int, default=8765, help="control API port (default 8765, 0 = any)")
    run.add_argument("--gpio", type=int, default=8766, help="GPIO link port (default 8766, 0 = any)")
    run.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    sc = sub.add_parser("scenario", help="scenario files")
    sc_sub = sc.add_subparsers(dest="scmd", required=True, metavar="ACTION")
    check = sc_sub.add_parser("check", help="validate a scenario file")
    check.add_argument("file")
    check.add_argument("--slots", type=int, help="check slot numbers against this slot count")
    check.add_argument("--boards", type=int, help="check board numbers against this board count")
    for name, help_ in (("state", "print the cabinet state"), ("kinds", "list fault kinds")):
        sub.add_parser(name, help=help_)
    take = sub.add_parser("take", help="take the presented pack from a slot")
    take.add_argument("slot", type=int)
    ins = sub.add_parser("insert", help="push a pack into a slot")
    ins.add_argument("slot", type=int)
    ins.add_argument("--sn", help="serial number (a pack taken earlier, or a new one)")
    ins.add_argument("--soc", type=float, help="state of charge 0..1")
    inj = sub.add_parser("inject", help="inject a fault: KIND key=value ...")
    inj.add_argument("kind", choices=sorted(FAULT_KINDS))
    inj.add_argument(
        "params", nargs="*", metavar="key=value", help="target and parameters, e.g. slot=3 leak_ma=50"
    )
    clr = sub.add_parser("clear", help="clear an injected fault")
    clr.add_argument("id", type=int)
    adv = sub.add_parser("advance", help="run the physics forward")
    adv.add_argument("seconds", type=float)
    for sp in (take, ins, inj, clr, adv, sub.choices["state"]):
        sp.add_argument(
            "--url", default=os.environ.get("CABINET_SIM_URL", DEFAULT_URL), help="control API URL"
        )
    return p


def _value(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def _call(url: str, path: str, body: dict[str, Any] | None = None) -> int:
    req = urllib.request.Request(
        url.rstrip("/") + path,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="GET" if body is None else "POST",
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            print(json.dumps(json.load(resp), indent=2))
            return 0
    except urllib.error.HTTPError as e:
        print(f"cabinet-sim: {json.load(e).get('error', e.reason)}", file=sys.stderr)
        return 1
    except urllib.error.URLError as e:
        print(f"cabinet-sim: no simulator at {url}: {e.reason}", file=sys.stderr)
        return 2


async def _run(args: argparse.Namespace) -> int:
    config = SimConfig(
        slots=args.slots,
        slots_per_board=args.slots_per_board,
        seed=args.seed,
        fill=args.fill,
        reseat_after_s=args.reseat,
    )
    config.validate()
    boards = -(-args.slots // args.slots_per_board)
    scenario = load_scenario(args.scenario, slots=args.slots, boards=boards) if args.scenario else None
    pty: bool | str = False if args.no_pty else (args.pty or True)
    async with SimServer(
        config,
        speed=args.speed,
        pty=pty,
        tcp_port=args.tcp,
        gpio_port=args.gpio,
        control_port=args.control,
        host=args.host,
        scenario=scenario,
    ) as sim:
        info = sim.describe()
        print(json.dumps(info), flush=True)
        print(
            f"cabinet-sim: {info['slots']} slots on {len(info['boards'])} boards; RTU pty {info['pty']}; "
            f"Modbus TCP {info['tcp_port']}; GPIO link {info['gpio']}; control {info['control']}",
            file=sys.stderr,
            flush=True,
        )
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        clock = asyncio.create_task(sim.wait())
        stopper = asyncio.create_task(stop.wait())
        done, _ = await asyncio.wait({clock, stopper}, return_when=asyncio.FIRST_COMPLETED)
        stopper.cancel()
        if clock in done and clock.exception():
            print(f"cabinet-sim: {clock.exception()}", file=sys.stderr)
            return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``cabinet-sim`` console script."""
    args = build_parser().parse_args(argv)
    try:
        if args.cmd == "run":
            return asyncio.run(_run(args))
        if args.cmd == "scenario":
            faults = load_scenario(args.file, slots=args.slots, boards=args.boards)
            for f in faults:
                until = f" until {f.clear_at:g} s" if f.clear_at is not None else ""
                print(
                    f"t={f.at:g} s{until}: {f.fault.kind} on {f.fault.target()} {f.fault.params or ''}".rstrip()
                )
            print(f"{args.file}: OK, {len(faults)} fault(s)")
            return 0
        if args.cmd == "kinds":
            for kind, spec in FAULT_KINDS.items():
                params = ", ".join(f"{n}={p.default!r} ({p.help})" for n, p in spec.params.items())
                print(f"{kind} [{spec.scope}]: {spec.help}" + (f"; {params}" if params else ""))
            return 0
        if args.cmd == "state":
            return _call(args.url, "/state")
        if args.cmd == "take":
            return _call(args.url, "/take", {"slot": args.slot})
        if args.cmd == "insert":
            body: dict[str, Any] = {"slot": args.slot}
            if args.sn:
                body["sn"] = args.sn
            if args.soc is not None:
                body["soc"] = args.soc
            return _call(args.url, "/insert", body)
        if args.cmd == "inject":
            body = {"kind": args.kind}
            for kv in args.params:
                key, sep, val = kv.partition("=")
                if not sep:
                    print(f"cabinet-sim: expected key=value, not {kv!r}", file=sys.stderr)
                    return 2
                body[key] = _value(val)
            return _call(args.url, "/inject", body)
        if args.cmd == "clear":
            return _call(args.url, "/clear", {"id": args.id})
        if args.cmd == "advance":
            return _call(args.url, "/advance", {"seconds": args.seconds})
    except (ScenarioError, ValueError) as e:
        print(f"cabinet-sim: {e}", file=sys.stderr)
        return 2
    return 2


if __name__ == "__main__":
    sys.exit(main())
