"""sync/wire.py: to_wire / from_wire derived from a dataclass's fields, refusals naming the field."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import pytest

from sync.codec import as_int, decode, encode
from sync.errors import MalformedMessage
from sync.messages import Ack, SlotSample, State
from sync.passes import OfflinePass
from sync.wire import WireRecord, from_wire, to_wire, wire


class Colour(StrEnum):
    RED = "red"


@dataclass(frozen=True)
class Inner(WireRecord):
    n: int


@dataclass(frozen=True)
class Sample(WireRecord):
    name: str
    colour: Colour = Colour.RED
    count: int = 0
    note: str | None = field(default=None, metadata=wire(omit_none=True))
    tags: Mapping[str, str] = field(default_factory=dict, metadata=wire(empty_is_default=True))
    level: int = field(default=1, metadata=wire(required=True))
    inner: Inner | None = None
    items: tuple[int, ...] = ()
    size: int | None = field(default=None, metadata=wire(check=lambda v: None if v > 0 else "must be > 0"))

    def __post_init__(self) -> None:
        as_int(self.count, "sample.count")
        object.__setattr__(self, "items", tuple(self.items))  # from_wire hands on the decoded array


@dataclass(frozen=True)
class Strict(WireRecord):
    WIRE_STRICT = True
    a: int


def test_to_wire_writes_every_field_in_its_wire_form() -> None:
    s = Sample("x", tags={"k": "v"}, inner=Inner(2), items=(1, 2))
    d = to_wire(s)
    assert d == {"name": "x", "colour": "red", "count": 0, "tags": {"k": "v"}, "level": 1,
                 "inner": {"n": 2}, "items": [1, 2], "size": None}  # fmt: skip
    assert type(d["colour"]) is str and "note" not in d
    assert to_wire(Sample("x", note="n"))["note"] == "n"


def test_from_wire_reads_back_what_to_wire_wrote() -> None:
    s = Sample("x", count=3, note="n", tags={"k": "v"}, level=2, size=4)
    d = decode(encode(to_wire(s)))
    assert from_wire(Sample, d, "sample") == s


@pytest.mark.parametrize(
    ("d", "reason"),
    [
        ({"level": 1}, "sample.name: missing"),
        ({"name": None, "level": 1}, "sample.name: missing"),
        ({"name": "x"}, "sample.level: missing"),  # required on the wire despite its default
        ({"name": "x", "level": None}, "sample.level: missing"),
        ({"name": "x", "level": 1, "count": None}, "sample.count: expected an integer, got NoneType"),
        ({"name": "x", "level": 1, "size": 0}, "sample.size: must be > 0 (got 0)"),
        ([1], "sample: expected a map, got list"),
    ],
)
def test_from_wire_refuses_naming_the_field(d: Any, reason: str) -> None:
    with pytest.raises(MalformedMessage) as e:
        from_wire(Sample, d, "sample")
    assert e.value.reason == reason


def test_defaults_and_unknown_keys() -> None:
    s = from_wire(Sample, {"name": "x", "level": 1, "tags": None, "newer_field": 1}, "sample")
    assert (s.count, s.tags, s.note) == (0, {}, None)  # absent: default; null or empty: default too
    assert from_wire(Sample, {"name": "x", "level": 1, "tags": {}}, "sample").tags == {}
    with pytest.raises(MalformedMessage, match=r"strict: unknown field\(s\) b, c"):
        from_wire(Strict, {"a": 1, "c": 2, "b": 3}, "strict")


def test_the_messages_use_it_with_the_same_bytes_and_reasons_as_before() -> None:
    assert Ack("CAB-1", 5).to_wire() == {"cabinet": "CAB-1", "acked_seq": 5}
    with pytest.raises(MalformedMessage, match=r"^ack\.acked_seq: missing$"):
        Ack.from_wire({"cabinet": "CAB-1"})
    assert SlotSample(3, 1.0).to_wire() == {"slot": 3, "at": 1.0, "faults": 0}
    st = State.from_wire({"cabinet": "CAB-1", "online": True, "at": 1.0, "versions": None})
    assert st.to_wire() == {"cabinet": "CAB-1", "online": True, "at": 1.0, "versions": {}, "counts": {},
                            "backlog": 0}  # fmt: skip
    with pytest.raises(MalformedMessage, match=r"^pass\.max_rentals: missing$"):
        OfflinePass.from_wire({"pass_id": "P", "user": "u", "issued_at": 1.0, "expires_at": 2.0})
