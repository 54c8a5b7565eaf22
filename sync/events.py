"""The event contract both ends share: every ledger event type, its body, and the statuses events move.

A cabinet records these events in its ledger (``cabinet/ledger``) and sends them on ``ev``
(``sync.messages.WireEvent``); the cloud applies them (``cloud/fleet/ingest.py``). Both import
the names from here, so a renamed or removed event is a type error and a failing unit test
(``tests/sync/test_event_contract.py``) at both ends, not a surprise in production.

- ``EventType``: every event type, as a ``StrEnum`` (a member IS its string: the ledger file,
  the wire and the cloud's tables hold exactly the same text as before).
- One frozen dataclass per type (``RentalStarted``, ``BatteryReturned``, ...) declares the body:
  field names, types, required or optional (``X | None = None``), and each field's check;
  ``BODIES`` maps each type to its class. ``parse_body(type, body)`` checks a body; a refusal
  is an ``InvalidEventBody`` naming the type and the field. ``to_wire`` / ``from_wire`` come
  from the fields (``sync.wire``): a body on the wire or in the ledger is the map of every
  declared field, ``None`` where an optional one is absent.
- The statuses the two ends keep for what events do: ``RentalSource`` (the ``source`` of a
  rental event), ``LedgerRentalState`` (a rental in a cabinet's ledger), ``RentalStatus`` (a
  rental in the cloud) and ``CommandStatus`` (a command in the cloud, moved by the cabinet's
  ``command_received`` / ``command_result``).

The wire itself stays open: ``WireEvent.type`` is any text, so an older cloud still stores (and
acks) an event type it does not know yet. To add an event: docs/protocol.md, "Event contract".
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, ClassVar, Self

import cbor2

from sync import wire
from sync.codec import EVENT_BODY_DEPTH
from sync.errors import MalformedMessage, ProtocolError
from sync.wire import Check, WireErrors, WireRecord


class EventType(StrEnum):
    """Every ledger event type (the ``type`` of an event in the ledger and on the wire)."""

    LEDGER_OPENED = "ledger_opened"
    BATTERY_SEEN = "battery_seen"
    BATTERY_RETURNED = "battery_returned"
    BATTERY_REMOVED_UNEXPECTED = "battery_removed_unexpected"
    BATTERY_QUARANTINED = "battery_quarantined"
    BATTERY_RELEASED = "battery_released"
    BATTERY_GONE = "battery_gone"
    RENTAL_REQUESTED = "rental_requested"
    RENTAL_STARTED = "rental_started"
    RENTAL_ABORTED = "rental_aborted"
    SLOT_FAULT = "slot_fault"
    SLOT_FAULT_CLEARED = "slot_fault_cleared"
    SLOT_QUARANTINED = "slot_quarantined"
    SLOT_RELEASED = "slot_released"
    COMMAND_RECEIVED = "command_received"
    COMMAND_RESULT = "command_result"
    SECURITY_EVENT = "security_event"
    CONFIG_APPLIED = "config_applied"
    TECH_ACTION = "tech_action"
    PASS_USED = "pass_used"
    BOARD_DOWN = "board_down"
    BOARD_UP = "board_up"
    STOCK_CHANGED = "stock_changed"
    CERT_EXPIRING = "cert_expiring"
    CERT_RENEWED = "cert_renewed"


class RentalSource(StrEnum):
    """Who started a rental at the cabinet: the ``source`` of the rental events."""

    CLOUD = "cloud"
    """The app: the cloud sent an ``eject`` command."""
    PASS = "pass"
    """An offline pass scanned at the kiosk (the cloud may first hear of it from ``rental_started``)."""


class LedgerRentalState(StrEnum):
    """A rental in a cabinet's ledger (``rentals.state``, docs/ledger.md "Rentals")."""

    REQUESTED = "requested"
    """``rental_requested``: accepted, the lock is about to be pulsed."""
    OPEN = "open"
    """``rental_started``: the battery was taken."""
    RETURNED = "returned"
    """``battery_returned``: the battery is back."""
    ABORTED = "aborted"
    """``rental_aborted``: no battery left the cabinet."""
    CLOSED = "closed"
    """``battery_gone`` while rented (e.g. sold after the cap)."""


class RentalStatus(StrEnum):
    """A rental in the cloud (``rentals.status``), moved by the app, the sweep and the events."""

    PENDING = "pending"
    """Requested in the app, eject command sent; no ``rental_started`` yet."""
    ACTIVE = "active"
    """``rental_started`` applied: the renter has the battery."""
    CLOSED = "closed"
    """``battery_returned`` applied: priced and settled."""
    PURCHASED = "purchased"
    """Ran up to the tariff's cap: the renter bought the battery."""
    ABORTED = "aborted"
    """``rental_aborted``, a refused hold, or no answer to the eject in time."""


class CommandStatus(StrEnum):
    """A cloud-to-cabinet command in the cloud (``commands.status``)."""

    QUEUED = "queued"
    """Made, not yet published."""
    SENT = "sent"
    """Published to the cabinet's ``cmd`` topic."""
    RECEIVED = "received"
    """The cabinet's ``command_received`` arrived."""
    OK = "ok"
    """``command_result`` with ``ok`` true (or the rental it ejected for started)."""
    FAILED = "failed"
    """``command_result`` with ``ok`` false (or the rental it ejected for was aborted)."""
    EXPIRED = "expired"
    """No answer before the eject timed out."""


# --- value checks: each returns None for a good value, else what is wrong -----------------------


def _text(max_len: int = 200) -> Check:
    def check(v: Any) -> str | None:
        if not isinstance(v, str) or not v.strip():
            return "must be a non-empty string"
        if len(v) > max_len:
            return f"must be at most {max_len} characters"
        return None

    return check


def _int(lo: int = 0, hi: int = 2**53) -> Check:
    def check(v: Any) -> str | None:
        if isinstance(v, bool) or not isinstance(v, int):
            return "must be an integer"
        if not lo <= v <= hi:
            return f"must be between {lo} and {hi}"
        return None

    return check


def _number(lo: float, hi: float) -> Check:
    def check(v: Any) -> str | None:
        if isinstance(v, bool) or not isinstance(v, int | float):
            return "must be a finite number"
        if (isinstance(v, int) and abs(v) > 2**1000) or not math.isfinite(v):  # isfinite(10**400) raises
            return "must be a finite number"
        if not lo <= v <= hi:
            return f"must be between {lo} and {hi}"
        return None

    return check


def _one_of(*values: str) -> Check:
    def check(v: Any) -> str | None:
        return None if v in values else f"must be one of {', '.join(values)}"

    return check


def _bool(v: Any) -> str | None:
    return None if isinstance(v, bool) else "must be true or false"


def _plain(v: Any, depth: int) -> bool:
    """True if ``v``, at container depth ``depth`` of an event body, is plain data the wire to
    the cloud carries: text-keyed maps, lists, text, bytes, 64-bit integers, finite floats,
    booleans and null, nested no deeper than the wire takes in a batch (EVENT_BODY_DEPTH)."""
    if isinstance(v, Mapping | list | tuple) and depth >= EVENT_BODY_DEPTH:
        return False
    if isinstance(v, Mapping):
        return all(isinstance(k, str) and _plain(x, depth + 1) for k, x in v.items())
    if isinstance(v, list | tuple):
        return all(_plain(x, depth + 1) for x in v)
    if isinstance(v, float):
        return math.isfinite(v)
    if isinstance(v, int) and not isinstance(v, bool):
        return -(2**63) <= v < 2**64  # larger ones become CBOR bignum tags, which the wire refuses
    return v is None or isinstance(v, str | bytes | bool)


def _mapping(v: Any) -> str | None:
    # nested maps too: an event the cloud's codec refuses would block the outbox behind it forever
    if not isinstance(v, Mapping) or not _plain(v, 1):  # a field's map sits inside the body's map
        return (
            "must be a map of plain data (text keys at every level, finite numbers, "
            f"at most {EVENT_BODY_DEPTH - 1} deep)"
        )
    try:
        cbor2.dumps(v, canonical=True)
    except (TypeError, ValueError, cbor2.CBOREncodeError) as exc:
        return f"cannot be encoded as CBOR ({exc})"
    return None


SLOT = _int(0, 1023)
SN = _text(64)
ID = _text(128)
REASON = _text(500)
DETAIL = _text(2000)
SOC = _number(0, 100)
RISK = _number(0, 1)
TEMP_C = _number(-60, 200)
CYCLES = _int(0, 1_000_000)
BOARD = _int(1, 247)  # Modbus unit id
COUNT = _int(0, 1023)
TIME = _number(0, 1e11)  # Unix seconds
BOOL = _bool
MAP = _mapping
SOURCE = _one_of(*RentalSource)


def checked(check: Check, cast: Callable[[Any], Any] | None = None) -> dict[str, Any]:
    """A body field's metadata: its check, and what a good value becomes (an enum member)."""
    return wire.wire(check=check, cast=cast)


# --- bodies ---------------------------------------------------------------------------------------


class InvalidEventBody(MalformedMessage):
    """An event body that breaks its type's declaration; ``reason`` names the type and the field."""


class _BodyErrors(WireErrors):
    """The ledger's wording: ``battery_seen: field 'slot' must be between 0 and 1023 (got -1)``."""

    def missing(self, where: str, name: str) -> ProtocolError:
        return InvalidEventBody(f"{where}: field {name!r} is required")

    def invalid(self, where: str, name: str, problem: str, value: Any) -> ProtocolError:
        return InvalidEventBody(f"{where}: field {name!r} {problem} (got {value!r})")

    def unknown(self, where: str, names: list[str]) -> ProtocolError:
        return InvalidEventBody(f"{where}: unknown field(s) {', '.join(names)}")

    def not_a_map(self, where: str, value: Any) -> ProtocolError:
        return InvalidEventBody(f"{where}: the body is a {type(value).__name__}, not a map")


@dataclass(frozen=True, kw_only=True)
class EventBody(WireRecord):
    """Base of the body classes: checked when made (by hand or ``from_wire``), unknown keys refused.

    The class docstring of each body is what its event means.
    """

    TYPE: ClassVar[EventType]
    WIRE_STRICT: ClassVar[bool] = True
    WIRE_ERRORS: ClassVar[WireErrors] = _BodyErrors()

    def __post_init__(self) -> None:
        where = self.TYPE.value
        wire.check_fields(self, where)
        problem = self.rule()
        if problem:
            raise InvalidEventBody(f"{where}: {problem}")

    def rule(self) -> str | None:
        """A rule across fields: what is wrong, or None."""
        return None

    @classmethod
    def from_wire(cls, body: Any) -> Self:
        """The body from a decoded map; ``InvalidEventBody`` names the field that is wrong."""
        return wire.from_wire(cls, body, cls.TYPE.value)


@dataclass(frozen=True, kw_only=True)
class LedgerOpened(EventBody):
    """The ledger was opened by the cabinet process (once per start)."""

    TYPE = EventType.LEDGER_OPENED
    boot_id: str = field(metadata=checked(ID))
    version: int = field(metadata=checked(_int(1, 10_000)))
    software: str | None = field(default=None, metadata=checked(ID))


@dataclass(frozen=True, kw_only=True)
class BatterySeen(EventBody):
    """A battery first known to the cabinet in a slot (installation, or back from repair)."""

    TYPE = EventType.BATTERY_SEEN
    slot: int = field(metadata=checked(SLOT))
    sn: str = field(metadata=checked(SN))
    soc: float | None = field(default=None, metadata=checked(SOC))
    cycles: int | None = field(default=None, metadata=checked(CYCLES))


@dataclass(frozen=True, kw_only=True)
class BatteryReturned(EventBody):
    """A battery was seated and locked in an empty slot; ends its local rental if any."""

    TYPE = EventType.BATTERY_RETURNED
    slot: int = field(metadata=checked(SLOT))
    sn: str = field(metadata=checked(SN))
    rental_id: str | None = field(default=None, metadata=checked(ID))
    soc: float | None = field(default=None, metadata=checked(SOC))
    temp_c: float | None = field(default=None, metadata=checked(TEMP_C))


@dataclass(frozen=True, kw_only=True)
class BatteryRemovedUnexpected(EventBody):
    """A battery left its slot without an eject (theft or broken latch): it is now missing."""

    TYPE = EventType.BATTERY_REMOVED_UNEXPECTED
    slot: int = field(metadata=checked(SLOT))
    sn: str = field(metadata=checked(SN))


@dataclass(frozen=True, kw_only=True)
class BatteryQuarantined(EventBody):
    """A battery must not be charged or rented until released."""

    TYPE = EventType.BATTERY_QUARANTINED
    sn: str = field(metadata=checked(SN))
    reason: str = field(metadata=checked(REASON))
    risk: float | None = field(default=None, metadata=checked(RISK))


@dataclass(frozen=True, kw_only=True)
class BatteryReleased(EventBody):
    """A quarantined battery is usable again."""

    TYPE = EventType.BATTERY_RELEASED
    sn: str = field(metadata=checked(SN))
    reason: str = field(metadata=checked(REASON))
    risk: float | None = field(default=None, metadata=checked(RISK))


@dataclass(frozen=True, kw_only=True)
class BatteryGone(EventBody):
    """A battery left the cabinet for good or for a while: repair, written_off, lost, sold..."""

    TYPE = EventType.BATTERY_GONE
    sn: str = field(metadata=checked(SN))
    reason: str = field(metadata=checked(REASON))


def _pass_needs_pass_id(source: str | None, pass_id: str | None) -> str | None:
    if source == RentalSource.PASS and not pass_id:
        return "pass_id is required when source is 'pass'"
    return None


@dataclass(frozen=True, kw_only=True)
class RentalRequested(EventBody):
    """Optional: a rent request accepted, recorded before the lock is pulsed."""

    TYPE = EventType.RENTAL_REQUESTED
    rental_id: str = field(metadata=checked(ID))
    source: RentalSource = field(metadata=checked(SOURCE, RentalSource))
    user: str | None = field(default=None, metadata=checked(ID))
    pass_id: str | None = field(default=None, metadata=checked(ID))
    cmd_id: str | None = field(default=None, metadata=checked(ID))

    def rule(self) -> str | None:
        return _pass_needs_pass_id(self.source, self.pass_id)


@dataclass(frozen=True, kw_only=True)
class RentalStarted(EventBody):
    """The user took the ejected battery: the rental is running."""

    TYPE = EventType.RENTAL_STARTED
    rental_id: str = field(metadata=checked(ID))
    sn: str = field(metadata=checked(SN))
    slot: int = field(metadata=checked(SLOT))
    source: RentalSource = field(metadata=checked(SOURCE, RentalSource))
    user: str | None = field(default=None, metadata=checked(ID))
    pass_id: str | None = field(default=None, metadata=checked(ID))
    cmd_id: str | None = field(default=None, metadata=checked(ID))

    def rule(self) -> str | None:
        return _pass_needs_pass_id(self.source, self.pass_id)


@dataclass(frozen=True, kw_only=True)
class RentalAborted(EventBody):
    """A rent request ended without a battery leaving (not taken, jam, none rentable)."""

    TYPE = EventType.RENTAL_ABORTED
    rental_id: str = field(metadata=checked(ID))
    slot: int | None = field(default=None, metadata=checked(SLOT))
    reason: str = field(metadata=checked(REASON))
    source: RentalSource | None = field(default=None, metadata=checked(SOURCE, RentalSource))


@dataclass(frozen=True, kw_only=True)
class SlotFault(EventBody):
    """A slot has a fault (jam, board, sensor); it stays until cleared."""

    TYPE = EventType.SLOT_FAULT
    slot: int = field(metadata=checked(SLOT))
    kind: str = field(metadata=checked(ID))
    detail: str | None = field(default=None, metadata=checked(DETAIL))


@dataclass(frozen=True, kw_only=True)
class SlotFaultCleared(EventBody):
    """A slot's fault was cleared."""

    TYPE = EventType.SLOT_FAULT_CLEARED
    slot: int = field(metadata=checked(SLOT))
    by: str | None = field(default=None, metadata=checked(ID))
    detail: str | None = field(default=None, metadata=checked(DETAIL))


@dataclass(frozen=True, kw_only=True)
class SlotQuarantined(EventBody):
    """A slot must not be used (charged, ejected, returned into) until released."""

    TYPE = EventType.SLOT_QUARANTINED
    slot: int = field(metadata=checked(SLOT))
    reason: str = field(metadata=checked(REASON))
    by: str = field(metadata=checked(ID))


@dataclass(frozen=True, kw_only=True)
class SlotReleased(EventBody):
    """A quarantined slot is usable again."""

    TYPE = EventType.SLOT_RELEASED
    slot: int = field(metadata=checked(SLOT))
    reason: str = field(metadata=checked(REASON))
    by: str = field(metadata=checked(ID))


@dataclass(frozen=True, kw_only=True)
class CommandReceived(EventBody):
    """A cloud command passed its checks and is about to be acted on (recorded first)."""

    TYPE = EventType.COMMAND_RECEIVED
    cmd_id: str = field(metadata=checked(ID))
    kind: str = field(metadata=checked(ID))
    # kept as a copy (dict): the caller's map cannot change it later
    args: Mapping[str, Any] | None = field(default=None, metadata=checked(MAP, dict))


@dataclass(frozen=True, kw_only=True)
class CommandResult(EventBody):
    """The outcome of a received command."""

    TYPE = EventType.COMMAND_RESULT
    cmd_id: str = field(metadata=checked(ID))
    ok: bool = field(metadata=checked(BOOL))
    detail: str | None = field(default=None, metadata=checked(DETAIL))


@dataclass(frozen=True, kw_only=True)
class SecurityEvent(EventBody):
    """Something was refused for security: forged, expired, replayed or misaddressed."""

    TYPE = EventType.SECURITY_EVENT
    kind: str = field(metadata=checked(ID))
    detail: str | None = field(default=None, metadata=checked(DETAIL))


@dataclass(frozen=True, kw_only=True)
class ConfigApplied(EventBody):
    """A signed config version took effect."""

    TYPE = EventType.CONFIG_APPLIED
    version: int = field(metadata=checked(_int(0)))


@dataclass(frozen=True, kw_only=True)
class TechAction(EventBody):
    """Audit record of a technician's action on site."""

    TYPE = EventType.TECH_ACTION
    technician: str = field(metadata=checked(ID))
    action: str = field(metadata=checked(ID))
    detail: str | None = field(default=None, metadata=checked(DETAIL))


@dataclass(frozen=True, kw_only=True)
class PassUsed(EventBody):
    """An offline pass was used to open a rental on this cabinet."""

    TYPE = EventType.PASS_USED
    pass_id: str = field(metadata=checked(ID))
    rental_id: str = field(metadata=checked(ID))


# conditions the fleet must be told of, recorded on each transition only (cabinet/conditions.py)


@dataclass(frozen=True, kw_only=True)
class BoardDown(EventBody):
    """A slot board stopped answering and is isolated: its slots read unknown."""

    TYPE = EventType.BOARD_DOWN
    board: int = field(metadata=checked(BOARD))
    first_slot: int = field(metadata=checked(SLOT))
    last_slot: int = field(metadata=checked(SLOT))
    detail: str | None = field(default=None, metadata=checked(DETAIL))


@dataclass(frozen=True, kw_only=True)
class BoardUp(EventBody):
    """An isolated slot board answers again."""

    TYPE = EventType.BOARD_UP
    board: int = field(metadata=checked(BOARD))
    detail: str | None = field(default=None, metadata=checked(DETAIL))


@dataclass(frozen=True, kw_only=True)
class StockChanged(EventBody):
    """The cabinet became or stopped being empty (no rentable battery) or full (no free slot)."""

    TYPE = EventType.STOCK_CHANGED
    empty: bool = field(metadata=checked(BOOL))
    full: bool = field(metadata=checked(BOOL))
    rentable: int = field(metadata=checked(COUNT))
    free: int = field(metadata=checked(COUNT))


@dataclass(frozen=True, kw_only=True)
class CertExpiring(EventBody):
    """A certificate the cabinet uses expires within alerts.cert_warn_days (or has expired)."""

    TYPE = EventType.CERT_EXPIRING
    cert: str = field(metadata=checked(ID))
    not_after: float = field(metadata=checked(TIME))
    days_left: float = field(metadata=checked(_number(-1e6, 1e6)))


@dataclass(frozen=True, kw_only=True)
class CertRenewed(EventBody):
    """A certificate reported as expiring is valid long enough again (replaced)."""

    TYPE = EventType.CERT_RENEWED
    cert: str = field(metadata=checked(ID))
    not_after: float = field(metadata=checked(TIME))


BODIES: dict[EventType, type[EventBody]] = {
    cls.TYPE: cls
    for cls in (
        LedgerOpened,
        BatterySeen,
        BatteryReturned,
        BatteryRemovedUnexpected,
        BatteryQuarantined,
        BatteryReleased,
        BatteryGone,
        RentalRequested,
        RentalStarted,
        RentalAborted,
        SlotFault,
        SlotFaultCleared,
        SlotQuarantined,
        SlotReleased,
        CommandReceived,
        CommandResult,
        SecurityEvent,
        ConfigApplied,
        TechAction,
        PassUsed,
        BoardDown,
        BoardUp,
        StockChanged,
        CertExpiring,
        CertRenewed,
    )
}
"""The body class of every event type."""


def body_class(type_: str) -> type[EventBody]:
    """The body class of an event type; ``InvalidEventBody`` for a type that does not exist."""
    try:
        return BODIES[EventType(type_)]
    except ValueError:
        raise InvalidEventBody(f"unknown event type {type_!r}") from None


def parse_body(type_: str, body: Any) -> EventBody:
    """Check ``body`` against its type's declaration; ``InvalidEventBody`` names the type and field."""
    return body_class(type_).from_wire(body)
