"""CBOR diagnostic notation (RFC 8949 §8) of wire payloads, and the examples in docs/protocol.md.

``python -m sync.diag`` prints the examples section; a test checks the document still matches.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import cbor2
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from sync.codec import inflate

EMBEDDED = ("p",)
"""Byte-string fields that hold CBOR themselves (the signed payload): shown as ``<<...>>``."""


def diagnostic(data: bytes, indent: int = 0) -> str:
    """Human-readable CBOR: maps and arrays, ``h'..'`` for bytes, ``37(h'..')`` for UUIDs."""
    return _diag(cbor2.loads(data), indent, "")


def _diag(v: Any, indent: int, key: str) -> str:
    pad, inner = "  " * indent, "  " * (indent + 1)
    if isinstance(v, bool) or v is None:
        return {True: "true", False: "false", None: "null"}[v]
    if isinstance(v, uuid.UUID):
        return f"37(h'{v.hex}')"
    if isinstance(v, bytes):
        if key in EMBEDDED:
            return "<<" + _diag(cbor2.loads(v), indent, "") + ">>"
        return f"h'{v.hex()}'"
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)
    if isinstance(v, float):
        return repr(v)
    if isinstance(v, int):
        return str(v)
    if isinstance(v, list):
        if not v:
            return "[]"
        return "[\n" + ",\n".join(inner + _diag(x, indent + 1, "") for x in v) + "\n" + pad + "]"
    if isinstance(v, dict):
        if not v:
            return "{}"
        items = [f"{inner}{json.dumps(k)}: {_diag(x, indent + 1, k)}" for k, x in v.items()]
        return "{\n" + ",\n".join(items) + "\n" + pad + "}"
    return repr(v)


EXAMPLE_KEY_SEED = bytes(range(32))
"""The documentation's example signing key (never used anywhere else)."""


def examples() -> str:
    """The examples section of docs/protocol.md, generated from the real encoders."""
    from sync.commands import Command, CommandKind
    from sync.config import Config, ConfigBody, Tariff
    from sync.messages import Ack, EventBatch, SlotSample, State, Telemetry, WireEvent
    from sync.passes import OfflinePass
    from sync.signing import Signer, public_key_b64

    t0 = 1767225600.0
    cab = "CAB-0001"
    boot = "6f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9"
    signer = Signer(Ed25519PrivateKey.from_private_bytes(EXAMPLE_KEY_SEED), "cloud-2026a")
    batch = EventBatch(
        cab,
        (
            WireEvent(
                41,
                "0c4b2a10-7d3e-4f5a-9b8c-1d2e3f4a5b6c",
                "rental_started",
                t0 + 12.5,
                8812.25,
                boot,
                {
                    "rental_id": "R-20260101-0007",
                    "sn": "BAT004217",
                    "slot": 7,
                    "source": "cloud",
                    "user": "u-1042",
                },
            ),
            WireEvent(
                42,
                "8a7b6c5d-4e3f-4a1b-9c8d-7e6f5a4b3c2d",
                "battery_returned",
                t0 + 3700.0,
                12499.75,
                boot,
                {"slot": 3, "sn": "BAT001998", "rental_id": "R-20251231-0190", "soc": 41, "temp_c": 27.5},
            ),
        ),
    )
    samples: tuple[SlotSample, ...] = (
        SlotSample(7, t0, "BAT004217", 88, 4112, 1480, 315, 0),
        SlotSample(8, t0),
    )
    msgs: list[tuple[str, str, bytes]] = [
        ("EventBatch", f"cab/v1/{cab}/ev", batch.encode()),
        ("Ack", f"cab/v1/{cab}/ack", Ack(cab, 42).encode()),
        ("Telemetry", f"cab/v1/{cab}/tm", Telemetry(cab, t0, samples).encode()),
        (
            "State",
            f"cab/v1/{cab}/state",
            State(
                cab, True, t0, {"cabinet": "0.1.0", "model": "2026.01.3"}, {"slots": 24, "batteries": 19}, 0
            ).encode(),
        ),
        (
            "Command (signed)",
            f"cab/v1/{cab}/cmd",
            signer.sign(
                Command(
                    "c-7f3a",
                    cab,
                    1088,
                    t0,
                    t0 + 120,
                    CommandKind.EJECT,
                    {"rental_id": "R-20260101-0007", "user": "u-1042"},
                )
            ),
        ),
        (
            "Config (signed)",
            f"cab/v1/{cab}/cfg",
            signer.sign(
                Config(
                    "*",
                    17,
                    t0,
                    t0 + 30 * 86400,
                    ConfigBody(
                        tariff=Tariff(
                            "CNY",
                            30,
                            150,
                            3,
                            3000,
                            9900,
                            None,
                            {"en": "1.5 CNY / 30 min", "zh": "1.5元/30分钟"},
                        ),
                        cloud_keys={signer.key_id: public_key_b64(signer.public_key)},
                        revoked_passes=("P-0912",),
                        battery_deny_list=("BAT000013",),
                        rentable_min_soc=60,
                        power_budget_w=400,
                    ),
                )
            ),
        ),
    ]
    out = [
        "Generated by `python -m sync.diag` from the real encoders (example key: seed bytes 0..31, "
        f"key id `{signer.key_id}`, public key `{public_key_b64(signer.public_key)}`).",
        "",
    ]
    for title, topic, data in msgs:
        out += [f"#### {title} on `{topic}` ({len(data)} bytes)", "", "```", diagnostic(data), "```", ""]
        if title == "EventBatch":
            inflated = inflate(cbor2.loads(data)["events_z"], what="example")
            out += ["Hex:", "", "```", _wrap(data.hex()), "```", ""]
            out += ["`events_z` inflated (what `events` holds when a batch is sent plain):", ""]
            out += ["```", diagnostic(inflated), "```", ""]
    text = signer.sign_pass(OfflinePass("P-0913", "u-1042", t0, t0 + 7 * 86400, 2))
    out += [f"#### Offline pass as QR text ({len(text)} characters)", "", "```", _wrap(text), "```", ""]
    return "\n".join(out)


def _wrap(s: str, width: int = 96) -> str:
    return "\n".join(s[i : i + width] for i in range(0, len(s), width))


if __name__ == "__main__":
    print(examples())
