"""The renter app's own API routes: one rental as the phone follows it, and a pass as a QR code.

Mixed into ``cloud.app``'s handler class like ``cloud.fleet.http.FleetHandlers`` (the routes are
declared in ``cloud.api_schema``, so they are in the OpenAPI document and fuzzed).

``GET /api/me/rentals/{rental_id}`` is what the app polls while a pack is ejected and while the
rental runs: the phase of the eject (read from the rental, its eject command and the cabinet's
events, the same records the cloud's rental life cycle writes), the slot once the cabinet has
said it, the fee so far priced by ``cloud.pricing.quote`` exactly as the return will price it, and
the hold (amount, state, what was released).
"""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import Callable, Mapping
from typing import Any

import segno
from aiohttp import web
from sqlalchemy import Connection, Engine, select

from cloud.db import cabinet_events, clock_anchors, commands, rentals
from cloud.errors import NotFound
from cloud.pricing import CabinetTime, ClockAnchor, Tariff, quote, true_time
from sync.events import CommandStatus, EventType, RentalStatus

#: the cabinet's abort reasons (cabinet/controller.py) the app explains; other texts are "other"
CABINET_REASONS = ("not_taken", "no_rentable_battery", "lock_jammed", "interrupted", "storage_unwritable")
#: how many of a cabinet's latest aborts are searched for an aborted rental's slot
ABORT_EVENTS_SEARCHED = 50


def abort_code(reason: str | None) -> str:
    """The aborted rental's reason as one word the app translates (the stored text is for people)."""
    text = (reason or "").strip()
    if text in CABINET_REASONS:
        return text
    if text.startswith("no answer from the cabinet"):
        return "cabinet_timeout"  # RentalService.sweep: the eject command expired
    if text.startswith("hold not confirmed"):
        return "not_confirmed"
    if text.startswith("hold refused"):
        return "hold_refused"
    return "other"


def _anchors(conn: Connection, t: CabinetTime) -> dict[tuple[str, str], ClockAnchor]:
    a = conn.execute(
        select(clock_anchors).where(
            clock_anchors.c.cabinet_id == t.cabinet, clock_anchors.c.boot_id == t.boot_id
        )
    ).first()
    return (
        {}
        if a is None
        else {(t.cabinet, t.boot_id): ClockAnchor(a.cabinet_id, a.boot_id, a.at_mono, a.true_wall)}
    )


def _aborted_slot(conn: Connection, cabinet_id: str, rental_id: str) -> int | None:
    """The slot a cabinet named when it aborted ``rental_id`` (e.g. the pack it presented was not taken)."""
    rows = conn.execute(
        select(cabinet_events.c.body)
        .where(cabinet_events.c.cabinet_id == cabinet_id, cabinet_events.c.type == EventType.RENTAL_ABORTED)
        .order_by(cabinet_events.c.seq.desc())
        .limit(ABORT_EVENTS_SEARCHED)
    ).scalars()
    for raw in rows:
        try:
            body = json.loads(raw)
        except ValueError:
            continue
        if isinstance(body, dict) and body.get("rental_id") == rental_id:
            slot = body.get("slot")
            return slot if isinstance(slot, int) and not isinstance(slot, bool) else None
    return None


def _phase(r: Mapping[Any, Any], command_status: str | None) -> str:
    status = r["status"]
    if status != RentalStatus.PENDING:
        return str(status)  # active, closed, purchased, aborted
    if r["hold_status"] == "pending":
        return "confirming"  # the renter confirms the hold in the provider's app
    if command_status == CommandStatus.RECEIVED or command_status == CommandStatus.OK:
        return "presenting"  # the cabinet has the command: a pack is being pushed out
    if command_status == CommandStatus.FAILED:
        return "refused"  # the cabinet answered but handed nothing out (the sweep aborts it)
    return "sending"


def _fee_now(tariff: Tariff, elapsed_s: float, started: float) -> dict[str, Any]:
    """The fee after ``elapsed_s``, and when (and to what) it next goes up: the app counts down to it."""
    q = quote(tariff, elapsed_s, started)
    if q.purchased:
        return {"fee_so_far": q.amount, "fee_next": None, "fee_next_in_s": None}
    free_s, period_s = tariff.free_minutes * 60, tariff.period_minutes * 60
    # the fee is free up to free_minutes, then counts whole periods from the start
    step = free_s - elapsed_s if elapsed_s < free_s else period_s - (elapsed_s % period_s)
    step = max(step, 0.001)
    nxt = quote(tariff, elapsed_s + step + 0.001, started).amount
    return {"fee_so_far": q.amount, "fee_next": nxt, "fee_next_in_s": round(step, 3)}


def rental_view(
    engine: Engine, clock: Callable[[], float], eject_timeout_s: float, user_id: int, rental_id: str
) -> dict[str, Any]:
    """One of ``user_id``'s rentals as the app shows it (NotFound for anybody else's)."""
    now = clock()
    with engine.connect() as conn:
        r = conn.execute(select(rentals).where(rentals.c.id == rental_id)).mappings().first()
        if r is None or r["user_id"] != user_id:
            raise NotFound(f"no rental {rental_id} in your account")
        cmd = (
            conn.execute(
                select(commands.c.status, commands.c.result).where(commands.c.cmd_id == r["cmd_id"])
            ).first()
            if r["cmd_id"]
            else None
        )
        tariff = Tariff.from_json(r["tariff"])
        started: float | None = None
        if r["start_wall"] is not None:
            start = CabinetTime(r["cabinet_id"], r["start_wall"], r["start_mono"], r["start_boot_id"])
            started, _ = true_time(start, _anchors(conn, start))
        slot = r["slot"]
        abort = None
        if r["status"] == RentalStatus.ABORTED:
            code = abort_code(r["abort_reason"])
            if slot is None and code in CABINET_REASONS:
                slot = _aborted_slot(conn, r["cabinet_id"], rental_id)
            abort = {"reason": code, "detail": r["abort_reason"]}
    view: dict[str, Any] = {
        "id": r["id"],
        "status": r["status"],
        "phase": _phase(r, cmd.status if cmd else None),
        "source": r["source"],
        "cabinet_id": r["cabinet_id"],
        "end_cabinet_id": r["end_cabinet_id"],
        "slot": slot,
        "battery_sn": r["battery_sn"],
        "currency": r["currency"],
        "now": now,
        "created_at": r["created_at"],
        "started_at": started,
        "elapsed_s": None,
        "fee_so_far": r["fee"],
        "fee_next": None,
        "fee_next_in_s": None,
        "fee": r["fee"],
        "captured": r["captured"],
        "refunded": r["refunded"],
        "payment_status": r["payment_status"],
        "hold": _hold(r),
        "eject": None,
        "abort": abort,
        "tariff": {
            "currency": tariff.currency,
            "price_per_period": tariff.price_per_period,
            "period_minutes": tariff.period_minutes,
            "free_minutes": tariff.free_minutes,
            "daily_cap": tariff.daily_cap,
            "total_cap": tariff.total_cap,
        },
    }
    if r["status"] == RentalStatus.PENDING:
        asked = r["eject_requested_at"] or r["created_at"]
        view["eject"] = {
            "command_status": cmd.status if cmd else None,
            "result": cmd.result if cmd else None,
            "requested_at": asked,
            "deadline": asked + eject_timeout_s,  # the sweep aborts it then and releases the hold
        }
    elif r["status"] == RentalStatus.ACTIVE and started is not None:
        elapsed = max(now - started, 0.0)
        view["elapsed_s"] = round(elapsed, 3)
        view.update(_fee_now(tariff, elapsed, started))
    elif r["duration_s"] is not None:
        view["elapsed_s"] = r["duration_s"]
    return view


def _hold(r: Mapping[Any, Any]) -> dict[str, Any]:
    """The rental's hold: amount, state and what of it went back to the renter."""
    status = r["hold_status"] or "none"
    amount = int(r["hold_amount"] or 0)
    released = 0
    if status in ("voided", "expired"):
        released = amount
    elif status == "captured":
        released = max(amount - int(r["captured"] or 0), 0)
    return {"amount": amount, "status": status, "released": released}


def pass_svg(text: str, title: str) -> str:
    """The pass's QR code as a standalone SVG (segno, as the kiosk draws its own QR code)."""
    out = io.BytesIO()
    segno.make(text, error="m").save(
        out, kind="svg", scale=4, border=4, dark="#000", light="#fff", title=title, xmldecl=False, nl=False
    )
    return out.getvalue().decode()


class RenterHandlers:
    """Route handlers of the renter app's own routes; ``self.ctx`` is the ``CloudContext``."""

    ctx: Any

    async def my_rental(self, request: web.Request, user: Any, body: None) -> web.Response:
        view = await asyncio.to_thread(
            rental_view,
            self.ctx.engine,
            self.ctx.clock,
            self.ctx.config.eject_timeout_s,
            user.id,
            request.match_info["rental_id"],
        )
        return web.json_response(view, headers={"Cache-Control": "no-store"})

    async def my_pass_qr(self, request: web.Request, user: Any, body: None) -> web.Response:
        pass_id = request.match_info["pass_id"]
        try:
            _, text = await asyncio.to_thread(self.ctx.signatures.pass_text, user.id, pass_id)
        except LookupError as e:
            raise NotFound(str(e)) from e
        svg = await asyncio.to_thread(pass_svg, text, "offline pass")
        return web.Response(text=svg, content_type="image/svg+xml", headers={"Cache-Control": "no-store"})
