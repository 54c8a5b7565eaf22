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

#: Slot states, worst first; the UI shows each with a colour AND a word.
SLOT_STATES = ("unknown", "fault", "quarantined", "checking", "charging", "ready", "low", "empty")


def risk_of(cab: Any, sn: str | None) -> dict[str, Any] | None:
    """The fault model's latest prediction for ``sn`` as JSON, or None when there is none yet."""
    health = getattr(cab, "health", None)
    risks = getattr(health, "risks", None) or {}
    p = risks.get(sn) if sn else None
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


def model_version(cab: Any) -> str | None:
    return getattr(getattr(cab, "health", None), "model_version", None)


def slot_state(ob: Any, st: Any, battery: Any, charging: bool, min_soc: int) -> str:
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


async def slots_view(cab: Any) -> list[dict[str, Any]]:
    """Every slot 1..N with its battery, readings, holds and risk."""
    n = cab.config["cabinet.slots"]
    observed = dict(cab.controller.observed) if cab.controller else {}
    ledger_slots = {s.slot: s for s in await cab.ledger.slots()} if cab.ledger else {}
    batteries = {b.sn: b for b in await cab.ledger.batteries()} if cab.ledger else {}
    min_soc = cab.controller.settings.min_soc if cab.controller else cab.config["rent.min_soc"]
    denied = set(cab.controller.deny_list()) if cab.controller else set()
    out = []
    for slot in range(1, n + 1):
        ob: Any = observed.get(slot)
        st = ledger_slots.get(slot)
        sn = (ob.sn if ob is not None and ob.has_battery else None) or (st.sn if st else None)
        b = batteries.get(sn) if sn else None
        charging = slot in cab.charging_now
        present = bool(ob is not None and ob.has_battery)
        state = slot_state(ob, st, b, charging, min_soc)
        # the controller's rule (Controller.rentable_slots) without a ledger call per slot
        rentable = bool(
            present
            and state in ("ready", "charging")
            and ob.soc >= min_soc
            and not ob.faults
            and ob.sn not in denied
            and b is not None
            and not b.quarantined
        )
        out.append(
            {
                "slot": slot,
                "state": state,
                "rentable": rentable,
                "known": bool(ob is not None and ob.known),
                "present": present,
                "sn": sn,
                "soc": ob.soc if present else None,
                "temp_c": round(ob.temp_c, 1) if present else None,
                "voltage_v": round(ob.voltage_v, 2) if present else None,
                "current_a": round(ob.current_a, 2) if present else None,
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


def battery_json(cab: Any, b: Any) -> dict[str, Any]:
    d = asdict(b)
    d["prediction"] = risk_of(cab, b.sn)
    return d


async def batteries_view(cab: Any) -> list[dict[str, Any]]:
    if cab.ledger is None:
        return []
    return [battery_json(cab, b) for b in await cab.ledger.batteries()]


async def rentals_view(cab: Any, open_only: bool = False) -> list[dict[str, Any]]:
    """Rentals this cabinet knows (open ones, or the newest 200 of all)."""
    if cab.ledger is None:
        return []
    if open_only:
        return [asdict(r) for r in await cab.ledger.open_rentals()]

    def newest(lg: Any) -> list[Any]:
        from cabinet.ledger.views import RentalState

        rows = lg.db.execute(
            "SELECT * FROM rentals ORDER BY COALESCE(ended_seq, started_seq, requested_seq) DESC LIMIT 200"
        )
        cols = [c[0] for c in rows.description]
        return [RentalState.from_row(dict(zip(cols, r, strict=True))) for r in rows.fetchall()]

    return [asdict(r) for r in await cab.ledger.run(newest)]


def _version(name: str) -> str | None:
    try:
        return version(name)
    except PackageNotFoundError:
        return None


async def health_view(cab: Any) -> dict[str, Any]:
    """Bus, sync, disk, uptime, versions, model and ledger state for the health panel and /api/health."""
    bus = cab.bus.stats() if cab.bus is not None else None
    sync = cab.sync
    sync_view: dict[str, Any] = {"enabled": bool(cab.config["sync.enabled"]), "connected": False}
    if sync is not None:
        sync_view.update(
            connected=bool(sync.transport.connected),
            backlog=sync.backlog,
            acked_seq=sync.acked_seq,
            last_ack_at=sync.last_ack_at,
        )
    try:
        du = shutil.disk_usage(cab.config.data_dir)
        disk = {"path": str(cab.config.data_dir), "free_bytes": du.free, "total_bytes": du.total}
    except OSError as e:
        disk = {"path": str(cab.config.data_dir), "error": str(e)}
    summary = cab.status_summary()
    versions = {
        **summary.get("versions", {}),
        "python": sys.version.split()[0],
        "pymodbus": _version("pymodbus"),
        "aiohttp": _version("aiohttp"),
    }
    last_scan_age = time.monotonic() - cab.last_scan_at if cab.last_scan_at else None
    return {
        "cabinet": cab.config["cabinet.id"],
        "ok": cab.ledger_problem is None and bus is not None and bus["boards_isolated"] == 0,
        "ledger_problem": cab.ledger_problem,
        "renting": cab.ledger_problem is None and cab.controller is not None and not cab.controller.refusing,
        "uptime_s": round(time.monotonic() - cab.started_at, 1),
        "last_scan_age_s": None if last_scan_age is None else round(last_scan_age, 2),
        "bus": bus,
        "sync": sync_view,
        "disk": disk,
        "versions": versions,
        "model_version": model_version(cab),
        "model_problem": getattr(getattr(cab, "health", None), "problem", None),
        "counts": summary.get("counts", {}),
        "open_rentals": len(await cab.ledger.open_rentals()) if cab.ledger else 0,
    }
