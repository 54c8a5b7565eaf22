"""Which slots charge: within the power budget, hottest and faultiest never, next-rentable first."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from cabinet.observations import Observation


@dataclass(frozen=True)
class ChargePolicy:
    power_budget_w: float = 60.0
    watts_per_slot: float = 10.0
    max_temp_c: float = 45.0
    min_soc: int = 80  # the rentable minimum: batteries just below it come first
    full_soc: int = 100


def plan(observations: Iterable[Observation], blocked: set[int], policy: ChargePolicy) -> set[int]:
    """The slots to charge now.

    ``blocked`` holds slots that must not charge (quarantined slot or battery, slot fault,
    high fault risk). Among the rest, batteries that will become rentable soonest charge first
    (closest below the rentable minimum, then the rest by SoC, highest first), cooler ones
    before hotter ones, as many as the budget allows.
    """
    allowed = max(0, int(policy.power_budget_w // policy.watts_per_slot))
    ranked = []
    for ob in observations:
        if not ob.has_battery or ob.slot in blocked or ob.faults:
            continue
        if ob.temp_c >= policy.max_temp_c or ob.soc >= policy.full_soc:
            continue
        below = ob.soc < policy.min_soc
        # below the minimum: highest SoC first (soonest rentable); above: they are rentable
        # already, top them up after, again highest SoC first
        ranked.append((0 if below else 1, -ob.soc, ob.temp_c, ob.slot))
    ranked.sort()
    return {slot for *_, slot in ranked[:allowed]}
