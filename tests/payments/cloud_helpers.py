"""What the cloud-level provider tests share: accounts, a merchant with one cabinet, polling."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from cloud.app import CTX

PW = "correct horse battery"


async def login(client: Any, email: str, operator: bool = False) -> dict[str, str]:
    """Register ``email`` (a renter through the API, an operator directly) and log in."""
    ctx = client.server.app[CTX]
    if operator:
        ctx.accounts.register(email, PW, role="operator")
    else:
        r = await client.post(
            "/api/users", json={"email": email, "password": PW, "name": email.split("@")[0]}
        )
        assert r.status == 201, await r.text()
    r = await client.post("/api/login", json={"email": email, "password": PW})
    return {"Authorization": f"Bearer {(await r.json())['token']}"}


async def merchant_with_cabinet(
    client: Any,
    ops: dict[str, str],
    currency: str,
    timezone: str,
    tariff: dict[str, Any],
    providers: list[str],
    payout_account: str | None = None,
) -> int:
    """A merchant accepting ``providers``, one venue, a default tariff and cabinet CAB-1; its id."""
    r = await client.post("/api/merchants", headers=ops, json={
        "name": "Cafe", "revenue_share_bp": 2500, "currency": currency, "timezone": timezone})  # fmt: skip
    mid = int((await r.json())["id"])
    r = await client.put(f"/api/merchants/{mid}/payments", headers=ops,
                         json={"providers": providers, "payout_account": payout_account})  # fmt: skip
    assert r.status == 200, await r.text()
    vid = (
        await (await client.post(f"/api/merchants/{mid}/venues", headers=ops, json={"name": "Hall"})).json()
    )["id"]
    r = await client.post(
        "/api/tariffs",
        headers=ops,
        json={"name": "std", "merchant_id": mid, "default": True, "tariff": tariff},
    )
    assert r.status == 201, await r.text()
    assert (
        await client.post("/api/cabinets", headers=ops, json={"id": "CAB-1", "venue_id": vid})
    ).status == 201
    return mid


async def until(pred: Callable[[], Any], what: str, timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not pred():
        assert loop.time() < end, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)
