"""Screenshots of every page for docs/ (``CABINET_SCREENSHOTS_DIR=docs/screenshots pytest tests/web -k screenshots``)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from cabinet.observations import Observation
from tests.web.conftest import PASSWORD, Web

pytestmark = pytest.mark.browser


def seed_telemetry(store, sn: str, slot: int, hours: float = 2.0) -> None:
    """Two hours of a charge for the charts (the rig has run for seconds only)."""
    now = time.time()
    n = int(hours * 60)
    for i in range(n):
        f = i / n
        soc = int(40 + 55 * f)
        current = 1.5 if f < 0.7 else 1.5 * (1 - f) / 0.3
        ob = Observation(
            slot=slot,
            known=True,
            present=True,
            seated=True,
            sn=sn,
            soc=soc,
            voltage_v=3.6 + 0.6 * min(1.0, f / 0.7),
            current_a=current,
            temp_c=25 + 8 * current / 1.5 - 2 * f,
            cycles=68,
        )
        store.add([ob], now=now - (n - i) * 60)


async def test_screenshots_of_kiosk_and_technician_pages(
    browser, web: Web, cloud_keys, tmp_path: Path
) -> None:
    out = Path(os.environ.get("CABINET_SCREENSHOTS_DIR") or tmp_path)
    os.makedirs(out, exist_ok=True)
    rig = web.rig
    shots: list[Path] = []

    async def shot(page, name: str) -> None:
        path = out / f"{name}.png"
        await page.screenshot(path=str(path), full_page=name.startswith("tech"))
        shots.append(path)

    page = await browser.new_page(viewport={"width": 1024, "height": 600})
    await page.goto(web.url + "/kiosk")
    await page.wait_for_selector("#net:not(:empty)")
    await shot(page, "kiosk-start-zh")
    await page.click("#lang-toggle")
    await shot(page, "kiosk-start-en")
    await page.click("#btn-pass")
    await shot(page, "kiosk-pass-en")
    await page.fill("#pass-input", cloud_keys.offline_pass("P-SHOT"))
    await page.click("#btn-rent")
    await page.wait_for_selector("#s-eject:not([hidden])")
    await shot(page, "kiosk-take-from-slot-en")
    rig.simcab.take(1)
    await page.wait_for_selector("#s-result[data-outcome=taken]:not([hidden])")
    await shot(page, "kiosk-taken-en")
    await page.click("#s-result [data-back]")
    await page.click("#btn-return")
    await shot(page, "kiosk-return-en")
    rig.simcab.insert(6, sn="PB000001")
    await page.wait_for_selector("#s-returned:not([hidden])")
    await shot(page, "kiosk-returned-en")

    s, _ = await web.technician()
    await s.close()
    tech = await browser.new_page(viewport={"width": 1280, "height": 900})
    await tech.goto(web.url + "/tech/login")
    await shot(tech, "tech-login")
    await tech.fill("#user", "ana")
    await tech.fill("#password", PASSWORD)
    await tech.click("button[type=submit]")
    await tech.wait_for_selector("#grid a.slot[data-slot='8']")
    await tech.wait_for_selector("#health dl")
    await shot(tech, "tech-overview")
    seed_telemetry(rig.cab.telemetry, "PB000002", slot=2)
    await tech.goto(web.url + "/tech/slot/2")
    await shot(tech, "tech-slot")
    await tech.goto(web.url + "/tech/battery/PB000002")
    await shot(tech, "tech-battery")
    await tech.goto(web.url + "/tech/events")
    await shot(tech, "tech-events")
    assert all(p.stat().st_size > 5000 and p.read_bytes()[:4] == b"\x89PNG" for p in shots)
