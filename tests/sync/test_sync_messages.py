"""Messages: round trips, validation, and refusal of bad payloads with a specific reason."""

from __future__ import annotations

import dataclasses
import math
import zlib

import cbor2
import pytest
from sync_samples import CAB, T0, all_signable, all_unsigned, batch, command, config, events

from sync.codec import MAX_MESSAGE_BYTES, PROTOCOL_VERSION, deflate
from sync.commands import Command, CommandKind
from sync.errors import MalformedMessage, Misaddressed, OversizedMessage, UnexpectedKind, UnsupportedVersion
from sync.messages import Ack, EventBatch, State, WireEvent, decode_for_topic
from sync.topics import topic


@pytest.mark.parametrize("msg", all_unsigned() + all_signable(), ids=lambda m: type(m).__name__)
def test_every_message_round_trips(msg) -> None:
    data = msg.encode()
    assert type(msg).decode(data) == msg
    assert msg.encode() == data  # canonical: same value, same bytes


def test_encoding_is_canonical_whatever_the_dict_order() -> None:
    a = command(args={"rental_id": "R-1", "user": "u-1"}).encode()
    b = command(args={"user": "u-1", "rental_id": "R-1"}).encode()
    assert a == b


def test_large_batches_travel_deflated_and_small_ones_plain() -> None:
    big, small = batch(200).encode(), batch(1).encode()
    assert "events_z" in cbor2.loads(big) and "events" not in cbor2.loads(big)
    assert "events" in cbor2.loads(small)
    plain_size = len(cbor2.dumps([e.to_wire() for e in batch(200).events]))
    assert len(big) < plain_size / 3


def test_batch_refuses_seqs_out_of_order() -> None:
    evs = events(3)
    with pytest.raises(MalformedMessage, match="not increasing"):
        EventBatch(CAB, (evs[0], evs[2], evs[1]))
    with pytest.raises(MalformedMessage, match=r"1\.\.2000"):
        EventBatch(CAB, ())


def test_event_validation_names_the_field() -> None:
    good = events(1)[0].to_wire()
    for name, bad in [
        ("seq", 0),
        ("seq", True),
        ("at_wall", math.nan),
        ("at_mono", "x"),
        ("id", ""),
        ("type", "x" * 65),
    ]:
        with pytest.raises(MalformedMessage, match=name):
            WireEvent(**{**good, name: bad})


def _envelope(**fields) -> bytes:
    return cbor2.dumps({"v": PROTOCOL_VERSION, "k": "ack", "cabinet": CAB, "acked_seq": 1, **fields})


def test_wrong_version_is_unsupported() -> None:
    with pytest.raises(UnsupportedVersion, match="newer"):
        Ack.decode(_envelope(v=PROTOCOL_VERSION + 1))
    with pytest.raises(UnsupportedVersion, match="older"):
        Ack.decode(_envelope(v=0))
    with pytest.raises(MalformedMessage, match="'v'"):
        Ack.decode(_envelope(v="1"))


def test_wrong_kind_is_refused() -> None:
    with pytest.raises(UnexpectedKind):
        State.decode(Ack(CAB, 3).encode())


def test_oversized_payload_is_refused_before_decoding() -> None:
    with pytest.raises(OversizedMessage):
        Ack.decode(b"\xa0" + b"\x00" * MAX_MESSAGE_BYTES)


def test_duplicate_keys_and_tags_and_non_finite_numbers_are_malformed() -> None:
    dup = b"\xa2\x61v\x01\x61v\x01"
    with pytest.raises(MalformedMessage, match="Duplicate"):
        Ack.decode(dup)
    tagged = cbor2.dumps({"v": 1, "k": "ack", "cabinet": CAB, "acked_seq": cbor2.CBORTag(1, 5)})
    with pytest.raises(MalformedMessage, match="not plain"):
        Ack.decode(tagged)
    with pytest.raises(MalformedMessage, match="non-finite"):
        State.decode(cbor2.dumps({"v": 1, "k": "state", "cabinet": CAB, "online": True, "at": math.inf}))


def test_deeply_nested_body_is_refused() -> None:
    nested: object = 1
    for _ in range(40):
        nested = [nested]
    with pytest.raises(MalformedMessage):
        Ack.decode(cbor2.dumps({"v": 1, "k": "ack", "cabinet": CAB, "acked_seq": 1, "x": nested}))


def test_deflate_bomb_is_refused() -> None:
    bomb = deflate(b"\x00" * (8 * 1024 * 1024))
    data = cbor2.dumps({"v": 1, "k": "ev", "cabinet": CAB, "events_z": bomb})
    assert len(data) < MAX_MESSAGE_BYTES
    with pytest.raises(OversizedMessage, match="inflates"):
        EventBatch.decode(data)
    truncated = cbor2.dumps({"v": 1, "k": "ev", "cabinet": CAB, "events_z": deflate(cbor2.dumps([1]))[:-2]})
    with pytest.raises(MalformedMessage):
        EventBatch.decode(truncated)
    assert zlib  # deflate is raw DEFLATE; zlib imported for clarity of intent


def test_message_on_another_cabinets_topic_is_misaddressed() -> None:
    data = batch(2).encode()
    assert decode_for_topic(topic(CAB, "ev"), data).last_seq == 2
    with pytest.raises(Misaddressed, match="CAB-0002"):
        decode_for_topic(topic("CAB-0002", "ev"), data)
    with pytest.raises(UnexpectedKind):
        decode_for_topic(topic(CAB, "state"), data)
    with pytest.raises(UnexpectedKind, match="signed"):
        decode_for_topic(topic(CAB, "cmd"), data)


def test_command_kinds_check_their_arguments() -> None:
    with pytest.raises(MalformedMessage, match="rental_id"):
        command(CommandKind.EJECT, args={"user": "u-1"})
    with pytest.raises(MalformedMessage, match="slot"):
        command(CommandKind.UNLOCK, args={"slot": 999, "reason": "r", "technician": "t"})
    with pytest.raises(MalformedMessage, match="unknown command kind"):
        command(kind="self_destruct")
    with pytest.raises(MalformedMessage, match="expires_at"):
        command(expires_at=T0 - 1)
    extra = command(args={"rental_id": "R-1", "user": "u", "future_option": 3})
    assert Command.decode(extra.encode()).args["future_option"] == 3


def test_model_update_carries_a_checked_manifest() -> None:
    cmd = command(CommandKind.MODEL_UPDATE)
    assert cmd.manifest.sha256 == "ab" * 32
    with pytest.raises(MalformedMessage, match="sha256"):
        command(CommandKind.MODEL_UPDATE, args={"manifest": {**cmd.args["manifest"], "sha256": "xyz"}})


def test_config_validates_keys_and_bounds() -> None:
    with pytest.raises(MalformedMessage, match="rentable_min_soc"):
        config(rentable_min_soc=101)
    with pytest.raises(MalformedMessage, match="not 32 bytes"):
        config(cloud_keys={"k1": "AAAA"})
    with pytest.raises(MalformedMessage, match="cabinet"):
        config(cabinet="a/b")
    assert config(cabinet="*").addressed_to("CAB-9")
    assert not config(cabinet="CAB-8").addressed_to("CAB-9")


def test_uuid_texts_travel_as_16_bytes_and_come_back_as_the_same_text() -> None:
    u = "0b9f1c3e-5a6d-4e7f-8a9b-0c1d2e3f4a5b"
    ev = WireEvent(1, u, "rental_started", T0, 1.0, u, {"rental_id": u, "upper": u.upper(), "list": [u]})
    data = EventBatch(CAB, (ev,)).encode()
    assert u.encode() not in data and u.upper().encode() in data
    back = EventBatch.decode(data).events[0]
    assert back == ev and type(back.id) is str and back.body["list"] == [u]


def test_a_signed_config_carries_no_model_and_ignores_an_older_clouds_model_key() -> None:
    """Models roll out by ``model_update`` command only (docs/protocol.md 4.7): a config field
    the cabinet never acted on is gone, so no one can believe it does."""
    from sync.config import ConfigBody

    assert "model" not in {f.name for f in dataclasses.fields(ConfigBody)}
    wire = {"cloud_keys": {}, "revoked_passes": [], "battery_deny_list": [], "model": {"version": "x"}}
    assert ConfigBody.from_wire(wire) == ConfigBody()
