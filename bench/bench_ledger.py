"""Durable ledger commits per second, next to raw sqlite3 with the same PRAGMAs, in the same run.

Each ledger commit is one ``record()``: validate the body, encode CBOR, insert the event and
update its projections in one transaction (WAL, synchronous=FULL). The baseline inserts a row
of the same size per transaction with plain ``sqlite3``. Goal: ratio >= 0.7.

Run: ``./dev bench ledger`` (or ``.venv/bin/python -m bench.bench_ledger [--quick]``).
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

from bench.report import write_section
from cabinet.ledger import Ledger


def raw_sqlite(path: Path, n: int, body: bytes) -> float:
    conn = sqlite3.connect(str(path), isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute(
        "CREATE TABLE events (seq INTEGER PRIMARY KEY, id TEXT UNIQUE, type TEXT, at_wall REAL,"
        " at_mono REAL, boot_id TEXT, body BLOB)"
    )
    t0 = time.perf_counter()
    for i in range(1, n + 1):
        conn.execute("BEGIN")
        conn.execute(
            "INSERT INTO events VALUES (?, ?, ?, ?, ?, ?, ?)",
            (i, os.urandom(16).hex(), "tech_action", time.time(), time.monotonic(), "boot", body),
        )
        conn.execute("COMMIT")
    dt = time.perf_counter() - t0
    conn.close()
    return n / dt


def ledger_commits(path: Path, n: int) -> float:
    led = Ledger.open(path, "BENCH")
    t0 = time.perf_counter()
    for i in range(n):
        led.record("tech_action", technician="bench", action="noop", detail=f"commit {i}")
    dt = time.perf_counter() - t0
    led.close()
    return n / dt


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer commits")
    ap.add_argument("--commits", type=int, default=0, help="commits per side (default 3000, quick 300)")
    args = ap.parse_args(argv)
    n = args.commits or (300 if args.quick else 3000)
    body = b"\xa3" + b"x" * 60  # about the size of a small CBOR event body
    rounds = []
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_TMP")) as tmp:
        for r in range(3):  # interleave, so drift of the disk affects both sides alike
            base = raw_sqlite(Path(tmp) / f"raw{r}.db", n, body)
            ours = ledger_commits(Path(tmp) / f"ledger{r}.db", n)
            rounds.append((base, ours))
            print(
                f"round {r + 1}: raw sqlite3 {base:,.0f} commits/s, ledger {ours:,.0f} commits/s, ratio {ours / base:.2f}"
            )
    base = sorted(b for b, _ in rounds)[1]
    ours = sorted(o for _, o in rounds)[1]
    ratio = ours / base
    verdict = "meets" if ratio >= 0.7 else "MISSES"
    print(f"median: raw {base:,.0f}/s, ledger {ours:,.0f}/s, ratio {ratio:.2f} ({verdict} the goal of 0.7)")
    write_section(
        "Ledger durable commits",
        f"`.venv/bin/python -m bench.bench_ledger{' --quick' if args.quick else ''}` ({n} commits per side, median of 3 interleaved rounds)\n\n"
        "| what | commits/s |\n|---|---|\n"
        f"| raw sqlite3, same PRAGMAs (baseline) | {base:,.0f} |\n"
        f"| `Ledger.record` (event + projections, one transaction) | {ours:,.0f} |\n"
        f"| ratio | **{ratio:.2f}** (goal >= 0.7: {verdict}) |\n",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
