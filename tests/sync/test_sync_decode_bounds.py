"""Decoding cannot be made slow: whatever the bytes, every decoder returns or refuses within 100 ms.

CBOR can describe a structure far larger than its bytes (shared references, string references,
bignums, huge declared lengths). ``sync.codec.decode_any`` scans the item heads first and refuses
every feature the protocol does not use, so the work is linear in the bytes received. The bound
asserted here (100 ms per call, measured with ``time.perf_counter``) is a ceiling, not a
benchmark: a refusal takes well under a millisecond; before the scan, the shared-reference fan-out
below (553 bytes) ran for ever, and a map of colliding bignum keys took seconds.
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Callable
from typing import Any

import cbor2
import pytest
from cbor_bombs import (
    BOUND_S,
    KNOWN_BAD,
    WATCHDOG_S,
    head,
    shared_fanout,
    stringref_bomb,
    text,
    watchdog,
    with_x,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sync_samples import CAB, T0, all_signable, all_unsigned

from sync import codec
from sync.commands import Command
from sync.config import Config
from sync.errors import ProtocolError, TooComplex, UnsupportedCBOR
from sync.messages import Ack, EventBatch, State, Telemetry, decode_for_topic
from sync.model_transfer import ModelChunk
from sync.passes import MAX_PASS_TEXT, OfflinePass, encode_pass_text
from sync.signing import MemoryReplayStore, SignedEnvelope, Signer, Verifier, generate_private_key

KEY = generate_private_key()
SIGNER = Signer(KEY, "k1")
DECODERS: list[Callable[[bytes], Any]] = [
    c.decode
    for c in (Ack, EventBatch, State, Telemetry, Command, Config, OfflinePass, SignedEnvelope, ModelChunk)
]
TOPICS = [f"cab/v1/{CAB}/{c}" for c in ("ev", "ack", "tm", "state")]
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def bounded(call: Callable[[bytes], Any], data: bytes) -> ProtocolError | None:
    """Run one decode; it must return or raise a ``ProtocolError`` within ``BOUND_S``."""
    err: ProtocolError | None = None
    with watchdog(WATCHDOG_S):
        t0 = time.perf_counter()
        try:
            call(data)
        except ProtocolError as e:
            err = e
        elapsed = time.perf_counter() - t0
    assert elapsed < BOUND_S, f"{getattr(call, '__qualname__', call)} took {elapsed * 1000:.1f} ms"
    if err is not None:
        assert err.reason
    return err


def verifier() -> Verifier:
    return Verifier({"k1": KEY.public_key()}, CAB, MemoryReplayStore(), clock=lambda: T0)


def every_path(data: bytes) -> list[ProtocolError | None]:
    """``data`` through every decoder the cabinet and the cloud run on received bytes."""
    v = verifier()
    calls: list[Callable[[bytes], Any]] = [
        *DECODERS,
        v.verify_command,
        v.verify_config,
        lambda d: codec.decode_any(d, max_bytes=codec.MAX_INFLATED_BYTES),
        # the same bytes as a deflated bulk field (events_z, samples_z)
        lambda d: EventBatch.decode(
            codec.encode({"v": 1, "k": "ev", "cabinet": CAB, "events_z": codec.deflate(d)})
        ),
        lambda d: Telemetry.decode(
            codec.encode({"v": 1, "k": "tm", "cabinet": CAB, "at": T0, "samples_z": codec.deflate(d)})
        ),
        *[lambda d, t=t: decode_for_topic(t, d) for t in TOPICS],
    ]
    out = [bounded(c, data) for c in calls]
    pass_text = encode_pass_text(data)
    if len(pass_text) <= MAX_PASS_TEXT:
        out.append(bounded(lambda _d: v.verify_pass(pass_text), data))
    return out


# --- the known-bad payloads -----------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(KNOWN_BAD))
def test_known_bad_payload_is_refused_with_a_typed_error_within_the_bound(name: str) -> None:
    data, expected = KNOWN_BAD[name]
    assert len(data) <= codec.MAX_MESSAGE_BYTES
    with pytest.raises(expected):
        codec.decode_any(data)
    for err in every_path(data):
        assert err is not None, f"{name}: accepted by a decoder"


def test_the_fanout_bomb_is_a_few_hundred_bytes() -> None:
    data = shared_fanout(40, 5)
    assert len(data) < 600
    with pytest.raises(UnsupportedCBOR, match="tag 28"):
        codec.decode(data)


def test_too_many_items_is_too_complex_before_anything_is_built() -> None:
    data = cbor2.dumps([0] * (codec.MAX_ITEMS + 1))
    err = bounded(lambda d: codec.decode_any(d, max_bytes=codec.MAX_INFLATED_BYTES), data)
    assert isinstance(err, TooComplex) and "items" in err.reason
    assert codec.decode_any(cbor2.dumps([0] * 1000)) == [0] * 1000


def test_a_deflated_bomb_inside_a_batch_is_refused_within_the_bound() -> None:
    # 1 MiB of nested arrays of zeros deflates to about 1 KB; the batch must refuse it quickly
    inner = b"\x99\x03\xe8" + (b"\x99\x03\xe8" + b"\x00" * 1000) * 1000
    assert len(inner) <= codec.MAX_INFLATED_BYTES
    data = codec.encode({"v": 1, "k": "ev", "cabinet": CAB, "events_z": codec.deflate(inner)})
    assert isinstance(bounded(EventBatch.decode, data), ProtocolError)
    assert zlib


def test_valid_messages_still_decode_to_what_was_sent() -> None:
    for msg in all_unsigned():
        assert bounded(type(msg).decode, msg.encode()) is None
        assert type(msg).decode(msg.encode()) == msg
    for msg in all_signable():
        assert verifier().open(SIGNER.sign(msg), type(msg)) == msg


# --- properties -----------------------------------------------------------------------------

INTERESTING_ARGS = st.sampled_from(
    [0, 1, 2, 15, 16, 23, 24, 25, 255, 256, 65535, 2**16, 2**31, 2**32, 2**63, 2**64 - 1]
)
INTERESTING_TAGS = st.sampled_from(
    [0, 1, 2, 3, 4, 5, 21, 22, 23, 24, 25, 28, 29, 30, 32, 35, 36, 37, 256, 258, 260, 55799]
)


@st.composite
def cbor_heads(draw: st.DrawFn) -> bytes:
    """One item head of any kind, with an argument that stresses lengths and counts."""
    kind = draw(
        st.sampled_from(["int", "str", "container", "tag", "indef", "break", "simple", "float", "raw"])
    )
    if kind == "int":
        return head(draw(st.integers(0, 1)), draw(INTERESTING_ARGS))
    if kind == "str":
        n = draw(st.integers(0, 40) | INTERESTING_ARGS)
        return head(draw(st.integers(2, 3)), n) + draw(st.binary(max_size=min(n, 40)))
    if kind == "container":
        return head(draw(st.integers(4, 5)), draw(st.integers(0, 40) | INTERESTING_ARGS))
    if kind == "tag":
        return head(6, draw(INTERESTING_TAGS))
    if kind == "indef":
        return bytes([draw(st.sampled_from([0x5F, 0x7F, 0x9F, 0xBF]))])
    if kind == "break":
        return b"\xff"
    if kind == "simple":
        return bytes([0xE0 | draw(st.integers(0, 24))])
    if kind == "float":
        return bytes([draw(st.sampled_from([0xF9, 0xFA, 0xFB]))]) + draw(st.binary(min_size=2, max_size=8))
    return draw(st.binary(min_size=1, max_size=4))


@st.composite
def adversarial(draw: st.DrawFn) -> bytes:
    """Small hostile payloads: random heads, deep or wide nesting, shared refs, inside an envelope or not."""
    shape = draw(st.sampled_from(["heads", "nest", "fanout", "stringref", "random"]))
    if shape == "heads":
        body = b"".join(draw(st.lists(cbor_heads(), min_size=1, max_size=60)))
    elif shape == "nest":
        opener = draw(st.sampled_from([b"\x81", b"\x9f", head(5, 1) + text("a"), head(6, 28) + b"\x81"]))
        body = opener * draw(st.integers(1, 400)) + b"\x00"
    elif shape == "fanout":
        body = shared_fanout(draw(st.integers(1, 60)), draw(st.integers(1, 8)))
    elif shape == "stringref":
        body = stringref_bomb(draw(st.integers(1, 2000)), draw(st.integers(1, 2000)))
    else:
        return draw(st.binary(min_size=1, max_size=800))
    if draw(st.booleans()):
        return with_x(
            body, draw(st.sampled_from(["ack", "ev", "tm", "state", "signed", "cmd", "cfg", "pass"]))
        )
    return body


@FUZZ
@given(adversarial())
def test_every_decode_of_adversarial_bytes_returns_or_refuses_within_the_bound(data: bytes) -> None:
    every_path(data)
    try:
        value = codec.decode_any(data)
    except ProtocolError:
        return
    codec.check_plain(value, "decoded")  # whatever is accepted is plain data


plain_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40)
    | st.binary(max_size=40)
    | st.uuids().map(str),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner, max_size=5),
    max_leaves=30,
)


@FUZZ
@given(plain_values)
def test_plain_data_the_protocol_writes_still_decodes_to_itself(value: Any) -> None:
    if depth(value) > codec.MAX_DEPTH:
        with pytest.raises(TooComplex):
            codec.decode_any(codec.encode(value))
    else:
        assert codec.decode_any(codec.encode(value)) == value


def depth(v: Any) -> int:
    if isinstance(v, dict):
        return 1 + max(map(depth, v.values()), default=0)
    if isinstance(v, list):
        return 1 + max(map(depth, v), default=0)
    return 0
