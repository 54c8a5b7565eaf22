"""The kiosk: the cabinet's touch screen page, its QR code and what it shows of the tariff."""

from __future__ import annotations

import html
import string
from typing import Any

import segno
from aiohttp import web

from cabinet.passes import REASONS

from .state import slots_view

CURRENCY = {
    "CNY": ("¥", 2),
    "USD": ("$", 2),
    "EUR": ("€", 2),
    "GBP": ("£", 2),
    "JPY": ("¥", 0),
    "HKD": ("HK$", 2),
}


def money(minor: int, currency: str) -> str:
    """Integer minor units as a price text (never through floats)."""
    symbol, digits = CURRENCY.get(currency, (currency + " ", 2))
    if digits == 0:
        return f"{symbol}{minor}"
    major, cents = divmod(minor, 10**digits)
    return f"{symbol}{major}.{cents:0{digits}d}"


def tariff_lines(t: Any) -> dict[str, list[str]]:
    """The tariff in plain words, per language; empty when the cloud sent none yet."""
    if t is None:
        return {"en": [], "zh": []}
    m = lambda v: money(v, t.currency)  # noqa: E731
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


def app_url(cab: Any) -> str:
    return cab.config["kiosk.app_url"].replace("{cabinet}", cab.config["cabinet.id"])


def qr_svg(url: str) -> str:
    """The app link as an inline SVG QR code (drawn here, no network)."""
    svg = segno.make(url, error="m").svg_inline(scale=6, border=2, dark="#000", light="#fff")
    return svg.replace("<svg ", '<svg role="img" aria-labelledby="qr-caption" ', 1)


async def kiosk_info(cab: Any) -> dict[str, Any]:
    """What the kiosk shows besides live events: tariff, counts, online state, plain-word reasons."""
    slots = await slots_view(cab) if cab.ledger else []
    sync = cab.sync
    return {
        "cabinet": cab.config["cabinet.id"],
        "language": cab.config["kiosk.language"],
        "idle_s": cab.config["kiosk.idle_s"],
        "eject_timeout_s": cab.config["rent.eject_timeout_s"],
        "tariff": tariff_lines(cab.tariff),
        "online": bool(sync is not None and sync.transport.connected),
        "renting": cab.ledger_problem is None and cab.controller is not None and not cab.controller.refusing,
        "ready": sum(1 for s in slots if s["rentable"]),
        "empty": sum(1 for s in slots if s["state"] == "empty"),
        "reasons": REASONS,
    }


async def get_kiosk(request: web.Request) -> web.Response:
    from .app import TEMPLATES, ui_of

    ui = ui_of(request)
    page = string.Template((TEMPLATES / "kiosk.html").read_text(encoding="utf-8"))
    url = app_url(ui.cab)
    body = page.substitute(
        v=ui.static_v,
        lang=ui.cab.config["kiosk.language"],
        cabinet=html.escape(ui.cab.config["cabinet.id"]),
        qr=qr_svg(url),
        app_url=html.escape(url),
    )
    return web.Response(text=body, content_type="text/html")


async def get_kiosk_info(request: web.Request) -> web.Response:
    from .api import require_reader
    from .app import ui_of

    require_reader(request)
    return web.json_response(await kiosk_info(ui_of(request).cab))


def add_routes(app: web.Application) -> None:
    app.router.add_get("/kiosk", get_kiosk)
    app.router.add_get("/api/kiosk", get_kiosk_info)
