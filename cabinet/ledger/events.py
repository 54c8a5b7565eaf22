"""Every ledger event type, its body fields and their validation, and the body codec.

A body is checked here before anything touches the file, so a malformed body never
reaches the ledger. Bodies are stored as canonical CBOR (deterministic bytes, so the
cloud can hash or sign them). Projections are updated by ``projections.apply``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import cbor2

from sync.codec import EVENT_BODY_DEPTH

from .errors import EventBodyError

Check = Callable[[Any], str | None]


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


@dataclass(frozen=True)
class Field:
    """One body field: its name, its check, and whether it may be null/absent."""

    name: str
    check: Check
    optional: bool = False


def req(name: str, check: Check) -> Field:
    return Field(name, check)


def opt(name: str, check: Check) -> Field:
    return Field(name, check, optional=True)


@dataclass(frozen=True)
class EventType:
    """An event type: its body fields and an optional cross-field rule."""

    name: str
    fields: tuple[Field, ...]
    doc: str
    rule: Callable[[dict[str, Any]], str | None] | None = field(default=None, compare=False)


def _pass_needs_pass_id(b: dict[str, Any]) -> str | None:
    if b.get("source") == "pass" and not b.get("pass_id"):
        return "pass_id is required when source is 'pass'"
    return None


_TYPES = (
    EventType(
        "ledger_opened",
        (req("boot_id", ID), req("version", _int(1, 10_000)), opt("software", ID)),
        "The ledger was opened by the cabinet process (once per start).",
    ),
    EventType(
        "battery_seen",
        (req("slot", SLOT), req("sn", SN), opt("soc", SOC), opt("cycles", CYCLES)),
        "A battery first known to the cabinet in a slot (installation, or back from repair).",
    ),
    EventType(
        "battery_returned",
        (req("slot", SLOT), req("sn", SN), opt("rental_id", ID), opt("soc", SOC), opt("temp_c", TEMP_C)),
        "A battery was seated and locked in an empty slot; ends its local rental if any.",
    ),
    EventType(
        "battery_removed_unexpected",
        (req("slot", SLOT), req("sn", SN)),
        "A battery left its slot without an eject (theft or broken latch): it is now missing.",
    ),
    EventType(
        "battery_quarantined",
        (req("sn", SN), req("reason", REASON), opt("risk", RISK)),
        "A battery must not be charged or rented until released.",
    ),
    EventType(
        "battery_released",
        (req("sn", SN), req("reason", REASON), opt("risk", RISK)),
        "A quarantined battery is usable again.",
    ),
    EventType(
        "battery_gone",
        (req("sn", SN), req("reason", REASON)),
        "A battery left the cabinet for good or for a while: repair, written_off, lost, sold...",
    ),
    EventType(
        "rental_requested",
        (
            req("rental_id", ID),
            req("source", _one_of("cloud", "pass")),
            opt("user", ID),
            opt("pass_id", ID),
            opt("cmd_id", ID),
        ),
        "Optional: a rent request accepted, recorded before the lock is pulsed.",
        _pass_needs_pass_id,
    ),
    EventType(
        "rental_started",
        (
            req("rental_id", ID),
            req("sn", SN),
            req("slot", SLOT),
            req("source", _one_of("cloud", "pass")),
            opt("user", ID),
            opt("pass_id", ID),
            opt("cmd_id", ID),
        ),
        "The user took the ejected battery: the rental is running.",
        _pass_needs_pass_id,
    ),
    EventType(
        "rental_aborted",
        (
            req("rental_id", ID),
            opt("slot", SLOT),
            req("reason", REASON),
            opt("source", _one_of("cloud", "pass")),
        ),
        "A rent request ended without a battery leaving (not taken, jam, none rentable).",
    ),
    EventType(
        "slot_fault",
        (req("slot", SLOT), req("kind", ID), opt("detail", DETAIL)),
        "A slot has a fault (jam, board, sensor); it stays until cleared.",
    ),
    EventType(
        "slot_fault_cleared",
        (req("slot", SLOT), opt("by", ID), opt("detail", DETAIL)),
        "A slot's fault was cleared.",
    ),
    EventType(
        "slot_quarantined",
        (req("slot", SLOT), req("reason", REASON), req("by", ID)),
        "A slot must not be used (charged, ejected, returned into) until released.",
    ),
    EventType(
        "slot_released",
        (req("slot", SLOT), req("reason", REASON), req("by", ID)),
        "A quarantined slot is usable again.",
    ),
    EventType(
        "command_received",
        (req("cmd_id", ID), req("kind", ID), opt("args", _mapping)),
        "A cloud command passed its checks and is about to be acted on (recorded first).",
    ),
    EventType(
        "command_result",
        (req("cmd_id", ID), req("ok", _bool), opt("detail", DETAIL)),
        "The outcome of a received command.",
    ),
    EventType(
        "security_event",
        (req("kind", ID), opt("detail", DETAIL)),
        "Something was refused for security: forged, expired, replayed or misaddressed.",
    ),
    EventType("config_applied", (req("version", _int(0)),), "A signed config version took effect."),
    EventType(
        "tech_action",
        (req("technician", ID), req("action", ID), opt("detail", DETAIL)),
        "Audit record of a technician's action on site.",
    ),
    EventType(
        "pass_used",
        (req("pass_id", ID), req("rental_id", ID)),
        "An offline pass was used to open a rental on this cabinet.",
    ),
    # conditions the fleet must be told of, recorded on each transition only (cabinet/conditions.py)
    EventType(
        "board_down",
        (req("board", BOARD), req("first_slot", SLOT), req("last_slot", SLOT), opt("detail", DETAIL)),
        "A slot board stopped answering and is isolated: its slots read unknown.",
    ),
    EventType(
        "board_up",
        (req("board", BOARD), opt("detail", DETAIL)),
        "An isolated slot board answers again.",
    ),
    EventType(
        "stock_changed",
        (req("empty", _bool), req("full", _bool), req("rentable", COUNT), req("free", COUNT)),
        "The cabinet became or stopped being empty (no rentable battery) or full (no free slot).",
    ),
    EventType(
        "cert_expiring",
        (req("cert", ID), req("not_after", TIME), req("days_left", _number(-1e6, 1e6))),
        "A certificate the cabinet uses expires within alerts.cert_warn_days (or has expired).",
    ),
    EventType(
        "cert_renewed",
        (req("cert", ID), req("not_after", TIME)),
        "A certificate reported as expiring is valid long enough again (replaced).",
    ),
)

EVENT_TYPES: dict[str, EventType] = {t.name: t for t in _TYPES}


def validate_body(type_: str, body: Mapping[str, Any]) -> dict[str, Any]:
    """Check a body against its type; return it with absent optional fields set to None.

    Raises EventBodyError naming the type and field, so a bad body never reaches the file.
    """
    spec = EVENT_TYPES.get(type_)
    if spec is None:
        raise EventBodyError(f"unknown event type {type_!r}")
    names = {f.name for f in spec.fields}
    unknown = sorted(set(body) - names)
    if unknown:
        raise EventBodyError(f"{type_}: unknown field(s) {', '.join(unknown)}")
    clean: dict[str, Any] = {}
    for f in spec.fields:
        value = body.get(f.name)
        if value is None:
            if not f.optional:
                raise EventBodyError(f"{type_}: field {f.name!r} is required")
            clean[f.name] = None
            continue
        problem = f.check(value)
        if problem:
            raise EventBodyError(f"{type_}: field {f.name!r} {problem} (got {value!r})")
        clean[f.name] = dict(value) if isinstance(value, Mapping) else value
    if spec.rule:
        problem = spec.rule(clean)
        if problem:
            raise EventBodyError(f"{type_}: {problem}")
    return clean


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
