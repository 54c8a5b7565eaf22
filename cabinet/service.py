"""The composition root: builds every part of the cabinet from its config, starts and stops them.

Parts (each with start/stop): ledger, battery bus + poller, lock bank, controller, charging,
health (fault model), sync agent, web UI, backups, watchdog. Nothing reaches into a global;
each part is handed what it needs here.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import time
from dataclasses import dataclass, field, replace
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from cabinet import charging
from cabinet import config as cfg
from cabinet.assemble import Deps, Part, Parts, build_parts
from cabinet.conditions import ConditionWatch
from cabinet.controller import Controller, RentSettings
from cabinet.health import Health
from cabinet.ledger import AsyncLedger, Backups, LedgerCorrupt, LedgerError, LedgerUnwritable
from cabinet.model_update import ModelUpdater
from cabinet.observations import Observation
from cabinet.passes import PassDesk
from cabinet.sync_agent import SyncAgent
from cabinet.tasks import cancel_and_wait
from cabinet.telemetry import HardwareClock, TelemetryStore
from cabinet.trust import Trust
from cabinet.watchdog import Watchdog, notify
from sync.config import Config as SignedConfig

log = logging.getLogger("cabinet")

#: Exit status for problems only a person can fix (bad config): systemd does not restart on it.
EX_CONFIG = 78


def bus_boards(slots: int, per_board: int) -> list[tuple[int, int]]:
    """Boards (unit id, slot count) for ``slots`` slots, ``per_board`` each, unit ids from 1."""
    boards = []
    unit, left = 1, slots
    while left > 0:
        boards.append((unit, min(per_board, left)))
        unit, left = unit + 1, left - per_board
    return boards


def bus_port(url: str) -> str:
    """The driver's port string for a ``serial://DEV`` or ``tcp://HOST:PORT`` bus url
    (checked by the config layer's rule for ``bus.url``)."""
    cfg.check_value("bus.url", url, "bus")
    if url.startswith("serial://"):
        return url.removeprefix("serial://")
    return "socket://" + url.removeprefix("tcp://")


def pin_factory(name: str, sim_address: str = "") -> Any:
    """The gpiozero pin factory called ``name`` (as GPIOZERO_PIN_FACTORY would choose it);
    ``cabinetsim`` is given the simulator's GPIO link address (``locks.sim_address``)."""
    if name == "mock":
        from gpiozero.pins.mock import MockFactory

        return MockFactory()
    why = cfg.pin_factory_problem(name)
    if why:
        raise cfg.ConfigError(f"locks.pin_factory = {name!r} {why}")
    factory = next(iter(entry_points(group="gpiozero_pin_factories", name=name))).load()
    return factory(sim_address) if name == "cabinetsim" and sim_address else factory()


def to_observation(r: Any) -> Observation:
    """A driver SlotReading as the controller's Observation."""
    if not r.known:
        return Observation(slot=r.slot, known=False)
    return Observation(
        slot=r.slot,
        known=True,
        present=bool(r.present),
        seated=bool(r.seated),
        sn=r.sn or "",
        soc=int(r.soc or 0),
        voltage_v=float(r.voltage_v or 0),
        current_a=float(r.current_a or 0),
        temp_c=float(r.temp_c or 0),
        cycles=int(r.cycles or 0),
        faults=int(r.slot_faults or 0),
        charging=bool(r.charging),
    )


@dataclass
class Cabinet:
    """The composition root: every part of one running cabinet, started in one written-down order.

    Start order (:meth:`start`; :meth:`stop` goes backwards):

    1. ledger (``data_dir/ledger.db``; a damaged one is kept, and the cabinet refuses to rent)
    2. battery bus (Modbus RTU), then the pin factory and the lock bank (GPIO)
    3. telemetry store; controller, its recovery of rentals a restart interrupted; backups
    4. bus poller (scan -> controller, telemetry, charging)
    5. the parts of :func:`cabinet.assemble.build_parts`, in ``Parts.in_start_order()``:
       web UI, code reader, health (fault model), conditions, sync agent
    6. watchdog (READY once all of the above runs)

    ``pin_factory`` may be given as an object (gpiozero's ``pin_factory=``); it is then the
    caller's to close. Otherwise it is made from ``locks.pin_factory`` and closed by stop().
    """

    config: cfg.Config
    pin_factory: Any = None
    ledger: AsyncLedger | None = None
    ledger_problem: str | None = None
    bus: Any = None  # drivers.battery_bus.BatteryBus (imported at start: pymodbus)
    locks: Any = None  # drivers.locks.LockBank (imported at start: gpiozero)
    controller: Controller | None = None
    telemetry: TelemetryStore | None = None
    backups: Backups | None = None
    watchdog: Watchdog | None = None
    parts: Parts | None = None
    tariff: Any = None  # sync.config tariff from the signed config; None: none received
    power_budget_w: float | None = None  # from signed config; None: the config file's value
    last_scan_wall: float = 0.0
    started_at: float = field(default_factory=time.monotonic)
    last_scan_at: float = 0.0
    charging_now: set[int] = field(default_factory=set)
    hw_clock: HardwareClock = field(default_factory=HardwareClock)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    exit_code: int = 0
    _closed: bool = False  # stop() closed the devices and the ledger (a second stop() does nothing)
    _owns_pin_factory: bool = False
    _started: list[Part] = field(default_factory=list)  # parts started, in order
    _unwritable_logged_at: float = -1e9
    scan_errors: int = 0  # scans that failed with an unexpected error (logged, scanning went on)
    _scan_error_key: str = ""
    _scan_error_logged_at: float = -1e9
    exit_requested: asyncio.Event = field(default_factory=asyncio.Event)

    # the parts beside the poller (None before start, or when not configured)
    @property
    def trust(self) -> Trust | None:
        return self.parts.trust if self.parts else None

    @property
    def web(self) -> Any:
        return self.parts.web if self.parts else None

    @property
    def passes(self) -> PassDesk | None:
        return self.parts.passes if self.parts else None

    @property
    def health(self) -> Health | None:
        return self.parts.health if self.parts else None

    @property
    def model_updater(self) -> ModelUpdater | None:
        return self.parts.model_updater if self.parts else None

    @property
    def sync(self) -> SyncAgent | None:
        return self.parts.sync if self.parts else None

    @property
    def conditions(self) -> ConditionWatch | None:
        return self.parts.conditions if self.parts else None

    def task(self, name: str) -> asyncio.Task[None] | None:
        """The cabinet's own loop started under ``name`` ("bus-poller", "backups"), done or not;
        None if there is none (read-only: for diagnostics and tests)."""
        return next((t for t in self._tasks if t.get_name() == name), None)

    def apply_signed_config(self, config: SignedConfig) -> None:
        """Settings the cloud controls take effect at once (deny list and keys are read through trust)."""
        body = config.body
        if body.rentable_min_soc is not None and self.controller is not None:
            self.controller.settings = replace(self.controller.settings, min_soc=body.rentable_min_soc)
        if body.power_budget_w is not None:
            self.power_budget_w = float(body.power_budget_w)
        if body.tariff is not None:
            self.tariff = body.tariff

    def request_exit(self, code: int, why: str) -> None:
        """Ask the process to stop cleanly with ``code`` (systemd restarts it on a non-zero code)."""
        log.warning("exiting with %d: %s", code, why)
        self.exit_code = code
        self.exit_requested.set()

    async def start(self) -> None:
        """Open and start every part; if one fails, close what was opened (ledger lock, bus,
        GPIO link, web listeners) before the error goes on, so a retry starts clean."""
        try:
            await self._start()
        except BaseException:
            with contextlib.suppress(Exception):
                await self.stop()
            raise

    async def _start(self) -> None:
        self._closed = False
        c = self.config
        c.data_dir.mkdir(parents=True, exist_ok=True)
        try:
            self.ledger = await AsyncLedger.open(self.ledger_path, c["cabinet.id"])
        except (LedgerCorrupt, LedgerError) as e:
            # Never replace a damaged ledger: keep running (UI, diagnostics) but refuse to rent.
            self.ledger_problem = str(e)
            log.critical("LEDGER UNUSABLE, refusing to rent: %s (see docs/ledger.md, 'Restore')", e)
            notify(f"STATUS=ledger unusable: {e}")
        from drivers.battery_bus import BatteryBus
        from drivers.locks import LockBank

        n = c["cabinet.slots"]
        self.bus = BatteryBus(
            bus_port(c["bus.url"]),
            bus_boards(n, c["bus.slots_per_board"]),
            baudrate=c["bus.baudrate"],
            timeout_s=c["bus.timeout_s"],
            retries=c["bus.retries"],
        )
        await self.bus.start()
        # a pin factory may block while it connects (the simulator's link): keep it off the loop
        if self.pin_factory is None or self._owns_pin_factory:
            self.pin_factory = await asyncio.to_thread(
                pin_factory, c["locks.pin_factory"], c["locks.sim_address"]
            )
            self._owns_pin_factory = True
        from gpiozero.exc import PinInvalidPin

        try:
            self.locks = LockBank(
                c["locks.lock_pins"] or [f"LOCK{i}" for i in range(1, n + 1)],
                c["locks.seat_pins"] or [f"SEAT{i}" for i in range(1, n + 1)],
                pin_factory=self.pin_factory,
                pulse_s=c["locks.pulse_s"],
            )
        except PinInvalidPin as e:  # a pin name only the factory itself can judge
            raise cfg.ConfigError(
                f"{c.source}: locks.lock_pins / locks.seat_pins: {e} (pin factory {c['locks.pin_factory']})"
            ) from e
        self.locks.start()
        self.telemetry = TelemetryStore(c.data_dir / "telemetry.db")
        if self.ledger is not None:
            self.controller = Controller(
                self.ledger,
                self.locks,
                RentSettings(
                    min_soc=c["rent.min_soc"],
                    eject_timeout_s=c["rent.eject_timeout_s"],
                    unreadable_wait_s=c["rent.unreadable_wait_s"],
                    jam_timeout_s=c["locks.jam_timeout_s"],
                ),
            )
            first = [to_observation(r) for r in await self.bus.scan()]
            await self.controller.recover(first)
            self.backups = Backups(self.ledger_path, c.data_dir / "backups", keep=c["cabinet.backups_kept"])
            self._tasks.append(asyncio.create_task(self._backup_loop(), name="backups"))
        self._tasks.append(asyncio.create_task(self._poll_loop(), name="bus-poller"))
        self.parts = build_parts(
            Deps(
                config=c,
                ledger=self.ledger,
                controller=self.controller,
                telemetry=self.telemetry,
                bus=self.bus,
                request_exit=self.request_exit,
                on_config=self.apply_signed_config,
                status=self.status_summary,
                last_scan_wall=lambda: self.last_scan_wall,
                web_host=self,
            )
        )
        for part in self.parts.in_start_order():
            self._started.append(part)  # stopped by stop() even if its start fails halfway
            await part.start()
        self.watchdog = Watchdog([self._health_problem])
        await self.watchdog.start()
        log.info("cabinet %s running: %d slots, bus %s", c["cabinet.id"], n, c["bus.url"])

    def _health_problem(self) -> str | None:
        interval = self.config["bus.poll_interval_s"]
        if self.last_scan_at and time.monotonic() - self.last_scan_at > max(30.0, 10 * interval):
            return f"no bus scan for {time.monotonic() - self.last_scan_at:.0f} s"
        for t in self._tasks:
            if t.done():
                return f"task {t.get_name()} stopped"
        return None

    async def scan_once(self) -> list[Observation]:
        """One bus scan fed to the controller, telemetry and charging."""
        obs = [to_observation(r) for r in await self.bus.scan()]
        self.last_scan_at = time.monotonic()
        self.last_scan_wall = time.time()
        if self.controller is not None:
            await self.controller.on_scan(obs)
        t_hw = self.hw_clock.update((h.unit_id, h.uptime_s if h.online else None) for h in self.bus.health())
        if self.telemetry is not None:
            self.telemetry.add(obs, t_hw=t_hw, charge_enabled=self.charging_now)
        await self._apply_charging(obs)
        return obs

    async def blocked_slots(self) -> set[int]:
        """Slots that must not charge: quarantined or faulty slots, quarantined batteries."""
        if self.ledger is None:
            return {o.slot for o in self.controller.observed.values()} if self.controller else set()
        blocked = set()
        quarantined = {b.sn for b in await self.ledger.batteries() if b.quarantined}
        slots = {s.slot: s for s in await self.ledger.slots()}
        for s in slots.values():
            if s.quarantined or s.fault_kind or (s.sn and s.sn in quarantined):
                blocked.add(s.slot)
        # a pack the ledger does not hold in that slot (foreign, not yet confirmed) is never charged
        for ob in self.controller.observed.values() if self.controller else ():
            held = slots.get(ob.slot)
            if ob.has_battery and (held is None or held.sn != ob.sn):
                blocked.add(ob.slot)
        return blocked

    async def _apply_charging(self, obs: list[Observation]) -> None:
        c = self.config
        policy = charging.ChargePolicy(
            power_budget_w=self.power_budget_w or c["charging.power_budget_w"],
            watts_per_slot=c["charging.watts_per_slot"],
            max_temp_c=c["charging.max_temp_c"],
            min_soc=c["rent.min_soc"],
        )
        want = charging.plan(obs, await self.blocked_slots(), policy)
        known = [o for o in obs if o.known]
        changes = {o.slot: o.slot in want for o in known if (o.slot in want) != o.charging}
        if changes:
            try:
                await self.bus.set_charge_many(changes)
            except Exception as e:  # a board that does not answer keeps its old state
                log.warning("charge enable not applied: %s", e)
        self.charging_now = want

    async def _poll_loop(self) -> None:
        interval = self.config["bus.poll_interval_s"]
        while True:
            t0 = time.monotonic()
            try:
                await self.scan_once()
            except LedgerCorrupt as e:
                self.ledger_problem = str(e)
                if self.controller:
                    self.controller.refusing = "ledger_unusable"
                log.critical("ledger failed while running: %s", e)
            except LedgerUnwritable as e:
                # full or read-only card: nothing was written; the next scans see the change again
                if time.monotonic() - self._unwritable_logged_at > 60:
                    self._unwritable_logged_at = time.monotonic()
                    log.error("the card refuses writes, changes wait until it takes them again: %s", e)
            except asyncio.CancelledError:
                raise
            except Exception as e:
                # Any other failure is a bug: log it (once a minute for the same error, with the
                # traceback) and keep scanning. A scan that keeps failing stops advancing
                # last_scan_at, so the watchdog reports it and systemd restarts the cabinet.
                key = f"{type(e).__name__}: {e}"
                self.scan_errors += 1
                if key != self._scan_error_key or time.monotonic() - self._scan_error_logged_at > 60:
                    self._scan_error_key = key
                    self._scan_error_logged_at = time.monotonic()
                    log.exception("bus scan failed (%d so far), scanning goes on: %s", self.scan_errors, key)
            await asyncio.sleep(max(0.0, interval - (time.monotonic() - t0)))

    async def _backup_loop(self) -> None:
        interval = self.config["cabinet.backup_interval_s"]
        backups = self.backups
        assert backups is not None  # started only once the backups exist
        while True:
            await asyncio.sleep(interval)
            try:
                path = await asyncio.to_thread(backups.run_once)
                log.info("ledger backed up to %s", path)
            except Exception:
                log.exception("ledger backup failed")

    @property
    def ledger_path(self) -> Path:
        return self.config.data_dir / "ledger.db"

    def status_summary(self) -> dict[str, Any]:
        """Versions and counts for the retained state message and the UI."""
        from importlib.metadata import version

        obs = list(self.controller.observed.values()) if self.controller else []
        return {
            "versions": {
                "software": version("charge-cabinet"),
                "protocol": "1",
                "model": self.health.model_version if self.health else "none",
            },
            "counts": {
                "slots": self.config["cabinet.slots"],
                "batteries": sum(1 for o in obs if o.has_battery),
                "charging": len(self.charging_now),
                "unknown_slots": sum(1 for o in obs if not o.known),
            },
        }

    async def stop(self) -> None:
        """Stop every part in reverse order; safe to call again, and after a failed start.

        Each part is closed even if an earlier one fails to stop (logged), so the ledger's
        lock and the devices are always released."""
        if self.watchdog:
            await self.watchdog.stop()
            self.watchdog = None
        for part in reversed(self._started):
            try:
                await part.stop()
            except Exception:
                log.exception("stopping %s failed", type(part).__name__)
        self._started = []
        await cancel_and_wait(self._tasks)
        closers: list[tuple[str, Any]] = [
            ("controller", self.controller.stop if self.controller else None),
            ("bus", self.bus.close if self.bus else None),
            ("locks", self.locks.close if self.locks else None),
            # the simulator's GPIO link, lgpio's chip handle
            ("pin factory", self.pin_factory.close if self._owns_pin_factory and self.pin_factory else None),
            ("telemetry", self.telemetry.close if self.telemetry else None),
            ("ledger", self.ledger.close if self.ledger else None),
        ]
        if self._closed:
            return
        self._closed = True
        for name, close in closers:
            if close is None:
                continue
            try:
                result = close()
                if asyncio.iscoroutine(result):
                    await result
            except Exception:
                log.exception("stopping the %s failed", name)


async def run(config: cfg.Config) -> int:
    """Run a cabinet until SIGTERM/SIGINT (exit 0) or until it asks to be restarted."""
    cab = Cabinet(config)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, cab.exit_requested.set)
    await cab.start()  # closes what it opened if it fails
    try:
        await cab.exit_requested.wait()
    finally:
        log.info("stopping")
        await cab.stop()
    return cab.exit_code


def run_from_args(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        # the same checks as `cabinet config check`: a bad value stops here, before anything opens
        config = cfg.load_checked(Path(args.config))
        return asyncio.run(run(config))
    except cfg.ConfigError as e:  # also one found while starting (e.g. a pin the factory refuses)
        log.error("config error: %s", e)
        return EX_CONFIG
