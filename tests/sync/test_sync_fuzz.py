"""Property tests: whatever arrives on the wire, decoders refuse it with a ProtocolError, never a crash."""

from __future__ import annotations

import copy

import cbor2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sync_samples import CAB, T0, all_signable, all_unsigned

from sync.commands import Command
from sync.config import Config
from sync.errors import ProtocolError
from sync.messages import Ack, EventBatch, State, Telemetry, decode_for_topic
from sync.passes import OfflinePass, decode_pass_text, encode_pass_text
from sync.signing import MemoryReplayStore, SignedEnvelope, Signer, Verifier, generate_private_key

KEY = generate_private_key()
SIGNER = Signer(KEY, "k1")
DECODERS = [Ack, EventBatch, State, Telemetry, Command, Config, OfflinePass, SignedEnvelope]
TOPICS = [f"cab/v1/{CAB}/{c}" for c in ("ev", "ack", "tm", "state", "cmd")]
VALID = [m.encode() for m in all_unsigned()] + [SIGNER.sign(m) for m in all_signable()]
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def verifier() -> Verifier:
    return Verifier({"k1": KEY.public_key()}, CAB, MemoryReplayStore(), clock=lambda: T0)


def only_protocol_errors(data: bytes) -> None:
    """Run every decoder on ``data``; anything but success or a ProtocolError fails the test."""
    for cls in DECODERS:
        try:
            cls.decode(data)
        except ProtocolError as e:
            assert e.reason
    for t in TOPICS:
        try:
            decode_for_topic(t, data)
        except ProtocolError:
            pass
    v = verifier()
    for check in (v.verify_command, v.verify_config):
        try:
            check(data)
        except ProtocolError:
            pass


cbor_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=80)
    | st.binary(max_size=80),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=12,
)


@FUZZ
@given(st.binary(max_size=600))
def test_random_bytes_never_crash_a_decoder(data: bytes) -> None:
    only_protocol_errors(data)


@FUZZ
@given(st.sampled_from(VALID), st.data())
def test_mutated_valid_messages_never_crash_a_decoder(valid: bytes, data: st.DataObject) -> None:
    buf = bytearray(valid)
    for _ in range(data.draw(st.integers(1, 4))):
        op = data.draw(st.sampled_from(["flip", "cut", "insert"]))
        i = data.draw(st.integers(0, max(len(buf) - 1, 0)))
        if op == "flip" and buf:
            buf[i] ^= data.draw(st.integers(1, 255))
        elif op == "cut":
            del buf[i:]
        else:
            buf[i:i] = data.draw(st.binary(min_size=1, max_size=8))
    only_protocol_errors(bytes(buf))


@FUZZ
@given(st.sampled_from(all_unsigned() + all_signable()), st.data())
def test_any_field_replaced_by_any_value_is_refused_cleanly(msg, data: st.DataObject) -> None:
    # a deep copy: to_wire() may hand out the message's own inner maps, and mutating those
    # would change the sampled message for later examples (hypothesis then reports flakiness)
    env = copy.deepcopy({"v": 1, "k": msg.KIND, **msg.to_wire()})
    target = env
    # walk down into a nested map now and then, so inner fields get hit too
    while True:
        keys = sorted(target)
        key = data.draw(st.sampled_from(keys))
        if isinstance(target[key], dict) and target[key] and data.draw(st.booleans()):
            target = target[key]
            continue
        target[key] = data.draw(cbor_values)
        break
    raw = cbor2.dumps(env)
    only_protocol_errors(raw)
    # the same payload correctly signed: signature checks pass, so parsing must still hold up
    payload_envelope = SignedEnvelope("k1", raw, KEY.sign(raw)).encode()
    only_protocol_errors(payload_envelope)
    try:
        verifier().verify_pass(encode_pass_text(payload_envelope))
    except ProtocolError:
        pass


@FUZZ
@given(st.text(max_size=300))
def test_random_pass_text_is_refused_cleanly(text: str) -> None:
    for t in (text, "CP1:" + text, "CP1:" + text.upper()):
        try:
            verifier().verify_pass(t)
        except ProtocolError as e:
            assert e.reason
        try:
            decode_pass_text(t)
        except ProtocolError:
            pass


uuid_like = st.uuids().map(str) | st.uuids().map(lambda u: str(u).upper())


@FUZZ
@given(
    st.recursive(
        st.none()
        | st.booleans()
        | st.integers(-(2**64), 2**64 - 1)  # CBOR's own integers; bignums (tag 2/3) are refused
        | st.floats(allow_nan=False, allow_infinity=False)
        | st.text(max_size=40)
        | st.binary(max_size=40)
        | uuid_like,
        lambda inner: (
            st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8) | uuid_like, inner, max_size=4)
        ),
        max_leaves=20,
    )
)
def test_plain_values_survive_encode_and_decode_exactly(value) -> None:
    from sync.codec import decode, encode

    assert decode(encode({"x": value})) == {"x": value}
