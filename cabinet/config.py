"""The cabinet's configuration: every key declared once (type, bounds, default, help).

Loaded from a TOML file (``/etc/cabinet/cabinet.toml`` on a cabinet). Unknown keys, wrong types
and out-of-range values are rejected with the file, section and key named. ``docs/configuration.md``
is generated from :data:`KEYS` (``cabinet config docs``) and a test checks it is current.
"""

from __future__ import annotations

import builtins
import ipaddress
import math
import os
import ssl
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from sync.errors import InvalidTopic
from sync.topics import validate_cabinet_id


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
    item_type: builtins.type | None = None  # for list values
    required: bool = False
    secret: bool = False
    #: a rule beyond type and bounds: returns why the value is wrong, or None
    rule: Callable[[Any], str | None] | None = None

    @property
    def path(self) -> str:
        return f"{self.section}.{self.name}"


def _host_port_problem(value: str) -> str | None:
    """What is wrong with an optional ``HOST:PORT`` value, or None ("" is allowed: not set)."""
    if not value:
        return None
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        return "is not HOST:PORT"
    return None


def _bus_url_problem(url: str) -> str | None:
    """What is wrong with a ``bus.url`` (the same rule ``cabinet run`` applies), or None."""
    if url.startswith("serial://"):
        return None if url.removeprefix("serial://") else "names no serial device after serial://"
    if url.startswith("tcp://"):
        try:
            u = urlsplit(url)
            port = u.port
        except ValueError as e:
            return f"is not tcp://HOST:PORT ({e})"
        if not u.hostname or not port or u.path not in ("", "/"):
            return "is not tcp://HOST:PORT"
        return None
    return "must start with serial:// or tcp://"


def _cloud_keys_problem(items: list[str]) -> str | None:
    """Each bootstrap key must be 'keyid:base64' of an Ed25519 public key (as Trust loads them)."""
    from sync.signing import keyring_from_b64

    for i, item in enumerate(items):
        key_id, sep, b64 = item.partition(":")
        if not sep:
            return f"entry {i} {item!r} must be 'keyid:base64'"
        try:
            keyring_from_b64({key_id: b64})
        except Exception as e:  # MalformedMessage, ValueError from the key loader
            return f"entry {i} {item!r} is not a usable key: {e}"
    return None


def is_loopback(host: str) -> bool:
    """``host`` is a loopback address (or ``localhost``): reachable only from the cabinet itself."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


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
        rule=_bus_url_problem,
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
        "sim_address",
        str,
        "",
        "HOST:PORT of the simulator's GPIO link, for pin_factory = cabinetsim (empty: the"
        " CABINET_SIM_GPIO environment variable, as gpiozero's own GPIOZERO_PIN_FACTORY use needs).",
        rule=_host_port_problem,
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
        "unreadable_wait_s",
        float,
        10.0,
        "How long an eject, or its recovery after a restart, waits past the eject timeout for"
        " its slot to settle (the board answers again, the pack is taken or back in its seat,"
        " the bus and the seat switch agree) before the rental is aborted (longer than the bus"
        " backoff and the seat switch's lag).",
        min=0,
        max=60,
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
    Key(
        "charging",
        "power_budget_w",
        float,
        240.0,
        "Power the chargers may draw in total (the default charges 24 slots at once).",
        min=5,
        max=2000,
    ),
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
        rule=_cloud_keys_problem,
    ),
    Key("sync", "batch_max_events", int, 200, "Events per batch sent to the cloud.", min=1, max=5000),
    Key("sync", "batch_max_bytes", int, 65536, "Bytes per batch sent to the cloud.", min=1024, max=1048576),
    Key("sync", "window", int, 4, "Batches in flight before waiting for an ack.", min=1, max=64),
    Key("sync", "telemetry_interval_s", float, 30.0, "Seconds between telemetry messages.", min=1),
    # --- web ---
    Key("web", "enabled", bool, True, "Serve the kiosk page, the technician UI and the local JSON API."),
    Key(
        "web",
        "host",
        str,
        "127.0.0.1",
        "Address of the plain-HTTP listener (kiosk browser, `cabinet status`); must be loopback "
        "unless web.tech_tls is false.",
    ),
    Key("web", "port", int, 8080, "Port of the plain-HTTP listener.", min=1, max=65535),
    Key(
        "web",
        "tech_tls",
        bool,
        True,
        "Serve the technician UI to the venue network over HTTPS (web.tech_host:web.tech_port) with "
        "the cabinet's own certificate; false: plain HTTP on web.host (not recommended).",
    ),
    Key("web", "tech_host", str, "0.0.0.0", "Address of the HTTPS listener for technicians."),
    Key("web", "tech_port", int, 8443, "Port of the HTTPS listener for technicians.", min=1, max=65535),
    Key(
        "web",
        "tls_cert_file",
        str,
        "",
        "Certificate of the HTTPS listener; empty: sync.cert_file (the cabinet's own, from provisioning).",
    ),
    Key(
        "web",
        "tls_key_file",
        str,
        "",
        "Key of the HTTPS listener; empty: sync.key_file.",
        secret=True,
    ),
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
    t: Any = key.type  # a class; Any: isinstance() below must not narrow value to object
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
    if key.min is not None and isinstance(value, int | float) and value < key.min:
        raise ConfigError(f"{where}: {key.path} = {value!r} is below the minimum {key.min:g}")
    if key.max is not None and isinstance(value, int | float) and value > key.max:
        raise ConfigError(f"{where}: {key.path} = {value!r} is above the maximum {key.max:g}")
    if key.choices is not None and value not in key.choices:
        raise ConfigError(f"{where}: {key.path} = {value!r} is not one of {', '.join(key.choices)}")
    if key.rule is not None:
        why = key.rule(value)
        if why:
            raise ConfigError(f"{where}: {key.path} = {value!r} {why}")
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
    try:  # the one rule of the wire, the cloud's API and the certificates
        validate_cabinet_id(values["cabinet"]["id"])
    except InvalidTopic as e:
        raise ConfigError(f"{source}: cabinet.id: {e}") from None
    n = values["cabinet"]["slots"]
    for pins in ("lock_pins", "seat_pins"):
        got = values["locks"][pins]
        if got and len(got) != n:
            raise ConfigError(f"{source}: locks.{pins} lists {len(got)} pins but cabinet.slots is {n}")
    web = values["web"]
    if web["enabled"] and web["tech_tls"]:
        if not is_loopback(web["host"]):
            raise ConfigError(
                f"{source}: web.host = {web['host']!r} is not a loopback address: plain HTTP is served "
                "only to the cabinet itself (technicians use web.tech_host over HTTPS; "
                "web.tech_tls = false to serve plain HTTP on the network)"
            )
        if web["tech_port"] == web["port"]:
            raise ConfigError(
                f"{source}: web.tech_port = {web['tech_port']} is also web.port: the HTTPS and the "
                "plain-HTTP listener need different ports"
            )
    return Config(values, source)


def tech_tls_files(c: Config) -> tuple[str, str] | None:
    """(certificate, key) of the technician HTTPS listener, or None when it does not run.

    It runs when the web UI is on, ``web.tech_tls`` is true and a certificate is configured
    (``web.tls_cert_file``, else the cabinet's own ``sync.cert_file``). Without one the
    technician UI is served on loopback only: never plain HTTP on the network.
    """
    if not (c["web.enabled"] and c["web.tech_tls"]):
        return None
    cert = c["web.tls_cert_file"] or c["sync.cert_file"]
    key = c["web.tls_key_file"] or c["sync.key_file"]
    return (cert, key) if cert and key else None


def pin_factory_problem(name: str) -> str | None:
    """Why the gpiozero pin factory ``name`` cannot be loaded here, or None (imports its module,
    as ``cabinet run`` does, without opening any device)."""
    if name == "mock":
        return None
    found = entry_points(group="gpiozero_pin_factories", name=name)
    if not found:
        return "names no gpiozero pin factory installed on this machine"
    try:
        next(iter(found)).load()
    except ImportError as e:
        return f"cannot be loaded on this machine: {e}"
    return None


def _file_problem(path: str) -> str | None:
    p = Path(path)
    if not p.is_file():
        return "does not exist or is not a file"
    if not os.access(p, os.R_OK):
        return "is not readable by this user"
    return None


def check_environment(c: Config) -> None:
    """The checks of ``c`` against this machine that ``cabinet run`` would otherwise fail at
    start-up: files that must exist and load, the pin factory, the data directory.

    ``cabinet config check`` and ``cabinet run`` both call it, so the check refuses exactly
    what the run would refuse (exit 78, one line).
    """
    where = c.source

    def fail(path: str, why: str) -> None:
        raise ConfigError(f"{where}: {path} = {c[path]!r} {why}")

    why = pin_factory_problem(c["locks.pin_factory"])
    if why:
        fail("locks.pin_factory", why)
    d = c.data_dir
    existing = next((p for p in (d, *d.parents) if p.exists()), None)
    if d.exists() and not d.is_dir():
        fail("cabinet.data_dir", "is not a directory")
    if existing is None or not os.access(existing, os.W_OK | os.X_OK):
        fail("cabinet.data_dir", f"cannot be written by this user ({existing})")
    if c["health.model_path"] and (why := _file_problem(c["health.model_path"])):
        fail("health.model_path", why)
    if c["sync.enabled"] and c["sync.tls"]:
        for path in ("sync.ca_file", "sync.cert_file", "sync.key_file"):
            if c[path] and (why := _file_problem(c[path])):
                fail(path, why)
        if bool(c["sync.cert_file"]) != bool(c["sync.key_file"]):
            fail("sync.cert_file", "needs sync.key_file as well (both or neither)")
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
        try:
            if c["sync.ca_file"]:
                ctx.load_verify_locations(c["sync.ca_file"])
        except (ssl.SSLError, OSError) as e:
            fail("sync.ca_file", f"is not a usable CA certificate: {e}")
        try:
            if c["sync.cert_file"]:
                ctx.load_cert_chain(c["sync.cert_file"], c["sync.key_file"])
        except (ssl.SSLError, OSError) as e:
            fail("sync.cert_file", f"and sync.key_file are not a usable certificate and key: {e}")
    files = tech_tls_files(c)
    if files is not None:
        cert_key = "web.tls_cert_file" if c["web.tls_cert_file"] else "sync.cert_file"
        key_key = "web.tls_key_file" if c["web.tls_key_file"] else "sync.key_file"
        for path in (cert_key, key_key):
            if why := _file_problem(c[path]):
                fail(path, why)
        try:
            tech_tls_context(c)
        except (ssl.SSLError, OSError) as e:
            fail(cert_key, f"and {key_key} do not load as the HTTPS listener's certificate and key: {e}")


def tech_tls_context(c: Config) -> ssl.SSLContext | None:
    """The server-side TLS context of the technician HTTPS listener (None when it does not run)."""
    files = tech_tls_files(c)
    if files is None:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(*files)
    return ctx


def load_checked(path: str | Path) -> Config:
    """:func:`load` plus :func:`check_environment`: what ``cabinet run`` and ``config check`` use."""
    c = load(path)
    check_environment(c)
    return c


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
