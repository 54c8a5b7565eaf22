"""Each screen's first load is under 100 kB on the wire, and the installed app opens without network.

First load: a new phone (empty cache, no service worker yet) opens the screen's address; every
response it (and its service worker) received counts, headers included, as compressed on the wire.
"""

from __future__ import annotations

from typing import Any

import pytest
from playwright.async_api import expect

from tests.helpers import until

pytestmark = [pytest.mark.browser, pytest.mark.slow]

LIMIT = 100_000  # bytes
WAIT = 30_000


async def first_load(phone: Any, url: str, token: str | None, ready: str) -> tuple[int, list[str]]:
    """Bytes on the wire to open ``url`` on a new phone until ``ready`` is visible and the network is idle."""
    ph = await phone()
    if token:
        await ph.context.add_init_script(f"localStorage.setItem('renter.token', {token!r})")
    sizes: list[tuple[str, int]] = []

    async def count(request: Any) -> None:
        s = await request.sizes()
        sizes.append((request.url, s["responseBodySize"] + s["responseHeadersSize"]))

    ph.context.on("requestfinished", count)
    await ph.page.goto(url)
    await expect(ph.page.locator(ready).first).to_be_visible(timeout=WAIT)
    await ph.page.wait_for_load_state("networkidle")
    await ph.page.wait_for_timeout(300)  # the last requestfinished handlers
    await ph.context.close()
    return sum(n for _, n in sizes), [u for u, _ in sizes]


async def test_every_screen_loads_under_100_kB(make_stack, phone) -> None:
    stack = await make_stack()
    await stack.ready("CAB-T1", 3)
    await stack.ready("CAB-T2", 3)
    _, token = await stack.renter()
    r = await stack.http.post("/api/rentals", json={"cabinet_id": "CAB-T1"}, headers=stack.auth(token))
    rental_id = (await r.json())["rental_id"]
    t1, t2 = stack.sites["CAB-T1"], stack.sites["CAB-T2"]
    await until(lambda: t1.simcab.slot(1).presented, 20, "CAB-T1 to present a pack")
    t1.simcab.take(1)
    await until(lambda: stack.rental(rental_id), 5, "the rental")

    async def active() -> bool:
        return (await stack.rental(rental_id))["status"] == "active"

    await until(active, 20, "the rental to start")
    screens = {
        "home": ("/app/", None, "#to-nearby"),
        "nearby": ("/app/nearby", None, ".cab-marker"),
        "cabinet": ("/app/c/CAB-T1", None, "#packs"),
        "signin": ("/app/signin", None, "#phone"),
        "pay": ("/app/pay?c=CAB-T1", token, "#save-card"),
        "rental (running, with the map)": (f"/app/r/{rental_id}", token, ".cab-marker"),
        "account": ("/app/account", token, "#get-pass"),
    }
    weights: dict[str, int] = {}
    for name, (path, tok, ready) in screens.items():
        weights[name], urls = await first_load(phone, stack.url + path, tok, ready)
        assert any("/app/s/" in u for u in urls), urls  # the count did see the app's files

    t2.simcab.insert(5, sn="PB000001")

    async def closed() -> bool:
        return (await stack.rental(rental_id))["status"] == "closed"

    await until(closed, 30, "the return to close the rental")
    weights["receipt"], _ = await first_load(phone, f"{stack.url}/app/r/{rental_id}", token, "#receipt-fee")
    weights["dispute"], _ = await first_load(
        phone, f"{stack.url}/app/r/{rental_id}/dispute", token, "#reason"
    )
    made = await (await stack.http.post("/api/me/passes", json={}, headers=stack.auth(token))).json()
    weights["pass"], _ = await first_load(phone, f"{stack.url}/app/pass/{made['pass_id']}", token, "#pass-qr")
    print("first load, bytes:", weights)
    assert {k: v for k, v in weights.items() if v >= LIMIT} == {}
    assert all(v > 10_000 for v in weights.values()), weights  # a count of nothing proves nothing


async def test_the_installed_app_opens_offline_and_never_keeps_api_answers(make_stack, phone) -> None:
    stack = await make_stack()
    await stack.ready("CAB-T1", 3)
    _, token = await stack.renter()
    ph = await phone()
    page = ph.page
    await ph.sign_in(stack.url, token)
    await page.goto(stack.url + "/app/account")
    await expect(page.locator("#get-pass")).to_be_visible(timeout=WAIT)
    await page.evaluate("navigator.serviceWorker.ready.then(() => true)")
    await page.goto(stack.url + "/app/c/CAB-T1")  # now under the service worker
    await expect(page.locator("#packs")).to_have_text("3 packs ready now", timeout=WAIT)
    await page.evaluate("navigator.serviceWorker.controller !== null")

    await ph.context.set_offline(True)
    await page.goto(stack.url + "/app/account")  # the shell comes from the service worker's cache
    await expect(page.locator("#offline")).to_be_visible()
    await expect(page.locator("#offline")).to_have_text(
        "You are offline. Renting and your account need the network."
    )
    await expect(page.locator("main .error")).to_contain_text("No connection. Try again.")
    kept = await page.evaluate(
        """async () => { const out = [];
             for (const name of await caches.keys()) {
               const cache = await caches.open(name);
               for (const req of await cache.keys()) out.push(new URL(req.url).pathname);
             }
             return out; }"""
    )
    assert "/app/" in kept and any(p.endswith("/app.js") for p in kept), kept
    assert [p for p in kept if p.startswith("/api/")] == []  # money, tokens and passes are never kept
    await ph.context.set_offline(False)
    await page.tap("main .error button")
    await expect(page.locator("#get-pass")).to_be_visible(timeout=WAIT)


async def test_without_leaflet_the_list_of_cabinets_still_works(make_stack, phone) -> None:
    stack = await make_stack()
    await stack.ready("CAB-T2", 3)
    ph = await phone(service_workers="block")
    await ph.page.route("**/vendor/leaflet/leaflet.js", lambda route: route.abort())
    await ph.page.goto(stack.url + "/app/nearby")
    await expect(ph.page.locator("#map-missing")).to_have_text(
        "The map is not available; the list shows every cabinet.", timeout=WAIT
    )
    await expect(ph.page.locator("#nearby-list li[data-cabinet=CAB-T2]")).to_contain_text("3 ready")
    await expect(ph.page.locator("#nearby-list li")).to_have_count(2)
    await ph.page.tap("#nearby-list li[data-cabinet=CAB-T2] a")
    await expect(ph.page.locator("h1")).to_have_text("Cafe Aurora Ost")
