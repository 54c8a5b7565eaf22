"""HTTP handlers of the fleet: the operator's view and commands, and the renter's offline passes.

Mixed into ``cloud.app``'s handler class (routes declared in ``cloud.api_schema``); errors are
raised as ``cloud.errors.CloudError`` subclasses (the two below, ``CommandRefused``, the claims')
and answered by ``cloud.app`` from their class's ``status`` and ``code``.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiohttp import web

from cloud.errors import CloudError
from cloud.fleet import claims, view
from cloud.fleet.commands import CommandRefused
from cloud.params import decimal


class FleetNotFound(CloudError, LookupError):
    """No such cabinet, command, alert or pass (the message says which)."""

    status = 404
    code = "not_found"


class FleetUnavailable(CloudError, RuntimeError):
    """This cloud process has no MQTT link to the fleet (``broker_host`` is not set)."""

    status = 503
    code = "no_fleet_link"


def _json(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, dumps=lambda d: json.dumps(d, default=str))


def _int_query(request: web.Request, name: str, default: int, lo: int, hi: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    value = decimal(raw, lo, hi)
    if value is None:
        raise CommandRefused(f"query parameter {name}={raw[:40]!r} must be an integer in {lo}..{hi}")
    return value


class FleetHandlers:
    """Route handlers; ``self.ctx`` is the ``CloudContext``."""

    ctx: Any

    def _fleet(self) -> Any:
        if self.ctx.fleet is None:
            raise FleetUnavailable("this cloud process has no MQTT link to the fleet (set cloud.broker_host)")
        return self.ctx.fleet

    # --- operator ------------------------------------------------------------------------

    async def fleet_cabinets(self, request: web.Request, user: Any, body: None) -> web.Response:
        return _json(await asyncio.to_thread(view.list_cabinets, self.ctx.engine, self.ctx.clock()))

    async def fleet_cabinet(self, request: web.Request, user: Any, body: None) -> web.Response:
        cab = request.match_info["cabinet_id"]
        found = await asyncio.to_thread(view.cabinet_detail, self.ctx.engine, cab, self.ctx.clock())
        if found is None:
            raise FleetNotFound(f"no cabinet {cab}")
        return _json(found)

    async def fleet_events(self, request: web.Request, user: Any, body: None) -> web.Response:
        cab = request.match_info["cabinet_id"]
        after = _int_query(request, "after", 0, 0, 2**62)
        limit = _int_query(request, "limit", 500, 1, 5000)
        rows = await asyncio.to_thread(
            view.events, self.ctx.engine, cab, after, limit, request.query.get("type")
        )
        return _json(rows)

    async def fleet_alerts(self, request: web.Request, user: Any, body: None) -> web.Response:
        q = request.query
        open_only = q.get("all") not in ("1", "true")
        state = q.get("state")
        if state not in (None, "open", "cleared", "all"):
            raise CommandRefused(f"query parameter state={state!r} must be open, cleared or all")
        acked = q.get("acknowledged")
        if acked not in (None, "true", "false", "all"):
            raise CommandRefused(f"query parameter acknowledged={acked!r} must be true, false or all")
        if state == "all" or acked == "all":
            open_only = False
        rows = await asyncio.to_thread(
            lambda: view.alerts(
                self.ctx.engine,
                q.get("cabinet"),
                open_only,
                _int_query(request, "limit", 200, 1, 5000),
                state=None if state == "all" else state,
                acknowledged=None if acked in (None, "all") else acked == "true",
                kind=q.get("kind"),
            )
        )
        return _json(rows)

    async def fleet_ack_alert(self, request: web.Request, user: Any, body: None) -> web.Response:
        raw = request.match_info["alert_id"]
        if decimal(raw) is None:
            raise FleetNotFound(f"no alert {raw[:40]!r}")
        if not await asyncio.to_thread(view.acknowledge_alert, self.ctx.engine, int(raw), self.ctx.clock()):
            raise FleetNotFound(f"no open alert {raw}")
        return _json({"id": int(raw), "acknowledged": True})

    # --- cabinet claims the cloud did not believe (issue 11.2, cloud/fleet/claims.py) -------

    async def list_claims(self, request: web.Request, user: Any, body: None) -> web.Response:
        status = request.query.get("status", "open")
        if status not in ("pending", "open", "resolving", "accepted", "rejected", "all"):
            raise CommandRefused(f"query parameter status={status!r} is not a claim status")
        rows = await asyncio.to_thread(
            claims.list_claims, self.ctx.engine, status, request.query.get("cabinet")
        )
        return _json(rows)

    async def resolve_claim(self, request: web.Request, user: Any, body: dict) -> web.Response:
        raw = request.match_info["claim_id"]
        if decimal(raw) is None:
            raise FleetNotFound(f"no claim {raw!r}")
        # ClaimNotFound (404 not_found) and ClaimConflict (409 conflict) answer by their class
        done = await asyncio.to_thread(
            claims.resolve, self.ctx.engine, self.ctx.rentals, int(raw), body["action"],
            body["reason"], user.id, self.ctx.clock(),
        )  # fmt: skip
        await asyncio.to_thread(
            self.ctx.audit, user.id, "resolve_claim", f"claim:{raw}",
            {"action": body["action"], "reason": body["reason"], "cabinet": done["cabinet"],
             "type": done["type"], "event_id": done["event_id"]},
        )  # fmt: skip
        return _json(done)

    async def fleet_send_command(self, request: web.Request, user: Any, body: dict) -> web.Response:
        cab = request.match_info["cabinet_id"]
        cmd = await self._fleet().send_command(cab, body["kind"], body.get("args") or {}, body.get("ttl_s"))
        await asyncio.to_thread(
            self.ctx.audit, user.id, "send_command", cab, {"cmd_id": cmd.cmd_id, "kind": cmd.kind}
        )
        return _json(await asyncio.to_thread(view.command, self.ctx.engine, cmd.cmd_id), 202)

    async def fleet_command(self, request: web.Request, user: Any, body: None) -> web.Response:
        found = await asyncio.to_thread(view.command, self.ctx.engine, request.match_info["cmd_id"])
        if found is None:
            raise FleetNotFound(f"no command {request.match_info['cmd_id']}")
        return _json(found)

    async def fleet_config(self, request: web.Request, user: Any, body: dict) -> web.Response:
        cab = request.match_info["cabinet_id"]
        settings = {
            k: body[k] for k in ("rentable_min_soc", "power_budget_w", "battery_deny_list") if k in body
        }
        if settings:
            await asyncio.to_thread(self.ctx.signatures.set_settings, cab, **settings)
        failed: dict[str, str] = {}
        if cab == "*":  # one bad cabinet must not stop the fleet's configs (issue 11.6): it is
            # logged, alerted (config_publish_failed) and listed in "failed"; the rest go out
            cabinets = [c["id"] for c in await asyncio.to_thread(view.list_cabinets, self.ctx.engine, 0.0)]
            configs, failed = await self._fleet().publish_configs(cabinets)
        else:
            configs = [await self._fleet().publish_config(cab)]
        published = [
            {"cabinet": c.cabinet, "counter": c.counter, "expires_at": c.expires_at} for c in configs
        ]
        await asyncio.to_thread(self.ctx.audit, user.id, "publish_config", cab, settings)
        result: dict[str, Any] = {"settings": settings, "published": published}
        if failed:
            result["failed"] = [{"cabinet": c, "error": e} for c, e in failed.items()]
        return _json(result)

    # --- renter --------------------------------------------------------------------------

    async def create_pass(self, request: web.Request, user: Any, body: dict) -> web.Response:
        ttl = min(int(body.get("ttl_s") or self.ctx.config.pass_ttl_s), self.ctx.config.pass_ttl_s)
        p, text = await asyncio.to_thread(
            self.ctx.signatures.issue_pass,
            user.id,
            ttl,
            int(body.get("max_rentals") or 1),
            body.get("currency"),
        )
        return _json(_pass_json(p, text), 201)

    async def get_pass(self, request: web.Request, user: Any, body: None) -> web.Response:
        try:
            p, text = await asyncio.to_thread(
                self.ctx.signatures.pass_text, user.id, request.match_info["pass_id"]
            )
        except LookupError as e:
            raise FleetNotFound(str(e)) from e
        return _json(_pass_json(p, text))


def _pass_json(p: Any, text: str) -> dict[str, Any]:
    return {
        "pass_id": p.pass_id,
        "issued_at": p.issued_at,
        "expires_at": p.expires_at,
        "max_rentals": p.max_rentals,
        "qr_text": text,
    }
