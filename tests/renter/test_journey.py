"""The renter's whole journey in the app, on a phone, against the real stack: the kiosk's QR code
opens the cabinet's page, sign up, add the card, rent, take the pack in the simulator, return it at
the OTHER cabinet, see the receipt. Then the failure paths: a card declined, no pack ready, a
cabinet going offline mid-rental, a pack not taken.
"""

from __future__ import annotations

import re

import pytest
from playwright.async_api import expect

from tests.helpers import until
from tests.renter.conftest import PASSWORD

pytestmark = [pytest.mark.browser, pytest.mark.slow]

WAIT = 30_000  # ms: the cabinet, the broker and the cloud between a tap and its answer


async def test_scan_sign_up_card_rent_take_return_at_the_other_cabinet_receipt(make_stack, phone) -> None:
    stack = await make_stack()
    await stack.ready("CAB-T1", 3)  # PB000003 is at 50 %: not rentable
    await stack.ready("CAB-T2", 3)
    ph = await phone()
    page = ph.page

    await page.goto(stack.url + "/app/c/CAB-T1")  # what the kiosk's QR code opens
    await expect(page.locator("h1")).to_have_text("Cafe Aurora Mitte")
    await expect(page.locator("#packs")).to_have_text("3 packs ready now")
    await expect(page.locator("#tariff")).to_contain_text("2.50 EUR per 60 min")
    await expect(page.locator("#hold")).to_have_text("35.00 EUR held, released when you return")

    await page.tap("#rent")  # not signed in yet
    await expect(page).to_have_url(re.compile(r"/app/signin\?next="))
    await page.tap("#tab-email")
    await page.fill("#email", "ana@example.com")
    await page.fill("#password", PASSWORD)
    await page.tap("#signup")
    await expect(page).to_have_url(stack.url + "/app/c/CAB-T1")

    await page.tap("#rent")  # no card yet
    await expect(page).to_have_url(re.compile(r"/app/pay\?"))
    await expect(page.locator("#hold")).to_have_text("35.00 EUR held, released when you return")
    await expect(page.locator("#card-status")).to_have_text("No card on file yet.")
    await page.check("#card-tok_ok")
    await page.tap("#save-card")
    await expect(page).to_have_url(stack.url + "/app/c/CAB-T1")

    await page.tap("#rent")
    await expect(page).to_have_url(re.compile(r"/app/r/[0-9a-f-]{36}$"))
    rental_id = page.url.rsplit("/", 1)[1]
    await expect(page.locator("#phase")).to_have_text("A pack is coming out now", timeout=WAIT)
    t1, t2 = stack.sites["CAB-T1"], stack.sites["CAB-T2"]
    await until(lambda: t1.simcab.slot(1).presented, 20, "CAB-T1 to present its fullest pack")
    assert t1.simcab.take(1) == "PB000001"

    await expect(page.locator("#phase")).to_have_text("Rental running", timeout=WAIT)
    await expect(page.locator("#taken")).to_have_text("You took the pack from slot 1.")
    await expect(page.locator("#fee")).to_have_text("2.50 EUR")  # the first hour starts at once
    await expect(page.locator("#battery")).to_have_text("PB000001")
    await expect(page.locator("#rented-at")).to_have_text("Cafe Aurora Mitte")
    first = await page.locator("#elapsed").text_content()
    await expect(page.locator("#elapsed")).not_to_have_text(first or "")  # the clock runs on the phone
    other = page.locator("#nearby-list li[data-cabinet=CAB-T2]")
    await expect(other).to_contain_text("Cafe Aurora Ost")
    await expect(other).to_contain_text("5 free")
    await expect(page.locator(".cab-marker[data-cabinet=CAB-T2]")).to_have_count(1)  # no tiles, markers

    t2.simcab.insert(5, sn="PB000001")  # returned at the OTHER cabinet
    await expect(page.locator("#phase")).to_have_text("Thank you! The pack is returned.", timeout=WAIT)
    await expect(page.locator("#receipt-to")).to_have_text("Cafe Aurora Ost")
    await expect(page.locator("#receipt-fee")).to_have_text("2.50 EUR")
    await expect(page.locator("#receipt-captured")).to_have_text("2.50 EUR")
    await expect(page.locator("#released")).to_have_text("32.50 EUR", timeout=WAIT)

    rental = await stack.rental(rental_id)
    assert (rental["status"], rental["end_cabinet_id"], rental["fee"], rental["captured"]) == (
        "closed", "CAB-T2", 250, 250,
    )  # fmt: skip
    assert ph.errors == []  # no script error, no CSP violation

    await page.tap("#lang")  # the renter's own choice of language, kept for the next visit
    await expect(page.locator("#phase")).to_have_text("谢谢！充电宝已归还。")
    await page.reload()
    await expect(page.locator("#receipt-fee")).to_have_text("2.50 EUR")
    await expect(page.locator("#phase")).to_have_text("谢谢！充电宝已归还。")
    assert await page.evaluate("document.documentElement.lang") == "zh-CN"


async def test_a_declined_card_is_said_and_another_card_rents(make_stack, phone) -> None:
    stack = await make_stack()
    await stack.ready("CAB-T1", 3)
    _, token = await stack.renter(card="tok_decline")
    ph = await phone()
    page = ph.page
    await ph.sign_in(stack.url, token)
    await page.goto(stack.url + "/app/c/CAB-T1")
    await page.tap("#rent")
    await expect(page.locator("#declined p")).to_have_text("Your card was declined.", timeout=WAIT)
    mine = await (await stack.http.get("/api/me/rentals", headers=stack.auth(token))).json()
    assert [(r["status"], r["payment_status"]) for r in mine] == [("aborted", "none")]
    assert not stack.sites["CAB-T1"].simcab.slot(1).presented  # no eject without a hold

    await page.tap("#change-card")
    await expect(page).to_have_url(re.compile(r"/app/pay\?"))
    await page.check("#card-tok_ok")
    await page.tap("#save-card")
    await expect(page).to_have_url(stack.url + "/app/c/CAB-T1")
    await page.tap("#rent")
    await expect(page.locator("#phase")).to_have_text("A pack is coming out now", timeout=WAIT)
    assert ph.errors == []


async def test_no_pack_ready_disables_rent_points_elsewhere_and_a_refused_eject_is_explained(
    make_stack, phone
) -> None:
    low = ((1, "PB000001", 0.40), (2, "PB000002", 0.30))  # below the 80 % a pack needs to be rented
    stack = await make_stack(t1_packs=low)
    await stack.ready("CAB-T1", 0)
    await stack.ready("CAB-T2", 3)
    _, token = await stack.renter()
    ph = await phone()
    page = ph.page
    await ph.sign_in(stack.url, token)
    await page.goto(stack.url + "/app/c/CAB-T1")
    await expect(page.locator("#packs")).to_have_text("No pack is ready here right now.")
    await expect(page.locator("#rent")).to_be_disabled()
    elsewhere = page.locator("#nearby-list li[data-cabinet=CAB-T2]")
    await expect(elsewhere).to_contain_text("3 ready", timeout=WAIT)

    # the fleet view can be a moment behind the cabinet: the cabinet itself then refuses the eject
    r = await stack.http.post("/api/rentals", json={"cabinet_id": "CAB-T1"}, headers=stack.auth(token))
    assert r.status == 201, await r.text()
    rental_id = (await r.json())["rental_id"]
    await page.goto(f"{stack.url}/app/r/{rental_id}")
    await expect(page.locator("#phase")).to_have_text("No pack could be handed out", timeout=WAIT)
    await expect(page.locator("#released")).to_have_text("Hold released: 35.00 EUR", timeout=WAIT)
    rental = await stack.rental(rental_id)
    assert (rental["status"], rental["abort_reason"], rental["hold_status"]) == (
        "aborted", "no_rentable_battery", "voided",
    )  # fmt: skip
    assert ph.errors == []


async def test_the_cabinet_going_offline_mid_rental_shows_and_the_return_elsewhere_closes_it(
    make_stack, phone
) -> None:
    stack = await make_stack()
    await stack.ready("CAB-T1", 3)
    await stack.ready("CAB-T2", 3)
    _, token = await stack.renter()
    ph = await phone()
    page = ph.page
    await ph.sign_in(stack.url, token)
    await page.goto(stack.url + "/app/c/CAB-T1")
    await page.tap("#rent")
    t1, t2 = stack.sites["CAB-T1"], stack.sites["CAB-T2"]
    await until(lambda: t1.simcab.slot(1).presented, 20, "CAB-T1 to present a pack")
    t1.simcab.take(1)
    await expect(page.locator("#phase")).to_have_text("Rental running", timeout=WAIT)
    start = page.locator("#nearby-list li[data-cabinet=CAB-T1]")
    await expect(start).to_have_attribute("data-online", "true")

    await t1.stop()  # power cut at the cabinet the pack came from: the broker sends its last will
    await expect(start).to_have_attribute("data-online", "false", timeout=WAIT)  # the list refreshes
    await expect(start).to_contain_text("Offline")
    await expect(page.locator(".cab-marker[data-cabinet=CAB-T1][data-online=false]")).to_have_count(1)
    await expect(page.locator("#phase")).to_have_text("Rental running")  # nothing changes for the renter

    t2.simcab.insert(4, sn="PB000001")
    await expect(page.locator("#phase")).to_have_text("Thank you! The pack is returned.", timeout=WAIT)
    await expect(page.locator("#receipt-to")).to_have_text("Cafe Aurora Ost")
    await expect(page.locator("#released")).to_have_text("32.50 EUR", timeout=WAIT)
    assert ph.errors == []


async def test_a_pack_not_taken_is_said_with_its_slot_and_the_hold_is_released(make_stack, phone) -> None:
    stack = await make_stack(t1={"rent": {"eject_timeout_s": 2.0}})
    await stack.ready("CAB-T1", 3)
    _, token = await stack.renter()
    ph = await phone()
    page = ph.page
    await ph.sign_in(stack.url, token)
    await page.goto(stack.url + "/app/c/CAB-T1")
    await page.tap("#rent")
    await expect(page.locator("#phase")).to_have_text("A pack is coming out now", timeout=WAIT)
    await expect(page.locator("#nothing-out")).to_contain_text("Do not pull on the slots.")
    # nobody takes it: the cabinet pulls it back after its eject timeout
    await expect(page.locator("#phase")).to_have_text("The pack was not taken", timeout=WAIT)
    await expect(page.locator("#abort-text")).to_contain_text("Slot 1 opened")
    await expect(page.locator("#released")).to_have_text("Hold released: 35.00 EUR", timeout=WAIT)
    rental_id = page.url.rsplit("/", 1)[1]
    rental = await stack.rental(rental_id)
    assert (rental["status"], rental["abort_reason"], rental["hold_status"]) == (
        "aborted",
        "not_taken",
        "voided",
    )
    await page.tap("#retry")
    await expect(page).to_have_url(stack.url + "/app/c/CAB-T1")
    assert ph.errors == []
