"""The cabinet's chain of trust: key sets follow signed configs across restarts, retired keys stay retired.

Real ledger (the replay state and the accepting transaction), real files in the data dir; only
the clock is a settable one.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from cabinet.ledger import Ledger
from cabinet.trust import BrokenChain, Trust
from sync.commands import Command, CommandKind
from sync.config import Config, ConfigBody, Tariff
from sync.errors import UnknownKey
from sync.passes import OfflinePass
from sync.signing import Signer, generate_private_key, public_key_b64

CAB = "CAB-T1"
SKEW = 60.0


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def key(kid: str) -> Signer:
    return Signer(generate_private_key(), kid)


def b64(s: Signer) -> str:
    return public_key_b64(s.public_key)


class Cabinet:
    """A data dir, its ledger and a Trust built as the cabinet builds it at start."""

    def __init__(self, tmp: Path, bootstrap: Signer, clock: Clock) -> None:
        self.tmp, self.bootstrap, self.clock = tmp, bootstrap, clock
        self.ledger = Ledger.open(tmp / "ledger.db", CAB)
        self.trust = self.start()
        self.counter = 0

    def start(self) -> Trust:
        trust = Trust(CAB, [f"{self.bootstrap.key_id}:{b64(self.bootstrap)}"], self.tmp, SKEW, self.clock)
        trust.load_saved()
        return trust

    def restart(self) -> None:
        self.ledger.close()
        self.ledger = Ledger.open(self.tmp / "ledger.db", CAB)
        self.trust = self.start()

    def config(self, signer: Signer, ttl: float = 3600, **body: object) -> Config:
        """Sign and apply a config as the sync agent does."""
        self.counter += 1
        now = self.clock()
        payload = signer.sign(Config(CAB, self.counter, now, now + ttl, ConfigBody(**body)))  # type: ignore[arg-type]
        with self.ledger.atomic():
            cfg, keys = self.trust.accept(self.ledger, payload)
            self.ledger.record("config_applied", version=cfg.counter)
        self.trust.adopt(cfg, keys)
        return cfg

    def command(self, signer: Signer) -> Command:
        self.counter += 1
        now = self.clock()
        cmd = Command(f"C{self.counter}", CAB, self.counter, now, now + 60, CommandKind.PING, {})
        with self.ledger.atomic():
            return self.trust.verifier(self.ledger).verify_command(signer.sign(cmd))

    def offline_pass(self, signer: Signer) -> OfflinePass:
        now = self.clock()
        text = signer.sign_pass(OfflinePass(f"P{self.counter}", "u1", now, now + 600, 1))
        return self.trust.verifier(self.ledger).verify_pass(text)


@pytest.fixture
def clock() -> Clock:
    return Clock()


def rotate(cab: Cabinet, old: Signer, new: Signer) -> None:
    """The cloud's procedure: a config signed by the old key announces both, then the new key retires it."""
    cab.config(
        old,
        cloud_keys={old.key_id: b64(old), new.key_id: b64(new)},
        key_not_after={old.key_id: cab.clock() + 7 * 86400},
    )
    cab.config(new, cloud_keys={new.key_id: b64(new)}, retired_keys=(old.key_id,))


def test_a_restart_resumes_the_chain_instead_of_going_back_to_the_bootstrap_key(tmp_path, clock) -> None:
    k1, k2 = key("k1"), key("k2")
    cab = Cabinet(tmp_path, k1, clock)
    rotate(cab, k1, k2)
    cab.restart()  # before the fix: keyring = bootstrap k1; the kept config (by k2) did not verify
    assert cab.command(k2).kind is CommandKind.PING
    with pytest.raises(UnknownKey):
        cab.command(k1)
    with pytest.raises(UnknownKey):
        cab.offline_pass(k1)
    assert cab.offline_pass(k2).user == "u1"


def test_a_retired_key_never_comes_back_not_even_in_a_config_from_the_current_key(tmp_path, clock) -> None:
    k1, k2 = key("k1"), key("k2")
    cab = Cabinet(tmp_path, k1, clock)
    rotate(cab, k1, k2)
    with pytest.raises(UnknownKey):  # the retired key cannot sign a config that restores itself
        cab.config(k1, cloud_keys={k1.key_id: b64(k1)})
    cab.config(k2, cloud_keys={k2.key_id: b64(k2), "k1-again": b64(k1)})  # same key, new id
    cab.restart()
    assert set(cab.trust.keyring) == {"k2"}
    with pytest.raises(BrokenChain):  # a set of retired keys only: refused, keys kept
        cab.config(k2, cloud_keys={k1.key_id: b64(k1)})
    assert cab.command(k2).kind is CommandKind.PING


def test_the_old_key_is_refused_once_its_overlap_window_ends(tmp_path, clock) -> None:
    k1, k2 = key("k1"), key("k2")
    cab = Cabinet(tmp_path, k1, clock)
    cab.config(k1, cloud_keys={"k1": b64(k1), "k2": b64(k2)}, key_not_after={"k1": clock() + 600})
    assert cab.command(k1) and cab.command(k2)
    clock.now += 600 + SKEW + 1
    with pytest.raises(UnknownKey):
        cab.command(k1)
    cab.restart()  # and it stays retired after a restart, whatever the clock says later
    clock.now -= 3600
    assert set(cab.trust.keyring) == {"k2"}


def test_a_kept_config_past_its_expiry_is_not_applied_after_a_restart(tmp_path, clock) -> None:
    k1 = key("k1")
    cab = Cabinet(tmp_path, k1, clock)
    tariff = Tariff(currency="EUR", unit_minutes=60, unit_price_minor=1)
    cab.config(k1, ttl=600, tariff=tariff, revoked_passes=("P-bad",), battery_deny_list=("PB-stolen",))
    clock.now += 600 + SKEW + 1
    cab.restart()
    assert cab.trust.config is None  # before the fix: applied (tariff, settings) whatever its age
    assert cab.trust.revoked == {"P-bad"} and cab.trust.denied == {"PB-stolen"}  # refusals still hold


def test_an_unexpired_kept_config_is_applied_after_a_restart(tmp_path, clock) -> None:
    k1 = key("k1")
    cab = Cabinet(tmp_path, k1, clock)
    cab.config(k1, ttl=3600, rentable_min_soc=70)
    cab.restart()
    assert cab.trust.config is not None and cab.trust.config.body.rentable_min_soc == 70
