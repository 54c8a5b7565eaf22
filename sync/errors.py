"""Why a message on the wire was refused.

Every refusal is a ``ProtocolError`` with a human-readable ``reason``; callers catch
``ProtocolError`` at the edge of their message handler, log ``reason`` and carry on.
``SecurityRejection`` marks the refusals a cabinet records as security events
(forged, expired, replayed, misaddressed, unknown key, downgraded, revoked).
``Duplicate`` is deliberately *not* a security rejection: it is the normal
at-least-once redelivery of something already accepted.
"""

from __future__ import annotations


class ProtocolError(Exception):
    """A message was refused; ``reason`` says what was wrong and where."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class MalformedMessage(ProtocolError, ValueError):
    """Not valid CBOR, a missing or mistyped field, or a value out of its bounds."""


class InvalidTopic(MalformedMessage):
    """A topic or cabinet id that does not follow ``cab/v1/{cabinet}/{channel}``."""


class UnexpectedKind(MalformedMessage):
    """A well-formed message of another kind than the one the topic or caller expects."""


class OversizedMessage(ProtocolError):
    """The payload (or its decompressed content) is larger than the protocol allows."""


class UnsupportedCBOR(MalformedMessage):
    """A CBOR feature the protocol never uses: a tag other than 37 (UUID), an indefinite length,
    a simple value other than false/true/null, a map key that is not text, bytes after the item.

    Refused by a scan of the item heads before anything is built (``sync.codec.decode_any``).
    """


class TooComplex(OversizedMessage, MalformedMessage):
    """More CBOR items, or deeper nesting, than the protocol allows (small bytes, big structure)."""


class UnsupportedVersion(ProtocolError):
    """The envelope's protocol version is not one this code speaks."""


class Duplicate(ProtocolError):
    """A signed message whose counter was already accepted (redelivery, retained copy)."""


class SecurityRejection(ProtocolError):
    """A refusal the receiver records as a security event."""


class Forged(SecurityRejection):
    """The signature does not verify with the named key."""


class UnknownKey(SecurityRejection):
    """The signing key id is not in the receiver's keyring."""


class Expired(SecurityRejection):
    """The message's validity window has passed (beyond the allowed clock skew)."""


class Replayed(SecurityRejection):
    """The counter is older than the replay window or older than the current config."""


class Misaddressed(SecurityRejection):
    """The message names another cabinet than the receiver or the topic it came on."""


class Downgraded(SecurityRejection):
    """A signed message of an older protocol version than the receiver allows."""


class Revoked(SecurityRejection):
    """An offline pass whose id is on the revocation list."""
