"""Builds the configured payment providers (the default ``cloud.provider`` and ``cloud.providers``).

``sandbox`` is built in. A real provider (``stripe``, ``wechat``, ``alipay``) is built from its
table in ``cloud.provider_settings`` by its class's ``from_config(settings)``, which
reads the keys from the files or environment variables the table names and refuses, with a
``ConfigError``, to start without them. No key is ever in a config file or in this repository.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

from sqlalchemy import Engine

from cloud.config import CloudConfig, ConfigError
from cloud.payments.provider import Provider
from cloud.payments.sandbox import SandboxProvider

#: provider name -> (module, class); the class builds itself with ``from_config(settings)``
REAL = {
    "stripe": ("cloud.payments.stripe_provider", "StripeProvider"),
    "wechat": ("cloud.payments.wechat_provider", "WeChatPayScoreProvider"),
    "alipay": ("cloud.payments.alipay_provider", "AlipayFundAuthProvider"),
}


def build_providers(config: CloudConfig, engine: Engine, clock: Callable[[], float]) -> dict[str, Provider]:
    """Every configured provider by name, the default first."""
    out: dict[str, Provider] = {}
    for name in dict.fromkeys((config.provider, *config.providers)):
        out[name] = build_provider(name, config, engine, clock)
    return out


def build_provider(name: str, config: CloudConfig, engine: Engine, clock: Callable[[], float]) -> Provider:
    if name == "sandbox":
        return SandboxProvider(engine, clock, config.webhook_secret, hold_ttl_s=config.hold_ttl_s)
    if name not in REAL:
        raise ConfigError(f"payment provider {name!r} unknown (known: sandbox, {', '.join(REAL)})")
    settings: Mapping[str, Any] = config.provider_settings.get(name) or {}
    if not settings:
        raise ConfigError(f"cloud.provider_settings.{name} is missing: {name} cannot start without its keys")
    module_name, class_name = REAL[name]
    cls = getattr(importlib.import_module(module_name), class_name)
    build = next(
        (getattr(cls, n) for n in ("from_config", "from_mapping", "from_settings") if hasattr(cls, n)), None
    )
    if build is None:
        raise ConfigError(f"{class_name} has no from_config(settings)")
    try:
        provider: Provider = build(settings, clock=clock)
    except TypeError:  # a provider that keeps no clock of its own
        provider = build(settings)
    return provider


def is_real(provider: Provider) -> bool:
    """A provider reached over the network: it has notifications, statements and payouts."""
    return all(hasattr(provider, m) for m in ("parse_notification", "statement", "payout", "hold_status"))
