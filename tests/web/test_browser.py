"""The kiosk and the technician UI in a real browser (Playwright + Debian's Chromium) against the simulator."""

from __future__ import annotations

import asyncio
import logging

import pytest

from tests.web.conftest import KIOSK_A11Y, PASSWORD, SETUP_RE, TECH_A11Y, Web, a11y_problems, start_web

pytestmark = pytest.mark.browser


async def kiosk_page(browser, web: Web, width: int = 1024, height: int = 600):
    page = await browser.new_page(viewport={"width": width, "height": height}, has_touch=True)
    await page.goto(web.url + "/kiosk")
    await page.wait_for_selector("#net:not(:empty)")
    return page


async def test_kiosk_rent_with_a_pass_take_from_slot_and_taken(browser, web: Web, cloud_keys) -> None:
    rig = web.rig
    page = await kiosk_page(browser, web)
    await page.click("#btn-pass")
    await page.fill("#pass-input", cloud_keys.offline_pass("P-KIOSK-1"))
    await page.click("#btn-rent")
    await page.wait_for_selector("#s-eject:not([hidden])", timeout=10_000)
    assert await page.inner_text("#slot-number") == "1"
    seconds = int(await page.inner_text("#countdown"))
    assert 0 < seconds <= 3  # rent.eject_timeout_s of the rig
    assert rig.simcab.slot(1).presented
    rig.simcab.take(1)
    await page.wait_for_selector("#s-result[data-outcome=taken]:not([hidden])", timeout=10_000)
    assert await page.inner_text("#result-title") == "请取走充电宝，祝您使用愉快！"
    started = await rig.events("rental_started")
    assert [(e.body["slot"], e.body["pass_id"]) for e in started] == [(1, "P-KIOSK-1")]


async def test_kiosk_refused_pass_and_not_taken_in_plain_words(browser, make_rig, cloud_keys) -> None:
    # the rig's simulator leaves an untaken pack out for 20 s, and the cabinet waits up to
    # rent.unreadable_wait_s past the eject timeout for a late take: keep that wait short here
    web = await start_web(make_rig, rent={"min_soc": 80, "eject_timeout_s": 3.0, "unreadable_wait_s": 0.5})
    page = await kiosk_page(browser, web)
    await page.click("#lang-toggle")
    await page.click("#btn-pass")
    await page.fill("#pass-input", "this is no pass at all")
    await page.press("#pass-input", "Enter")
    await page.wait_for_selector("#s-result[data-outcome=refused]:not([hidden])")
    assert (
        await page.inner_text("#result-text") == "This code could not be read. Try again, or rent in the app."
    )
    await page.click("#s-result [data-back]")
    await page.click("#btn-pass")
    await page.fill("#pass-input", cloud_keys.offline_pass("P-KIOSK-2"))
    await page.click("#btn-rent")
    await page.wait_for_selector("#s-eject:not([hidden])")
    # nobody takes it: after rent.eject_timeout_s (3 s) and the 0.5 s wait the rental is aborted and the kiosk says so
    await page.wait_for_selector("#s-result[data-outcome=aborted]:not([hidden])", timeout=10_000)
    assert await page.inner_text("#result-text") == "The battery was not taken, so nothing was rented."


async def test_kiosk_language_toggle_and_offline_state(browser, web: Web) -> None:
    page = await kiosk_page(browser, web)
    assert await page.get_attribute("html", "lang") == "zh-CN"
    assert await page.inner_text("h1") == "共享充电宝"
    assert "离线" in await page.inner_text("#net")  # sync is disabled in this rig: calm offline note
    assert "offline" in (await page.get_attribute("#net", "class"))
    await page.click("#lang-toggle")
    assert await page.get_attribute("html", "lang") == "en"
    assert await page.inner_text("h1") == "Power bank rental"
    assert await page.inner_text("#net") == "Offline · passes and returns still work"
    assert await page.inner_text("#btn-pass") == "I have a pass"
    assert await page.inner_text("#ready-count") == "3 batteries ready"  # slots 1, 2, 5 (3 is at 50 %)
    await page.click("#lang-toggle")
    assert await page.inner_text("#btn-return") == "归还充电宝"


async def test_kiosk_shows_online_then_offline_when_the_broker_goes(browser, make_rig, broker) -> None:
    web = await start_web(make_rig, broker=broker)
    await web.rig.until(lambda: web.rig.cab.sync.transport.connected, what="sync to connect")
    page = await kiosk_page(browser, web)
    await page.wait_for_selector("#net:text-is('在线')", timeout=10_000)
    broker.stop()
    await page.wait_for_selector("body[data-online=no]", timeout=15_000)
    assert "离线" in await page.inner_text("#net")


async def test_kiosk_return_flow_and_idle_return_to_start(browser, make_rig, cloud_keys) -> None:
    web = await start_web(make_rig, kiosk={"idle_s": 3})
    rig = web.rig
    out = asyncio.create_task(rig.cab.passes.submit(cloud_keys.offline_pass("P-RET")))
    await rig.until(lambda: rig.simcab.slot(1).presented, what="slot 1 to present")
    sn = rig.simcab.take(1)
    assert (await out).status == "started"
    page = await kiosk_page(browser, web, 800, 480)
    await page.click("#lang-toggle")
    await page.click("#btn-return")
    assert await page.inner_text("#s-return h2") == "Push the battery into any empty slot"
    rig.simcab.insert(4, sn=sn)
    await page.wait_for_selector("#s-returned:not([hidden])", timeout=10_000)
    assert await page.inner_text("#returned-text") == "Received in slot 4."
    assert await page.inner_text("#receipt-text") == (
        "You will get a receipt in the app once this cabinet is back online."
    )
    assert [e.body["sn"] for e in await rig.events("battery_returned")] == [sn]
    await page.click("#btn-return" if False else "#s-returned [data-back]")
    await page.click("#btn-pass")
    await page.wait_for_selector("#s-start:not([hidden])", timeout=8_000)  # idle_s = 3: back to start


@pytest.mark.parametrize("size", [(1024, 600), (800, 480)])
async def test_kiosk_fits_the_screen_with_large_named_targets_and_contrast(browser, web: Web, size) -> None:
    page = await kiosk_page(browser, web, *size)
    for lang in ("zh", "en"):
        for screen in ("start", "pass", "return"):
            if screen != "start":
                await page.click("#btn-pass" if screen == "pass" else "#btn-return")
            problems = await a11y_problems(page, KIOSK_A11Y)
            assert problems == {}, f"{lang} {screen} at {size}: {problems}"
            if screen != "start":
                await page.click(f"#s-{screen} [data-back]")
        await page.click("#lang-toggle")


async def test_technician_sets_up_with_the_log_code_and_unlocks_with_confirmation(
    browser, make_rig, caplog
) -> None:
    caplog.set_level(logging.WARNING)
    web = await start_web(make_rig)
    rig = web.rig
    code = next(m.group(1) for r in caplog.records if (m := SETUP_RE.search(r.getMessage())))
    page = await browser.new_page(viewport={"width": 1280, "height": 800})
    await page.goto(web.url + "/tech")
    assert page.url.endswith("/tech/login")
    assert await a11y_problems(page, TECH_A11Y) == {}
    await page.fill("#code", code)
    await page.fill("#user", "ana")
    await page.fill("#password", PASSWORD)
    await page.fill("#password2", PASSWORD)
    await page.click("button[type=submit]")
    await page.wait_for_selector("#grid a.slot[data-slot='8']")
    assert await page.inner_text("#grid a.slot[data-slot='4'] .state") == "Empty"
    assert "boards answer" in await page.inner_text("#health")
    assert await a11y_problems(page, TECH_A11Y) == {}
    await page.click("#grid a.slot[data-slot='5']")
    await page.wait_for_selector("h2#slot-h")
    assert await a11y_problems(page, TECH_A11Y) == {}
    await page.click("button[data-action=unlock]")
    assert "Please give a reason" in await page.inner_text("#action-result")
    assert await rig.events("tech_action") == [
        e for e in await rig.events("tech_action") if e.body["action"] != "unlock"
    ]
    await page.fill("#reason", "latch check")
    await page.click("button[data-action=unlock]")
    await page.wait_for_selector("#confirm[open]")
    assert "Unlock slot 5?" in await page.inner_text("#confirm-text")
    await page.click("#confirm-ok")
    await rig.until(lambda: rig.simcab.slot(5).presented, what="slot 5 to open")
    rig.simcab.take(5)
    await page.wait_for_selector("#action-result:has-text('taken out')", timeout=10_000)
    audit = [e.body for e in await rig.events("tech_action") if e.body["action"] == "unlock"]
    assert audit == [{"technician": "ana", "action": "unlock", "detail": "slot 5: latch check"}]


async def test_grid_updates_live_when_a_battery_is_inserted(browser, web: Web) -> None:
    s, _ = await web.technician()
    await s.close()
    page = await browser.new_page(viewport={"width": 1280, "height": 800})
    await page.goto(web.url + "/tech/login")
    await page.fill("#user", "ana")
    await page.fill("#password", PASSWORD)
    await page.click("button[type=submit]")
    await page.wait_for_selector("#grid a.slot[data-slot='4'][data-state=empty]")
    await page.evaluate("window.__marker = 1")  # survives only if the page is not reloaded
    web.rig.simcab.insert(4, sn="PB0000D4", soc=0.9)
    await page.wait_for_selector(
        "#grid a.slot[data-slot='4']:not([data-state=empty]):not([data-state=checking])", timeout=10_000
    )
    assert "PB0000D4" in await page.inner_text("#grid a.slot[data-slot='4']")
    assert await page.evaluate("window.__marker") == 1
    await page.goto(web.url + "/tech/battery/PB0000D4")
    assert "no prediction yet" in await page.inner_text("main") or "Fault risk" in await page.inner_text(
        "main"
    )
    await page.goto(web.url + "/tech/events?type=battery_seen,battery_returned")
    assert "PB0000D4" in await page.inner_text("table.events")
    assert await a11y_problems(page, TECH_A11Y) == {}
