"""Builds the parts that run beside the bus poller and the controller, each from its config section.

Called by ``Cabinet.start()`` once the ledger and the controller exist: the sync agent (with
its trust store and command handler), the offline pass desk, and later the web UI and health.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from cabinet.commands import CommandHandler
from cabinet.conditions import ConditionWatch
from cabinet.config import ConfigError, check_value
from cabinet.health import Health
from cabinet.model_update import ModelStore, ModelUpdater
from cabinet.passes import PassDesk
from cabinet.sync_agent import SyncAgent, SyncSettings
from cabinet.trust import Trust
from sync.messages import SlotSample
from sync.transport import MqttOptions, MqttTransport, TlsOptions

if TYPE_CHECKING:
    from cabinet.service import Cabinet

log = logging.getLogger(__name__)


def mqtt_options(c: Any) -> MqttOptions:
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


def samples_of(cab: Cabinet) -> list[SlotSample]:
    """The latest observation of every slot with a battery, in the wire's integer units."""
    out = []
    for ob in cab.controller.observed.values() if cab.controller else ():
        if not ob.has_battery:
            continue
        out.append(
            SlotSample(
                slot=ob.slot,
                at=cab.last_scan_wall,
                battery=ob.sn,
                soc=max(0, min(100, ob.soc)),
                voltage_mv=max(0, min(65535, round(ob.voltage_v * 1000))),
                current_ma=max(-32768, min(32767, round(ob.current_a * 1000))),
                temp_dc=max(-550, min(1500, round(ob.temp_c * 10))),
                faults=ob.faults,
            )
        )
    return out


def build_extras(cab: Cabinet) -> list[Any]:
    """The optional parts in start order; the cabinet keeps references it needs (trust, passes, sync)."""
    c = cab.config
    parts: list[Any] = []
    cab.trust = Trust(c["cabinet.id"], c["sync.cloud_keys"], c.data_dir, c["rent.pass_clock_skew_s"])
    cab.trust.load_saved()
    if c["web.enabled"]:  # before the early return: the UI must show a broken ledger loudly
        from cabinet.web import WebUI

        cab.web = WebUI(cab)
        parts.append(cab.web)
    if cab.controller is None:
        return parts
    cab.controller.deny_list = lambda: cab.trust.denied
    cab.passes = PassDesk(
        cab.controller, cab.trust.verifier, lambda: cab.trust.revoked, c["rent.max_offline_rentals_per_pass"]
    )
    if c["kiosk.code_reader_port"]:
        from cabinet.scanner import Scanner

        def publish(kind: str, data: dict[str, Any]) -> None:
            if cab.web is not None:
                cab.web.hub.publish(kind, data)

        parts.append(
            Scanner(c["kiosk.code_reader_port"], c["kiosk.code_reader_baudrate"], cab.passes, publish)
        )
    if cab.trust.config is not None:
        apply_config_body(cab, cab.trust.config)
    models = ModelStore(c.data_dir / "models")
    model_path = c["health.model_path"] or models.current() or None
    cab.health = Health(
        cab.ledger,
        cab.telemetry,
        str(model_path) if model_path else None,
        risk_quarantine=c["health.risk_quarantine"],
        interval_s=c["health.interval_s"],
    )
    cab.model_updater = ModelUpdater(models, cab.health)
    parts.append(cab.health)
    parts.append(ConditionWatch(cab))  # board down/up, empty/full, certificate expiry -> ledger
    if c["sync.enabled"]:
        commands = CommandHandler(cab.ledger, cab.controller, cab.trust, hooks=command_hooks(cab))
        cab.sync = SyncAgent(
            c["cabinet.id"],
            cab.ledger,
            MqttTransport(mqtt_options(c)),
            commands,
            cab.trust,
            SyncSettings(
                batch_max_events=c["sync.batch_max_events"],
                batch_max_bytes=c["sync.batch_max_bytes"],
                window=c["sync.window"],
                telemetry_interval_s=c["sync.telemetry_interval_s"],
            ),
            on_config=lambda cfg: apply_config_body(cab, cfg),
            status=cab.status_summary,
            samples=lambda: samples_of(cab),
            on_model_chunk=cab.model_updater.on_chunk,
        )
        cab.controller.listeners.append(lambda *_: cab.sync.wake())
        parts.append(cab.sync)
    return parts


def apply_config_body(cab: Cabinet, config: Any) -> None:
    """Settings the cloud controls take effect at once (deny list and keys are read through trust)."""
    body = config.body
    if body.rentable_min_soc is not None and cab.controller is not None:
        cab.controller.settings = replace(cab.controller.settings, min_soc=body.rentable_min_soc)
    if body.power_budget_w is not None:
        cab.power_budget_w = float(body.power_budget_w)
    if body.tariff is not None:
        cab.tariff = body.tariff


#: Settings a ``set_config`` command may change at run time (others need a config file change).
RUNTIME_SETTINGS = {"rent.min_soc": ("min_soc", int), "rent.eject_timeout_s": ("eject_timeout_s", float)}


def command_hooks(cab: Cabinet) -> dict[str, Any]:
    """Handlers for the commands that act on the process rather than on slots."""

    async def restart(cmd: Any) -> tuple[bool, str]:
        cab.request_exit(75, f"restart asked by the cloud: {cmd.args.get('reason', '')}")
        return True, "restarting"

    async def reboot(cmd: Any) -> tuple[bool, str]:
        proc = await asyncio.create_subprocess_exec(
            "systemctl", "reboot", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
        )
        out, _ = await proc.communicate()
        return (
            proc.returncode == 0,
            f"systemctl reboot: exit {proc.returncode} {out.decode(errors='replace')[:200]}",
        )

    async def set_config(cmd: Any) -> tuple[bool, str]:
        settings = dict(cmd.args["settings"])
        unknown = sorted(set(settings) - set(RUNTIME_SETTINGS))
        if unknown:
            return (
                False,
                f"not settable at run time: {', '.join(unknown)} (settable: {', '.join(RUNTIME_SETTINGS)})",
            )
        changes = {}
        for key, value in settings.items():
            field_name, _ = RUNTIME_SETTINGS[key]
            try:
                changes[field_name] = check_value(key, value, f"set_config {cmd.cmd_id}")
            except ConfigError as e:
                return False, str(e)
        cab.controller.settings = replace(cab.controller.settings, **changes)
        return True, f"applied {', '.join(f'{k}={v}' for k, v in settings.items())}"

    async def model_update(cmd: Any) -> tuple[bool, str]:
        return await cab.model_updater.apply(cmd)

    return {"restart": restart, "reboot": reboot, "set_config": set_config, "model_update": model_update}
