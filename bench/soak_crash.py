"""Crash soak: the crash-safety test's harness for minutes and thousands of SIGKILLs.

Same set-up and checks as ``tests/crash/test_crash_safety.py`` (a simulator process, a real
cabinet process killed at random points of rent and return and restarted each time, a
renter taking and returning batteries), only longer, with ``cabinet ledger verify`` also
run every ``--verify-every`` kills. At the end: verify, the ledger against the simulator's
physical truth, every take on exactly one rental, every return recorded, every
acknowledged outcome in the ledger. Prints a JSON summary (and each problem found); exit
status 0 only when everything holds.

Run: ``.venv/bin/python -m bench.soak_crash [--minutes 10] [--kills 5000] [--seed N] [--work DIR]``

The harness lives with the tests (tests/crash/harness.py) and runs here as its own process,
so bench imports nothing from tests.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from bench.report import write_section

ROOT = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="soak_crash", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--minutes", type=float, default=10.0, help="stop killing after this long (default 10)")
    ap.add_argument(
        "--kills", type=int, default=100_000, help="stop after this many kills (default: no limit)"
    )
    ap.add_argument("--seed", type=int, default=int(time.time()) % 100_000)
    ap.add_argument(
        "--verify-every", type=int, default=250, help="ledger verify after every N kills (0: end only)"
    )
    ap.add_argument("--work", type=Path, help="keep the run's files (ledger, logs) in this directory")
    ap.add_argument("--report", action="store_true", help="write the summary into BENCHMARKS.md")
    args = ap.parse_args(argv)
    cmd = [
        sys.executable,
        "-m",
        "tests.crash.harness",
        "--kills",
        str(args.kills),
        "--seed",
        str(args.seed),
        "--max-seconds",
        str(args.minutes * 60),
        "--verify-every",
        str(args.verify_every),
    ]
    if args.work:
        cmd += ["--work", str(args.work)]
    print("running:", " ".join(cmd), flush=True)
    proc = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.PIPE, text=True, check=False)
    sys.stdout.write(proc.stdout)
    text = proc.stdout
    summary = json.loads(text[text.index("{") : text.index("\n}") + 2]) if "{" in text else {}
    verdict = "PASS" if proc.returncode == 0 else f"FAIL (exit {proc.returncode})"
    print(
        f"crash soak: {verdict}: {summary.get('kills')} kills in {summary.get('seconds')} s, "
        f"{summary.get('takes')} takes, {summary.get('returns')} returns, seed {args.seed}"
    )
    if args.report and summary:
        write_section(
            "Crash soak (bench/soak_crash.py)",
            "\n".join(
                [
                    f"`.venv/bin/python -m bench.soak_crash --minutes {args.minutes:g}`: **{verdict}**",
                    "",
                    "```json",
                    json.dumps(summary, indent=2),
                    "```",
                ]
            ),
        )
    return proc.returncode


if __name__ == "__main__":
    sys.exit(main())
