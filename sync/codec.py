"""CBOR on the wire: hardened decoding, canonical encoding, and typed field reading.

Every payload is one CBOR map (the envelope) with a protocol version ``v`` and a kind ``k``.
Decoding (``decode_any``, the one decoder every path uses) first scans the item heads and
refuses oversized input, deep nesting, too many items, declared lengths beyond the bytes
left, indefinite lengths, non-text map keys and every tag but 37 (UUIDs): no shared or string
references, bignums, dates... So a payload's decoded structure is never larger than its
bytes warrant, the work is linear in them, and a hostile payload can only ever raise a
``ProtocolError``.
"""

from __future__ import annotations

import math
import re
import zlib
from collections.abc import Mapping
from typing import Any, ClassVar, Self

import cbor2

from sync import wire
from sync.errors import (
    MalformedMessage,
    OversizedMessage,
    TooComplex,
    UnexpectedKind,
    UnsupportedCBOR,
    UnsupportedVersion,
)

PROTOCOL_VERSION = 1
"""The version this code writes."""
MIN_PROTOCOL_VERSION = 1
"""The oldest version this code still reads."""
MAX_MESSAGE_BYTES = 256 * 1024
"""Largest MQTT payload accepted (Mosquitto's default limit is far higher; 4G links are not)."""
MAX_INFLATED_BYTES = 1024 * 1024
"""Largest content a compressed field may inflate to (zip-bomb guard)."""
MAX_DEPTH = 16
"""Most nested containers (maps and arrays) in one payload."""
EVENT_BODY_DEPTH = MAX_DEPTH - 3
"""Most nested containers in one event body, the body map included: a batch puts the body under
its envelope map, its events array and the event's own map, and a body the wire refuses would
block the outbox behind it for ever."""
MAX_ITEMS = 200_000
"""Most CBOR items in one decoded payload (a full batch of 2000 events is about 50,000)."""
MAX_TEXT = 64
"""Default longest id-like text (ids, kinds, key ids)."""
MAX_TIME = 1e11
"""Latest acceptable Unix time (year ~5138): rejects garbage, never a real clock."""

_UUID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def _pack_uuids(value: Any) -> Any:
    """Canonical lowercase UUID texts become CBOR tag 37 (18 bytes instead of 37 on the wire)."""
    t = type(value)
    if t is str:
        if len(value) == 36 and _UUID_RE.fullmatch(value):
            return cbor2.CBORTag(37, bytes.fromhex(value.replace("-", "")))
        return value
    if t is dict:
        return {k: _pack_uuids(v) for k, v in value.items()}
    if t is list or t is tuple:
        return [_pack_uuids(v) for v in value]
    return value


def _uuid_text(value: bytes, _immutable: bool) -> str:
    """Tag 37 (already checked by ``_scan`` to hold exactly 16 bytes) as canonical lowercase text."""
    h = value.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


_SEMANTIC = {37: _uuid_text}


def _scan(data: bytes, what: str, max_items: int) -> None:
    """Walk the CBOR item heads of ``data`` without building anything; refuse what the protocol never sends.

    This runs before ``cbor2`` builds a single object, in time linear in the bytes (strings are
    skipped, not read), so the decoded structure can never be larger than the input warrants:

    - only the protocol's subset: definite lengths, text map keys, false/true/null, finite floats,
      and tag 37 over exactly 16 bytes (a UUID). Every other tag is refused, and with it every
      way to make a structure larger than its bytes: shared references (28/29), string
      references (256/25), bignums (2/3), decimal fractions and bigfloats (4/5), sets, dates...;
    - every declared length fits in the bytes that are left (an array of 2**32 items in 9 bytes
      is refused at its head);
    - at most ``MAX_DEPTH`` nested containers and ``max_items`` items in all;
    - nothing after the item.

    Non-text map keys are refused too: Python hashes small ints to themselves, so a map of
    colliding integer keys would make building the dict quadratic.
    """
    n = len(data)
    i = 0
    items = 0
    stack: list[tuple[int, bool]] = []
    left, in_map = 1, False  # items still to read in the current container (the top level: one)
    while True:
        if i >= n:
            raise MalformedMessage(f"{what}: truncated CBOR (ends at byte {n} inside an item)")
        ib = data[i]
        major, ai = ib >> 5, ib & 31
        if in_map and not left & 1 and major != 3:
            raise UnsupportedCBOR(f"{what}: map key at byte {i} is not text (major type {major})")
        i += 1
        if ai < 24:
            arg = ai
        elif ai < 28:
            w = 1 << (ai - 24)
            if i + w > n:
                raise MalformedMessage(f"{what}: truncated CBOR (item head at byte {i - 1})")
            arg = int.from_bytes(data[i : i + w], "big")
            i += w
        elif ai == 31:
            raise UnsupportedCBOR(
                f"{what}: indefinite-length item or break at byte {i - 1} (the protocol uses definite lengths)"
            )
        else:
            raise MalformedMessage(f"{what}: reserved CBOR item head 0x{ib:02x} at byte {i - 1}")
        items += 1
        if items > max_items:
            raise TooComplex(f"{what}: more than {max_items} CBOR items")
        if major <= 1:  # unsigned and negative integers (at most 64 bits by construction)
            pass
        elif major <= 3:  # byte and text strings
            if arg > n - i:
                raise MalformedMessage(f"{what}: string at byte {i - 1} declares {arg} bytes, {n - i} left")
            i += arg
        elif major <= 5:  # arrays and maps
            if arg:
                size = arg if major == 4 else 2 * arg
                if size > n - i:  # every item takes at least one byte
                    raise MalformedMessage(
                        f"{what}: {'array' if major == 4 else 'map'} at byte {i - 1} declares {arg} "
                        f"entries, {n - i} bytes left"
                    )
                if len(stack) >= MAX_DEPTH:
                    raise TooComplex(f"{what}: nested deeper than {MAX_DEPTH}")
                stack.append((left - 1, in_map))
                left, in_map = size, major == 5
                continue
            if len(stack) >= MAX_DEPTH:
                raise TooComplex(f"{what}: nested deeper than {MAX_DEPTH}")
        elif major == 6:
            if arg != 37:
                raise UnsupportedCBOR(
                    f"{what}: tag {arg} at byte {i - 1} is not plain CBOR data (only tag 37, UUIDs, is allowed)"
                )
            if i + 17 > n or data[i] != 0x50:
                raise UnsupportedCBOR(f"{what}: tag 37 at byte {i - 1} must hold exactly 16 bytes")
            i += 17
        elif ai >= 25:  # half, single and double floats: all-ones exponent is infinity or NaN
            if arg & _FLOAT_EXP[ai] == _FLOAT_EXP[ai]:
                raise MalformedMessage(f"{what}: non-finite number at byte {i - 1 - (1 << (ai - 24))}")
        elif ai not in (20, 21, 22):
            raise UnsupportedCBOR(
                f"{what}: simple value {arg} at byte {i - 1} (only false, true and null are allowed)"
            )
        left -= 1
        while not left:
            if not stack:
                if i != n:
                    raise UnsupportedCBOR(f"{what}: {n - i} bytes after the CBOR item")
                return
            left, in_map = stack.pop()


_FLOAT_EXP = {25: 0x7C00, 26: 0x7F80_0000, 27: 0x7FF0_0000_0000_0000}


def encode(obj: Any) -> bytes:
    """Canonical CBOR (RFC 8949 §4.2.1: sorted keys, shortest forms): deterministic bytes for signing.

    Text values that are canonical lowercase UUIDs travel as CBOR tag 37 and decode back to text.
    """
    try:
        return cbor2.dumps(_pack_uuids(obj), canonical=True)
    except (cbor2.CBOREncodeError, TypeError, ValueError) as e:
        raise MalformedMessage(f"cannot encode as CBOR: {e}") from e


def decode(data: bytes, *, max_bytes: int = MAX_MESSAGE_BYTES, what: str = "message") -> dict[str, Any]:
    """Decode one CBOR map of plain data, or raise a ``ProtocolError`` that says why not."""
    obj = decode_any(data, max_bytes=max_bytes, what=what)
    if not isinstance(obj, dict):
        raise MalformedMessage(f"{what}: top level must be a CBOR map, got {type(obj).__name__}")
    return obj


def decode_any(
    data: bytes, *, max_bytes: int = MAX_MESSAGE_BYTES, what: str = "message", max_items: int = MAX_ITEMS
) -> Any:
    """Decode one CBOR item of plain data (map, array or scalar) with the same limits as ``decode``.

    The one decoder for everything that arrives: ``_scan`` refuses, before anything is built,
    whatever the protocol does not use, so the work is linear in ``len(data)`` and every refusal
    is a ``ProtocolError``. ``cbor2`` then builds only plain data (tag 37 straight to text).
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise MalformedMessage(f"{what}: expected bytes, got {type(data).__name__}")
    if len(data) > max_bytes:
        raise OversizedMessage(f"{what}: {len(data)} bytes, limit {max_bytes}")
    if len(data) == 0:
        raise MalformedMessage(f"{what}: empty payload")
    data = bytes(data)
    _scan(data, what, max_items)
    try:
        return cbor2.loads(
            data,
            semantic_decoders=_SEMANTIC,
            max_depth=MAX_DEPTH,
            allow_indefinite=False,
            allow_duplicate_keys=False,
            strict_hashable_types=True,
        )
    except RecursionError:
        raise TooComplex(f"{what}: nested too deeply") from None
    except Exception as e:  # bad UTF-8, duplicate keys: whatever cbor2 raises is a refusal
        raise MalformedMessage(f"{what}: not valid CBOR ({type(e).__name__}: {str(e)[:120]})") from None


def check_plain(value: Any, where: str, _depth: int = 0) -> None:
    """Raise ``MalformedMessage`` unless ``value`` is plain data: maps with text keys, arrays, scalars."""
    t = type(value)
    if t is str or t is int or t is bytes or t is bool or value is None:
        return
    if t is float:
        if not math.isfinite(value):
            raise MalformedMessage(f"{where}: non-finite number {value}")
        return
    if _depth >= MAX_DEPTH:
        raise MalformedMessage(f"{where}: nested deeper than {MAX_DEPTH}")
    if isinstance(value, dict):
        for k, v in value.items():
            if type(k) is not str:
                raise MalformedMessage(f"{where}: map keys must be text, got {type(k).__name__}")
            check_plain(v, f"{where}.{k[:40]}" if type(v) in (dict, list, tuple) else where, _depth + 1)
    elif isinstance(value, list | tuple):
        for v in value:
            check_plain(v, where, _depth + 1)
    elif isinstance(value, str | int | float | bytes):  # subclasses (IntEnum, StrEnum) from code
        check_plain(float(value) if isinstance(value, float) else None, where, _depth)
    else:
        raise MalformedMessage(f"{where}: {t.__name__} is not plain CBOR data")


def deflate(data: bytes) -> bytes:
    """Raw DEFLATE (RFC 1951) of ``data``: repeated keys and ids in a batch shrink a lot."""
    c = zlib.compressobj(level=6, wbits=-15)
    return c.compress(data) + c.flush()


def inflate(data: bytes, *, what: str, limit: int = MAX_INFLATED_BYTES) -> bytes:
    """Inverse of ``deflate`` that refuses to produce more than ``limit`` bytes."""
    d = zlib.decompressobj(wbits=-15)
    try:
        out = d.decompress(data, limit)
    except zlib.error as e:
        raise MalformedMessage(f"{what}: bad DEFLATE data ({e})") from None
    if d.unconsumed_tail:
        raise OversizedMessage(f"{what}: inflates to more than {limit} bytes")
    if not d.eof:
        raise MalformedMessage(f"{what}: truncated DEFLATE data")
    return out


def check_envelope(env: Mapping[str, Any], kind: str | None = None) -> int:
    """Check the envelope's version ``v`` (and kind ``k`` when given); return the version."""
    v = env.get("v")
    if not isinstance(v, int) or isinstance(v, bool):
        raise MalformedMessage("envelope: missing or non-integer protocol version 'v'")
    if v > PROTOCOL_VERSION:
        raise UnsupportedVersion(f"protocol version {v} is newer than this code ({PROTOCOL_VERSION})")
    if v < MIN_PROTOCOL_VERSION:
        raise UnsupportedVersion(
            f"protocol version {v} is older than the oldest supported ({MIN_PROTOCOL_VERSION})"
        )
    k = env.get("k")
    if not isinstance(k, str):
        raise MalformedMessage("envelope: missing message kind 'k'")
    if kind is not None and k != kind:
        raise UnexpectedKind(f"expected a {kind!r} message, got {k[:20]!r}")
    return v


def field(env: Mapping[str, Any], name: str, where: str) -> Any:
    """A required envelope field (``None`` counts as missing)."""
    v = env.get(name)
    if v is None:
        raise MalformedMessage(f"{where}.{name}: missing")
    return v


def as_map(value: Any, where: str) -> dict[str, Any]:
    """A map of plain data (any content); copied so the caller's dict cannot change it later."""
    if not isinstance(value, Mapping):
        raise MalformedMessage(f"{where}: expected a map, got {type(value).__name__}")
    copy: dict[str, Any] = dict(value)
    check_plain(copy, where)
    return copy


def as_text(value: Any, where: str, max_len: int = MAX_TEXT) -> str:
    """Non-empty text of at most ``max_len`` characters."""
    if not isinstance(value, str):
        raise MalformedMessage(f"{where}: expected text, got {type(value).__name__}")
    if not 0 < len(value) <= max_len:
        raise MalformedMessage(f"{where}: length {len(value)} not in 1..{max_len}")
    return value


def as_int(value: Any, where: str, lo: int = 0, hi: int = 2**63 - 1) -> int:
    """An integer (never a bool) within ``lo..hi``."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise MalformedMessage(f"{where}: expected an integer, got {type(value).__name__}")
    if not lo <= value <= hi:
        raise MalformedMessage(f"{where}: {value} not in {lo}..{hi}")
    return int(value)


def as_number(value: Any, where: str, lo: float = 0.0, hi: float = MAX_TIME) -> float:
    """A finite number within ``lo..hi``, as a float (integers are accepted)."""
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise MalformedMessage(f"{where}: expected a number, got {type(value).__name__}")
    f = float(value)
    if not (math.isfinite(f) and lo <= f <= hi):
        raise MalformedMessage(f"{where}: {value} not in {lo}..{hi}")
    return f


def as_bool(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise MalformedMessage(f"{where}: expected a boolean, got {type(value).__name__}")
    return value


def as_bytes(value: Any, where: str, max_len: int = MAX_MESSAGE_BYTES) -> bytes:
    if not isinstance(value, bytes | bytearray):
        raise MalformedMessage(f"{where}: expected a byte string, got {type(value).__name__}")
    if len(value) > max_len:
        raise OversizedMessage(f"{where}: {len(value)} bytes, limit {max_len}")
    return bytes(value)


def as_list(value: Any, where: str, max_items: int) -> list[Any]:
    if not isinstance(value, list | tuple):
        raise MalformedMessage(f"{where}: expected an array, got {type(value).__name__}")
    if len(value) > max_items:
        raise OversizedMessage(f"{where}: {len(value)} items, limit {max_items}")
    return list(value)


def as_text_tuple(
    value: Any, where: str, max_items: int = 100_000, max_len: int = MAX_TEXT
) -> tuple[str, ...]:
    """An array of short texts, as a tuple."""
    return tuple(as_text(v, f"{where}[{i}]", max_len) for i, v in enumerate(as_list(value, where, max_items)))


def as_text_map(value: Any, where: str, max_len: int = 4096, key_len: int = MAX_TEXT) -> dict[str, str]:
    """A map of text to text (e.g. language -> tariff wording)."""
    if not isinstance(value, Mapping):
        raise MalformedMessage(f"{where}: expected a map, got {type(value).__name__}")
    return {
        as_text(k, f"{where} key", key_len): as_text(v, f"{where}.{k}", max_len) for k, v in value.items()
    }


def require(cond: bool, reason: str) -> None:
    """Raise ``MalformedMessage(reason)`` unless ``cond``: semantic checks in ``__post_init__``."""
    if not cond:
        raise MalformedMessage(reason)


class WireMessage:
    """Base of every message: ``encode()`` wraps ``to_wire()`` in the versioned envelope.

    Subclasses are frozen dataclasses that validate themselves in ``__post_init__`` (so a
    bad value fails where it is made, on either side) and set ``KIND``. ``to_wire`` and
    ``from_wire`` come from the dataclass fields (``sync.wire``, refusals named ``KIND.field``);
    a message with a bulk or nested field that travels in its own form writes them itself.
    """

    KIND: ClassVar[str]

    def to_wire(self) -> dict[str, Any]:
        return wire.to_wire(self)

    @classmethod
    def from_wire(cls, env: dict[str, Any]) -> Self:
        return wire.from_wire(cls, env, cls.KIND)

    def encode(self) -> bytes:
        """The message as canonical CBOR bytes, ready to publish or sign."""
        return encode({"v": PROTOCOL_VERSION, "k": self.KIND, **self.to_wire()})

    @classmethod
    def decode(cls, data: bytes) -> Self:
        """Parse and validate bytes from the wire; any problem raises a ``ProtocolError``."""
        env = decode(data, what=cls.KIND)
        check_envelope(env, cls.KIND)
        return cls.from_wire(env)
