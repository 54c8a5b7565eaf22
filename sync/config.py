"""Signed, retained cabinet configuration (topic ``cfg``) and the ONNX model manifest.

A ``Config`` is a complete snapshot, never a patch: the newest counter wins and an unset
field means "use the cabinet's own default". The cloud may address one cabinet or the whole
fleet (``cabinet="*"``); it publishes the same signed bytes, retained, on each cabinet's topic.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sync.codec import (
    WireMessage,
    as_int,
    as_list,
    as_map,
    as_number,
    as_text,
    as_text_map,
    as_text_tuple,
    require,
)
from sync.codec import (
    field as env_field,
)
from sync.errors import InvalidTopic, MalformedMessage
from sync.topics import validate_cabinet_id
from sync.wire import WireRecord, from_wire, wire

FLEET = "*"
"""``Config.cabinet`` value that addresses every cabinet."""
_SHA256_RE = re.compile(r"[0-9a-f]{64}")
_CURRENCY_RE = re.compile(r"[A-Z]{3}")
_KEY_ID_RE = re.compile(r"[A-Za-z0-9_.-]{1,32}")
MAX_MODEL_BYTES = 512 * 1024 * 1024


def _set(obj: object, name: str, value: Any) -> None:
    object.__setattr__(obj, name, value)


def check_key_id(key_id: Any, where: str) -> str:
    """A signing key id: 1-32 chars of ``A-Z a-z 0-9 _ . -``."""
    kid = as_text(key_id, where, 32)
    require(
        _KEY_ID_RE.fullmatch(kid) is not None,
        f"{where}: {kid!r} has characters outside A-Z a-z 0-9 _ . -",
    )
    return kid


def b64url_decode(text: str, where: str) -> bytes:
    """Decode base64url with or without padding; errors name the field."""
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError) as e:
        raise MalformedMessage(f"{where}: not base64url ({e})") from None


def check_validity(issued_at: Any, expires_at: Any, where: str) -> tuple[float, float]:
    """Both times as floats, and ``expires_at`` strictly after ``issued_at``."""
    i = as_number(issued_at, f"{where}.issued_at")
    e = as_number(expires_at, f"{where}.expires_at")
    require(e > i, f"{where}: expires_at {e} is not after issued_at {i}")
    return i, e


@dataclass(frozen=True)
class ModelManifest(WireRecord):
    """Which fault-prediction model to run: fetch ``url``, check ``size`` and ``sha256``, then swap."""

    version: str
    sha256: str
    url: str
    size: int
    min_runtime: str

    def __post_init__(self) -> None:
        as_text(self.version, "model.version")
        as_text(self.sha256, "model.sha256")
        require(_SHA256_RE.fullmatch(self.sha256) is not None, "model.sha256: need 64 lowercase hex digits")
        as_text(self.url, "model.url", 1024)
        as_int(self.size, "model.size", 1, MAX_MODEL_BYTES)
        as_text(self.min_runtime, "model.min_runtime")

    @classmethod
    def from_wire(cls, d: Any, where: str = "model") -> ModelManifest:
        return from_wire(cls, d, where)


@dataclass(frozen=True)
class Tariff(WireRecord):
    """What the kiosk shows and the cabinet uses for offline estimates; money in minor units."""

    currency: str
    unit_minutes: int
    unit_price_minor: int
    free_minutes: int = 0
    daily_cap_minor: int | None = field(default=None, metadata=wire(omit_none=True))
    rental_cap_minor: int | None = field(default=None, metadata=wire(omit_none=True))
    deposit_minor: int | None = field(default=None, metadata=wire(omit_none=True))
    text: Mapping[str, str] = field(default_factory=dict, metadata=wire(empty_is_default=True))

    _OPTIONAL = ("daily_cap_minor", "rental_cap_minor", "deposit_minor")

    def __post_init__(self) -> None:
        as_text(self.currency, "tariff.currency", 3)
        require(
            _CURRENCY_RE.fullmatch(self.currency) is not None,
            "tariff.currency: need an ISO 4217 code like CNY",
        )
        as_int(self.unit_minutes, "tariff.unit_minutes", 1, 24 * 60)
        as_int(self.unit_price_minor, "tariff.unit_price_minor", 0, 10**9)
        as_int(self.free_minutes, "tariff.free_minutes", 0, 24 * 60)
        for n in self._OPTIONAL:
            if getattr(self, n) is not None:
                as_int(getattr(self, n), f"tariff.{n}", 0, 10**9)
        _set(self, "text", as_text_map(self.text, "tariff.text", max_len=2000, key_len=16))

    @classmethod
    def from_wire(cls, d: Any) -> Tariff:
        return from_wire(cls, d, "tariff")


@dataclass(frozen=True)
class ConfigBody:
    """The settings the cloud controls; ``None`` keeps the cabinet's local default."""

    tariff: Tariff | None = None
    cloud_keys: Mapping[str, str] = field(default_factory=dict)
    key_not_after: Mapping[str, float] = field(default_factory=dict)
    retired_keys: tuple[str, ...] = ()
    revoked_passes: tuple[str, ...] = ()
    battery_deny_list: tuple[str, ...] = ()
    rentable_min_soc: int | None = None
    power_budget_w: int | None = None
    min_protocol_version: int | None = None

    def __post_init__(self) -> None:
        w = "cfg.body"
        require(self.tariff is None or isinstance(self.tariff, Tariff), f"{w}.tariff: not a Tariff")
        keys = as_text_map(self.cloud_keys, f"{w}.cloud_keys", max_len=64, key_len=32)
        for kid, b64 in keys.items():
            check_key_id(kid, f"{w}.cloud_keys key")
            require(
                len(b64url_decode(b64, f"{w}.cloud_keys.{kid}")) == 32, f"{w}.cloud_keys.{kid}: not 32 bytes"
            )
        _set(self, "cloud_keys", keys)
        if not isinstance(self.key_not_after, Mapping):
            raise MalformedMessage(
                f"{w}.key_not_after: expected a map, got {type(self.key_not_after).__name__}"
            )
        not_after = {
            check_key_id(kid, f"{w}.key_not_after key"): as_number(t, f"{w}.key_not_after.{kid}")
            for kid, t in self.key_not_after.items()
        }
        require(
            set(not_after) <= set(keys),
            f"{w}.key_not_after: names keys not in cloud_keys ({sorted(set(not_after) - set(keys))})",
        )
        _set(self, "key_not_after", not_after)
        retired = as_text_tuple(self.retired_keys, f"{w}.retired_keys", 1000, 32)
        for kid in retired:
            check_key_id(kid, f"{w}.retired_keys")
        require(
            not set(retired) & set(keys),
            f"{w}: keys both trusted and retired ({sorted(set(retired) & set(keys))})",
        )
        _set(self, "retired_keys", retired)
        _set(self, "revoked_passes", as_text_tuple(self.revoked_passes, f"{w}.revoked_passes"))
        _set(self, "battery_deny_list", as_text_tuple(self.battery_deny_list, f"{w}.battery_deny_list"))
        if self.rentable_min_soc is not None:
            as_int(self.rentable_min_soc, f"{w}.rentable_min_soc", 0, 100)
        if self.power_budget_w is not None:
            as_int(self.power_budget_w, f"{w}.power_budget_w", 1, 100_000)
        if self.min_protocol_version is not None:
            as_int(self.min_protocol_version, f"{w}.min_protocol_version", 1, 1000)

    def to_wire(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "cloud_keys": dict(self.cloud_keys),
            "revoked_passes": list(self.revoked_passes),
            "battery_deny_list": list(self.battery_deny_list),
        }
        if self.tariff is not None:
            d["tariff"] = self.tariff.to_wire()
        if self.key_not_after:  # only when set: a config without rotation encodes as before
            d["key_not_after"] = dict(self.key_not_after)
        if self.retired_keys:
            d["retired_keys"] = list(self.retired_keys)
        for n in ("rentable_min_soc", "power_budget_w", "min_protocol_version"):
            if getattr(self, n) is not None:
                d[n] = getattr(self, n)
        return d

    @classmethod
    def from_wire(cls, d: Any) -> ConfigBody:
        d = as_map(d, "cfg.body")
        return cls(
            tariff=None if d.get("tariff") is None else Tariff.from_wire(d["tariff"]),
            cloud_keys=d.get("cloud_keys") or {},
            key_not_after=d.get("key_not_after") or {},
            retired_keys=tuple(as_list(d.get("retired_keys") or [], "cfg.body.retired_keys", 1000)),
            revoked_passes=tuple(as_list(d.get("revoked_passes") or [], "cfg.body.revoked_passes", 100_000)),
            battery_deny_list=tuple(
                as_list(d.get("battery_deny_list") or [], "cfg.body.battery_deny_list", 100_000)
            ),
            rentable_min_soc=d.get("rentable_min_soc"),
            power_budget_w=d.get("power_budget_w"),
            min_protocol_version=d.get("min_protocol_version"),
        )


@dataclass(frozen=True)
class Config(WireMessage):
    """A signed configuration snapshot; ``counter`` is its version (newer replaces older)."""

    KIND = "cfg"
    cabinet: str
    counter: int
    issued_at: float
    expires_at: float
    body: ConfigBody

    def __post_init__(self) -> None:
        if self.cabinet != FLEET:
            try:
                validate_cabinet_id(self.cabinet)
            except InvalidTopic as err:
                raise MalformedMessage(f"cfg.cabinet: {err}") from None
        as_int(self.counter, "cfg.counter", 1)
        i, e = check_validity(self.issued_at, self.expires_at, "cfg")
        _set(self, "issued_at", i)
        _set(self, "expires_at", e)
        require(isinstance(self.body, ConfigBody), "cfg.body: not a ConfigBody")

    def addressed_to(self, cabinet: str) -> bool:
        return self.cabinet in (FLEET, cabinet)

    @classmethod
    def from_wire(cls, env: dict[str, Any]) -> Config:  # the body has its own rules (ConfigBody)
        names = ("cabinet", "counter", "issued_at", "expires_at")
        return cls(
            **{n: env_field(env, n, "cfg") for n in names}, body=ConfigBody.from_wire(env.get("body") or {})
        )
