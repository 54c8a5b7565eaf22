"""The crash test's checks: the ledger against the simulator's physical truth and the renter's acts.

``stats`` is the harness's Stats: ``takes`` and ``inserts`` (what the renter did, in order)
and ``acks`` (what the controller acknowledged before each crash).
"""

from __future__ import annotations

import asyncio
import sqlite3
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from cabinet.ledger import Ledger

BIN = Path(sys.executable).parent
CABINET_ID = "CAB-CRASH"


def _read_only(path: Path, sql: str) -> list[tuple[Any, ...]]:
    """Rows of ``sql`` on a read-only connection (safe while the cabinet writes); [] on any error."""
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    except sqlite3.Error:
        return []
    try:
        return conn.execute(sql).fetchall()
    except sqlite3.Error:
        return []
    finally:
        conn.close()


def ledger_slots(path: Path, slots: int) -> dict[int, str | None]:
    """Slot -> battery held, as the ledger says now."""
    out: dict[int, str | None] = {n: None for n in range(1, slots + 1)}
    out.update({int(slot): sn for slot, sn in _read_only(path, "SELECT slot, sn FROM slots")})
    return out


def requested_rentals(path: Path) -> list[str]:
    """Rentals requested but not yet started or aborted (an eject in flight or being recovered)."""
    return [r[0] for r in _read_only(path, "SELECT rental_id FROM rentals WHERE state = 'requested'")]


async def verify_cli(ledger_path: Path) -> tuple[int, str]:
    """``cabinet ledger verify --db FILE``: exit code and output."""
    proc = await asyncio.create_subprocess_exec(
        str(BIN / "cabinet"),
        "ledger",
        "verify",
        "--db",
        str(ledger_path),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await proc.communicate()
    return proc.returncode or 0, out.decode(errors="replace")


def check_run(ledger_path: Path, sim_state: dict[str, Any], stats: Any) -> list[str]:
    """Every way the ledger may disagree with the physical truth and the renter's actions."""
    problems: list[str] = []
    with Ledger.open(ledger_path, CABINET_ID, create=False) as lg:
        events = []
        seq = 0
        while batch := lg.events_after(seq, limit=5000, max_bytes=1 << 30):
            events += batch
            seq = batch[-1].seq
        slots = {s.slot: s for s in lg.slots()}
        batteries = {b.sn: b for b in lg.batteries()}
        rentals = {
            r.rental_id: r
            for r in (lg.rental(e.body["rental_id"]) for e in events if e.type.startswith("rental_"))
            if r is not None
        }

    # 1. the ledger agrees with the simulator about where every battery is
    for s in sim_state["slots"]:
        n, b = s["slot"], s["battery"]
        held = slots[n].sn if n in slots else None
        if b is None and held is not None:
            problems.append(f"slot {n} is empty but the ledger holds {held} there")
        if b is not None:
            if held != b["sn"]:
                problems.append(f"slot {n} holds {b['sn']} but the ledger says {held}")
            lb = batteries.get(b["sn"])
            if lb is None or (lb.place, lb.slot) != ("slot", n):
                problems.append(f"battery {b['sn']} is in slot {n} but the ledger has it at {lb}")
    for sn in sim_state["out"]:
        lb = batteries.get(sn)
        if lb is None or lb.place != "rental":
            problems.append(f"battery {sn} is out with a renter but the ledger has it at {lb}")
            continue
        r = rentals.get(lb.rental_id or "")
        if r is None or r.sn != sn or r.state != "open":
            problems.append(f"battery {sn} is out on rental {lb.rental_id}, which the ledger has as {r}")
    physical = {s["battery"]["sn"] for s in sim_state["slots"] if s["battery"]} | set(sim_state["out"])
    for sn, lb in batteries.items():
        if sn not in physical:
            problems.append(f"the ledger knows battery {sn} ({lb.place}) that the simulator does not")
        elif lb.place == "gone":
            problems.append(f"battery {sn} is recorded gone ({lb.gone_reason}) though nobody took it unasked")

    # 2. rentals: one start, at most one end, each take on exactly one rental, in order
    starts: Counter[str] = Counter()
    ends: Counter[str] = Counter()
    started: list[tuple[str, int]] = []
    returned: list[tuple[str, int]] = []
    open_by_pass: dict[str, set[str]] = {}
    pass_of: dict[str, str] = {}
    for e in events:
        b = e.body
        if e.type == "rental_started":
            starts[b["rental_id"]] += 1
            started.append((b["sn"], b["slot"]))
            if b.get("pass_id"):
                pass_of[b["rental_id"]] = b["pass_id"]
                holding = open_by_pass.setdefault(b["pass_id"], set())
                if holding:
                    problems.append(
                        f"pass {b['pass_id']} opened {b['rental_id']} while {holding} was out (seq {e.seq})"
                    )
                holding.add(b["rental_id"])
        elif e.type in ("rental_aborted",):
            ends[b["rental_id"]] += 1
        elif e.type == "battery_returned":
            returned.append((b["sn"], b["slot"]))
            if b.get("rental_id"):
                ends[b["rental_id"]] += 1
                open_by_pass.get(pass_of.get(b["rental_id"], ""), set()).discard(b["rental_id"])
        elif e.type in ("battery_removed_unexpected", "battery_gone"):
            problems.append(f"seq {e.seq}: {e.type} {b} although every battery left through a rent")
    for rid, n in starts.items():
        if n > 1:
            problems.append(f"rental {rid} started {n} times")
        if ends[rid] > 1:
            problems.append(f"rental {rid} ended {ends[rid]} times")
    for rid, r in rentals.items():
        if r.state == "requested":
            problems.append(f"rental {rid} is still 'requested' after the last restart")
    if started != stats.takes:
        problems.append(
            f"batteries taken {stats.takes} differ from rentals started {started}"
            f" (first difference at #{_first_diff(started, stats.takes)})"
        )
    # two packs pushed in within one scan are recorded in slot order: compare as multisets
    if Counter(returned) != Counter(stats.inserts):
        problems.append(
            f"batteries brought back and not recorded: {Counter(stats.inserts) - Counter(returned)};"
            f" returns recorded that nobody made: {Counter(returned) - Counter(stats.inserts)}"
        )

    # 3. every outcome the controller acknowledged is in the ledger as acknowledged
    for rid, status, reason, slot, sn in stats.acks:
        r = rentals.get(rid)
        if status == "started" and (r is None or r.started_seq is None or (r.slot, r.sn) != (slot, sn)):
            problems.append(f"acknowledged start of {rid} (slot {slot}, {sn}) is not in the ledger: {r}")
        if status == "aborted" and (r is None or r.state != "aborted"):
            problems.append(f"acknowledged abort of {rid} ({reason}) is not in the ledger: {r}")
    return problems


def _first_diff(a: list[Any], b: list[Any]) -> int:
    for i, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return i
    return min(len(a), len(b))


def recovery_counts(ledger_path: Path, stats: Any) -> dict[str, int]:
    """How often recovery had to settle a rent request a crash left open (for the summary)."""
    acked = {a[0] for a in stats.acks}
    with Ledger.open(ledger_path, CABINET_ID, create=False) as lg:
        events, seq = [], 0
        while batch := lg.events_after(seq, limit=5000, max_bytes=1 << 30):
            events += batch
            seq = batch[-1].seq
    interrupted = sum(1 for e in events if e.type == "rental_aborted" and e.body["reason"] == "interrupted")
    unacked_starts = sum(1 for e in events if e.type == "rental_started" and e.body["rental_id"] not in acked)
    return {"events": len(events), "interrupted_aborts": interrupted, "starts_without_ack": unacked_starts}
