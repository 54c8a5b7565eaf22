"""Offline rent passes: signed by the cloud, shown by the app as a QR code, checked with no network.

Text form: ``CP1:`` + base45 (RFC 9285) of the signed envelope. Base45 uses exactly the QR
alphanumeric alphabet, so the code stays small (the EU COVID certificate did the same).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sync.codec import WireMessage, as_int, as_text, require
from sync.config import check_validity
from sync.errors import MalformedMessage, OversizedMessage
from sync.wire import wire

PASS_PREFIX = "CP1:"
MAX_PASS_TEXT = 1200
"""Longest pass text accepted (a QR code of version ~25 at level M holds about this much)."""
MAX_RENTALS = 100
_B45 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ $%*+-./:"
_B45_INDEX = {c: i for i, c in enumerate(_B45)}


@dataclass(frozen=True)
class OfflinePass(WireMessage):
    """Lets ``user`` rent up to ``max_rentals`` batteries between the two times, offline."""

    KIND = "pass"
    pass_id: str
    user: str
    issued_at: float
    expires_at: float
    max_rentals: int = field(default=1, metadata=wire(required=True))

    def __post_init__(self) -> None:
        as_text(self.pass_id, "pass.pass_id")
        as_text(self.user, "pass.user", 128)
        i, e = check_validity(self.issued_at, self.expires_at, "pass")
        object.__setattr__(self, "issued_at", i)
        object.__setattr__(self, "expires_at", e)
        as_int(self.max_rentals, "pass.max_rentals", 1, MAX_RENTALS)


def b45encode(data: bytes) -> str:
    """RFC 9285 base45."""
    out = []
    for i in range(0, len(data) - 1, 2):
        n = data[i] * 256 + data[i + 1]
        c, n = divmod(n, 45 * 45)
        e, d = divmod(n, 45)
        out += [_B45[d], _B45[e], _B45[c]]
    if len(data) % 2:
        e, d = divmod(data[-1], 45)
        out += [_B45[d], _B45[e]]
    return "".join(out)


def b45decode(text: str) -> bytes:
    """RFC 9285 base45; raises ``MalformedMessage`` naming the bad position."""
    require(len(text) % 3 != 1, f"pass: base45 length {len(text)} is impossible (n mod 3 == 1)")
    out = bytearray()
    for i in range(0, len(text), 3):
        chunk = text[i : i + 3]
        try:
            vals = [_B45_INDEX[c] for c in chunk]
        except KeyError as e:
            raise MalformedMessage(f"pass: character {e.args[0]!r} near position {i} is not base45") from None
        n = sum(v * 45**k for k, v in enumerate(vals))
        if len(chunk) == 3:
            require(n <= 0xFFFF, f"pass: base45 group at position {i} overflows")
            out += n.to_bytes(2, "big")
        else:
            require(n <= 0xFF, f"pass: base45 group at position {i} overflows")
            out.append(n)
    return bytes(out)


def encode_pass_text(signed: bytes) -> str:
    """The QR text of a signed pass envelope."""
    return PASS_PREFIX + b45encode(signed)


def decode_pass_text(text: str) -> bytes:
    """The signed envelope inside a scanned QR text; clear errors for anything else."""
    if not isinstance(text, str):
        raise MalformedMessage(f"pass: expected text, got {type(text).__name__}")
    text = text.strip()
    if len(text) > MAX_PASS_TEXT:
        raise OversizedMessage(f"pass: {len(text)} characters, limit {MAX_PASS_TEXT}")
    if not text.upper().startswith(PASS_PREFIX):
        raise MalformedMessage(f"pass: text does not start with {PASS_PREFIX!r} (not a cabinet pass)")
    body = text[len(PASS_PREFIX) :]
    require(len(body) > 0, "pass: nothing after the prefix")
    return b45decode(body)
