"""Signed envelopes: forged, expired, replayed, misaddressed, unknown-key and downgraded input is refused."""

from __future__ import annotations

import pytest
import segno
from hypothesis import given, settings
from hypothesis import strategies as st
from sync_samples import CAB, T0, command, config, offline_pass

from sync.commands import CommandKind
from sync.errors import (
    Downgraded,
    Duplicate,
    Expired,
    Forged,
    MalformedMessage,
    Misaddressed,
    Replayed,
    Revoked,
    SecurityRejection,
    UnknownKey,
)
from sync.signing import (
    MemoryReplayStore,
    ReplayState,
    SignedEnvelope,
    Signer,
    Verifier,
    check_counter,
    generate_private_key,
    keyring_from_b64,
    load_private_key_pem,
    load_public_key_b64,
    load_public_key_pem,
    private_key_pem,
    public_key_b64,
    public_key_pem,
)


class Clock:
    """A settable wall clock (the cabinet's may be wrong)."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def cloud() -> Signer:
    return Signer(generate_private_key(), "cloud-2026a")


@pytest.fixture
def clock() -> Clock:
    return Clock(T0 + 1)


@pytest.fixture
def verifier(cloud: Signer, clock: Clock) -> Verifier:
    return Verifier({cloud.key_id: cloud.public_key}, CAB, MemoryReplayStore(), clock=clock, skew_s=120)


def test_signed_command_is_accepted_once(cloud: Signer, verifier: Verifier) -> None:
    data = cloud.sign(command(CommandKind.UNLOCK, counter=1))
    cmd = verifier.verify_command(data)
    assert cmd.kind is CommandKind.UNLOCK and cmd.args["slot"] == 4
    with pytest.raises(Duplicate):
        verifier.verify_command(data)


def test_tampered_payload_is_forged(cloud: Signer, verifier: Verifier) -> None:
    env = SignedEnvelope.decode(cloud.sign(command()))
    tampered = env.payload.replace(b"u-42", b"u-66")
    assert tampered != env.payload
    with pytest.raises(Forged):
        verifier.verify_command(SignedEnvelope(env.key_id, tampered, env.signature).encode())


def test_other_key_under_a_known_key_id_is_forged(cloud: Signer, verifier: Verifier) -> None:
    impostor = Signer(generate_private_key(), cloud.key_id)
    with pytest.raises(Forged):
        verifier.verify_command(impostor.sign(command()))


def test_unknown_key_id_is_refused(verifier: Verifier) -> None:
    with pytest.raises(UnknownKey, match="stranger"):
        verifier.verify_command(Signer(generate_private_key(), "stranger").sign(command()))


def test_command_for_another_cabinet_is_misaddressed(cloud: Signer, verifier: Verifier) -> None:
    with pytest.raises(Misaddressed, match="CAB-0002"):
        verifier.verify_command(cloud.sign(command(cabinet="CAB-0002")))


def test_expired_command_is_refused_but_skew_is_tolerated(
    cloud: Signer, verifier: Verifier, clock: Clock
) -> None:
    clock.now = T0 + 60 + 119  # expires at T0+60, skew 120 s
    assert verifier.verify_command(cloud.sign(command(counter=1))).counter == 1
    clock.now = T0 + 60 + 121
    with pytest.raises(Expired):
        verifier.verify_command(cloud.sign(command(counter=2)))


def test_clock_stuck_in_the_past_does_not_revive_old_commands(
    cloud: Signer, verifier: Verifier, clock: Clock
) -> None:
    clock.now = T0 - 3 * 3600  # a Pi without RTC booted with an old clock
    fresh = command(counter=5, issued_at=T0 + 3600, expires_at=T0 + 3660)
    verifier.verify_command(cloud.sign(fresh))
    old = command(counter=4, issued_at=T0, expires_at=T0 + 60)  # captured earlier, replayed now
    with pytest.raises(Expired):
        verifier.verify_command(cloud.sign(old))


def test_replay_window_accepts_out_of_order_and_refuses_old(cloud: Signer, clock: Clock) -> None:
    store = MemoryReplayStore()
    v = Verifier({cloud.key_id: cloud.public_key}, CAB, store, clock=clock, window=4)
    for c in (10, 8, 9):  # two concurrent cloud workers may publish out of order
        v.verify_command(cloud.sign(command(counter=c)))
    with pytest.raises(Duplicate):
        v.verify_command(cloud.sign(command(counter=8)))
    with pytest.raises(Replayed):
        v.verify_command(cloud.sign(command(counter=6)))
    # a restarted cabinet reads the same store and still refuses
    v2 = Verifier({cloud.key_id: cloud.public_key}, CAB, store, clock=clock, window=4)
    with pytest.raises(Duplicate):
        v2.verify_command(cloud.sign(command(counter=9)))
    assert v2.verify_command(cloud.sign(command(counter=7))).counter == 7


def test_replay_state_survives_a_storage_round_trip() -> None:
    s = ReplayState(12, frozenset({9, 11}), T0)
    assert ReplayState.from_dict(s.to_dict()) == s


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(1, 60), max_size=60), st.integers(0, 8))
def test_no_counter_is_ever_accepted_twice(counters: list[int], window: int) -> None:
    state, accepted = ReplayState(), []
    for c in counters:
        try:
            new = check_counter(state, c, window, "t")
        except (Duplicate, Replayed):
            assert c in accepted or c <= state.hwm - window or (window == 0 and c <= state.hwm)
            continue
        assert c not in accepted
        if c > state.hwm:
            assert new.hwm == c
        accepted.append(c)
        state = new
    assert len(set(accepted)) == len(accepted)


def test_config_only_moves_forward(cloud: Signer, verifier: Verifier) -> None:
    assert verifier.verify_config(cloud.sign(config(counter=3))).counter == 3
    with pytest.raises(Duplicate):  # the retained copy, delivered again on reconnect
        verifier.verify_config(cloud.sign(config(counter=3)))
    with pytest.raises(Replayed):  # a rollback to an older config
        verifier.verify_config(cloud.sign(config(counter=2)))
    assert verifier.verify_config(cloud.sign(config(counter=4, cabinet="*"))).counter == 4
    with pytest.raises(Misaddressed):
        verifier.verify_config(cloud.sign(config(counter=5, cabinet="CAB-0002")))


def test_config_cannot_pass_as_a_command(cloud: Signer, verifier: Verifier) -> None:
    with pytest.raises(MalformedMessage, match="expected a 'cmd'"):
        verifier.verify_command(cloud.sign(config()))


def test_older_protocol_version_than_allowed_is_downgraded(cloud: Signer, clock: Clock) -> None:
    v = Verifier({cloud.key_id: cloud.public_key}, CAB, MemoryReplayStore(), clock=clock, min_version=2)
    with pytest.raises(Downgraded):
        v.verify_command(cloud.sign(command()))


def test_every_security_refusal_is_a_security_rejection() -> None:
    for cls in (Forged, UnknownKey, Expired, Replayed, Misaddressed, Downgraded, Revoked):
        assert issubclass(cls, SecurityRejection)
    assert not issubclass(Duplicate, SecurityRejection)


def test_offline_pass_fits_a_small_qr_code_and_verifies(cloud: Signer, verifier: Verifier) -> None:
    text = cloud.sign_pass(offline_pass())
    assert text.startswith("CP1:")
    qr = segno.make(text, error="m")
    assert qr.mode == "alphanumeric" and qr.version <= 12, (len(text), qr.version)
    p = verifier.verify_pass(text)
    assert p.user == "u-42" and p.max_rentals == 2
    assert verifier.verify_pass(" " + text.lower()[:4] + text[4:] + "\n") == p  # scanner quirks


def test_offline_pass_refusals(cloud: Signer, verifier: Verifier, clock: Clock) -> None:
    text = cloud.sign_pass(offline_pass("P-9"))
    with pytest.raises(Revoked):
        verifier.verify_pass(text, revoked={"P-9"})
    with pytest.raises(MalformedMessage, match="CP1"):
        verifier.verify_pass("https://example.com/not-a-pass")
    with pytest.raises(MalformedMessage, match="base45"):
        verifier.verify_pass("CP1:abc")
    flipped = text[:-8] + ("0" if text[-8] != "0" else "1") + text[-7:]
    with pytest.raises((Forged, MalformedMessage)):
        verifier.verify_pass(flipped)
    clock.now = T0 + 8 * 86400
    with pytest.raises(Expired):
        verifier.verify_pass(text)
    with pytest.raises(MalformedMessage, match="expected a 'pass'"):
        verifier.verify_pass("CP1:" + __import__("sync.passes").passes.b45encode(cloud.sign(command())))


def test_keys_survive_provisioning_formats(cloud: Signer) -> None:
    again = load_private_key_pem(private_key_pem(cloud.private_key))
    assert public_key_b64(again.public_key()) == public_key_b64(cloud.public_key)
    assert public_key_b64(load_public_key_pem(public_key_pem(cloud.public_key))) == public_key_b64(
        cloud.public_key
    )
    b64 = public_key_b64(cloud.public_key)
    assert len(b64) == 43
    assert public_key_b64(load_public_key_b64(b64)) == b64
    # the keyring a cabinet builds from its config verifies the cloud's signatures
    ring = keyring_from_b64(config(cloud_keys={cloud.key_id: b64}).body.cloud_keys)
    v = Verifier(ring, CAB, MemoryReplayStore(), clock=lambda: T0)
    assert v.verify_command(cloud.sign(command())).cmd_id == "cmd-1"
    with pytest.raises(MalformedMessage):
        load_public_key_b64("AAAA")
