"""The cloud service's configuration: every key declared once with type, default and help.

A config file is TOML with one ``[cloud]`` table; unknown keys are refused so a typo never
silently falls back to a default.
"""

from __future__ import annotations

import ipaddress
import tomllib
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any

from cloud.errors import CloudError

MODES = ("production", "sandbox", "demo")
PROVIDERS = ("sandbox", "stripe", "wechat", "alipay")
"""The payment providers the cloud can speak (cloud/payments/registry.py builds them)."""
SMS_BACKENDS = ("log",)
"""What can send the phone sign-in codes (cloud/sms.py builds them)."""
DEFAULT_WEBHOOK_SECRET = "sandbox-webhook-secret"
"""Public (it is in this repository): ``check_startable`` refuses it outside sandbox and demo mode."""


class ConfigError(CloudError, ValueError):
    """A config file or value is wrong; the message names the file and key."""

    status = 500  # a request never sees one: the process refuses to start
    code = "config_error"


@dataclass(frozen=True)
class CloudConfig:
    """Settings of one cloud process (see docs/cloud.md for each key)."""

    database: str = field(
        default="sqlite:///cloud.db",
        metadata={"help": "SQLAlchemy URL (sqlite:///path or postgresql+psycopg://...) or a plain file path"},
    )
    host: str = field(default="127.0.0.1", metadata={"help": "address the HTTP API listens on"})
    port: int = field(default=8000, metadata={"help": "TCP port of the HTTP API"})
    provider: str = field(
        default="sandbox",
        metadata={
            "help": "the default payment provider (merchants that name none, passes): sandbox, stripe, wechat "
            "or alipay"
        },
    )
    providers: list = field(
        default_factory=list,
        metadata={
            "help": "more providers to run beside the default one; merchants choose among them "
            "(merchants.providers). Each real one is set up in provider_settings"
        },
    )
    provider_settings: dict = field(
        default_factory=dict,
        metadata={
            "help": "one table per real provider, e.g. [cloud.provider_settings.stripe]: where its keys are "
            "(files or environment variable names, never the keys), its endpoints; see docs/payments-*.md"
        },
    )
    confirm_timeout_s: int = field(
        default=300, metadata={"help": "cancel a hold the renter has not confirmed in the provider's app"}
    )
    debt_retry_s: int = field(
        default=600, metadata={"help": "first retry of a fee that could not be collected (doubles each time)"}
    )
    debt_retry_max_s: int = field(
        default=86400, metadata={"help": "longest wait between retries of a due fee"}
    )
    webhook_secret: str = field(
        default="sandbox-webhook-secret",  # DEFAULT_WEBHOOK_SECRET; refused at start in production mode
        metadata={"help": "HMAC-SHA256 key shared with the payment provider"},
    )
    webhook_tolerance_s: int = field(default=300, metadata={"help": "max age of a signed webhook, seconds"})
    hold_ttl_s: int = field(
        default=7 * 24 * 3600, metadata={"help": "sandbox: a hold expires after this many seconds"}
    )
    hold_capture_margin_s: int = field(
        default=6 * 3600, metadata={"help": "capture a long rental's cap this long before its hold expires"}
    )
    eject_timeout_s: int = field(
        default=120, metadata={"help": "void the hold when no rental_started arrives in time"}
    )
    sweep_interval_s: int = field(
        default=30,
        metadata={"help": "seconds between sweeps (eject timeouts, early captures, purchases, webhooks)"},
    )
    session_ttl_s: int = field(default=30 * 24 * 3600, metadata={"help": "lifetime of a login session token"})
    login_max_failures_account: int = field(
        default=5, metadata={"help": "failed logins per account per window"}
    )
    login_max_failures_ip: int = field(
        default=20, metadata={"help": "failed logins per client IP per window"}
    )
    login_window_s: int = field(default=900, metadata={"help": "window of the login rate limit, seconds"})
    signup_max_per_ip: int = field(
        default=10, metadata={"help": "sign-ups (POST /api/users) per client IP per signup window"}
    )
    signup_window_s: int = field(default=3600, metadata={"help": "window of the sign-up rate limit, seconds"})
    sms_backend: str = field(
        default="log",
        metadata={
            "help": "sends the phone sign-in codes (cloud/sms.py): log (development and demo: the code goes to "
            "the cloud's log); a real SMS gateway is a backend implementing cloud.sms.SmsSender"
        },
    )
    sms_code_ttl_s: int = field(
        default=300, metadata={"help": "a phone sign-in code expires after this long"}
    )
    sms_max_attempts: int = field(
        default=5, metadata={"help": "wrong tries of one sign-in code before it is void (ask for a new one)"}
    )
    sms_max_per_phone: int = field(
        default=5, metadata={"help": "sign-in codes sent to one phone per sms_window_s"}
    )
    sms_max_per_ip: int = field(
        default=20,
        metadata={"help": "sign-in codes asked for (and codes tried) per client IP per sms_window_s"},
    )
    sms_window_s: int = field(
        default=900, metadata={"help": "window of the phone sign-in rate limits, seconds"}
    )
    trusted_proxies: list = field(
        default_factory=list,
        metadata={
            "help": "CIDRs of reverse proxies whose X-Forwarded-For is believed (client IP for throttling); "
            "empty: none, the peer address is the client"
        },
    )
    mode: str = field(
        default="production",
        metadata={
            "help": "production, sandbox or demo; production refuses to start with the default webhook_secret"
        },
    )
    scrypt_n: int = field(default=2**14, metadata={"help": "scrypt cost parameter N (power of two)"})
    data_dir: str = field(
        default="cloud-data",
        metadata={"help": "directory of the cloud's signing key and provisioning CA (keep it private)"},
    )
    broker_host: str = field(
        default="", metadata={"help": "MQTT broker of the fleet; empty: no fleet link (HTTP API only)"}
    )
    broker_port: int = field(default=8883, metadata={"help": "MQTT broker port"})
    mqtt_tls: bool = field(default=True, metadata={"help": "TLS (and mutual TLS with a cert) to the broker"})
    mqtt_ca_file: str = field(default="", metadata={"help": "CA certificate of the broker (TLS)"})
    mqtt_cert_file: str = field(
        default="", metadata={"help": "this worker's client certificate (mutual TLS)"}
    )
    mqtt_key_file: str = field(default="", metadata={"help": "this worker's client key (mutual TLS)"})
    mqtt_client_id: str = field(
        default="", metadata={"help": "MQTT client id, unique per worker; empty: cloud-<host>-<pid>"}
    )
    command_ttl_s: int = field(
        default=120, metadata={"help": "operator commands expire after this many seconds"}
    )
    config_ttl_s: int = field(
        default=30 * 24 * 3600, metadata={"help": "validity of a signed cabinet config, seconds"}
    )
    config_resign_margin_s: int = field(
        default=7 * 24 * 3600, metadata={"help": "re-sign a cabinet config this long before it expires"}
    )
    pass_ttl_s: int = field(default=24 * 3600, metadata={"help": "validity of an offline rent pass, seconds"})
    alert_offline_after_s: int = field(
        default=600,
        metadata={"help": "a cabinet heard of before but silent this long raises cabinet_offline"},
    )
    alert_check_interval_s: int = field(
        default=60,
        metadata={"help": "seconds between the alert checks (silent cabinets, certificate expiry)"},
    )
    alert_cert_warn_days: int = field(
        default=30, metadata={"help": "raise cert_expiring / crl_expiring this many days before expiry"}
    )
    alert_crl_file: str = field(
        default="",
        metadata={"help": "the broker's CRL (PEM) to watch; empty: <data_dir>/pki/crl.pem if present"},
    )
    app_tile_url: str = field(
        default="https://tile.openstreetmap.org/{z}/{x}/{y}.png",
        metadata={
            "help": "map tiles of the renter app (/app/, docs/renter-app.md): an http(s) URL template with {z}, "
            "{x}, {y} (and {s} as the host's first label); its host is allowed in the app's CSP; empty: no tiles"
        },
    )
    app_tile_attribution: str = field(
        default="© OpenStreetMap contributors",
        metadata={"help": "the credit the tile provider asks for, shown on the app's map (plain text)"},
    )

    @classmethod
    def load(cls, path: str | Path) -> CloudConfig:
        """Read a TOML file whose ``[cloud]`` table overrides the defaults."""
        p = Path(path)
        try:
            data = tomllib.loads(p.read_text())
        except FileNotFoundError as e:
            raise ConfigError(f"{p}: config file not found") from e
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{p}: not valid TOML: {e}") from e
        return cls.from_mapping(data.get("cloud", {}), source=str(p))

    @classmethod
    def from_mapping(cls, values: dict[str, Any], source: str = "config") -> CloudConfig:
        """Build from a mapping, checking every key's name and type."""
        known = {f.name: f for f in fields(cls)}
        kwargs: dict[str, Any] = {}
        for key, value in values.items():
            if key not in known:
                raise ConfigError(f"{source}: unknown key cloud.{key} (known: {', '.join(sorted(known))})")
            want = type(getattr(cls(), key))
            if want is int and (isinstance(value, bool) or not isinstance(value, int)):
                raise ConfigError(f"{source}: cloud.{key} must be an integer, got {value!r}")
            if want is bool and not isinstance(value, bool):
                raise ConfigError(f"{source}: cloud.{key} must be true or false, got {value!r}")
            if want is str and not isinstance(value, str):
                raise ConfigError(f"{source}: cloud.{key} must be a string, got {value!r}")
            if want is list and not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
                raise ConfigError(f"{source}: cloud.{key} must be a list of strings, got {value!r}")
            if want is dict and not (
                isinstance(value, dict) and all(isinstance(v, dict) for v in value.values())
            ):
                raise ConfigError(f"{source}: cloud.{key} must be a table of tables, got {value!r}")
            kwargs[key] = value
        cfg = cls(**kwargs)
        for key in (
            "webhook_tolerance_s",
            "hold_ttl_s",
            "eject_timeout_s",
            "session_ttl_s",
            "login_window_s",
            "command_ttl_s",
            "config_ttl_s",
            "pass_ttl_s",
            "alert_offline_after_s",
            "alert_check_interval_s",
            "alert_cert_warn_days",
            "signup_window_s",
            "confirm_timeout_s",
            "debt_retry_s",
            "debt_retry_max_s",
            "sms_code_ttl_s",
            "sms_max_attempts",
            "sms_max_per_phone",
            "sms_max_per_ip",
            "sms_window_s",
        ):
            if getattr(cfg, key) <= 0:
                raise ConfigError(f"{source}: cloud.{key} must be positive")
        for name in (cfg.provider, *cfg.providers):
            if name not in PROVIDERS:
                raise ConfigError(
                    f"{source}: payment provider {name!r} unknown (known: {', '.join(PROVIDERS)})"
                )
        if cfg.sms_backend not in SMS_BACKENDS:
            raise ConfigError(
                f"{source}: cloud.sms_backend must be one of {', '.join(SMS_BACKENDS)}, got {cfg.sms_backend!r}"
            )
        if cfg.mode not in MODES:
            raise ConfigError(f"{source}: cloud.mode must be one of {', '.join(MODES)}, got {cfg.mode!r}")
        for cidr in cfg.trusted_proxies:
            try:
                ipaddress.ip_network(cidr, strict=False)
            except ValueError:
                raise ConfigError(
                    f"{source}: cloud.trusted_proxies: {cidr!r} is not an address or CIDR"
                ) from None
        return cfg

    def check_startable(self) -> None:
        """Refuse, with a ``ConfigError``, settings that must never reach a server (issue 11.6).

        The default ``webhook_secret`` is in this repository: with it, anyone can sign payment
        webhooks. Only the ``sandbox`` and ``demo`` modes may keep it.
        """
        if self.webhook_secret == DEFAULT_WEBHOOK_SECRET and self.mode not in ("sandbox", "demo"):
            raise ConfigError(
                f'cloud.webhook_secret is the public default; set your own, or cloud.mode = "sandbox" or '
                f'"demo" (mode is {self.mode!r})'
            )

    @property
    def database_url(self) -> str:
        """The database as a SQLAlchemy URL (a bare path means a SQLite file)."""
        return database_url(self.database)


def database_url(value: str) -> str:
    """Turn a SQLAlchemy URL or a bare SQLite file path into a URL."""
    if "://" in value:
        return value
    return f"sqlite:///{Path(value).expanduser().resolve()}"


def config_reference() -> str:
    """The Markdown table of every config key (docs/cloud.md embeds it; a test keeps it current)."""
    lines = ["| key | type | default | meaning |", "|---|---|---|---|"]
    for f in fields(CloudConfig):
        default = f.default_factory() if f.default is MISSING else f.default  # type: ignore[misc,operator]
        lines.append(f"| `{f.name}` | {type(default).__name__} | `{default!r}` | {f.metadata['help']} |")
    return "\n".join(lines) + "\n"
