"""What the cabinet sees of one slot at one scan, independent of the bus driver's types."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Observation:
    """One slot as the bus and the seat switch report it.

    ``known`` is False when the slot's board did not answer (isolated or timed out): the slot's
    content is then unknown, which is not the same as empty.
    """

    slot: int
    known: bool
    present: bool = False
    seated: bool = False
    sn: str = ""
    soc: int = 0
    voltage_v: float = 0.0
    current_a: float = 0.0
    temp_c: float = 0.0
    cycles: int = 0
    faults: int = 0
    charging: bool = False

    @property
    def has_battery(self) -> bool:
        """A readable battery sits in the slot."""
        return self.known and self.present and bool(self.sn)
