"""The charge plan: budget, heat, faults, and who charges first."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from cabinet.charging import ChargePolicy, plan
from cabinet.observations import Observation


def ob(slot: int, soc: int, temp: float = 25.0, faults: int = 0, known: bool = True) -> Observation:
    return Observation(
        slot=slot, known=known, present=True, seated=True, sn=f"SN{slot}", soc=soc, temp_c=temp, faults=faults
    )


def test_budget_limits_how_many_charge_and_soonest_rentable_go_first() -> None:
    policy = ChargePolicy(power_budget_w=20, watts_per_slot=10, min_soc=80)
    obs = [ob(1, 10), ob(2, 79), ob(3, 95), ob(4, 60)]
    assert plan(obs, set(), policy) == {2, 4}


def test_hot_faulty_full_blocked_and_unknown_slots_never_charge() -> None:
    policy = ChargePolicy(power_budget_w=1000, watts_per_slot=10, max_temp_c=45)
    obs = [ob(1, 50, temp=46), ob(2, 50, faults=1), ob(3, 100), ob(4, 50), ob(5, 50, known=False), ob(6, 40)]
    assert plan(obs, {4}, policy) == {6}


@given(
    st.lists(st.tuples(st.integers(0, 100), st.floats(-10, 80)), max_size=48),
    st.floats(0, 500),
    st.sets(st.integers(1, 48)),
)
def test_plan_never_exceeds_budget_nor_charges_blocked_or_hot(cells, budget, blocked) -> None:
    policy = ChargePolicy(power_budget_w=budget, watts_per_slot=10)
    obs = [ob(i + 1, soc, temp) for i, (soc, temp) in enumerate(cells)]
    chosen = plan(obs, blocked, policy)
    assert len(chosen) * policy.watts_per_slot <= budget
    assert not chosen & blocked
    by_slot = {o.slot: o for o in obs}
    assert all(by_slot[s].temp_c < policy.max_temp_c and by_slot[s].soc < 100 for s in chosen)
