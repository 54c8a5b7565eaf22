"""The ledger's view of the event contract: types, body checks, the body codec, the event record.

Every event type, its body fields and their checks are declared once, in ``sync/events.py``,
the contract the cabinet and the cloud share (docs/protocol.md, "Event contract"); this module
hands them on under the names the cabinet has always used. A body is checked here before
anything touches the file, so a malformed body never reaches the ledger. Bodies are stored as
canonical CBOR (deterministic bytes, so the cloud can hash or sign them). Projections are
updated by ``projections.apply``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import cbor2

from sync import wire
from sync.events import (
    BOARD,
    BODIES,
    COUNT,
    CYCLES,
    DETAIL,
    ID,
    REASON,
    RISK,
    SLOT,
    SN,
    SOC,
    TEMP_C,
    TIME,
    EventBody,
    EventType,
    InvalidEventBody,
    LedgerRentalState,
    RentalSource,
    body_class,
)
from sync.wire import Check

from .errors import EventBodyError

__all__ = [
    "BOARD",
    "BODIES",
    "COUNT",
    "CYCLES",
    "DETAIL",
    "EVENT_TYPES",
    "ID",
    "REASON",
    "RISK",
    "SLOT",
    "SN",
    "SOC",
    "TEMP_C",
    "TIME",
    "Check",
    "Event",
    "EventBody",
    "EventSpec",
    "EventType",
    "Field",
    "LedgerRentalState",
    "RentalSource",
    "decode_body",
    "encode_body",
    "validate_body",
]


@dataclass(frozen=True)
class Field:
    """One body field: its name, its check, and whether it may be null/absent."""

    name: str
    check: Check
    optional: bool = False


@dataclass(frozen=True)
class EventSpec:
    """An event type as a table row: its body fields, what it means, and its body class."""

    name: EventType
    fields: tuple[Field, ...]
    doc: str
    body: type[EventBody] = field(compare=False)

    @classmethod
    def of(cls, body: type[EventBody]) -> EventSpec:
        fields = tuple(
            Field(f.name, f.opts.check or (lambda _v: None), optional=not f.required)
            for f in wire.spec(body).fields
        )
        return cls(body.TYPE, fields, " ".join((body.__doc__ or "").split()), body)


EVENT_TYPES: dict[str, EventSpec] = {t.value: EventSpec.of(BODIES[t]) for t in EventType}
"""Every event type by name (from ``sync.events.BODIES``)."""


def validate_body(type_: str, body: Mapping[str, Any]) -> dict[str, Any]:
    """Check a body against its type; return it with absent optional fields set to None.

    Raises EventBodyError naming the type and field, so a bad body never reaches the file.
    """
    try:
        return body_class(type_).from_wire(body).to_wire()
    except InvalidEventBody as e:
        raise EventBodyError(e.reason) from None


def encode_body(body: Mapping[str, Any]) -> bytes:
    """Canonical CBOR: the same body always gives the same bytes."""
    return cbor2.dumps(body, canonical=True)


def decode_body(blob: bytes) -> dict[str, Any]:
    """Decode a stored body, refusing duplicate keys and absurd nesting."""
    value = cbor2.loads(blob, allow_duplicate_keys=False, max_depth=16)
    if not isinstance(value, dict):
        raise EventBodyError(f"event body is a {type(value).__name__}, not a map")
    return value


@dataclass(frozen=True)
class Event:
    """One ledger record. ``seq`` is the cabinet's gapless sequence number on the wire."""

    seq: int
    id: str
    type: str
    at_wall: float
    at_mono: float
    boot_id: str
    body: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        """A plain dict (for JSON export and the sync agent)."""
        return {
            "seq": self.seq,
            "id": self.id,
            "type": self.type,
            "at_wall": self.at_wall,
            "at_mono": self.at_mono,
            "boot_id": self.boot_id,
            "body": self.body,
        }
