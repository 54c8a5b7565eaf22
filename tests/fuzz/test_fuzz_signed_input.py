"""Signed commands and offline passes with random damage: refused with a ProtocolError, never accepted.

The sync tests already throw random bytes and re-signed field values at the decoders. Here the
damage is done to *validly signed* bytes and pass texts, and the property is stronger: whatever
survives verification is exactly the message the cloud signed. The same damage is then fed to
the cabinet's own command handler and pass desk on a real ledger: every refusal is a recorded
security event, never an exception, and nothing else is written.
"""

from __future__ import annotations

import time

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from sync_samples import CAB, T0, all_signable, command, offline_pass

from cabinet.passes import REASONS
from sync.commands import Command, CommandKind
from sync.config import Config
from sync.errors import ProtocolError
from sync.passes import OfflinePass, decode_pass_text, encode_pass_text
from sync.signing import MemoryReplayStore, SignedEnvelope, Signer, Verifier, generate_private_key

KEY = generate_private_key()
SIGNER = Signer(KEY, "k1")
FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
DESK = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
B45 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ $%*+-./:"


def mutate_bytes(buf: bytes, data: st.DataObject) -> bytes:
    """1 to 4 random edits: flip bits of a byte, cut the tail, insert or overwrite a few bytes."""
    out = bytearray(buf)
    for _ in range(data.draw(st.integers(1, 4), label="edits")):
        i = data.draw(st.integers(0, max(len(out) - 1, 0)), label="at")
        op = data.draw(st.sampled_from(["flip", "cut", "insert", "overwrite"]), label="op")
        if op == "flip" and out:
            out[i] ^= data.draw(st.integers(1, 255), label="mask")
        elif op == "cut":
            del out[i:]
        elif op == "insert":
            out[i:i] = data.draw(st.binary(min_size=1, max_size=8), label="bytes")
        else:
            chunk = data.draw(st.binary(min_size=1, max_size=8), label="bytes")
            out[i : i + len(chunk)] = chunk
    return bytes(out)


def mutate_text(text: str, data: st.DataObject) -> str:
    """1 to 3 random edits of a pass text: change, drop or add a character, cut, or change case."""
    chars = list(text)
    for _ in range(data.draw(st.integers(1, 3), label="edits")):
        i = data.draw(st.integers(0, max(len(chars) - 1, 0)), label="at")
        op = data.draw(st.sampled_from(["change", "drop", "add", "cut", "lower"]), label="op")
        new = data.draw(st.sampled_from(B45) | st.characters(), label="char")
        if op == "change" and chars:
            chars[i] = new
        elif op == "drop" and chars:
            del chars[i]
        elif op == "add":
            chars.insert(i, new)
        elif op == "cut":
            del chars[i:]
        else:
            chars = [c.lower() for c in chars]
    return "".join(chars)


def verifier() -> Verifier:
    return Verifier({"k1": KEY.public_key()}, CAB, MemoryReplayStore(), clock=lambda: T0)


SIGNED = [(m, SIGNER.sign(m)) for m in all_signable()]


@FUZZ
@given(st.sampled_from(SIGNED), st.data())
def test_damaged_signed_bytes_are_refused_or_are_the_signed_message(sample, data: st.DataObject) -> None:
    original, signed = sample
    damaged = mutate_bytes(signed, data)
    check = {Command: verifier().verify_command, Config: verifier().verify_config}.get(type(original))
    try:
        if check is None:  # a pass travels as text
            got = verifier().verify_pass(encode_pass_text(damaged))
        else:
            got = check(damaged)
    except ProtocolError as e:
        assert e.reason.strip()
        event(f"refused: {type(e).__name__}")
        return
    event("accepted")
    # accepted: only possible if the signed payload came through untouched
    assert got == original
    assert SignedEnvelope.decode(damaged).payload == SignedEnvelope.decode(signed).payload


@FUZZ
@given(st.data())
def test_damaged_pass_text_is_refused_or_is_the_signed_pass(data: st.DataObject) -> None:
    p = offline_pass()
    text = SIGNER.sign_pass(p)
    damaged = mutate_text(text, data)
    try:
        got = verifier().verify_pass(damaged)
    except ProtocolError as e:
        assert e.reason.strip()
        return
    assert got == p
    assert decode_pass_text(damaged) == decode_pass_text(text)


def fresh_ping(signer: Signer, counter: int, cabinet: str) -> bytes:
    now = time.time()
    return signer.sign(
        command(CommandKind.PING, counter=counter, cabinet=cabinet, issued_at=now, expires_at=now + 60)
    )


@DESK
@given(st.data())
def test_cabinet_records_damaged_commands_as_security_events_and_acts_on_none(desk, data) -> None:
    counter = data.draw(st.integers(1, 10_000), label="counter")
    signed = fresh_ping(desk.signer, counter, "CAB-FZ1")
    damaged = mutate_bytes(signed, data)
    original = Verifier({"k1": desk.signer.public_key}, "CAB-FZ1", MemoryReplayStore()).open(signed, Command)
    before = desk.last_seq()
    got = desk.run(desk.commands.handle(damaged))  # must not raise, whatever the bytes
    new = [e for e in desk.events() if e.seq > before]
    event("acted on" if got is not None else f"not acted on, {len(new)} event(s)")
    if got is None:
        # refused (one security event) or a redelivery of an accepted one (nothing written)
        assert [e.type for e in new] in (["security_event"], [])
        if new:
            assert new[0].body["kind"] and new[0].body["detail"]
        assert not [e for e in new if e.type == "command_received"]
    else:
        assert got == original
        assert [e.type for e in new] == ["command_received", "command_result"]
        assert new[1].body == {"cmd_id": original.cmd_id, "ok": True, "detail": "pong n-1"}


@DESK
@given(st.data())
def test_cabinet_refuses_damaged_pass_texts_with_a_reason_and_rents_nothing_for_them(desk, data) -> None:
    now = time.time()
    p = OfflinePass(f"P-{data.draw(st.integers(1, 10**6), label='pass')}", "u-1", now - 10, now + 3600, 1)
    text = desk.signer.sign_pass(p)
    damaged = mutate_text(text, data)
    before = desk.last_seq()
    out = desk.run(desk.passes.submit(damaged))
    new = [e for e in desk.events() if e.seq > before]
    event(f"{out.status} {out.reason}")
    if out.status == "refused":
        assert out.reason in REASONS
        assert [e.type for e in new] == ["security_event"]
        assert new[0].body["detail"].strip()
    else:
        # only the genuine pass gets this far; the cabinet has no battery, so the rent aborts cleanly
        assert decode_pass_text(damaged) == decode_pass_text(text)
        assert (out.status, out.reason) == ("aborted", "no_rentable_battery")
        assert [e.type for e in new] == ["rental_requested", "rental_aborted"]
        assert new[0].body["pass_id"] == p.pass_id
