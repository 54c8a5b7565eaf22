"""axe-core (from the npm registry) on every page: no serious or critical accessibility violations."""

from __future__ import annotations

import pytest

from tests.web.conftest import PASSWORD, Web, axe_violations

pytestmark = pytest.mark.browser


async def test_kiosk_screens_pass_axe_in_both_languages(browser, web: Web, axe: str) -> None:
    page = await browser.new_page(viewport={"width": 1024, "height": 600})
    await page.goto(web.url + "/kiosk")
    await page.wait_for_selector("#net:not(:empty)")
    found = {}
    for lang in ("zh", "en"):
        for screen in ("start", "pass", "return"):
            if screen != "start":
                await page.click("#btn-pass" if screen == "pass" else "#btn-return")
            found[f"{lang}/{screen}"] = await axe_violations(page, axe)
            if screen != "start":
                await page.click(f"#s-{screen} [data-back]")
        await page.click("#lang-toggle")
    assert found == {k: [] for k in found}


async def test_technician_pages_pass_axe(browser, web: Web, axe: str) -> None:
    page = await browser.new_page(viewport={"width": 1280, "height": 800})
    await page.goto(web.url + "/tech/login")
    found = {"setup": await axe_violations(page, axe)}
    s, _ = await web.technician()
    await s.close()
    await page.goto(web.url + "/tech/login")
    found["login"] = await axe_violations(page, axe)
    await page.fill("#user", "ana")
    await page.fill("#password", PASSWORD)
    await page.click("button[type=submit]")
    await page.wait_for_selector("#grid a.slot[data-slot='8']")
    await page.wait_for_selector("#health dl")
    found["overview"] = await axe_violations(page, axe)
    for path in ("/tech/slot/2", "/tech/battery/PB000002", "/tech/events?type=battery_seen"):
        await page.goto(web.url + path)
        found[path] = await axe_violations(page, axe)
    assert found == {k: [] for k in found}
