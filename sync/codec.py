"""CBOR on the wire: hardened decoding, canonical encoding, and typed field reading.

Every payload is one CBOR map (the envelope) with a protocol version ``v`` and a kind ``k``.
Decoding refuses oversized input, duplicate map keys, deep nesting and any value that is
not plain data (tags such as dates or bignums), so a hostile payload can only ever raise a
``ProtocolError``.
"""

from __future__ import annotations

import math
import re
import uuid
import zlib
from collections.abc import Mapping
from typing import Any, ClassVar, Self

import cbor2

from sync.errors import MalformedMessage, OversizedMessage, UnexpectedKind, UnsupportedVersion

PROTOCOL_VERSION = 1
"""The version this code writes."""
MIN_PROTOCOL_VERSION = 1
"""The oldest version this code still reads."""
MAX_MESSAGE_BYTES = 256 * 1024
"""Largest MQTT payload accepted (Mosquitto's default limit is far higher; 4G links are not)."""
MAX_INFLATED_BYTES = 1024 * 1024
"""Largest content a compressed field may inflate to (zip-bomb guard)."""
MAX_DEPTH = 16
MAX_TEXT = 64
"""Default longest id-like text (ids, kinds, key ids)."""
MAX_TIME = 1e11
"""Latest acceptable Unix time (year ~5138): rejects garbage, never a real clock."""

_PLAIN_SCALARS = (str, bytes, int, float, bool, type(None))
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


def _plain(value: Any, where: str, depth: int) -> Any:
    """One pass over decoded CBOR: tag-37 UUIDs back to text, and anything not plain data refused."""
    t = type(value)
    if t is str or t is int or t is bytes or t is bool or value is None:
        return value
    if t is float:
        if not math.isfinite(value):
            raise MalformedMessage(f"{where}: non-finite number {value}")
        return value
    if t is uuid.UUID:
        return str(value)
    if depth >= MAX_DEPTH:
        raise MalformedMessage(f"{where}: nested deeper than {MAX_DEPTH}")
    if t is dict:
        out = {}
        for k, v in value.items():
            if type(k) is not str:
                raise MalformedMessage(f"{where}: map keys must be text, got {type(k).__name__}")
            out[k] = _plain(v, where, depth + 1)
        return out
    if t is list:
        return [_plain(v, where, depth + 1) for v in value]
    raise MalformedMessage(f"{where}: {t.__name__} is not plain CBOR data (only UUID tags are allowed)")


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


def decode_any(data: bytes, *, max_bytes: int = MAX_MESSAGE_BYTES, what: str = "message") -> Any:
    """Decode one CBOR item of plain data (map, array or scalar) with the same limits as ``decode``."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise MalformedMessage(f"{what}: expected bytes, got {type(data).__name__}")
    if len(data) > max_bytes:
        raise OversizedMessage(f"{what}: {len(data)} bytes, limit {max_bytes}")
    if len(data) == 0:
        raise MalformedMessage(f"{what}: empty payload")
    try:
        obj = cbor2.loads(bytes(data), allow_duplicate_keys=False, max_depth=MAX_DEPTH, allow_indefinite=True)
    except RecursionError:
        raise MalformedMessage(f"{what}: nested too deeply") from None
    except Exception as e:  # cbor2 raises several types (incl. ValueError/OverflowError from tag decoders)
        raise MalformedMessage(f"{what}: not valid CBOR ({type(e).__name__}: {str(e)[:120]})") from None
    return _plain(obj, what, 0)


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
    value = dict(value)
    check_plain(value, where)
    return value


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
    bad value fails where it is made, on either side) and set ``KIND``.
    """

    KIND: ClassVar[str]

    def to_wire(self) -> dict[str, Any]:
        raise NotImplementedError

    @classmethod
    def from_wire(cls, env: dict[str, Any]) -> Self:
        raise NotImplementedError

    def encode(self) -> bytes:
        """The message as canonical CBOR bytes, ready to publish or sign."""
        return encode({"v": PROTOCOL_VERSION, "k": self.KIND, **self.to_wire()})

    @classmethod
    def decode(cls, data: bytes) -> Self:
        """Parse and validate bytes from the wire; any problem raises a ``ProtocolError``."""
        env = decode(data, what=cls.KIND)
        check_envelope(env, cls.KIND)
        return cls.from_wire(env)
