"""JSON views of the running cabinet: slots, batteries, rentals and health.

Each view merges what the ledger holds (the truth about places and holds) with what the bus
sees right now (SoC, temperature) and the fault model's latest risk, so the API, the kiosk and
the technician pages all show the same thing.
"""

from __future__ import annotations

import shutil
import sys
import time
from dataclasses import asdict, is_dataclass
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from cabinet.controller import is_rentable
from cabinet.ledger import BatteryState, SlotState
from cabinet.observations import Observation

from .port import CabinetPort

#: Slot states, worst first; the UI shows each with a colour AND a word.
SLOT_STATES = ("unknown", "fault", "quarantined", "checking", "charging", "ready", "low", "empty")


def risk_of(cab: CabinetPort, sn: str | None) -> dict[str, Any] | None:
    """The fault model's latest prediction for ``sn`` as JSON, or None when there is none yet."""
    p = cab.prediction(sn) if sn else None
    if p is None:
        return None
    top = getattr(p, "top_features", None) or []
    return {
        "risk": round(float(p.risk), 3),
        "flags": list(getattr(p, "flags", None) or []),
        "top_features": [_plain(f) for f in top],
    }


def _plain(v: Any) -> Any:
    if is_dataclass(v) and not isinstance(v, type):
        return asdict(v)
    if isinstance(v, tuple | list):
        return [_plain(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _plain(x) for k, x in v.items()}
    return v


def slot_state(
    ob: Observation | None, st: SlotState | None, battery: BatteryState | None, charging: bool, min_soc: int
) -> str:
    """One word for a slot (see SLOT_STATES)."""
    if ob is None or not ob.known:
        return "unknown"
    if st is not None and st.fault_kind:
        return "fault"
    if (st is not None and st.quarantined) or (battery is not None and battery.quarantined):
        return "quarantined"
    if not ob.has_battery:
        return "empty"
    if st is None or st.sn != ob.sn:
        return "checking"  # seen by the bus, not (yet) held by the ledger: new, returned or foreign
    if ob.soc >= min_soc:
        return "ready"  # rentable now, even while it tops up (the slot's ``charging`` flag says so)
    return "charging" if charging else "low"


async def slots_view(cab: CabinetPort) -> list[dict[str, Any]]:
    """Every slot 1..N with its battery, readings, holds and risk."""
    n = cab.settings.slots
    observed = cab.observed()
    ledger_slots = {s.slot: s for s in await cab.slot_states()}
    batteries = {b.sn: b for b in await cab.batteries()}
    rent = cab.rent_settings()
    denied = cab.denied()
    charging_now = cab.charging_slots()
    out = []
    for slot in range(1, n + 1):
        ob = observed.get(slot)
        st = ledger_slots.get(slot)
        sn = (ob.sn if ob is not None and ob.has_battery else None) or (st.sn if st else None)
        b = batteries.get(sn) if sn else None
        charging = slot in charging_now
        present = ob is not None and ob.has_battery
        # the controller's rule (Controller.rentable_slots), on the battery the ledger holds there
        held = batteries.get(st.sn) if st is not None and st.sn else None
        rentable = is_rentable(st, ob, held, rent, denied)
        out.append(
            {
                "slot": slot,
                "state": slot_state(ob, st, b, charging, rent.min_soc),
                "rentable": rentable,
                "known": bool(ob is not None and ob.known),
                "present": present,
                "sn": sn,
                "soc": ob.soc if ob is not None and present else None,
                "temp_c": round(ob.temp_c, 1) if ob is not None and present else None,
                "voltage_v": round(ob.voltage_v, 2) if ob is not None and present else None,
                "current_a": round(ob.current_a, 2) if ob is not None and present else None,
                "charging": charging,
                "fault": st.fault_kind if st else None,
                "fault_detail": st.fault_detail if st else None,
                "quarantined": bool(st and st.quarantined),
                "quarantine_reason": st.quarantine_reason if st else None,
                "battery_quarantined": bool(b and b.quarantined),
                "risk": risk_of(cab, sn),
            }
        )
    return out


def battery_json(cab: CabinetPort, b: BatteryState) -> dict[str, Any]:
    d = asdict(b)
    d["prediction"] = risk_of(cab, b.sn)
    return d


async def batteries_view(cab: CabinetPort) -> list[dict[str, Any]]:
    return [battery_json(cab, b) for b in await cab.batteries()]


async def rentals_view(cab: CabinetPort, open_only: bool = False) -> list[dict[str, Any]]:
    """Rentals this cabinet knows (open ones, or the newest 200 of all)."""
    rentals = await cab.open_rentals() if open_only else await cab.recent_rentals(200)
    return [asdict(r) for r in rentals]


def _version(name: str) -> str | None:
    try:
        return version(name)
    except PackageNotFoundError:
        return None


async def health_view(cab: CabinetPort) -> dict[str, Any]:
    """Bus, sync, disk, uptime, versions, model and ledger state for the health panel and /api/health."""
    bus = cab.bus_stats()
    sync = cab.sync_status()
    sync_view: dict[str, Any] = {"enabled": cab.settings.sync_enabled, "connected": False}
    if sync is not None:
        sync_view.update(
            connected=sync.connected,
            backlog=sync.backlog,
            acked_seq=sync.acked_seq,
            last_ack_at=sync.last_ack_at,
        )
    data_dir = cab.settings.data_dir
    disk: dict[str, Any]
    try:
        du = shutil.disk_usage(data_dir)
        disk = {"path": str(data_dir), "free_bytes": du.free, "total_bytes": du.total}
    except OSError as e:
        disk = {"path": str(data_dir), "error": str(e)}
    summary = cab.status_summary()
    versions = {
        **summary.get("versions", {}),
        "python": sys.version.split()[0],
        "pymodbus": _version("pymodbus"),
        "aiohttp": _version("aiohttp"),
    }
    last_scan_age = time.monotonic() - cab.last_scan_at if cab.last_scan_at else None
    return {
        "cabinet": cab.settings.cabinet_id,
        "ok": cab.ledger_problem is None and bus is not None and bus["boards_isolated"] == 0,
        "ledger_problem": cab.ledger_problem,
        "renting": cab.renting,
        "uptime_s": round(time.monotonic() - cab.started_at, 1),
        "last_scan_age_s": None if last_scan_age is None else round(last_scan_age, 2),
        "bus": bus,
        "sync": sync_view,
        "disk": disk,
        "versions": versions,
        "model_version": cab.model_version,
        "model_problem": cab.model_problem,
        "counts": summary.get("counts", {}),
        "open_rentals": len(await cab.open_rentals()),
    }
