"""Crash safety: a writer SIGKILLed at random moments loses no acknowledged event and
leaves a ledger that verifies."""

from __future__ import annotations

import os
import random
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

from ledger_helpers import CABINET

from cabinet.ledger import Ledger, verify

WRITER = Path(__file__).with_name("crash_writer.py")
KILLS = 15


def run_and_kill(path: Path, seed: int, rng: random.Random) -> list[tuple[int, str]]:
    """Start the writer, let it commit for a random moment, SIGKILL it; return its acks."""
    proc = subprocess.Popen(
        [sys.executable, str(WRITER), str(path), CABINET, str(seed)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None
    out = b""
    deadline = time.monotonic() + 30
    while b"\n" not in out:  # wait for the first acknowledged record
        assert time.monotonic() < deadline, (
            f"writer made no progress: {proc.stderr.read() if proc.stderr else ''}"
        )
        assert proc.poll() is None, f"writer died: {proc.stderr.read().decode() if proc.stderr else ''}"
        if select.select([proc.stdout], [], [], 0.5)[0]:
            out += os.read(proc.stdout.fileno(), 65536)
    kill_at = time.monotonic() + rng.uniform(0.0, 0.15)
    while (left := kill_at - time.monotonic()) > 0:
        if select.select([proc.stdout], [], [], left)[0]:
            out += os.read(proc.stdout.fileno(), 65536)
    proc.send_signal(signal.SIGKILL)
    rest, _ = proc.communicate(timeout=10)
    out += rest
    assert proc.returncode == -signal.SIGKILL
    acks = []
    for line in out.decode().splitlines():
        parts = line.split()
        if len(parts) == 2:  # a torn last line was never an acknowledgement
            acks.append((int(parts[0]), parts[1]))
    return acks


def test_sigkill_at_random_moments_loses_no_acknowledged_event(ledger_path: Path) -> None:
    seed = int(os.environ.get("LEDGER_CRASH_SEED", time.time_ns() % 100_000))
    rng = random.Random(seed)
    acknowledged: dict[int, str] = {}
    for round_ in range(KILLS):
        acks = run_and_kill(ledger_path, seed * 100 + round_, rng)
        assert acks, f"round {round_} (seed {seed}) acknowledged nothing"
        acknowledged.update(acks)
        print(f"round {round_}: {len(acks)} acknowledged, last seq {acks[-1][0]}")
        with Ledger.open(ledger_path, CABINET) as lg:
            stored = dict(lg.conn.execute("SELECT seq, id FROM events").fetchall())
        missing = {s: i for s, i in acknowledged.items() if stored.get(s) != i}
        assert not missing, f"seed {seed} round {round_}: acknowledged events lost: {missing}"
        report = verify(ledger_path)
        assert report.ok, f"seed {seed} round {round_}: {report.summary()}"
    assert len(acknowledged) > KILLS * 2
