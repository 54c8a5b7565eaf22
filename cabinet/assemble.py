"""Builds the parts that run beside the bus poller and the controller, each from its config section.

Called by the composition root (``cabinet.service.Cabinet``) once the ledger, the bus and the
controller exist. Every builder gets what its part needs (:class:`Deps`), never the whole
cabinet, and this module imports nothing from ``cabinet.service``. :func:`build_parts` returns
the parts (:class:`Parts`); the root starts them in :meth:`Parts.in_start_order` and stops
them in reverse.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from cabinet.commands import CommandHandler
from cabinet.conditions import ConditionWatch
from cabinet.config import Config
from cabinet.controller import Controller
from cabinet.health import Health
from cabinet.model_update import ModelStore, ModelUpdater
from cabinet.passes import PassDesk
from cabinet.sync_agent import SyncAgent, SyncSettings
from cabinet.telemetry import TelemetryStore
from cabinet.trust import Trust
from sync.config import Config as SignedConfig
from sync.messages import SlotSample
from sync.transport import MqttOptions, MqttTransport, TlsOptions

log = logging.getLogger(__name__)


class Part(Protocol):
    """What the composition root starts and stops."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


@dataclass
class Deps:
    """What the parts built here may use."""

    config: Config
    ledger: Any  # AsyncLedger, or None when the ledger is unusable
    controller: Controller | None
    telemetry: TelemetryStore
    bus: Any  # drivers.battery_bus.BatteryBus
    request_exit: Callable[[int, str], None]
    on_config: Callable[[SignedConfig], None]  # the root applies a signed config's settings
    status: Callable[[], dict[str, Any]]  # versions and counts for the retained state
    last_scan_wall: Callable[[], float]
    web_host: Any = None  # what the web UI is built on (cabinet.web narrows it to its own interface)


@dataclass
class Parts:
    """The parts beside the poller, as built for this config (None: not configured)."""

    trust: Trust
    web: Any = None  # cabinet.web.WebUI (imported only when enabled: aiohttp and jinja)
    passes: PassDesk | None = None
    scanner: Any = None  # cabinet.scanner.Scanner (imported only when a code reader is configured)
    health: Health | None = None
    model_updater: ModelUpdater | None = None
    conditions: ConditionWatch | None = None
    sync: SyncAgent | None = None

    def in_start_order(self) -> list[Part]:
        """The web UI first (it must show a broken ledger loudly), the sync agent last (it
        announces the cabinet online once everything it reports on runs)."""
        order = (self.web, self.scanner, self.health, self.conditions, self.sync)
        return [p for p in order if p is not None]


def mqtt_options(c: Config) -> MqttOptions:
    """Transport options from the [sync] section."""
    tls = None
    if c["sync.tls"]:
        tls = TlsOptions(
            ca_file=c["sync.ca_file"] or None,
            cert_file=c["sync.cert_file"] or None,
            key_file=c["sync.key_file"] or None,
        )
    return MqttOptions(
        host=c["sync.broker_host"], port=c["sync.broker_port"], client_id=c["cabinet.id"], tls=tls
    )


def samples_of(controller: Controller | None, at: float) -> list[SlotSample]:
    """The latest observation of every slot with a battery, in the wire's integer units."""
    out = []
    for ob in controller.observed.values() if controller else ():
        if not ob.has_battery:
            continue
        out.append(
            SlotSample(
                slot=ob.slot,
                at=at,
                battery=ob.sn,
                soc=max(0, min(100, ob.soc)),
                voltage_mv=max(0, min(65535, round(ob.voltage_v * 1000))),
                current_ma=max(-32768, min(32767, round(ob.current_a * 1000))),
                temp_dc=max(-550, min(1500, round(ob.temp_c * 10))),
                faults=ob.faults,
            )
        )
    return out


def build_trust(c: Config) -> Trust:
    trust = Trust(c["cabinet.id"], c["sync.cloud_keys"], c.data_dir, c["rent.pass_clock_skew_s"])
    trust.load_saved()
    return trust


def build_web(c: Config, host: Any) -> Any:
    from cabinet.web import WebUI

    return WebUI(host)


def build_passes(c: Config, controller: Controller, trust: Trust) -> PassDesk:
    controller.deny_list = lambda: trust.denied
    return PassDesk(controller, trust.verifier, lambda: trust.revoked, c["rent.max_offline_rentals_per_pass"])


def build_scanner(c: Config, passes: PassDesk, web: Any) -> Any:
    from cabinet.scanner import Scanner

    def publish(kind: str, data: dict[str, Any]) -> None:
        if web is not None:
            web.hub.publish(kind, data)

    return Scanner(c["kiosk.code_reader_port"], c["kiosk.code_reader_baudrate"], passes, publish)


def build_health(c: Config, ledger: Any, telemetry: TelemetryStore) -> tuple[Health, ModelUpdater]:
    models = ModelStore(c.data_dir / "models")
    model_path = c["health.model_path"] or models.current() or None
    health = Health(
        ledger,
        telemetry,
        str(model_path) if model_path else None,
        risk_quarantine=c["health.risk_quarantine"],
        interval_s=c["health.interval_s"],
    )
    return health, ModelUpdater(models, health)


def build_sync(d: Deps, controller: Controller, trust: Trust, models: ModelUpdater) -> SyncAgent:
    c = d.config
    commands = CommandHandler(d.ledger, controller, trust, request_exit=d.request_exit, models=models)
    agent = SyncAgent(
        c["cabinet.id"],
        d.ledger,
        MqttTransport(mqtt_options(c)),
        commands,
        trust,
        SyncSettings(
            batch_max_events=c["sync.batch_max_events"],
            batch_max_bytes=c["sync.batch_max_bytes"],
            window=c["sync.window"],
            telemetry_interval_s=c["sync.telemetry_interval_s"],
        ),
        on_config=d.on_config,
        status=d.status,
        samples=lambda: samples_of(controller, d.last_scan_wall()),
        on_model_chunk=models.on_chunk,
    )
    controller.listeners.append(lambda *_: agent.wake())
    return agent


def build_parts(d: Deps) -> Parts:
    """Every part beside the poller, in dependency order; none is started here."""
    c = d.config
    parts = Parts(trust=build_trust(c))
    if c["web.enabled"]:  # even without a ledger: the UI must show a broken ledger loudly
        parts.web = build_web(c, d.web_host)
    if d.controller is None or d.ledger is None:
        return parts
    parts.passes = build_passes(c, d.controller, parts.trust)
    if c["kiosk.code_reader_port"]:
        parts.scanner = build_scanner(c, parts.passes, parts.web)
    if parts.trust.config is not None:
        d.on_config(parts.trust.config)
    parts.health, parts.model_updater = build_health(c, d.ledger, d.telemetry)
    if c["sync.enabled"]:
        parts.sync = build_sync(d, d.controller, parts.trust, parts.model_updater)
    sync = parts.sync
    parts.conditions = ConditionWatch(  # board down/up, empty/full, certificate expiry -> ledger
        c, d.ledger, d.bus, d.controller, wake=sync.wake if sync is not None else None
    )
    return parts
