"""The chaos run: rent and return while parts die, then drain and check the invariants.

1. Start the rig (tests/chaos/rig.py): Mosquitto, ``cabinet-cloud serve``, ``cabinet-sim
   run`` and ``cabinet run`` as separate processes; the cabinet's MQTT goes through a
   faulty link.
2. For ``seconds``: renters rent (app and offline pass), the hand takes and returns packs,
   the monkey SIGKILLs the broker, the cabinet and the cloud and spoils the link.
3. Heal everything, bring every pack back, wait until the system is quiet (no pack out,
   no rental open, the cabinet's last seq acked and applied in the cloud).
4. Check: the cloud's cabinet_events equal ``cabinet ledger export`` (each event once, in
   order); every rental start and return in the ledger applied once, to the right rental;
   ``cabinet-cloud money-check`` exits 0; ``cabinet ledger verify`` exits 0.

Run alone (the soak, bench/soak_chaos.py, runs it this way)::

    python -m tests.chaos.harness --seconds 300 [--seed N] [--work DIR] [--database URL]

Prints a JSON summary; exit status 0 only when every invariant holds.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text

from tests.chaos.driver import Hand, Monkey, Renters, Tally
from tests.chaos.linkfault import netem_available
from tests.chaos.rig import BIN, CABINET_ID, PACKS, Rig, poll


@dataclass
class Outcome:
    """The run's summary and the invariants that did not hold (empty: all good)."""

    summary: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def _run(argv: list[str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)


def cloud_rentals(url: str) -> list[dict[str, Any]]:
    """Every rental in the cloud database: id, status, start and end event ids, source."""
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                text("SELECT id, status, start_event_id, end_event_id, source, battery_sn FROM rentals")
            ).mappings()
            return [dict(r) for r in rows]
    finally:
        engine.dispose()


REVOKED_PASS_CLAIM = "revoked before the rental"
"""The cloud refuses a pass rental made before the cabinet heard of the pass's revocation
(cloud/fleet/claims.py; the chaos run revokes over-used passes): kept as a claim with an
alert, for an operator, and never a rental. Counted, not a problem."""


def refused_pass_rentals(url: str) -> set[str]:
    """Rental ids of the pass rentals the cloud refused as revoked (cabinet_claims)."""
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT body, reason FROM cabinet_claims WHERE type = 'rental_started'"))
            return {
                str(json.loads(body).get("rental_id"))
                for body, reason in rows
                if REVOKED_PASS_CLAIM in reason
            }
    finally:
        engine.dispose()


def cloud_db_url(rig: Rig) -> str:
    return rig.database or f"sqlite:///{rig.work / 'cloud' / 'cloud.db'}"


async def wait_until_quiet(rig: Rig, hand: Hand, timeout: float) -> dict[str, Any]:
    """Every pack back, no rental open or pending, the ledger's last seq acked and applied."""
    url = cloud_db_url(rig)
    seen: dict[str, Any] = {}

    async def quiet() -> bool:
        if hand.held or hand.presented:
            return False
        rentals = await asyncio.to_thread(cloud_rentals, url)
        open_ = [r for r in rentals if r["status"] in ("pending", "active")]
        last, acked = await asyncio.to_thread(rig.cabinet_seqs)
        applied = await rig.cloud_applied_seq()
        seen.update(last=last, acked=acked, applied=applied, open_rentals=len(open_))
        if open_ or not last == acked == applied:
            return False
        await asyncio.sleep(1.5)  # and it stays so
        return (await asyncio.to_thread(rig.cabinet_seqs)) == (last, acked) and not hand.held

    try:
        await poll(quiet, timeout, "the system to drain", interval=0.5)
    except TimeoutError as e:
        raise TimeoutError(f"{e}; last seen {seen}") from None
    return seen


INVARIANTS = (
    "drained",  # every pack back, no rental open, the last seq acked and applied
    "events_once_in_order",  # the cloud's events equal the ledger's: each once, in order
    "starts_applied_once",  # each rental_started applied once, to its rental
    "returns_close_their_rental",  # each battery_returned naming a rental closed it
    "no_stuck_rentals",  # no rental left pending or active in the cloud
    "no_ingest_error_or_restore_alert",
    "money_check",  # cabinet-cloud money-check exits 0
    "ledger_verify",  # cabinet ledger verify exits 0
)


async def check_invariants(rig: Rig) -> tuple[list[str], dict[str, Any]]:
    """The end-of-run checks; returns (problems, facts). ``facts["invariants"]`` names each
    invariant with whether it held (INVARIANTS, in order)."""
    problems: list[str] = []
    facts: dict[str, Any] = {"invariants": dict.fromkeys(INVARIANTS, True)}

    def fail(invariant: str, problem: str) -> None:
        facts["invariants"][invariant] = False
        problems.append(problem)

    export = _run([str(BIN / "cabinet"), "ledger", "export", "--db", str(rig.ledger_path)])
    if export.returncode:
        fail("events_once_in_order", f"cabinet ledger export failed: {export.stderr[-1000:]}")
        return problems, facts
    ledger = [json.loads(line) for line in export.stdout.splitlines() if line.strip()]
    cloud = await rig.cloud_events()
    facts["ledger_events"], facts["cloud_events"] = len(ledger), len(cloud)
    mine = [(e["seq"], e["id"], e["type"]) for e in ledger]
    theirs = [(e["seq"], e["id"], e["type"]) for e in cloud]
    if [s for s, _, _ in theirs] != list(range(1, len(theirs) + 1)):
        fail("events_once_in_order", "the cloud's cabinet_events are not seq 1..N without gaps or repeats")
    if len(theirs) < len(mine) or theirs != mine[: len(theirs)] or len(theirs) > len(mine):
        first = next((i for i, (a, b) in enumerate(zip(mine, theirs, strict=False)) if a != b), None)
        fail(
            "events_once_in_order",
            f"cloud events != ledger events: ledger {len(mine)}, cloud {len(theirs)}, first difference "
            f"at index {first}: {mine[first] if first is not None else None} vs "
            f"{theirs[first] if first is not None else None}",
        )
    rentals = {r["id"]: r for r in await asyncio.to_thread(cloud_rentals, cloud_db_url(rig))}
    types = {
        t: sum(1 for e in ledger if e["type"] == t)
        for t in ("rental_started", "rental_aborted", "battery_returned")
    }
    facts.update(types)
    facts["cloud_rentals"] = {s: sum(1 for r in rentals.values() if r["status"] == s) for s in
                              sorted({r["status"] for r in rentals.values()})}  # fmt: skip
    refused = await asyncio.to_thread(refused_pass_rentals, cloud_db_url(rig))
    facts["refused_revoked_pass_rentals"] = len(refused)
    for e in ledger:
        rid = e["body"].get("rental_id")
        if rid in refused and rid not in rentals:
            continue  # the cloud's documented refusal: never a rental, so nothing to apply or close
        if e["type"] == "rental_started":
            r = rentals.get(rid)
            if r is None or r["start_event_id"] != e["id"]:
                fail(
                    "starts_applied_once",
                    f"rental_started seq {e['seq']} ({rid}) not applied to its rental: {r}",
                )
        elif e["type"] == "battery_returned" and rid:
            r = rentals.get(rid)
            if r is None or r["end_event_id"] != e["id"] or r["status"] != "closed":
                fail(
                    "returns_close_their_rental",
                    f"battery_returned seq {e['seq']} ({rid}) did not close its rental: {r}",
                )
    still_open = [r["id"] for r in rentals.values() if r["status"] in ("pending", "active")]
    facts["stuck_rentals"] = still_open
    if still_open:
        fail("no_stuck_rentals", f"rentals still open with every pack back: {still_open}")
    alerts = await rig.call("GET", f"/api/fleet/alerts?cabinet={CABINET_ID}&all=1", rig.operator_token)
    kinds: dict[str, int] = {}
    for a in alerts:
        kinds[a["kind"]] = kinds.get(a["kind"], 0) + 1
    facts["alerts"] = kinds
    for a in alerts:
        if a["kind"] in ("restore_detected", "ingest_error"):
            fail("no_ingest_error_or_restore_alert", f"{a['kind']} alert: {a['detail']}")
    money = _run([str(BIN / "cabinet-cloud"), "money-check", "--config", str(rig.cloud_config), "--json"])
    facts["money_check_exit"] = money.returncode
    if money.returncode:
        fail("money_check", f"cabinet-cloud money-check exit {money.returncode}: {money.stdout[-1500:]}")
    verify = _run([str(BIN / "cabinet"), "ledger", "verify", "--db", str(rig.ledger_path)])
    facts["ledger_verify_exit"] = verify.returncode
    if verify.returncode:
        fail(
            "ledger_verify",
            f"cabinet ledger verify exit {verify.returncode}: {verify.stdout[-1500:]}{verify.stderr[-500:]}",
        )
    return problems, facts


async def run_chaos(
    work: Path,
    seconds: float,
    seed: int,
    *,
    database: str = "",
    drain_timeout: float = 60.0,
    renters: tuple[int, int] = (3, 2),
    provider: str = "sandbox",
) -> Outcome:
    """One chaos run in ``work`` (see module doc)."""
    rng = random.Random(seed)
    tally = Tally()
    out = Outcome()
    probe = await asyncio.to_thread(netem_available)
    # not used (docs/security.md): reported so a run says what this machine could have done
    out.summary["netem"] = "available, not used" if probe.ok else f"not possible here: {probe.reason}"
    rig = Rig(work, seed, database, provider)
    t0 = time.monotonic()
    try:
        await rig.start()

        async def knows_packs() -> bool:
            assert rig.http is not None
            async with rig.http.get(rig.cabinet_url + "/api/slots") as r:
                return sum(1 for s in (await r.json())["slots"] if s["sn"]) >= PACKS

        await poll(knows_packs, 30, "the cabinet to see its packs")
        people = Renters(rig, rng, tally)
        await people.create(*renters)
        out.summary["setup_s"] = round(time.monotonic() - t0, 1)
        assert rig.link is not None
        rig.link.profile.delay_s, rig.link.profile.jitter_s = 0.02, 0.03
        hand = Hand(rig, rng, tally)
        monkey = Monkey(rig, random.Random(seed + 1), tally)
        stop_chaos, stop_hand = asyncio.Event(), asyncio.Event()
        hand_task = asyncio.create_task(hand.run(stop_hand))
        chaos = [asyncio.create_task(monkey.run(stop_chaos)), asyncio.create_task(people.run(stop_chaos))]
        try:
            done, _ = await asyncio.wait(chaos, timeout=seconds, return_when=asyncio.FIRST_EXCEPTION)
            for t in done:
                t.result()  # a part that would not come back: raise here
            stop_chaos.set()
            await asyncio.wait_for(asyncio.gather(*chaos), 60)
            out.summary["chaos_s"] = round(time.monotonic() - t0 - out.summary["setup_s"], 1)
            await monkey.heal()
            hand.hold_s, hand.take_p = (0.0, 0.0), 1.0
            t1 = time.monotonic()
            try:
                out.summary["drained"] = await wait_until_quiet(rig, hand, drain_timeout)
            except TimeoutError as e:
                drain_problem: str | None = str(e)  # the checks below still run: they name what is stuck
            else:
                drain_problem = None
            out.summary["drain_s"] = round(time.monotonic() - t1, 1)
            sim = await rig.sim_state()
            out.summary["packs_out"] = {"sim": sorted(sim["out"]), "hand": sorted(hand.held)}
        finally:
            stop_chaos.set()
            stop_hand.set()
            for t in chaos:
                t.cancel()
            await asyncio.gather(hand_task, *chaos, return_exceptions=True)
        out.problems, facts = await check_invariants(rig)
        if drain_problem is not None:
            facts["invariants"]["drained"] = False
            out.problems.insert(0, drain_problem)
        out.summary.update(facts)
    except Exception as e:
        out.problems.append(f"run aborted: {type(e).__name__}: {e}")
    finally:
        out.summary["kills"] = {
            p.name: p.kills for p in (rig.broker, rig.cloud, rig.cabinet) if p is not None
        }
        if rig.link is not None:
            s = rig.link.stats
            out.summary["link"] = {"connections": s.connections, "cuts": s.cuts, "stalls": s.stalls}
        out.summary["counts"] = dict(sorted(tally.counts.items()))
        out.summary["seconds"] = round(time.monotonic() - t0, 1)
        out.summary["seed"] = seed
        out.summary["timeline"] = tally.faults
        with contextlib.suppress(Exception):
            await rig.close()
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="tests.chaos.harness", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    ap.add_argument("--seconds", type=float, default=60.0, help="how long the monkey strikes")
    ap.add_argument("--seed", type=int, default=int(time.time()) % 100_000)
    ap.add_argument("--work", type=Path, help="keep logs, ledger and cloud database here")
    ap.add_argument("--database", default="", help="cloud database URL (default: SQLite in the work dir)")
    ap.add_argument("--drain-timeout", type=float, default=90.0)
    args = ap.parse_args(argv)
    work = args.work or Path(tempfile.mkdtemp(prefix="chaos-"))
    outcome = asyncio.run(run_chaos(work, args.seconds, args.seed, database=args.database,
                                    drain_timeout=args.drain_timeout))  # fmt: skip
    print(json.dumps(outcome.summary, indent=2))
    for p in outcome.problems:
        print(f"PROBLEM: {p}", file=sys.stderr)
    print(f"chaos: {'PASS' if outcome.ok else 'FAIL'} (work dir {work})", file=sys.stderr)
    return 0 if outcome.ok else 1


if __name__ == "__main__":
    sys.exit(main())
