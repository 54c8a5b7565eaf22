"""Ed25519-signed envelopes for everything the cloud sends down, and their verification.

Wire form of a signed message (CBOR map)::

    {"v": 1, "k": "signed", "kid": "<key id>", "p": <bytes: canonical CBOR of the message>,
     "s": <64-byte Ed25519 signature over p>}

The signature covers the exact payload bytes, which carry their own version and kind, so a
pass can never be replayed as a command and the receiver never re-encodes before verifying.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable, Container, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from sync import codec
from sync.codec import PROTOCOL_VERSION, WireMessage, as_bytes, as_text, check_envelope
from sync.commands import Command
from sync.config import Config, b64url_decode, check_key_id
from sync.errors import (
    Downgraded,
    Duplicate,
    Expired,
    Forged,
    MalformedMessage,
    Misaddressed,
    Replayed,
    Revoked,
    UnknownKey,
)
from sync.passes import OfflinePass, decode_pass_text, encode_pass_text

SIGNED_KIND = "signed"
DEFAULT_SKEW_S = 300.0
DEFAULT_WINDOW = 64
M = TypeVar("M", bound=WireMessage)


@dataclass(frozen=True)
class SignedEnvelope:
    """A payload, the id of the key that signed it, and the signature."""

    key_id: str
    payload: bytes
    signature: bytes

    def encode(self) -> bytes:
        return codec.encode(
            {
                "v": PROTOCOL_VERSION,
                "k": SIGNED_KIND,
                "kid": self.key_id,
                "p": self.payload,
                "s": self.signature,
            }
        )

    @classmethod
    def decode(cls, data: bytes) -> SignedEnvelope:
        env = codec.decode(data, what="signed")
        check_envelope(env, SIGNED_KIND)
        kid = check_key_id(env.get("kid"), "signed.kid")
        payload = as_bytes(codec.field(env, "p", "signed"), "signed.p")
        sig = as_bytes(codec.field(env, "s", "signed"), "signed.s", 64)
        return cls(kid, payload, sig)


@dataclass(frozen=True)
class KeyAnnouncement:
    """The key set a signed config announces (``ConfigBody.cloud_keys``, ``key_not_after``,
    ``retired_keys``): the cabinet's next keyring, which it accepts only from a key it trusts now."""

    cloud_keys: Mapping[str, str]
    key_not_after: Mapping[str, float] = field(default_factory=dict)
    retired_keys: tuple[str, ...] = ()


class Signer:
    """Signs commands, configs and passes with one private key (the cloud's).

    A cloud with a rotating key set (``cloud.fleet.keys.KeyStoreSigner``) overrides
    ``announcement`` and ``keys_changed_at``; this one announces just its own key.
    """

    def __init__(self, private_key: Ed25519PrivateKey, key_id: str) -> None:
        self.private_key = private_key
        self.key_id = check_key_id(key_id, "signer key id")

    def announcement(self, now: float) -> KeyAnnouncement:
        """The key set the next config carries."""
        return KeyAnnouncement({self.key_id: public_key_b64(self.public_key)})

    def keys_changed_at(self, now: float) -> float:
        """When the announced key set last changed: configs issued before it are out of date."""
        return 0.0

    def sign(self, message: Command | Config | OfflinePass) -> bytes:
        """The signed envelope bytes to publish (commands, configs) or to encode as a pass."""
        payload = message.encode()
        return SignedEnvelope(self.key_id, payload, self.private_key.sign(payload)).encode()

    def sign_pass(self, offline_pass: OfflinePass) -> str:
        """The QR-code text of a signed offline pass."""
        return encode_pass_text(self.sign(offline_pass))

    @property
    def public_key(self) -> Ed25519PublicKey:
        return self.private_key.public_key()


@dataclass(frozen=True)
class ReplayState:
    """What a receiver remembers per stream: highest counter, counters seen near it, latest issue time."""

    hwm: int = 0
    seen: frozenset[int] = field(default_factory=frozenset)
    last_issued_at: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """JSON/CBOR-friendly form for the caller's storage."""
        return {"hwm": self.hwm, "seen": sorted(self.seen), "last_issued_at": self.last_issued_at}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ReplayState:
        return cls(
            int(d["hwm"]), frozenset(int(x) for x in d.get("seen", ())), float(d.get("last_issued_at", 0.0))
        )


class ReplayStore(Protocol):
    """Durable storage of ``ReplayState`` per stream (``"cmd"``, ``"cfg"``); the cabinet keeps it in its ledger.

    ``put`` must be durable before the accepted message is acted on, so that a restart never
    accepts the same counter twice.
    """

    def get(self, stream: str) -> ReplayState | None: ...

    def put(self, stream: str, state: ReplayState) -> None: ...


class MemoryReplayStore:
    """A ``ReplayStore`` in a dict: for tests and for the cloud side."""

    def __init__(self) -> None:
        self.states: dict[str, ReplayState] = {}

    def get(self, stream: str) -> ReplayState | None:
        return self.states.get(stream)

    def put(self, stream: str, state: ReplayState) -> None:
        self.states[stream] = state


def check_counter(state: ReplayState, counter: int, window: int, what: str) -> ReplayState:
    """Accept ``counter`` if above the high-water mark, or unseen within ``window`` below it.

    Returns the new state, or raises ``Duplicate`` (already accepted) or ``Replayed`` (too old).
    """
    if counter == state.hwm or counter in state.seen:
        raise Duplicate(f"{what}: counter {counter} already accepted")
    if counter <= state.hwm - window:
        raise Replayed(
            f"{what}: counter {counter} is at or below the replay window (high-water mark {state.hwm})"
        )
    hwm = max(state.hwm, counter)
    seen = frozenset(c for c in (*state.seen, counter, state.hwm) if c > max(hwm - window, 0) and c != hwm)
    return ReplayState(hwm, seen, state.last_issued_at)


class Verifier:
    """Checks what the cloud sends one cabinet: signature, version, addressing, expiry, replay.

    ``clock`` is the cabinet's wall clock, which may be wrong; the verifier never trusts it to
    be earlier than the newest ``issued_at`` it has accepted (a Pi without an RTC boots with a
    clock in the past, which would otherwise make old commands look fresh).
    """

    def __init__(
        self,
        keyring: Mapping[str, Ed25519PublicKey],
        cabinet_id: str,
        replay_store: ReplayStore,
        *,
        clock: Callable[[], float] = time.time,
        skew_s: float = DEFAULT_SKEW_S,
        window: int = DEFAULT_WINDOW,
        min_version: int = codec.MIN_PROTOCOL_VERSION,
        key_not_after: Mapping[str, float] | None = None,
    ) -> None:
        self.keyring = dict(keyring)
        self.key_not_after = dict(key_not_after or {})
        self.cabinet_id = cabinet_id
        self.replay_store = replay_store
        self.clock = clock
        self.skew_s = skew_s
        self.window = window
        self.min_version = min_version

    def now(self, stream: str = "cmd") -> float:
        """The time used for expiry: the wall clock, but never before the newest accepted ``issued_at``."""
        state = self.replay_store.get(stream) or ReplayState()
        return max(self.clock(), state.last_issued_at)

    def key_now(self) -> float:
        """The time a key's ``not_after`` is checked against: the floor of both streams."""
        return max(self.now("cmd"), self.now("cfg"))

    def open(self, data: bytes, cls: type[M]) -> M:
        """Check the signature, version and kind, and parse; no addressing, expiry or replay checks."""
        env = SignedEnvelope.decode(data)
        key = self.keyring.get(env.key_id)
        if key is None:
            raise UnknownKey(f"signed by unknown key {env.key_id!r} (known: {sorted(self.keyring)})")
        not_after = self.key_not_after.get(env.key_id)
        if not_after is not None and self.key_now() > not_after + self.skew_s:
            raise UnknownKey(f"signed by key {env.key_id!r}, whose overlap window ended at {not_after:.0f}")
        try:
            key.verify(env.signature, env.payload)
        except InvalidSignature:
            raise Forged(f"{cls.KIND}: signature does not verify with key {env.key_id!r}") from None
        inner = codec.decode(env.payload, what=cls.KIND)
        v = inner.get("v")
        if isinstance(v, int) and not isinstance(v, bool) and v < self.min_version:
            raise Downgraded(f"{cls.KIND}: protocol version {v} is older than the allowed {self.min_version}")
        check_envelope(inner, cls.KIND)
        return cls.from_wire(inner)

    def verify_command(self, data: bytes) -> Command:
        """A command this cabinet must act on exactly once, or a ``ProtocolError`` saying why not."""
        cmd = self.open(data, Command)
        if cmd.cabinet != self.cabinet_id:
            raise Misaddressed(f"cmd {cmd.cmd_id}: addressed to {cmd.cabinet!r}, this is {self.cabinet_id!r}")
        self._check_fresh("cmd", cmd.expires_at, f"cmd {cmd.cmd_id}")
        self._accept("cmd", cmd.counter, cmd.issued_at, self.window, f"cmd {cmd.cmd_id}")
        return cmd

    def verify_config(self, data: bytes) -> Config:
        """A config newer than the last accepted one; the same one again raises ``Duplicate``."""
        cfg = self.open(data, Config)
        if not cfg.addressed_to(self.cabinet_id):
            raise Misaddressed(
                f"cfg {cfg.counter}: addressed to {cfg.cabinet!r}, this is {self.cabinet_id!r}"
            )
        self._check_fresh("cfg", cfg.expires_at, f"cfg {cfg.counter}")
        self._accept("cfg", cfg.counter, cfg.issued_at, 0, f"cfg {cfg.counter}")
        return cfg

    def verify_pass(self, text: str, revoked: Container[str] = ()) -> OfflinePass:
        """A pass scanned at the kiosk; the caller counts its uses against ``max_rentals``."""
        p = self.open(decode_pass_text(text), OfflinePass)
        if p.pass_id in revoked:
            raise Revoked(f"pass {p.pass_id}: revoked")
        self._check_fresh("cmd", p.expires_at, f"pass {p.pass_id}")
        return p

    def _check_fresh(self, stream: str, expires_at: float, what: str) -> None:
        now = self.now(stream)
        if now > expires_at + self.skew_s:
            raise Expired(
                f"{what}: expired at {expires_at:.0f}, now {now:.0f} (skew allowed {self.skew_s:.0f} s)"
            )

    def _accept(self, stream: str, counter: int, issued_at: float, window: int, what: str) -> None:
        state = self.replay_store.get(stream) or ReplayState()
        new = check_counter(state, counter, window, what)
        self.replay_store.put(stream, ReplayState(new.hwm, new.seen, max(state.last_issued_at, issued_at)))


# -- keys for provisioning ---------------------------------------------------------------


def generate_private_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def private_key_pem(key: Ed25519PrivateKey) -> bytes:
    """PKCS#8 PEM, unencrypted (the file's permissions protect it)."""
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def load_private_key_pem(data: bytes) -> Ed25519PrivateKey:
    key = serialization.load_pem_private_key(data, password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"expected an Ed25519 private key, got {type(key).__name__}")
    return key


def public_key_pem(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def load_public_key_pem(data: bytes) -> Ed25519PublicKey:
    key = serialization.load_pem_public_key(data)
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError(f"expected an Ed25519 public key, got {type(key).__name__}")
    return key


def public_key_b64(key: Ed25519PublicKey) -> str:
    """Raw 32-byte key as unpadded base64url: the form used in ``ConfigBody.cloud_keys``."""
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def load_public_key_b64(text: str) -> Ed25519PublicKey:
    raw = b64url_decode(as_text(text, "public key", 64), "public key")
    if len(raw) != 32:
        raise MalformedMessage(f"public key: {len(raw)} bytes, an Ed25519 key has 32")
    return Ed25519PublicKey.from_public_bytes(raw)


def keyring_from_b64(keys: Mapping[str, str]) -> dict[str, Ed25519PublicKey]:
    """``{key_id: public key}`` from ``ConfigBody.cloud_keys``."""
    return {check_key_id(kid, "key id"): load_public_key_b64(b64) for kid, b64 in keys.items()}
