"""The cabinet's configuration: every key declared once (type, bounds, default, help).

Loaded from a TOML file (``/etc/cabinet/cabinet.toml`` on a cabinet). Unknown keys, wrong types
and out-of-range values are rejected with the file, section and key named. ``docs/configuration.md``
is generated from :data:`KEYS` (``cabinet config docs``) and a test checks it is current.
"""

from __future__ import annotations

import math
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class ConfigError(ValueError):
    """A config file or value is wrong; the message names the file, the key and what is wrong."""


@dataclass(frozen=True)
class Key:
    section: str
    name: str
    type: type
    default: Any
    help: str
    min: float | None = None
    max: float | None = None
    choices: tuple[str, ...] | None = None
    item_type: type | None = None  # for list values
    required: bool = False
    secret: bool = False

    @property
    def path(self) -> str:
        return f"{self.section}.{self.name}"


_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,32}$")

KEYS: tuple[Key, ...] = (
    # --- cabinet ---
    Key(
        "cabinet",
        "id",
        str,
        "",
        "Cabinet id: letters, digits, - and _, at most 32; the MQTT client id and topic level.",
        required=True,
    ),
    Key(
        "cabinet",
        "data_dir",
        str,
        "/var/lib/cabinet",
        "Directory of the ledger, backups and the technician credential.",
    ),
    Key("cabinet", "slots", int, 24, "Number of slots in the cabinet.", min=1, max=48),
    Key(
        "cabinet", "backup_interval_s", float, 3600.0, "Seconds between online backups of the ledger.", min=60
    ),
    Key("cabinet", "backups_kept", int, 24, "Backups kept (oldest removed first).", min=1, max=1000),
    # --- bus ---
    Key(
        "bus",
        "url",
        str,
        "serial:///dev/ttyUSB0",
        "Slot board bus: serial://DEVICE (Modbus RTU) or tcp://HOST:PORT (Modbus TCP).",
    ),
    Key("bus", "baudrate", int, 115200, "Serial baud rate (RTU only).", min=1200, max=921600),
    Key(
        "bus",
        "slots_per_board",
        int,
        4,
        "Slots served by each slot board; boards get unit ids 1, 2, ... in slot order.",
        min=1,
        max=8,
    ),
    Key(
        "bus",
        "timeout_s",
        float,
        0.2,
        "Time to wait for one board's reply before counting a timeout.",
        min=0.01,
        max=5,
    ),
    Key(
        "bus",
        "retries",
        int,
        1,
        "Retries of a failed request before the board's failure is counted.",
        min=0,
        max=5,
    ),
    Key("bus", "poll_interval_s", float, 1.0, "Seconds between full scans of the bus.", min=0.05, max=60),
    # --- locks ---
    Key(
        "locks",
        "pin_factory",
        str,
        "lgpio",
        "gpiozero pin factory: lgpio on a Pi, mock in tests, cabinetsim for the simulator.",
        choices=("lgpio", "rpigpio", "native", "mock", "cabinetsim"),
    ),
    Key(
        "locks",
        "lock_pins",
        list,
        [],
        "Lock output pin per slot, in slot order (empty: LOCK1..LOCKn, the simulator's names).",
        item_type=str,
    ),
    Key(
        "locks",
        "seat_pins",
        list,
        [],
        "Seat switch input pin per slot, in slot order (empty: SEAT1..SEATn).",
        item_type=str,
    ),
    Key("locks", "pulse_s", float, 0.3, "Length of the unlock pulse.", min=0.02, max=5),
    Key(
        "locks",
        "jam_timeout_s",
        float,
        1.5,
        "A lock whose seat switch has not changed this long after the pulse is jammed.",
        min=0.1,
        max=30,
    ),
    # --- rent ---
    Key("rent", "min_soc", int, 80, "Rentable minimum state of charge, percent.", min=0, max=100),
    Key(
        "rent",
        "eject_timeout_s",
        float,
        30.0,
        "How long a presented battery waits to be taken before the rental is aborted.",
        min=1,
        max=300,
    ),
    Key(
        "rent",
        "pass_clock_skew_s",
        float,
        600.0,
        "Allowed error of the cabinet clock when checking pass and command expiry.",
        min=0,
        max=86400,
    ),
    Key(
        "rent",
        "max_offline_rentals_per_pass",
        int,
        1,
        "Upper bound on rentals at once per offline pass, whatever the pass says.",
        min=1,
        max=10,
    ),
    # --- charging ---
    Key("charging", "power_budget_w", float, 240.0, "Power the chargers may draw in total (the default charges 24 slots at once).", min=5, max=2000),
    Key(
        "charging",
        "watts_per_slot",
        float,
        10.0,
        "Power one charging slot draws (for the budget).",
        min=1,
        max=100,
    ),
    Key("charging", "max_temp_c", float, 45.0, "Batteries hotter than this are not charged.", min=20, max=70),
    # --- health ---
    Key("health", "model_path", str, "", "ONNX fault model; empty: the one shipped with the software."),
    Key(
        "health",
        "risk_quarantine",
        float,
        0.7,
        "Fault risk at or above which a battery is quarantined.",
        min=0,
        max=1,
    ),
    Key("health", "interval_s", float, 300.0, "Seconds between fault prediction runs.", min=1),
    # --- sync ---
    Key("sync", "enabled", bool, True, "Connect to the cloud broker."),
    Key("sync", "broker_host", str, "localhost", "MQTT broker host."),
    Key("sync", "broker_port", int, 8883, "MQTT broker port.", min=1, max=65535),
    Key("sync", "tls", bool, True, "Use TLS to the broker."),
    Key("sync", "ca_file", str, "", "CA certificate file for the broker (TLS)."),
    Key("sync", "cert_file", str, "", "This cabinet's client certificate (mutual TLS)."),
    Key("sync", "key_file", str, "", "This cabinet's client key (mutual TLS).", secret=True),
    Key(
        "sync",
        "cloud_keys",
        list,
        [],
        "Cloud Ed25519 public keys as 'keyid:base64' (bootstrap; later ones come in signed config).",
        item_type=str,
    ),
    Key("sync", "batch_max_events", int, 200, "Events per batch sent to the cloud.", min=1, max=5000),
    Key("sync", "batch_max_bytes", int, 65536, "Bytes per batch sent to the cloud.", min=1024, max=1048576),
    Key("sync", "window", int, 4, "Batches in flight before waiting for an ack.", min=1, max=64),
    Key("sync", "telemetry_interval_s", float, 30.0, "Seconds between telemetry messages.", min=1),
    # --- web ---
    Key("web", "enabled", bool, True, "Serve the kiosk page, the technician UI and the local JSON API."),
    Key("web", "host", str, "0.0.0.0", "Address of the kiosk and technician web UI."),
    Key("web", "port", int, 8080, "Port of the kiosk and technician web UI.", min=1, max=65535),
    Key("web", "session_idle_s", float, 900.0, "Technician session idle timeout.", min=30),
    Key("web", "session_max_s", float, 28800.0, "Technician session absolute timeout.", min=60),
    # --- kiosk ---
    Key(
        "kiosk",
        "app_url",
        str,
        "https://app.example.com/rent?cabinet={cabinet}",
        "Address in the kiosk's QR code for renting in the app; {cabinet} becomes cabinet.id.",
    ),
    Key(
        "kiosk",
        "language",
        str,
        "zh",
        "Language the kiosk starts in (renters can switch).",
        choices=("zh", "en"),
    ),
    Key(
        "kiosk",
        "code_reader_port",
        str,
        "",
        "Serial port of the kiosk's QR code reader (e.g. /dev/ttyACM0); empty: none (the kiosk page still takes codes).",
    ),
    Key("kiosk", "code_reader_baudrate", int, 9600, "Baud rate of the code reader.", min=1200, max=921600),
    Key(
        "kiosk",
        "idle_s",
        float,
        45.0,
        "Seconds without a touch before the kiosk goes back to its start screen.",
        min=3,
        max=600,
    ),
    # --- alerts (conditions recorded in the ledger for the cloud's alerts) ---
    Key(
        "alerts",
        "cert_warn_days",
        int,
        30,
        "Record cert_expiring when the client or CA certificate (sync.cert_file, sync.ca_file) expires within this many days.",
        min=1,
        max=365,
    ),
    Key(
        "alerts",
        "cert_check_interval_s",
        float,
        3600.0,
        "Seconds between checks of the certificates' expiry.",
        min=1,
        max=86400,
    ),
    Key(
        "alerts",
        "stock_hold_s",
        float,
        60.0,
        "An empty or full cabinet (or its end) is recorded once it has lasted this long (no flapping).",
        min=0,
        max=3600,
    ),
)

_BY_PATH = {k.path: k for k in KEYS}


@dataclass
class Config:
    """Validated configuration values, by section then key."""

    values: dict[str, dict[str, Any]] = field(default_factory=dict)
    source: str = "<defaults>"

    def __getitem__(self, path: str) -> Any:
        section, name = path.split(".", 1)
        return self.values[section][name]

    def section(self, name: str) -> dict[str, Any]:
        return dict(self.values[name])

    def redacted(self) -> dict[str, dict[str, Any]]:
        """The values with secrets replaced, for diagnostics bundles and logs."""
        out: dict[str, dict[str, Any]] = {}
        for k in KEYS:
            v = self.values[k.section][k.name]
            out.setdefault(k.section, {})[k.name] = "<redacted>" if k.secret and v else v
        return out

    @property
    def data_dir(self) -> Path:
        return Path(self["cabinet.data_dir"])


def _check(key: Key, value: Any, where: str) -> Any:
    t = key.type
    if t is float and isinstance(value, int) and not isinstance(value, bool):
        if abs(value) > 1e300:  # float() would raise OverflowError
            raise ConfigError(f"{where}: {key.path} = {value} is far outside any sensible range")
        value = float(value)
    if t is float and isinstance(value, float) and not math.isfinite(value):
        # nan passes every < and > test, so bounds alone would let it through
        raise ConfigError(f"{where}: {key.path} must be a finite number, got {value!r}")
    if (t is bool and not isinstance(value, bool)) or (t is not bool and isinstance(value, bool)):
        raise ConfigError(f"{where}: {key.path} must be {t.__name__}, got {value!r}")
    if not isinstance(value, t):
        raise ConfigError(f"{where}: {key.path} must be {t.__name__}, got {type(value).__name__} {value!r}")
    if t is list and key.item_type is not None:
        for i, item in enumerate(value):
            if not isinstance(item, key.item_type):
                raise ConfigError(f"{where}: {key.path}[{i}] must be {key.item_type.__name__}, got {item!r}")
    if key.min is not None and value < key.min:
        raise ConfigError(f"{where}: {key.path} = {value!r} is below the minimum {key.min:g}")
    if key.max is not None and value > key.max:
        raise ConfigError(f"{where}: {key.path} = {value!r} is above the maximum {key.max:g}")
    if key.choices is not None and value not in key.choices:
        raise ConfigError(f"{where}: {key.path} = {value!r} is not one of {', '.join(key.choices)}")
    return value


def check_value(path: str, value: Any, where: str) -> Any:
    """Validate one value for the key ``path`` (e.g. from a signed ``set_config`` command)."""
    key = _BY_PATH.get(path)
    if key is None:
        raise ConfigError(f"{where}: unknown key {path}")
    return _check(key, value, where)


def from_dict(data: dict[str, Any], source: str = "<dict>") -> Config:
    """Validate ``data`` (sections of keys) against :data:`KEYS`, filling in defaults."""
    values: dict[str, dict[str, Any]] = {}
    for k in KEYS:
        values.setdefault(k.section, {})[k.name] = (
            list(k.default) if isinstance(k.default, list) else k.default
        )
    for section, body in data.items():
        if not isinstance(body, dict):
            raise ConfigError(f"{source}: [{section}] must be a table of keys, got {body!r}")
        if section not in values:
            raise ConfigError(f"{source}: unknown section [{section}] (known: {', '.join(sorted(values))})")
        for name, value in body.items():
            key = _BY_PATH.get(f"{section}.{name}")
            if key is None:
                known = ", ".join(k.name for k in KEYS if k.section == section)
                raise ConfigError(f"{source}: unknown key {section}.{name} (known in [{section}]: {known})")
            values[section][name] = _check(key, value, source)
    for k in KEYS:
        if k.required and not values[k.section][k.name]:
            raise ConfigError(f"{source}: {k.path} is required ({k.help})")
    if not _ID_RE.match(values["cabinet"]["id"]):
        raise ConfigError(
            f"{source}: cabinet.id {values['cabinet']['id']!r} may hold only letters, digits, - and _ (1-32)"
        )
    n = values["cabinet"]["slots"]
    for pins in ("lock_pins", "seat_pins"):
        got = values["locks"][pins]
        if got and len(got) != n:
            raise ConfigError(f"{source}: locks.{pins} lists {len(got)} pins but cabinet.slots is {n}")
    return Config(values, source)


def load(path: str | Path) -> Config:
    """Read and validate a TOML config file."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as e:
        raise ConfigError(f"cannot read config file {p}: {e.strerror}") from e
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{p}: not valid TOML: {e}") from e
    return from_dict(data, str(p))


def docs_markdown() -> str:
    """The configuration reference, generated from :data:`KEYS`."""
    lines = [
        "# Cabinet configuration reference",
        "",
        "Generated from `cabinet/config.py` by `cabinet config docs`; a test keeps it current.",
        "The file is TOML (`/etc/cabinet/cabinet.toml`); unknown keys are errors.",
        "",
    ]
    section = None
    for k in KEYS:
        if k.section != section:
            section = k.section
            lines += [
                "",
                f"## [{section}]",
                "",
                "| key | type | default | range | meaning |",
                "|---|---|---|---|---|",
            ]
        rng = ""
        if k.min is not None or k.max is not None:
            rng = f"{'' if k.min is None else f'{k.min:g}'}..{'' if k.max is None else f'{k.max:g}'}"
        if k.choices:
            rng = " / ".join(k.choices)
        default = "(required)" if k.required else repr(k.default).replace("|", "\\|")
        lines.append(f"| `{k.name}` | {k.type.__name__} | `{default}` | {rng} | {k.help} |")
    return "\n".join(lines) + "\n"
