"""The kiosk: the cabinet's touch screen page, its QR code and what it shows of the tariff."""

from __future__ import annotations

import html
import string
from typing import Any

import segno
from aiohttp import web

from cabinet.passes import REASONS
from sync.amounts import format_money
from sync.config import Tariff

from .common import TEMPLATES
from .context import context_of, require_reader
from .port import CabinetPort
from .state import slots_view


def money(minor: int, currency: str) -> str:
    """Integer minor units as a price text with the currency's sign (``sync.amounts``, never floats)."""
    return format_money(minor, currency, symbol=True)


def tariff_lines(t: Tariff | None) -> dict[str, list[str]]:
    """The tariff in plain words, per language; empty when the cloud sent none yet."""
    if t is None:
        return {"en": [], "zh": []}
    currency = t.currency

    def m(v: int) -> str:
        return money(v, currency)

    en = [f"{m(t.unit_price_minor)} per {t.unit_minutes} min"]
    zh = [f"每{t.unit_minutes}分钟 {m(t.unit_price_minor)}"]
    if t.free_minutes:
        en.append(f"First {t.free_minutes} min free")
        zh.append(f"前{t.free_minutes}分钟免费")
    if t.daily_cap_minor is not None:
        en.append(f"At most {m(t.daily_cap_minor)} per day")
        zh.append(f"每日封顶 {m(t.daily_cap_minor)}")
    if t.rental_cap_minor is not None:
        en.append(f"At most {m(t.rental_cap_minor)} per rental")
        zh.append(f"单次封顶 {m(t.rental_cap_minor)}")
    if t.deposit_minor is not None:
        en.append(f"Deposit {m(t.deposit_minor)}")
        zh.append(f"押金 {m(t.deposit_minor)}")
    for lang, lines in (("en", en), ("zh", zh)):
        extra = (t.text or {}).get(lang)
        if extra:
            lines.append(extra)
    return {"en": en, "zh": zh}


def qr_svg(url: str) -> str:
    """The app link as an inline SVG QR code (drawn here, no network)."""
    svg: str = segno.make(url, error="m").svg_inline(scale=6, border=2, dark="#000", light="#fff")
    return svg.replace("<svg ", '<svg role="img" aria-labelledby="qr-caption" ', 1)


async def kiosk_info(cab: CabinetPort) -> dict[str, Any]:
    """What the kiosk shows besides live events: tariff, counts, online state, plain-word reasons."""
    slots = await slots_view(cab) if cab.has_ledger else []
    sync = cab.sync_status()
    settings = cab.settings
    return {
        "cabinet": settings.cabinet_id,
        "language": settings.kiosk_language,
        "idle_s": settings.kiosk_idle_s,
        "eject_timeout_s": settings.eject_timeout_s,
        "tariff": tariff_lines(cab.tariff()),
        "online": sync is not None and sync.connected,
        "renting": cab.renting,
        "ready": sum(1 for s in slots if s["rentable"]),
        "empty": sum(1 for s in slots if s["state"] == "empty"),
        "reasons": REASONS,
    }


async def get_kiosk(request: web.Request) -> web.Response:
    ui = context_of(request)
    settings = ui.cabinet.settings
    page = string.Template((TEMPLATES / "kiosk.html").read_text(encoding="utf-8"))
    url = settings.app_url
    body = page.substitute(
        v=ui.static_v,
        lang=settings.kiosk_language,
        cabinet=html.escape(settings.cabinet_id),
        qr=qr_svg(url),
        app_url=html.escape(url),
    )
    return web.Response(text=body, content_type="text/html")


async def get_kiosk_info(request: web.Request) -> web.Response:
    require_reader(request)
    return web.json_response(await kiosk_info(context_of(request).cabinet))


def add_routes(app: web.Application) -> None:
    app.router.add_get("/kiosk", get_kiosk)
    app.router.add_get("/api/kiosk", get_kiosk_info)
