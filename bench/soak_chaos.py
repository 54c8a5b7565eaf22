"""Chaos soak: the chaos test's run for minutes instead of half a minute.

Same set-up and checks as ``tests/chaos/test_chaos.py``: Mosquitto, ``cabinet-cloud serve``,
``cabinet-sim run`` and ``cabinet run`` as separate processes; renters renting in the app and
with offline passes, a hand taking and returning packs; the broker, the cabinet and the cloud
SIGKILLed at random and restarted, the cabinet's link slowed, stalled and cut. At the end,
with everything up and drained: the cloud's events equal ``cabinet ledger export`` (once, in
order), every rental start and return applied once, ``cabinet-cloud money-check`` exits 0,
``cabinet ledger verify`` exits 0, and no rental is left open (a *stuck* rental). Prints the
JSON summary, then one line per invariant and the stuck rentals; exit 0 only when all hold.

The seed is fixed (default 20261203): a run that fails is a bug to find with the same seed,
never a reason to run again with another one.

Run: ``.venv/bin/python -m bench.soak_chaos [--minutes 30] [--seed N] [--work DIR]
[--drain-timeout S] [--database postgresql+psycopg://postgres@127.0.0.1:5432/DB] [--report]``

The harness lives with the tests (tests/chaos/harness.py) and runs here as its own process,
so bench imports nothing from tests.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from bench.report import write_section

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SEED = 20261203


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="soak_chaos", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--minutes", type=float, default=5.0, help="how long the monkey strikes (default 5)")
    ap.add_argument("--seed", type=int, default=DEFAULT_SEED, help=f"default {DEFAULT_SEED}")
    ap.add_argument("--drain-timeout", type=float, default=120.0, help="seconds to drain after the chaos")
    ap.add_argument("--work", type=Path, help="keep the run's files (logs, ledger, cloud db) here")
    ap.add_argument("--database", default="", help="cloud database URL (default: SQLite in the work dir)")
    ap.add_argument("--report", action="store_true", help="write the summary into BENCHMARKS.md")
    args = ap.parse_args(argv)
    cmd = [
        sys.executable,
        "-m",
        "tests.chaos.harness",
        "--seconds",
        str(args.minutes * 60),
        "--seed",
        str(args.seed),
        "--drain-timeout",
        str(args.drain_timeout),
    ]
    if args.work:
        cmd += ["--work", str(args.work)]
    if args.database:
        cmd += ["--database", args.database]
    print("running:", " ".join(cmd), flush=True)
    proc = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.PIPE, text=True, check=False)
    sys.stdout.write(proc.stdout)
    text = proc.stdout
    summary = json.loads(text[text.index("{") : text.rindex("}") + 1]) if "{" in text else {}
    verdict = "PASS" if proc.returncode == 0 else f"FAIL (exit {proc.returncode})"
    kills = summary.get("kills", {})
    for name, held in summary.get("invariants", {}).items():
        print(f"invariant {name}: {'holds' if held else 'BROKEN'}")
    stuck = summary.get("stuck_rentals")
    print(
        f"stuck rentals: {len(stuck) if stuck is not None else 'unknown (no end-of-run check)'} {stuck or ''}"
    )
    print(
        f"chaos soak: {verdict}: {sum(kills.values())} kills {kills} in {summary.get('seconds')} s, "
        f"{summary.get('rental_started')} rentals started, {summary.get('battery_returned')} returns, "
        f"{summary.get('ledger_events')} events, seed {args.seed}"
    )
    if args.report and summary:
        shown = {k: v for k, v in summary.items() if k != "timeline"}
        write_section(
            "Chaos soak (bench/soak_chaos.py)",
            "\n".join(
                [
                    f"`.venv/bin/python -m bench.soak_chaos --minutes {args.minutes:g} --seed {args.seed}"
                    + (" --database <PostgreSQL>" if args.database else "")
                    + f"`: **{verdict}**, {len(stuck or [])} stuck rentals, invariants: "
                    + ", ".join(
                        f"{k} {'holds' if v else 'BROKEN'}" for k, v in summary.get("invariants", {}).items()
                    ),
                    "",
                    "```json",
                    json.dumps(shown, indent=2),
                    "```",
                ]
            ),
        )
    return proc.returncode


if __name__ == "__main__":
    sys.exit(main())
