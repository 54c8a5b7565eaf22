"""Hostile CBOR for the decode-bound tests: payloads cbor2 would refuse to write, built by hand.

``KNOWN_BAD`` maps a name to (bytes, the ``ProtocolError`` subclass ``sync.codec`` must raise).
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator
from typing import Any

from sync.errors import MalformedMessage, ProtocolError, TooComplex, UnsupportedCBOR

BOUND_S = 0.1
"""Each decode returns or raises within this (the issue's bound; refusals take microseconds)."""
WATCHDOG_S = 3.0
"""A decode still running after this is stopped, so a regression fails instead of hanging the suite."""


def head(major: int, n: int) -> bytes:
    """The head of a CBOR item: major type and argument in the shortest form."""
    if n < 24:
        return bytes([major << 5 | n])
    for ai, size in ((24, 1), (25, 2), (26, 4), (27, 8)):
        if n < 1 << (8 * size):
            return bytes([major << 5 | ai]) + n.to_bytes(size, "big")
    raise ValueError(n)


def text(s: str) -> bytes:
    b = s.encode()
    return head(3, len(b)) + b


def envelope(kind: str, extra: bytes = b"", n_extra: int = 0) -> bytes:
    """``{"k": kind, "v": 1, ...}`` followed by ``n_extra`` raw key/value pairs."""
    return head(5, 2 + n_extra) + text("k") + text(kind) + text("v") + b"\x01" + extra


def with_x(value: bytes, kind: str = "ack") -> bytes:
    """An envelope whose extra key ``x`` holds ``value`` (decoders ignore unknown keys, so only
    the decoder's own limits can stop it)."""
    return envelope(kind, text("x") + value, 1)


def shared_fanout(width: int, levels: int) -> bytes:
    """Shared references (tags 28/29): each level is ``width`` references to the one before it,
    so 553 bytes describe 40**5 leaves (a "billion laughs")."""
    parts = [head(6, 28) + head(4, width) + b"\x01" * width]
    for lvl in range(1, levels):
        parts.append(head(6, 28) + head(4, width) + (head(6, 29) + head(0, lvl - 1)) * width)
    return with_x(head(4, levels) + b"".join(parts))


def stringref_bomb(size: int, refs: int) -> bytes:
    """String references (tags 256/25): one long text, referenced ``refs`` times (GBs as JSON)."""
    return with_x(head(6, 256) + head(4, refs + 1) + text("A" * size) + (head(6, 25) + b"\x00") * refs)


def colliding_bignum_keys(n: int) -> bytes:
    """A map whose bignum keys (tag 2) all hash alike: Python hashes ints modulo 2**61 - 1."""
    m = (1 << 61) - 1

    def big(v: int) -> bytes:
        b = v.to_bytes((v.bit_length() + 7) // 8, "big")
        return head(6, 2) + head(2, len(b)) + b

    return with_x(head(5, n) + b"".join(big(k * m) + b"\x00" for k in range(1, n + 1)))


KNOWN_BAD: dict[str, tuple[bytes, type[ProtocolError]]] = {
    "shared-reference fan-out": (shared_fanout(40, 5), UnsupportedCBOR),
    "shared reference alone": (with_x(head(6, 28) + b"\x80"), UnsupportedCBOR),
    "string-reference bomb": (stringref_bomb(100_000, 40_000), UnsupportedCBOR),
    "colliding bignum map keys": (colliding_bignum_keys(20_000), UnsupportedCBOR),
    "integer map keys": (with_x(head(5, 3) + b"\x01\x00\x02\x00\x03\x00"), UnsupportedCBOR),
    "array as a map key": (with_x(head(5, 1) + b"\x80\x00"), UnsupportedCBOR),
    "bignum": (with_x(head(6, 2) + head(2, 50_000) + b"\xff" * 50_000), UnsupportedCBOR),
    "negative bignum": (with_x(head(6, 3) + head(2, 9) + b"\x01" * 9), UnsupportedCBOR),
    "bigfloat with a huge exponent": (
        with_x(head(6, 5) + b"\x82" + head(0, 2**31) + b"\x01"),
        UnsupportedCBOR,
    ),
    "decimal fraction": (with_x(head(6, 4) + b"\x82" + head(1, 2**40) + b"\x01"), UnsupportedCBOR),
    "date text": (with_x(head(6, 0) + text("2026-01-01T00:00:00Z")), UnsupportedCBOR),
    "epoch date": (with_x(head(6, 1) + b"\x01"), UnsupportedCBOR),
    "rational": (with_x(head(6, 30) + b"\x82\x01\x02"), UnsupportedCBOR),
    "regular expression": (with_x(head(6, 35) + text("(a+)+$")), UnsupportedCBOR),
    "set": (with_x(head(6, 258) + b"\x81\x01"), UnsupportedCBOR),
    "ip address": (with_x(head(6, 260) + head(2, 4) + b"\x01\x02\x03\x04"), UnsupportedCBOR),
    "embedded CBOR": (with_x(head(6, 24) + head(2, 1) + b"\x00"), UnsupportedCBOR),
    "self-describe tag": (head(6, 55799) + envelope("ack"), UnsupportedCBOR),
    "tag 37 over text": (with_x(head(6, 37) + text("not sixteen")), UnsupportedCBOR),
    "tag 37 over 15 bytes": (with_x(head(6, 37) + head(2, 15) + b"\x00" * 15), UnsupportedCBOR),
    "64-bit tag number": (with_x(head(6, 2**64 - 1) + b"\x00"), UnsupportedCBOR),
    "indefinite byte string": (with_x(b"\x5f" + b"\x40" * 50_000 + b"\xff"), UnsupportedCBOR),
    "indefinite array": (with_x(b"\x9f" + b"\x00" * 1000 + b"\xff"), UnsupportedCBOR),
    "indefinite map": (b"\xbf" + text("k") + text("ack") + text("v") + b"\x01\xff", UnsupportedCBOR),
    "lone break": (with_x(b"\xff"), UnsupportedCBOR),
    "undefined": (with_x(b"\xf7"), UnsupportedCBOR),
    "simple value 16": (with_x(b"\xf0"), UnsupportedCBOR),
    "two-byte simple value": (with_x(b"\xf8\xff"), UnsupportedCBOR),
    "bytes after the item": (envelope("ack") + b"\x00", UnsupportedCBOR),
    "array of 2**32 items in 9 bytes": (with_x(head(4, 2**32)), MalformedMessage),
    "array of 2**64-1 items": (with_x(head(4, 2**64 - 1)), MalformedMessage),
    "map of 2**31 pairs": (with_x(head(5, 2**31)), MalformedMessage),
    "text of 2**62 bytes": (with_x(head(3, 2**62)), MalformedMessage),
    "bytes of 2**32 bytes": (with_x(head(2, 2**32) + b"\x00" * 100), MalformedMessage),
    "reserved head": (with_x(b"\x1c"), MalformedMessage),
    "truncated head": (with_x(b"\x1b\x00\x00"), MalformedMessage),
    "deep arrays": (with_x(b"\x81" * 10_000 + b"\x00"), TooComplex),
    "deep maps": (with_x((head(5, 1) + text("a")) * 5_000 + b"\x00"), TooComplex),
    "deep empty array": (with_x(b"\x81" * 15 + b"\x80"), TooComplex),
    "NaN (half)": (with_x(b"\xf9\x7e\x00"), MalformedMessage),
    "infinity (double)": (with_x(b"\xfb\x7f\xf0" + b"\x00" * 6), MalformedMessage),
    "bad UTF-8": (with_x(head(3, 2) + b"\xc3\x28"), MalformedMessage),
    "duplicate keys": (
        head(5, 3) + text("k") + text("ack") + text("v") + b"\x01" + text("k") + b"\x00",
        MalformedMessage,
    ),
}


@contextlib.contextmanager
def watchdog(seconds: float) -> Iterator[None]:
    """Stop the code inside after ``seconds`` (SIGALRM), so a decode that never ends fails the test."""

    def fire(_sig: int, _frame: Any) -> None:
        raise AssertionError(f"still decoding after {seconds} s")

    old = signal.signal(signal.SIGALRM, fire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
