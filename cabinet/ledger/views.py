"""Read-only values the ledger hands out: a slot, a battery, a rental, a seen command."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Self

from sync.events import LedgerRentalState

OPEN_STATES = (LedgerRentalState.REQUESTED, LedgerRentalState.OPEN)
"""A rental still open: requested (the lock may be open) or running (battery out)."""
OPEN_STATES_SQL = "(" + ", ".join(f"'{s}'" for s in OPEN_STATES) + ")"
"""``OPEN_STATES`` as an SQL list, spelled out (the partial index ``rentals_open`` needs literals)."""


class _FromRow:
    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Self:
        """Build from a projection row (extra columns are ignored)."""
        names = {f.name for f in fields(cls)}  # type: ignore[arg-type]
        return cls(**{k: v for k, v in row.items() if k in names})


@dataclass(frozen=True)
class SlotState(_FromRow):
    """A slot as the ledger knows it. ``sn`` is None when the slot is empty."""

    slot: int
    sn: str | None
    fault_kind: str | None
    fault_detail: str | None
    quarantined: bool
    quarantine_reason: str | None
    updated_seq: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "quarantined", bool(self.quarantined))


@dataclass(frozen=True)
class BatteryState(_FromRow):
    """A battery's one place: ``place`` is 'slot' (with ``slot``), 'rental' (with
    ``rental_id``) or 'gone' (with ``gone_reason``). Quarantine is a hold on top of it."""

    sn: str
    place: str
    slot: int | None
    rental_id: str | None
    soc: float | None
    cycles: int | None
    quarantined: bool
    quarantine_reason: str | None
    risk: float | None
    gone_reason: str | None
    first_seq: int
    updated_seq: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "quarantined", bool(self.quarantined))


@dataclass(frozen=True)
class RentalState(_FromRow):
    """A rental seen by this cabinet. ``state``: a ``LedgerRentalState`` (requested, open,
    returned, aborted, closed), as its text."""

    rental_id: str
    state: str
    sn: str | None
    slot: int | None
    source: str | None
    user: str | None
    pass_id: str | None
    cmd_id: str | None
    requested_seq: int | None
    started_seq: int | None
    ended_seq: int | None
    end_type: str | None
    end_slot: int | None
    end_reason: str | None

    @property
    def is_open(self) -> bool:
        """Requested (lock may be open) or running (battery out)."""
        return self.state in OPEN_STATES


@dataclass(frozen=True)
class CommandSeen(_FromRow):
    """A cloud command already received; ``result_ok`` is None until its result is recorded."""

    cmd_id: str
    kind: str
    received_seq: int
    result_ok: bool | None
    result_detail: str | None
    result_seq: int | None

    def __post_init__(self) -> None:
        if self.result_ok is not None:
            object.__setattr__(self, "result_ok", bool(self.result_ok))
