"""What the web layer may read of the running cabinet and what it may do: :class:`CabinetPort`.

Every page, API answer and technician action of ``cabinet.web`` goes through this one typed
interface; none of them reaches into the cabinet's parts. :class:`CabinetAdapter` implements
it over the ``Cabinet`` that ``WebUI(cab)`` is given, and is the only code of the package that
touches the cabinet's ledger, controller, bus, locks and other parts. It reads each part when
asked, never a copy made at start: the web UI is built before the pass desk, the fault model
and the sync agent, and sees each of them once it exists.

Imports nothing of ``cabinet.web``.
"""

from __future__ import annotations

import ssl
from collections.abc import Awaitable, Callable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from cabinet import config as cfg
from cabinet.controller import Controller, RentOutcome, RentSettings
from cabinet.ledger import AsyncLedger, BatteryState, Ledger, RentalState, SlotState
from cabinet.observations import Observation
from cabinet.telemetry import Sample, TelemetryStore
from sync.events import EventType

if TYPE_CHECKING:
    from cabinet.passes import PassDesk
    from sync.config import Tariff

#: A listener of the controller's domain happenings (eject, rental_started, battery_returned ...).
Listener = Callable[[str, dict[str, Any]], Awaitable[None] | None]

MAX_AUDIT_DETAIL = 2000  # characters of a tech_action record's detail


@dataclass(frozen=True)
class WebSettings:
    """The configuration values the web layer uses (fixed while the cabinet runs)."""

    cabinet_id: str
    slots: int
    data_dir: Path
    host: str
    port: int
    tech_host: str
    tech_port: int
    tech_tls: bool  # serve technicians over HTTPS (web.tech_tls)
    session_idle_s: float
    session_max_s: float
    kiosk_language: str
    kiosk_idle_s: float
    app_url: str  # kiosk.app_url with the cabinet id filled in
    eject_timeout_s: float  # rent.eject_timeout_s, as the kiosk's countdown
    min_soc: int  # rent.min_soc of the config file (the controller's setting rules while it runs)
    sync_enabled: bool

    @classmethod
    def from_config(cls, c: cfg.Config) -> WebSettings:
        return cls(
            cabinet_id=c["cabinet.id"],
            slots=c["cabinet.slots"],
            data_dir=c.data_dir,
            host=c["web.host"],
            port=c["web.port"],
            tech_host=c["web.tech_host"],
            tech_port=c["web.tech_port"],
            tech_tls=bool(c["web.tech_tls"]),
            session_idle_s=c["web.session_idle_s"],
            session_max_s=c["web.session_max_s"],
            kiosk_language=c["kiosk.language"],
            kiosk_idle_s=c["kiosk.idle_s"],
            app_url=c["kiosk.app_url"].replace("{cabinet}", c["cabinet.id"]),
            eject_timeout_s=c["rent.eject_timeout_s"],
            min_soc=c["rent.min_soc"],
            sync_enabled=bool(c["sync.enabled"]),
        )


class Prediction(Protocol):
    """The fault model's latest prediction for a battery (``models.predictor.Prediction``)."""

    @property
    def risk(self) -> float: ...
    @property
    def flags(self) -> Sequence[str]: ...
    @property
    def top_features(self) -> Sequence[object]: ...  # dataclasses: shown field by field


@dataclass(frozen=True)
class SyncStatus:
    """The cloud link as the health panel shows it."""

    connected: bool
    backlog: int  # events not yet acknowledged by the cloud
    acked_seq: int
    last_ack_at: float | None  # wall time


class CabinetPort(Protocol):
    """Everything the web layer reads of the cabinet and every action it may take."""

    # ---- configuration ------------------------------------------------------------------

    @property
    def settings(self) -> WebSettings: ...

    def tech_tls_context(self) -> ssl.SSLContext | None:
        """The technicians' HTTPS context (None: no certificate, or ``web.tech_tls = false``)."""
        ...

    def redacted_config(self) -> dict[str, dict[str, Any]]:
        """The whole configuration with its secrets redacted (for the diagnostics bundle)."""
        ...

    # ---- the cabinet's state ----------------------------------------------------------------

    @property
    def ledger_problem(self) -> str | None:
        """Why the ledger is unusable (the cabinet then refuses to rent), or None."""
        ...

    @property
    def has_ledger(self) -> bool:
        """The ledger is open: its slots, batteries, rentals and events can be read."""
        ...

    @property
    def can_act(self) -> bool:
        """Technician actions on slots and batteries are possible (ledger and controller run)."""
        ...

    @property
    def renting(self) -> bool:
        """The cabinet hands out batteries now (ledger usable, controller not refusing)."""
        ...

    @property
    def ledger_path(self) -> Path: ...

    @property
    def started_at(self) -> float:
        """Monotonic time the cabinet process started."""
        ...

    @property
    def last_scan_at(self) -> float:
        """Monotonic time of the last bus scan (0: none yet)."""
        ...

    def rent_settings(self) -> RentSettings:
        """The rent rule's settings in force (the controller's, changed by signed config)."""
        ...

    def observed(self) -> dict[int, Observation]:
        """The latest bus reading of every slot read so far (a copy)."""
        ...

    def denied(self) -> frozenset[str]:
        """Serial numbers on the deny list."""
        ...

    def charging_slots(self) -> frozenset[int]:
        """Slots the cabinet lets charge now."""
        ...

    async def slot_states(self) -> list[SlotState]:
        """The ledger's slots ([] without a ledger)."""
        ...

    async def slot(self, n: int) -> SlotState | None: ...

    async def batteries(self) -> list[BatteryState]:
        """The ledger's batteries ([] without a ledger)."""
        ...

    async def battery(self, sn: str) -> BatteryState | None: ...

    async def open_rentals(self) -> list[RentalState]: ...

    async def recent_rentals(self, limit: int = 200) -> list[RentalState]:
        """The newest ``limit`` rentals, newest first."""
        ...

    def bus_stats(self) -> dict[str, Any] | None:
        """The battery bus's counters (None: the bus is not running)."""
        ...

    def is_seated(self, slot: int) -> bool | None:
        """The slot's seat switch (None: no lock bank)."""
        ...

    def sync_status(self) -> SyncStatus | None:
        """The cloud link (None: no sync agent)."""
        ...

    def tariff(self) -> Tariff | None:
        """The tariff of the cloud's signed config (None: none received yet)."""
        ...

    def status_summary(self) -> dict[str, Any]:
        """Versions and counts (as the cabinet reports them to the cloud)."""
        ...

    def prediction(self, sn: str) -> Prediction | None:
        """The fault model's latest prediction for battery ``sn``."""
        ...

    @property
    def model_version(self) -> str | None: ...

    @property
    def model_problem(self) -> str | None:
        """Why the fault model does not run, or None."""
        ...

    def telemetry(self, sn: str, limit: int) -> list[Sample]:
        """Battery ``sn``'s newest ``limit`` telemetry samples, oldest first."""
        ...

    # ---- actions --------------------------------------------------------------------------

    def add_listener(self, listener: Listener) -> None:
        """Hear the controller's domain happenings (nothing without a controller)."""
        ...

    def remove_listener(self, listener: Listener) -> None: ...

    async def submit_pass(self, text: str) -> RentOutcome | None:
        """A scanned pass: verified and, if good, a battery handed out (None: no pass desk)."""
        ...

    async def unlock(self, slot: int, reason: str, by: str) -> str:
        """Open a slot for technician ``by``; writes its own ``tech_action`` audit record first."""
        ...

    async def quarantine_slot(self, slot: int, reason: str, by: str) -> None: ...

    async def release_slot(self, slot: int, reason: str, by: str) -> None: ...

    async def battery_removed_for_repair(self, sn: str, reason: str) -> None:
        """Record battery ``sn`` as gone, taken away for repair."""
        ...

    async def audit(self, technician: str, action: str, detail: str) -> None:
        """Write a ``tech_action`` record (nothing without a ledger)."""
        ...

    async def security_event(self, kind: str, detail: str) -> None:
        """Write a ``security_event`` record (nothing without a ledger)."""
        ...


# ---- the adapter over the Cabinet ----------------------------------------------------------


class CabinetParts(Protocol):
    """What :class:`CabinetAdapter` reads of the Cabinet (``cabinet.service.Cabinet``)."""

    @property
    def config(self) -> cfg.Config: ...
    @property
    def ledger(self) -> AsyncLedger | None: ...
    @property
    def ledger_problem(self) -> str | None: ...
    @property
    def ledger_path(self) -> Path: ...
    @property
    def controller(self) -> Controller | None: ...
    @property
    def bus(self) -> Any: ...  # drivers.battery_bus.BatteryBus
    @property
    def locks(self) -> Any: ...  # drivers.locks.LockBank
    @property
    def telemetry(self) -> TelemetryStore | None: ...
    @property
    def passes(self) -> PassDesk | None: ...
    @property
    def sync(self) -> Any: ...  # cabinet.sync_agent.SyncAgent
    @property
    def tariff(self) -> Any: ...  # sync.config.Tariff
    @property
    def charging_now(self) -> AbstractSet[int]: ...
    @property
    def started_at(self) -> float: ...
    @property
    def last_scan_at(self) -> float: ...
    def status_summary(self) -> dict[str, Any]: ...


class NotReady(RuntimeError):
    """An action that needs the ledger and the controller was called without them."""


class CabinetAdapter:
    """:class:`CabinetPort` over a running Cabinet."""

    def __init__(self, cab: CabinetParts) -> None:
        self._cab = cab
        self._config = cab.config
        self.settings = WebSettings.from_config(cab.config)

    def _controller(self) -> Controller:
        c = self._cab.controller
        if c is None or self._cab.ledger is None:
            raise NotReady(f"the ledger is unusable: {self._cab.ledger_problem}")
        return c

    def _ledger(self) -> AsyncLedger:
        lg = self._cab.ledger
        if lg is None:
            raise NotReady(f"the ledger is unusable: {self._cab.ledger_problem}")
        return lg

    # ---- configuration ------------------------------------------------------------------

    def tech_tls_context(self) -> ssl.SSLContext | None:
        return cfg.tech_tls_context(self._config)

    def redacted_config(self) -> dict[str, dict[str, Any]]:
        return self._config.redacted()

    # ---- the cabinet's state ----------------------------------------------------------------

    @property
    def ledger_problem(self) -> str | None:
        return self._cab.ledger_problem

    @property
    def has_ledger(self) -> bool:
        return self._cab.ledger is not None

    @property
    def can_act(self) -> bool:
        return self._cab.controller is not None and self._cab.ledger is not None

    @property
    def renting(self) -> bool:
        c = self._cab.controller
        return self._cab.ledger_problem is None and c is not None and not c.refusing

    @property
    def ledger_path(self) -> Path:
        return Path(self._cab.ledger_path)

    @property
    def started_at(self) -> float:
        return self._cab.started_at

    @property
    def last_scan_at(self) -> float:
        return self._cab.last_scan_at

    def rent_settings(self) -> RentSettings:
        c = self._cab.controller
        return c.settings if c is not None else RentSettings(min_soc=self.settings.min_soc)

    def observed(self) -> dict[int, Observation]:
        c = self._cab.controller
        return dict(c.observed) if c is not None else {}

    def denied(self) -> frozenset[str]:
        c = self._cab.controller
        return frozenset(c.deny_list()) if c is not None else frozenset()

    def charging_slots(self) -> frozenset[int]:
        return frozenset(self._cab.charging_now)

    async def slot_states(self) -> list[SlotState]:
        lg = self._cab.ledger
        return await lg.slots() if lg is not None else []

    async def slot(self, n: int) -> SlotState | None:
        lg = self._cab.ledger
        return await lg.slot(n) if lg is not None else None

    async def batteries(self) -> list[BatteryState]:
        lg = self._cab.ledger
        return await lg.batteries() if lg is not None else []

    async def battery(self, sn: str) -> BatteryState | None:
        lg = self._cab.ledger
        return await lg.battery(sn) if lg is not None else None

    async def open_rentals(self) -> list[RentalState]:
        lg = self._cab.ledger
        return await lg.open_rentals() if lg is not None else []

    async def recent_rentals(self, limit: int = 200) -> list[RentalState]:
        lg = self._cab.ledger
        if lg is None:
            return []

        def newest(ledger: Ledger) -> list[RentalState]:
            rows = ledger.db.execute(
                "SELECT * FROM rentals ORDER BY COALESCE(ended_seq, started_seq, requested_seq) DESC LIMIT ?",
                (limit,),
            )
            cols = [c[0] for c in rows.description]
            return [RentalState.from_row(dict(zip(cols, r, strict=True))) for r in rows.fetchall()]

        return await lg.run(newest)

    def bus_stats(self) -> dict[str, Any] | None:
        bus = self._cab.bus
        if bus is None:
            return None
        stats: dict[str, Any] = bus.stats()
        return stats

    def is_seated(self, slot: int) -> bool | None:
        locks = self._cab.locks
        return None if locks is None else bool(locks.is_seated(slot))

    def sync_status(self) -> SyncStatus | None:
        sync = self._cab.sync
        if sync is None:
            return None
        return SyncStatus(
            connected=bool(sync.transport.connected),
            backlog=sync.backlog,
            acked_seq=sync.acked_seq,
            last_ack_at=sync.last_ack_at,
        )

    def tariff(self) -> Tariff | None:
        t: Tariff | None = self._cab.tariff
        return t

    def status_summary(self) -> dict[str, Any]:
        return self._cab.status_summary()

    def _health(self) -> Any:
        return getattr(self._cab, "health", None)  # cabinet.health.Health, or None (no fault model)

    def prediction(self, sn: str) -> Prediction | None:
        risks: Mapping[str, Prediction] = getattr(self._health(), "risks", None) or {}
        return risks.get(sn)

    @property
    def model_version(self) -> str | None:
        v: str | None = getattr(self._health(), "model_version", None)
        return v

    @property
    def model_problem(self) -> str | None:
        p: str | None = getattr(self._health(), "problem", None)
        return p

    def telemetry(self, sn: str, limit: int) -> list[Sample]:
        store = self._cab.telemetry
        return store.window(sn, limit=limit) if store is not None else []

    # ---- actions --------------------------------------------------------------------------

    def add_listener(self, listener: Listener) -> None:
        c = self._cab.controller
        if c is not None:
            c.listeners.append(listener)

    def remove_listener(self, listener: Listener) -> None:
        c = self._cab.controller
        if c is not None and listener in c.listeners:
            c.listeners.remove(listener)

    async def submit_pass(self, text: str) -> RentOutcome | None:
        passes = self._cab.passes
        return await passes.submit(text) if passes is not None else None

    async def unlock(self, slot: int, reason: str, by: str) -> str:
        return await self._controller().unlock(slot, reason, by)  # records tech_action itself

    async def quarantine_slot(self, slot: int, reason: str, by: str) -> None:
        await self._controller().quarantine_slot(slot, reason, by)

    async def release_slot(self, slot: int, reason: str, by: str) -> None:
        await self._controller().release_slot(slot, reason, by)

    async def battery_removed_for_repair(self, sn: str, reason: str) -> None:
        await self._ledger().record(EventType.BATTERY_GONE, sn=sn, reason=f"repair: {reason}"[:500])

    async def audit(self, technician: str, action: str, detail: str) -> None:
        lg = self._cab.ledger
        if lg is not None:
            await lg.record(
                EventType.TECH_ACTION, technician=technician, action=action, detail=detail[:MAX_AUDIT_DETAIL]
            )

    async def security_event(self, kind: str, detail: str) -> None:
        lg = self._cab.ledger
        if lg is not None:
            await lg.record(EventType.SECURITY_EVENT, kind=kind, detail=detail)
