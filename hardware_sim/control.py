"""The simulator's local control API (aiohttp, JSON): act as the user, inject faults, read state.

    GET  /state                      the whole cabinet (slots, packs, boards, faults)
    POST /take     {"slot": 3}       take the presented pack -> {"sn": ...}
    POST /insert   {"slot": 3, "sn": "PB00AB12", "soc": 0.4}   (sn, soc optional) -> {"sn": ...}
    POST /inject   {"kind": "lock_jam", "slot": 3, ...}        -> {"id": 1}
    POST /clear    {"id": 1}
    POST /advance  {"seconds": 600}  run the physics forward now (sim seconds)

Errors come back as HTTP 400 with ``{"error": "slot 3 is empty: nothing to take"}``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from hardware_sim.cabinet import SimActionError, SimCabinet
from hardware_sim.faults import ScenarioError, parse_fault

Handler = Callable[[SimCabinet, dict[str, Any]], Any]
CABINET = web.AppKey("cabinet", SimCabinet)


def _field(body: dict[str, Any], key: str, kind: type, required: bool = True) -> Any:
    if key not in body:
        if required:
            raise SimActionError(f"missing key {key!r}")
        return None
    v = body[key]
    if kind is float and isinstance(v, int) and not isinstance(v, bool):
        v = float(v)
    if isinstance(v, bool) or not isinstance(v, kind):
        raise SimActionError(f"key {key!r} must be {kind.__name__}, not {v!r}")
    return v


def _take(cab: SimCabinet, body: dict[str, Any]) -> dict[str, Any]:
    return {"sn": cab.take(_field(body, "slot", int))}


def _insert(cab: SimCabinet, body: dict[str, Any]) -> dict[str, Any]:
    sn = cab.insert(
        _field(body, "slot", int), _field(body, "sn", str, False), _field(body, "soc", float, False)
    )
    return {"sn": sn}


def _inject(cab: SimCabinet, body: dict[str, Any]) -> dict[str, Any]:
    fault = parse_fault(body, "inject", slots=len(cab.slots), boards=len(cab.boards))
    return {"id": cab.inject(fault)}


def _clear(cab: SimCabinet, body: dict[str, Any]) -> dict[str, Any]:
    return {"cleared": cab.clear(_field(body, "id", int)).to_dict()}


def _advance(cab: SimCabinet, body: dict[str, Any]) -> dict[str, Any]:
    seconds = _field(body, "seconds", float)
    if not 0 <= seconds <= 7 * 86400:
        raise SimActionError(f"seconds must be 0..604800, not {seconds}")
    cab.step(seconds)
    return {"time_s": cab.time}


def _post(handler: Handler) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def route(request: web.Request) -> web.Response:
        cab: SimCabinet = request.app[CABINET]
        try:
            body = await request.json()
        except ValueError:
            return web.json_response({"error": "body must be a JSON object"}, status=400)
        if not isinstance(body, dict):
            return web.json_response({"error": "body must be a JSON object"}, status=400)
        try:
            return web.json_response(handler(cab, body))
        except (SimActionError, ScenarioError) as e:
            return web.json_response({"error": str(e)}, status=400)

    return route


async def _state(request: web.Request) -> web.Response:
    return web.json_response(request.app[CABINET].snapshot())


def make_app(cabinet: SimCabinet) -> web.Application:
    """The control API for ``cabinet``."""
    app = web.Application()
    app[CABINET] = cabinet
    app.router.add_get("/state", _state)
    for name, handler in (
        ("take", _take),
        ("insert", _insert),
        ("inject", _inject),
        ("clear", _clear),
        ("advance", _advance),
    ):
        app.router.add_post(f"/{name}", _post(handler))
    return app
