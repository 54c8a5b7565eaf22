"""Every screen of the app in zh and en, as the phone's language chooses (``navigator.languages``
and Accept-Language): axe-core finds no serious or critical issue, nothing is wider than the 360 px
phone, targets are 48 px, text has contrast; and a screenshot of each for docs/.

``CABINET_SCREENSHOTS_DIR=docs/screenshots pytest tests/renter -k screens`` writes them as
``app-<screen>-<lang>.png``; otherwise they go to the test's tmp dir.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import expect

from tests.browser import a11y_problems, axe_violations
from tests.helpers import until

pytestmark = [pytest.mark.browser, pytest.mark.slow]

WAIT = 30_000
APP_A11Y = {
    "targets": "button, a.button, header a, label.choice, ul.cabinets a.name, .cab-marker",
    "texts": "h1, h2, p, li, button, label, dt, dd, a, legend, .chip",
    "fit": False,
}
#: what each language shows on the screens the tour waits for
TEXT = {
    "en": {"home": "Rent a power bank", "presenting": "A pack is coming out now", "active": "Rental running",
           "thanks": "Thank you! The pack is returned.", "not_taken": "The pack was not taken",
           "packs": "3 packs ready now", "hold": "35.00 EUR held, released when you return",
           "declined": "Your card was declined.", "sent": "Thank you. We look at it and answer you.",
           "offline": "Offline"},
    "zh": {"home": "租借充电宝", "presenting": "充电宝正在弹出", "active": "租借中",
           "thanks": "谢谢！充电宝已归还。", "not_taken": "充电宝未被取走",
           "packs": "现在有 3 个充电宝可借", "hold": "预授权 35.00 EUR，归还后释放",
           "declined": "您的银行卡被拒绝。", "sent": "谢谢，我们会尽快处理并回复您。", "offline": "离线"},
}  # fmt: skip


@pytest.mark.parametrize("locale", ["en-GB", "zh-CN"])
async def test_every_screen_passes_axe_fits_the_phone_and_is_photographed(
    make_stack, phone, axe: str, shots_dir: Path, caplog: pytest.LogCaptureFixture, locale: str
) -> None:
    lang = locale[:2]
    text = TEXT[lang]
    stack = await make_stack(t1={"rent": {"eject_timeout_s": 30.0}}, t2={"rent": {"eject_timeout_s": 2.0}})
    await stack.ready("CAB-T1", 3)
    await stack.ready("CAB-T2", 3)
    ph = await phone(locale=locale, scale=1)
    page = ph.page
    found: dict[str, Any] = {}

    async def screen(name: str) -> None:
        await page.wait_for_load_state("networkidle")
        assert await page.evaluate("document.documentElement.lang") == ("zh-CN" if lang == "zh" else "en")
        problems = await a11y_problems(page, APP_A11Y)
        wide = await page.evaluate("document.scrollingElement.scrollWidth - innerWidth")
        if wide > 0:
            problems["wider_than_the_phone"] = wide
        violations = await axe_violations(page, axe)
        if violations:
            problems["axe"] = violations
        if problems:
            found[name] = problems
        await page.screenshot(path=str(shots_dir / f"app-{name}-{lang}.png"), full_page=True)

    await page.goto(stack.url + "/app/")
    await expect(page.locator("h1")).to_have_text(text["home"])
    await screen("home")

    await page.goto(stack.url + "/app/nearby")
    await expect(page.locator(".cab-marker[data-cabinet=CAB-T2]")).to_have_count(1, timeout=WAIT)
    await screen("nearby")

    await page.goto(stack.url + "/app/c/CAB-T1")
    await expect(page.locator("#packs")).to_have_text(text["packs"])
    await expect(page.locator("#hold")).to_have_text(text["hold"])
    await screen("cabinet")

    # sign up with a phone number and the code the SMS backend (log) sent
    await page.tap("#rent")
    await expect(page.locator("#phone")).to_be_visible()
    await screen("signin")
    caplog.set_level("WARNING", logger="cloud.sms")
    await page.fill("#phone", "+8613800138000")
    await page.tap("#send-code")
    await expect(page.locator("#code")).to_be_visible(timeout=WAIT)
    await screen("signin-code")
    codes = [m for r in caplog.records if (m := re.search(r"your code is (\d{6})", r.getMessage()))]
    assert codes, "the log backend wrote no code"
    await page.fill("#code", codes[-1].group(1))
    await page.tap("#verify")
    await expect(page).to_have_url(stack.url + "/app/c/CAB-T1")

    await page.tap("#rent")  # no card yet
    await expect(page.locator("#save-card")).to_be_visible()
    await screen("pay")
    await page.check("#card-tok_ok")
    await page.tap("#save-card")
    await expect(page).to_have_url(stack.url + "/app/c/CAB-T1")

    await page.tap("#rent")
    await expect(page.locator("#phase")).to_have_text(text["presenting"], timeout=WAIT)
    await screen("rent-presenting")
    t1, t2 = stack.sites["CAB-T1"], stack.sites["CAB-T2"]
    await until(lambda: t1.simcab.slot(1).presented, 20, "CAB-T1 to present a pack")
    t1.simcab.take(1)
    await expect(page.locator("#phase")).to_have_text(text["active"], timeout=WAIT)
    await expect(page.locator(".cab-marker[data-cabinet=CAB-T2]")).to_have_count(1, timeout=WAIT)
    await screen("rent-active")

    t2.simcab.insert(5, sn="PB000001")
    await expect(page.locator("#phase")).to_have_text(text["thanks"], timeout=WAIT)
    await expect(page.locator("#released")).to_have_text("32.50 EUR", timeout=WAIT)
    await screen("receipt")

    await page.tap("#report")
    await expect(page.locator("#reason")).to_be_visible()
    await screen("dispute")
    await page.fill("#reason", "The pack was empty after ten minutes.")
    await page.fill("#amount", "1.50")
    await page.tap("#send-dispute")
    await expect(page.locator("#dispute-sent")).to_have_text(text["sent"], timeout=WAIT)

    await page.goto(stack.url + "/app/account")
    await expect(page.locator("#rentals li[data-status=closed]")).to_have_count(1)
    await expect(page.locator("#disputes li")).to_have_count(1)
    await screen("account")
    await page.tap("#get-pass")
    await expect(page.locator("#pass-qr")).to_be_visible(timeout=WAIT)
    assert await page.evaluate("document.getElementById('pass-qr').naturalWidth") > 100
    await screen("pass")

    # a pack not taken at CAB-T2 (its eject waits 2 s)
    await page.goto(stack.url + "/app/c/CAB-T2")
    await page.tap("#rent")
    await expect(page.locator("#phase")).to_have_text(text["not_taken"], timeout=WAIT)
    await expect(page.locator("#released")).to_contain_text("35.00 EUR", timeout=WAIT)
    await screen("rent-not-taken")

    # a card declined
    await stack.http.put("/api/me/card", json={"card_token": "tok_decline"},
                         headers=stack.auth(await page.evaluate("localStorage.getItem('renter.token')")))  # fmt: skip
    await page.goto(stack.url + "/app/c/CAB-T1")
    await page.tap("#rent")
    await expect(page.locator("#declined p")).to_have_text(text["declined"], timeout=WAIT)
    await screen("cabinet-declined")

    # the cabinet goes offline
    await t1.stop()

    async def offline() -> bool:
        return not (await stack.public("CAB-T1"))["online"]

    await until(offline, 30, "the last will to mark CAB-T1 offline", every=0.2)
    await page.goto(stack.url + "/app/c/CAB-T1")
    await expect(page.locator("#online")).to_have_text(text["offline"])
    await expect(page.locator("#rent")).to_be_disabled()
    await screen("cabinet-offline")

    assert found == {}
    assert ph.errors == []
