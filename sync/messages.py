"""Unsigned messages: event batches and telemetry up, acks down, retained cabinet state.

Batches and telemetry are DEFLATE-compressed on the wire when that makes them smaller
(field ``events_z`` / ``samples_z`` instead of ``events`` / ``samples``): a batch of
ledger events repeats the same keys, boot id and cabinet id, and 4G data costs money.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any, ClassVar

from sync import codec
from sync.codec import (
    WireMessage,
    as_bool,
    as_int,
    as_list,
    as_map,
    as_number,
    as_text,
    as_text_map,
    require,
)
from sync.errors import InvalidTopic, MalformedMessage, Misaddressed, UnexpectedKind
from sync.topics import Channel, parse_topic, validate_cabinet_id
from sync.wire import WireRecord, from_wire, wire

MAX_BATCH_EVENTS = 2000
MAX_SAMPLES = 5000
COMPRESS_OVER = 256
"""Bulk arrays whose CBOR is larger than this many bytes are sent deflated if that is smaller."""


def _cabinet(value: Any, where: str) -> str:
    try:
        return validate_cabinet_id(value)
    except InvalidTopic as e:
        raise MalformedMessage(f"{where}: {e}") from None


def _set(obj: object, name: str, value: Any) -> None:
    object.__setattr__(obj, name, value)


def _pack_bulk(name: str, items: list[Any]) -> dict[str, Any]:
    raw = codec.encode(items)
    if len(raw) > COMPRESS_OVER:
        z = codec.deflate(raw)
        if len(z) < len(raw):
            return {f"{name}_z": z}
    return {name: items}


def _unpack_bulk(env: Mapping[str, Any], name: str, where: str, max_items: int) -> list[Any]:
    if env.get(f"{name}_z") is not None:
        raw = codec.inflate(codec.as_bytes(env[f"{name}_z"], f"{where}.{name}_z"), what=f"{where}.{name}_z")
        items = codec.decode_any(raw, max_bytes=codec.MAX_INFLATED_BYTES, what=f"{where}.{name}")
    else:
        items = codec.field(env, name, where)
    return as_list(items, f"{where}.{name}", max_items)


@dataclass(frozen=True)
class WireEvent(WireRecord):
    """One ledger event as it travels: ``seq`` is the cabinet's gapless sequence number.

    ``type`` is any text (an ``EventType`` of ``sync.events`` from a cabinet of this version; a
    newer cabinet's type still travels, is stored and acked), ``body`` the map its body class
    declares (the cloud reads it as a map: the event is kept even when it cannot apply it).
    """

    seq: int
    id: str
    type: str
    at_wall: float
    at_mono: float
    boot_id: str
    body: Mapping[str, Any] = field(default_factory=dict, metadata=wire(empty_is_default=True))

    def __post_init__(self) -> None:
        w = f"event {self.seq!r}"
        as_int(self.seq, f"{w}.seq", lo=1)
        as_text(self.id, f"{w}.id")
        as_text(self.type, f"{w}.type")
        _set(self, "at_wall", as_number(self.at_wall, f"{w}.at_wall"))
        _set(self, "at_mono", as_number(self.at_mono, f"{w}.at_mono"))
        as_text(self.boot_id, f"{w}.boot_id")
        _set(self, "body", as_map(self.body, f"{w}.body"))

    @classmethod
    def from_wire(cls, d: Any, where: str) -> WireEvent:
        return from_wire(cls, d, where)


@dataclass(frozen=True)
class EventBatch(WireMessage):
    """Consecutive ledger events of one cabinet, in increasing ``seq`` (topic ``ev``)."""

    KIND = "ev"
    cabinet: str
    events: tuple[WireEvent, ...]

    def __post_init__(self) -> None:
        _cabinet(self.cabinet, "ev.cabinet")
        _set(self, "events", tuple(self.events))
        require(
            0 < len(self.events) <= MAX_BATCH_EVENTS,
            f"ev: {len(self.events)} events, need 1..{MAX_BATCH_EVENTS}",
        )
        for e in self.events:
            require(isinstance(e, WireEvent), f"ev: {type(e).__name__} is not a WireEvent")
        seqs = [e.seq for e in self.events]
        require(all(a < b for a, b in pairwise(seqs)), f"ev: seqs not increasing: {seqs[:10]}")

    @property
    def first_seq(self) -> int:
        return self.events[0].seq

    @property
    def last_seq(self) -> int:
        return self.events[-1].seq

    def to_wire(self) -> dict[str, Any]:
        return {"cabinet": self.cabinet, **_pack_bulk("events", [e.to_wire() for e in self.events])}

    @classmethod
    def from_wire(cls, env: dict[str, Any]) -> EventBatch:
        items = _unpack_bulk(env, "events", "ev", MAX_BATCH_EVENTS)
        events = tuple(WireEvent.from_wire(d, f"ev.events[{i}]") for i, d in enumerate(items))
        return cls(cabinet=codec.field(env, "cabinet", "ev"), events=events)


@dataclass(frozen=True)
class Ack(WireMessage):
    """The cloud has applied every event of ``cabinet`` up to and including ``acked_seq`` (topic ``ack``)."""

    KIND = "ack"
    cabinet: str
    acked_seq: int

    def __post_init__(self) -> None:
        _cabinet(self.cabinet, "ack.cabinet")
        as_int(self.acked_seq, "ack.acked_seq")


_ABSENT_IF_NONE = wire(omit_none=True)


@dataclass(frozen=True)
class SlotSample(WireRecord):
    """One slot's reading: integers in the units their names say (mV, mA, 0.1 degC); absent = not measured."""

    slot: int
    at: float
    battery: str | None = field(default=None, metadata=_ABSENT_IF_NONE)
    soc: int | None = field(default=None, metadata=_ABSENT_IF_NONE)
    voltage_mv: int | None = field(default=None, metadata=_ABSENT_IF_NONE)
    current_ma: int | None = field(default=None, metadata=_ABSENT_IF_NONE)
    temp_dc: int | None = field(default=None, metadata=_ABSENT_IF_NONE)
    faults: int = 0

    _BOUNDS: ClassVar[dict[str, tuple[int, int]]] = {
        "soc": (0, 100),
        "voltage_mv": (0, 65_535),
        "current_ma": (-32_768, 32_767),
        "temp_dc": (-550, 1_500),
    }

    def __post_init__(self) -> None:
        w = f"sample slot {self.slot!r}"
        as_int(self.slot, f"{w}.slot", 0, 255)
        _set(self, "at", as_number(self.at, f"{w}.at"))
        if self.battery is not None:
            as_text(self.battery, f"{w}.battery")
        for name, (lo, hi) in self._BOUNDS.items():
            if getattr(self, name) is not None:
                as_int(getattr(self, name), f"{w}.{name}", lo, hi)
        as_int(self.faults, f"{w}.faults", 0, 2**32 - 1)

    @classmethod
    def from_wire(cls, d: Any, where: str) -> SlotSample:
        return from_wire(cls, d, where)


@dataclass(frozen=True)
class Telemetry(WireMessage):
    """Downsampled slot readings (topic ``tm``, QoS 0: may be lost or thinned)."""

    KIND = "tm"
    cabinet: str
    at: float
    samples: tuple[SlotSample, ...]

    def __post_init__(self) -> None:
        _cabinet(self.cabinet, "tm.cabinet")
        _set(self, "at", as_number(self.at, "tm.at"))
        _set(self, "samples", tuple(self.samples))
        require(len(self.samples) <= MAX_SAMPLES, f"tm: {len(self.samples)} samples, limit {MAX_SAMPLES}")
        for s in self.samples:
            require(isinstance(s, SlotSample), f"tm: {type(s).__name__} is not a SlotSample")

    def to_wire(self) -> dict[str, Any]:
        return {
            "cabinet": self.cabinet,
            "at": self.at,
            **_pack_bulk("samples", [s.to_wire() for s in self.samples]),
        }

    @classmethod
    def from_wire(cls, env: dict[str, Any]) -> Telemetry:
        items = _unpack_bulk(env, "samples", "tm", MAX_SAMPLES)
        samples = tuple(SlotSample.from_wire(d, f"tm.samples[{i}]") for i, d in enumerate(items))
        return cls(codec.field(env, "cabinet", "tm"), codec.field(env, "at", "tm"), samples)


@dataclass(frozen=True)
class State(WireMessage):
    """The cabinet's retained status (topic ``state``); the last will is ``online=False``."""

    KIND = "state"
    cabinet: str
    online: bool
    at: float
    versions: Mapping[str, str] = field(default_factory=dict, metadata=wire(empty_is_default=True))
    counts: Mapping[str, int] = field(default_factory=dict, metadata=wire(empty_is_default=True))
    backlog: int = 0

    def __post_init__(self) -> None:
        _cabinet(self.cabinet, "state.cabinet")
        as_bool(self.online, "state.online")
        _set(self, "at", as_number(self.at, "state.at"))
        _set(self, "versions", as_text_map(self.versions, "state.versions", max_len=128))
        if not isinstance(self.counts, Mapping):
            raise MalformedMessage(f"state.counts: expected a map, got {type(self.counts).__name__}")
        _set(
            self,
            "counts",
            {as_text(k, "state.counts key"): as_int(v, f"state.counts.{k}") for k, v in self.counts.items()},
        )
        as_int(self.backlog, "state.backlog")


UNSIGNED: dict[Channel, type[EventBatch | Ack | Telemetry | State]] = {
    Channel.EV: EventBatch,
    Channel.ACK: Ack,
    Channel.TM: Telemetry,
    Channel.STATE: State,
}


def decode_for_topic(topic: str, payload: bytes) -> EventBatch | Ack | Telemetry | State:
    """Decode an unsigned message received on ``topic`` and check it names the topic's cabinet.

    ``cmd`` and ``cfg`` carry signed envelopes: open those with ``signing.Verifier``.
    """
    addr = parse_topic(topic)
    cls = UNSIGNED.get(addr.channel)
    if cls is None:
        raise UnexpectedKind(
            f"{topic}: {addr.channel.value} messages are signed; verify them with a Verifier"
        )
    msg = cls.decode(payload)
    if msg.cabinet != addr.cabinet:
        raise Misaddressed(f"{topic}: message names cabinet {msg.cabinet!r}, topic names {addr.cabinet!r}")
    return msg
