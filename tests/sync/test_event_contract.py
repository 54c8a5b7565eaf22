"""The event contract (sync/events.py) is complete, and both ends name only events it declares.

A renamed or removed event must fail here, not in an end-to-end test: the cabinet may still
write some event types as plain text (a ``StrEnum`` member equals its text), so the source of
``cabinet/`` and ``cloud/`` is scanned for every place that names an event type (the type given
to ``record``/``_record``/``_emit``, a comparison or ``match`` on an event's type, a constant
collection of event types, SQL on ``events.type``) and each name must be an ``EventType``.
"""

from __future__ import annotations

import ast
import dataclasses
import math
import re
from pathlib import Path
from typing import Any

import pytest

from sync.codec import EVENT_BODY_DEPTH
from sync.events import (
    BODIES,
    CommandStatus,
    EventBody,
    EventType,
    InvalidEventBody,
    LedgerRentalState,
    RentalSource,
    RentalStatus,
    parse_body,
)
from sync.messages import EventBatch, WireEvent, decode_for_topic
from sync.wire import spec

ROOT = Path(__file__).resolve().parents[2]
TYPES = {t.value for t in EventType}

#: What the controller tells its listeners (the web UI) that is not a ledger event.
UI_NOTICES = {"alert", "foreign_battery", "eject"}
#: Calls whose first argument is an event type: Ledger.record, AsyncLedger.record,
#: ConditionWatch._record; and Controller._emit (an event type or a UI notice).
RECORD_CALLS = {"record", "_record"}
NOTICE_CALLS = {"_emit"}
#: Names of variables that hold an event's type.
TYPE_NAMES = {"type_", "t", "event_type", "etype"}
LOOKS_LIKE_A_TYPE = re.compile(r"[a-z][a-z0-9_]*")
SQL_EVENTS = re.compile(r"\b(FROM|JOIN|UPDATE)\s+(events|cabinet_events|cabinet_claims)\b", re.IGNORECASE)
SQL_TYPE = re.compile(r"\btype\s+IN\s*\(([^)]*)\)|\btype\s*=\s*'([^']*)'", re.IGNORECASE)


# --- the scan -----------------------------------------------------------------------------------


def _is_event_type(node: ast.AST) -> bool:
    """``x.type``, ``r["type"]`` or a variable named like one holding an event's type."""
    if isinstance(node, ast.Attribute):
        return node.attr == "type"
    if isinstance(node, ast.Name):
        return node.id in TYPE_NAMES
    if isinstance(node, ast.Subscript):
        return isinstance(node.slice, ast.Constant) and node.slice.value == "type"
    return False


def _texts(node: ast.AST) -> list[str]:
    """The text constants of a constant or of a tuple/list/set of them."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node.value]
    if isinstance(node, ast.Tuple | ast.List | ast.Set):
        return [e.value for e in node.elts if isinstance(e, ast.Constant) and isinstance(e.value, str)]
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id in ("frozenset", "set")
    ):
        return [t for a in node.args for t in _texts(a)]
    return []


def _pattern_texts(p: ast.pattern) -> list[str]:
    if isinstance(p, ast.MatchValue) and isinstance(p.value, ast.Constant) and isinstance(p.value.value, str):
        return [p.value.value]
    if isinstance(p, ast.MatchOr):
        return [t for q in p.patterns for t in _pattern_texts(q)]
    return []


def event_names_in(source: str, where: str = "<source>") -> list[tuple[str, int, str, str]]:
    """Every event type named as text in ``source``: (where, line, how, name)."""
    found: list[tuple[str, int, str, str]] = []

    def add(node: ast.AST, how: str, names: list[str]) -> None:
        if how not in ("record", "notice"):  # elsewhere only what could be an event type's name:
            names = [n for n in names if LOOKS_LIKE_A_TYPE.fullmatch(n)]  # not a provider's "hold.confirmed"
        found.extend((where, getattr(node, "lineno", 0), how, n) for n in names)

    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call) and node.args:
            f = node.func
            name = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else ""
            if name in RECORD_CALLS | NOTICE_CALLS:
                how = "notice" if name in NOTICE_CALLS else "record"
                add(node, how, _texts(node.args[0])[:1] if isinstance(node.args[0], ast.Constant) else [])
        elif isinstance(node, ast.Compare):
            sides = [node.left, *node.comparators]
            if any(_is_event_type(s) for s in sides):
                add(node, "compare", [t for s in sides if not _is_event_type(s) for t in _texts(s)])
        elif isinstance(node, ast.Match) and _is_event_type(node.subject):
            add(node, "match", [t for c in node.cases for t in _pattern_texts(c.pattern)])
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if node.value is None or not any(isinstance(t, ast.Name) and t.id.isupper() for t in targets):
                continue
            value = node.value
            names = (
                [k.value for k in value.keys if isinstance(k, ast.Constant) and isinstance(k.value, str)]
                if isinstance(value, ast.Dict)
                else _texts(value)
            )
            if len(names) > 1 and set(names) & TYPES:  # a collection naming one event type names only them
                add(node, "collection", names)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and SQL_EVENTS.search(node.value):
            for m in SQL_TYPE.finditer(node.value):
                add(node, "sql", re.findall(r"'([^']*)'", m.group(1) or "") or [m.group(2)])
    return found


def scan(*packages: str) -> list[tuple[str, int, str, str]]:
    out = []
    for package in packages:
        for path in sorted((ROOT / package).rglob("*.py")):
            if "migrations" in path.parts or path.parent.name == "payments":
                continue  # migrations are history; payment adapters compare their providers' own types
            out += event_names_in(path.read_text(), str(path.relative_to(ROOT)))
    return out


def test_every_event_type_the_cabinet_or_the_cloud_names_is_in_the_contract() -> None:
    unknown = [
        f"{where}:{line} ({how}) names event type {name!r}, which sync.events.EventType does not have"
        for where, line, how, name in scan("cabinet", "cloud")
        if name not in TYPES and not (how == "notice" and name in UI_NOTICES)
    ]
    assert unknown == []


def test_the_scan_sees_what_the_cabinet_records() -> None:
    """The scan is not vacuous: the cabinet's own calls and tables are found."""
    seen = {(how, name) for _, _, how, name in scan("cabinet")}
    assert ("notice", "eject") in seen  # Controller._emit
    kinds = {how for how, _ in seen}
    assert {"record", "notice", "compare"} <= kinds, kinds


def test_the_cloud_and_the_ledger_name_event_types_only_through_the_enum() -> None:
    """Where the enum is used a renamed member is a type error: keep it that way."""
    assert [f"{w}:{line} {how} {n!r}" for w, line, how, n in scan("cloud", "cabinet/ledger")] == []


@pytest.mark.parametrize(
    ("source", "how"),
    [
        ('ledger.record("rental_begun", rental_id="R")', "record"),
        ('await self._emit("rental_begun")', "notice"),
        ('if ev.type == "rental_begun": pass', "compare"),
        ('ok = r["type"] in ("rental_started", "rental_begun")', "compare"),
        ('match type_:\n    case "battery_seen" | "rental_begun": pass', "match"),
        ('HISTORY_TYPES = ("rental_started", "rental_begun")', "collection"),
        ('ALERTS = {"security_event": 1, "rental_begun": 2}', "collection"),
        ("q = \"SELECT seq FROM events WHERE type IN ('rental_started', 'rental_begun')\"", "sql"),
        ("q = \"SELECT seq FROM events WHERE type = 'rental_begun'\"", "sql"),
    ],
)
def test_the_scan_catches_a_renamed_event(source: str, how: str) -> None:
    found = event_names_in(source)
    assert ("<source>", 1, how, "rental_begun") in [(w, 1, h, n) for w, _, h, n in found], found


def test_the_scan_leaves_other_text_alone() -> None:
    source = (
        'STATE_TEXT = {"unknown": "Board not answering", "fault": "Fault"}\nx = msg.kind == "eject"\n'
        'if row["type"] != "hold.confirmed": pass\n'  # a payment provider's event, not a ledger event
    )
    assert event_names_in(source) == []


# --- the declarations ---------------------------------------------------------------------------


def test_every_event_type_has_its_body_class() -> None:
    assert set(BODIES) == set(EventType)
    for t, cls in BODIES.items():
        assert cls.TYPE is t
        assert issubclass(cls, EventBody) and dataclasses.is_dataclass(cls)
        assert cls.__dataclass_params__.frozen, cls  # type: ignore[attr-defined]
        assert (cls.__doc__ or "").strip(), f"{cls.__name__} says what {t} means"
        assert dataclasses.fields(cls), cls


@pytest.mark.parametrize(
    "enum",
    [EventType, RentalSource, LedgerRentalState, RentalStatus, CommandStatus],
    ids=lambda e: e.__name__,
)
def test_member_names_spell_their_stored_text(enum: Any) -> None:
    """A StrEnum member is its text (what the ledger, the wire and the tables hold); a value
    renamed without its name (or the other way round) shows here."""
    for m in enum:
        assert isinstance(m, str) and m.name.lower() == m.value == str(m) == f"{m}"


def _check_values(path: str, pattern: str) -> set[str]:
    m = re.search(pattern, (ROOT / path).read_text())
    assert m, (path, pattern)
    return set(re.findall(r"'([^']+)'", m.group(1)))


def test_the_statuses_are_the_ones_the_tables_allow() -> None:
    assert _check_values("cabinet/ledger/schema.py", r"CHECK \(state IN \(([^)]*)\)\)") == set(
        LedgerRentalState
    )
    rentals = r'CheckConstraint\("status in \(([^)]*)\)", name="status"\),\n\s*CheckConstraint\("captured'
    assert _check_values("cloud/db.py", rentals) == set(RentalStatus)
    commands_comment = re.search(r'Column\("status", String\(16\), nullable=False\),\s*#\s*queued ([a-z ]+)\n',
                                 (ROOT / "cloud/db.py").read_text())  # fmt: skip
    assert commands_comment and {"queued", *commands_comment.group(1).split()} == set(CommandStatus)


# --- bodies: round trip and refusals --------------------------------------------------------------

#: A good value for every field name the bodies use.
GOOD: dict[str, Any] = {
    "boot_id": "b-1", "version": 3, "software": "0.1.0", "slot": 2, "sn": "PB000002", "soc": 50,
    "cycles": 3, "rental_id": "R-1", "temp_c": 25.5, "reason": "hot", "risk": 0.5, "source": "cloud",
    "user": "u-1", "pass_id": "P-1", "cmd_id": "c-1", "kind": "lock_jam", "detail": "d", "by": "tech-1",
    "args": {"slot": 2, "deep": {"a": [1, 2.5]}}, "ok": True, "technician": "tech-1", "action": "unlock",
    "board": 2, "first_slot": 5, "last_slot": 8, "empty": False, "full": True, "rentable": 0, "free": 3,
    "cert": "client", "not_after": 1.8e9, "days_left": 3.5,
}  # fmt: skip
#: A bad value for every field name (each check refuses it).
BAD: dict[str, Any] = {
    "boot_id": "", "version": -1, "software": " ", "slot": 1024, "sn": "x" * 65, "soc": 101, "cycles": -1,
    "rental_id": 7, "temp_c": math.inf, "reason": "", "risk": 1.5, "source": "kiosk", "user": "",
    "pass_id": "", "cmd_id": "", "kind": "", "detail": "", "by": "", "args": {1: 2}, "ok": 1,
    "technician": "", "action": "", "board": 0, "first_slot": -1, "last_slot": True, "empty": "no",
    "full": None, "rentable": 1024, "free": 2.5, "cert": "", "not_after": -1.0, "days_left": math.nan,
}  # fmt: skip
ALL = sorted(EventType)


def _fields(t: EventType) -> list[Any]:
    return list(spec(BODIES[t]).fields)


def full_body(t: EventType) -> dict[str, Any]:
    return {f.name: GOOD[f.name] for f in _fields(t)}


def test_the_tables_cover_every_field() -> None:
    names = {f.name for t in EventType for f in _fields(t)}
    assert names == set(GOOD) == set(BAD)


@pytest.mark.parametrize("t", ALL)
def test_a_body_round_trips_through_to_wire_and_from_wire(t: EventType) -> None:
    body = full_body(t)
    made = parse_body(t, body)
    assert type(made) is BODIES[t]
    assert made.to_wire() == body
    assert BODIES[t].from_wire(made.to_wire()) == made
    assert BODIES[t](**body) == made  # made by hand: the same checks, the same record
    # every optional field may be left out: it comes back as None
    required = {f.name: body[f.name] for f in _fields(t) if f.required}
    assert parse_body(t, required).to_wire() == {f.name: required.get(f.name) for f in _fields(t)}


@pytest.mark.parametrize("t", ALL)
def test_a_body_travels_to_the_cloud_and_reads_back_the_same(t: EventType) -> None:
    body = parse_body(t, full_body(t)).to_wire()
    ev = WireEvent(seq=1, id="e-1", type=t, at_wall=1.7e9, at_mono=1.0, boot_id="b", body=body)
    got = decode_for_topic("cab/v1/CAB-1/ev", EventBatch("CAB-1", (ev,)).encode())
    assert isinstance(got, EventBatch)
    (back,) = got.events
    assert back.type == t and type(back.type) is str
    assert parse_body(back.type, back.body).to_wire() == body


def test_a_rental_source_reads_back_as_its_enum_member() -> None:
    b = parse_body("rental_started", {"rental_id": "R", "sn": "X", "slot": 1, "source": "cloud"})
    assert b.source is RentalSource.CLOUD  # type: ignore[attr-defined]
    assert type(b.to_wire()["source"]) is str


@pytest.mark.parametrize(("t", "name"), [(t, f.name) for t in ALL for f in _fields(t)])
def test_a_bad_field_is_refused_naming_the_type_and_the_field(t: EventType, name: str) -> None:
    body = full_body(t)
    body[name] = BAD[name]
    with pytest.raises(InvalidEventBody) as e:
        parse_body(t, body)
    assert e.value.reason.startswith(f"{t}: field {name!r} "), e.value.reason
    with pytest.raises(InvalidEventBody, match=f"field {name!r}"):
        BODIES[t](**body)  # made by hand: refused the same way


@pytest.mark.parametrize(("t", "name"), [(t, f.name) for t in ALL for f in _fields(t) if f.required])
def test_a_missing_required_field_is_refused_by_name(t: EventType, name: str) -> None:
    body = full_body(t)
    del body[name]
    with pytest.raises(InvalidEventBody) as e:
        parse_body(t, body)
    assert e.value.reason == f"{t}: field {name!r} is required"


def test_unknown_fields_types_and_rules_are_refused() -> None:
    with pytest.raises(InvalidEventBody, match=r"battery_seen: unknown field\(s\) colour"):
        parse_body("battery_seen", {"slot": 1, "sn": "X", "colour": "red"})
    with pytest.raises(InvalidEventBody, match="unknown event type 'rental_begun'"):
        parse_body("rental_begun", {})
    with pytest.raises(InvalidEventBody, match="rental_started: pass_id is required when source is 'pass'"):
        parse_body("rental_started", {"rental_id": "R", "sn": "X", "slot": 1, "source": "pass"})
    with pytest.raises(InvalidEventBody, match="the body is a list"):
        parse_body("battery_seen", [1])


def test_a_map_field_is_refused_when_deeper_than_the_wire_carries() -> None:
    args: Any = 1
    for _ in range(EVENT_BODY_DEPTH - 1):
        args = {"a": args}
    parse_body("command_received", {"cmd_id": "c", "kind": "ping", "args": args})
    with pytest.raises(InvalidEventBody, match="field 'args' must be a map of plain data"):
        parse_body("command_received", {"cmd_id": "c", "kind": "ping", "args": {"a": args}})


def test_the_ledger_hands_on_the_contract_unchanged() -> None:
    from cabinet.ledger import EVENT_TYPES
    from cabinet.ledger.events import encode_body, validate_body

    assert set(EVENT_TYPES) == TYPES
    for t in EventType:
        spec_ = EVENT_TYPES[t]
        assert [(f.name, f.optional) for f in spec_.fields] == [(f.name, not f.required) for f in _fields(t)]
        clean = validate_body(t, full_body(t))
        assert clean == parse_body(t, full_body(t)).to_wire()
        encode_body(clean)
