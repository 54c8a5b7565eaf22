"""The account screen's own actions in the browser: sign out, and delete the account."""

from __future__ import annotations

import pytest
from playwright.async_api import expect

pytestmark = [pytest.mark.browser, pytest.mark.slow]


async def test_sign_out_then_delete_the_account(make_stack, phone) -> None:
    stack = await make_stack()
    email, token = await stack.renter()
    ph = await phone()
    page = ph.page
    await ph.sign_in(stack.url, token)
    await page.goto(stack.url + "/app/account")
    await expect(page.locator("#who")).to_have_text(f"Signed in as {email}")
    await expect(page.locator("#rentals li")).to_have_text("No rentals yet.")
    await page.tap("#signout")
    await expect(page).to_have_url(stack.url + "/app/")
    assert await page.evaluate("localStorage.getItem('renter.token')") is None
    assert (await stack.http.get("/api/me", headers=stack.auth(token))).status == 401  # the session is gone

    _, token = await stack.renter()
    await ph.sign_in(stack.url, token)
    await page.goto(stack.url + "/app/account")
    await page.tap("#delete")
    await expect(page.locator("#delete-confirm")).to_be_visible()
    assert (await stack.http.get("/api/me", headers=stack.auth(token))).status == 200  # asked, not done yet
    await page.tap("#delete-yes")
    await expect(page.locator("h1")).to_have_text("Your account was deleted.")
    assert (await stack.http.get("/api/me", headers=stack.auth(token))).status == 401
    await page.goto(stack.url + "/app/account")  # signed out: the account screen asks to sign in
    await expect(page).to_have_url(stack.url + "/app/signin?next=%2Fapp%2Faccount")
    assert ph.errors == []
