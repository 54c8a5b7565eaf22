"""Chaos, short version: rent and return for half a minute while the broker, the cabinet and the
cloud are SIGKILLed at random and the cabinet's link is slowed, stalled and cut; then every
ledger event is in the cloud once and in order, every rental start and return applied once,
no rental is left open, the money balances and the ledger verifies. Three fixed seeds, each
its own case; a run that does not drain fails (no second run with another seed). The long
soak is bench/soak_chaos.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.chaos.harness import run_chaos

pytestmark = pytest.mark.timeout(240)

CHAOS_S = 30.0
SEEDS = (20261125, 20261126, 20261127)
"""Fixed: a run that does not drain is a bug to find, never a reason to try another seed."""


@pytest.mark.parametrize("seed", SEEDS)
async def test_killing_broker_cabinet_and_cloud_loses_and_doubles_nothing(tmp_path: Path, seed: int) -> None:
    out = await run_chaos(tmp_path, CHAOS_S, seed=seed, drain_timeout=45.0)
    print(json.dumps(out.summary, indent=2))
    assert out.ok, "\n".join(out.problems) + f"\n(seed {seed}, logs in {tmp_path})"
    s = out.summary
    assert all(s["invariants"].values()), s["invariants"]
    assert s["stuck_rentals"] == []
    assert sum(s["kills"].values()) >= 3, "the monkey must have struck (seeded: it does)"
    assert s["rental_started"] >= 5 and s["battery_returned"] >= 5, "renters rented and returned"
    assert s["ledger_events"] == s["cloud_events"] == s["drained"]["applied"]
    assert s["money_check_exit"] == 0 and s["ledger_verify_exit"] == 0


async def test_money_still_proves_when_the_provider_is_stripe_through_its_sdk(tmp_path: Path) -> None:
    """The same monkey with Stripe as the provider (its real SDK against the local fake, run in
    the harness; the cloud is SIGKILLed between the provider's calls and our records of them):
    every idempotency key holds across the restarts, and money-check still proves the books."""
    out = await run_chaos(tmp_path, CHAOS_S, seed=SEEDS[0], drain_timeout=45.0, provider="stripe-fake")
    print(json.dumps(out.summary, indent=2))
    assert out.ok, "\n".join(out.problems) + f"\n(stripe-fake, logs in {tmp_path})"
    s = out.summary
    assert all(s["invariants"].values()), s["invariants"]
    assert s["stuck_rentals"] == [] and s["kills"]["cloud"] >= 1
    assert s["rental_started"] >= 5 and s["battery_returned"] >= 5
    assert s["money_check_exit"] == 0 and s["ledger_verify_exit"] == 0
