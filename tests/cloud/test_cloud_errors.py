"""The cloud's errors: one root (``cloud.errors.CloudError``), each class's own status and code.

The HTTP layer answers an error from its class alone; these tests pin the classes' answers
(the JSON error contract of docs/cloud.md and docs/fleet.md), show a new subclass is answered
with no change to ``cloud.app``, check that ``cloud.app`` never reads an error's text to
choose a status, and that docs/cloud.md's "Errors" table is the classes' own.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import logging
import pkgutil
import re
from pathlib import Path

import pytest
from aiohttp import web

import cloud
from cloud.app import _errors
from cloud.errors import INTERNAL_CODE, INTERNAL_STATUS, CloudError, all_error_classes

ROOT = Path(__file__).resolve().parents[2]
BEGIN, END = "<!-- errors:begin (generated: tests/cloud/test_cloud_errors.py) -->", "<!-- errors:end -->"


def _cloud_modules() -> list[object]:
    names = [m.name for m in pkgutil.walk_packages(cloud.__path__, "cloud.") if ".migrations" not in m.name]
    return [importlib.import_module(n) for n in sorted(names)]


def _cloud_exception_classes() -> list[type[BaseException]]:
    found: dict[str, type[BaseException]] = {}
    for mod in _cloud_modules():
        for obj in vars(mod).values():
            if inspect.isclass(obj) and issubclass(obj, BaseException) and obj.__module__ == mod.__name__:
                found[f"{obj.__module__}.{obj.__qualname__}"] = obj
    return [found[k] for k in sorted(found)]


# The answers the API gives today (status, "error" code), from docs/cloud.md, docs/fleet.md and
# the tests of each route. A change here is a change of the documented contract.
CONTRACT = {
    "cloud.users.UserError": (400, "bad_request"),
    "cloud.users.AlreadyRegistered": (409, "already_registered"),
    "cloud.users.LoginFailed": (401, "login_failed"),
    "cloud.users.LoginThrottled": (429, "login_throttled"),
    "cloud.users.SignupThrottled": (429, "signup_throttled"),
    "cloud.users.NotAuthenticated": (401, "not_authenticated"),
    "cloud.disputes.DisputeError": (400, "bad_request"),
    "cloud.disputes.DisputeNotFound": (404, "not_found"),
    "cloud.disputes.DisputeConflict": (409, "conflict"),
    "cloud.disputes.DisputeRefundFailed": (502, "refund_failed"),
    "cloud.rentals.RentalError": (400, "bad_request"),
    "cloud.rentals.RentalNotFound": (404, "not_found"),
    "cloud.rentals.RentalRefused": (402, "rental_refused"),  # the base; any other refusal was a 402
    "cloud.rentals.UnknownCabinet": (404, "unknown_cabinet"),
    "cloud.rentals.UnknownUser": (404, "unknown_user"),
    "cloud.rentals.NoCard": (402, "no_card"),
    "cloud.rentals.OpenRental": (409, "open_rental"),
    "cloud.rentals.CardRefused": (402, "card_declined"),
    "cloud.rentals.InDebt": (402, "debt"),
    "cloud.users.MethodNotFound": (404, "not_found"),
    "cloud.payouts.PayoutError": (400, "bad_request"),
    "cloud.payouts.PayoutNotFound": (404, "not_found"),
    "cloud.payments.stripe_provider.StripeEventIgnored": (400, "webhook_ignored"),
    "cloud.payments.webhooks.NotificationIgnored": (400, "notification_ignored"),
    "cloud.payments.provider.ProviderUnavailable": (503, "provider_unavailable"),
    "cloud.merchants.CatalogError": (400, "bad_request"),
    "cloud.merchants.CatalogNotFound": (404, "not_found"),
    "cloud.settlement.SettlementError": (400, "bad_request"),
    "cloud.settlement.SettlementNotFound": (404, "not_found"),
    "cloud.pricing.TariffError": (400, "bad_request"),
    "cloud.billing.BillingError": (400, "bad_request"),
    "cloud.payments.webhooks.WebhookRejected": (400, "webhook_rejected"),
    "cloud.fleet.commands.CommandRefused": (400, "command_refused"),
    "cloud.fleet.commands.CabinetNotRegistered": (404, "command_refused"),
    "cloud.fleet.http.FleetNotFound": (404, "not_found"),
    "cloud.fleet.http.FleetUnavailable": (503, "no_fleet_link"),
    "cloud.fleet.claims.ClaimNotFound": (404, "not_found"),
    "cloud.fleet.claims.ClaimConflict": (409, "conflict"),
    "cloud.errors.BadRequest": (400, "bad_request"),
    "cloud.errors.NotFound": (404, "not_found"),
    "cloud.errors.Forbidden": (403, "forbidden"),
    "cloud.errors.InvalidBody": (400, "invalid_body"),
    "cloud.errors.BadJson": (400, "bad_json"),
    "cloud.places.PlaceError": (400, "bad_request"),
    "cloud.places.PlaceNotFound": (404, "not_found"),
    "cloud.phone_auth.PhoneError": (400, "bad_request"),
    "cloud.phone_auth.CodeRejected": (401, "code_rejected"),
    "cloud.phone_auth.PhoneTaken": (409, "phone_taken"),
    "cloud.phone_auth.SmsThrottled": (429, "sms_throttled"),
    "cloud.sms.SmsFailed": (503, "sms_unavailable"),
}


def _name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _cloud_error_classes() -> list[type[CloudError]]:
    """The cloud's own CloudError classes (not this file's), by module, each parent before its children."""
    _cloud_modules()
    classes = [c for c in all_error_classes() if c.__module__.startswith("cloud.")]
    return sorted(classes, key=lambda c: c.__module__)  # stable: keeps the depth-first order


def test_every_cloud_exception_is_a_cloud_error_declaring_its_own_status_and_code() -> None:
    classes = _cloud_exception_classes()
    assert len(classes) >= 35
    assert [_name(c) for c in classes if not issubclass(c, CloudError)] == []
    for cls in _cloud_error_classes():
        assert "status" in vars(cls) and "code" in vars(cls), f"{_name(cls)} must declare status and code"
        assert isinstance(cls.status, int) and 400 <= cls.status <= 599, _name(cls)
        assert re.fullmatch(r"[a-z][a-z_]*", cls.code), _name(cls)


def test_each_class_answers_what_the_api_answered_before() -> None:
    answers = {_name(c): (c.status, c.code) for c in _cloud_error_classes()}
    assert {k: answers.get(k) for k in CONTRACT} == CONTRACT
    # everything else is a bug if a request meets it: 500, answered internal_error
    assert {k: s for k, (s, _) in answers.items() if k not in CONTRACT and s != INTERNAL_STATUS} == {}


class Teapot(CloudError):
    """A class no cloud module knows: the middleware must answer it from its class alone."""

    status = 418
    code = "teapot"

    def http_headers(self) -> dict[str, str]:
        return {"X-Brew": "earl grey"}


class Broken(CloudError):
    status = 500
    code = "broken_invariant"


async def _app_raising(aiohttp_client, exc: Exception):  # type: ignore[no-untyped-def]
    async def handler(request: web.Request) -> web.Response:
        raise exc

    app = web.Application(middlewares=[_errors])
    app.router.add_get("/x", handler)
    return await aiohttp_client(app)


async def test_the_middleware_maps_a_new_subclass_by_its_class_without_reading_its_text(
    aiohttp_client,
) -> None:
    # text the old matcher read ("no ...", "unknown cabinet") must not move the status
    client = await _app_raising(aiohttp_client, Teapot("unknown cabinet no-such: no tea"))
    r = await client.get("/x")
    assert r.status == 418
    assert r.headers["X-Brew"] == "earl grey"
    assert await r.json() == {"error": "teapot", "message": "unknown cabinet no-such: no tea"}


async def test_a_500_class_is_logged_and_shows_none_of_its_text(aiohttp_client, caplog) -> None:
    client = await _app_raising(aiohttp_client, Broken("secret ledger detail"))
    with caplog.at_level(logging.ERROR, logger="cloud.app"):
        r = await client.get("/x")
    assert r.status == 500
    body = await r.json()
    assert body == {"error": INTERNAL_CODE, "message": "unexpected error; it was logged"}
    assert any(rec.exc_info and isinstance(rec.exc_info[1], Broken) for rec in caplog.records)


async def test_a_split_class_keeps_its_status_whatever_its_message_says(aiohttp_client) -> None:
    from cloud.fleet.commands import CabinetNotRegistered, CommandRefused
    from cloud.rentals import RentalError, RentalNotFound

    cases = [
        (RentalError("no rental here"), 400, "bad_request"),  # the old matcher said 404
        (RentalNotFound("rental x is gone"), 404, "not_found"),
        (CommandRefused("unknown cabinet c1"), 400, "command_refused"),  # the old matcher said 404
        (CabinetNotRegistered("c1 is not registered"), 404, "command_refused"),
    ]
    for exc, status, code in cases:
        client = await _app_raising(aiohttp_client, exc)
        r = await client.get("/x")
        assert (r.status, (await r.json())["error"]) == (status, code), repr(exc)


# --- cloud/app.py never reads an error's text to choose a status ------------------------------


def _exception_names(tree: ast.AST) -> set[str]:
    """Names bound to an exception: ``except ... as e`` and parameters annotated ``Exception``/``...Error``."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ExceptHandler) and node.name:
            names.add(node.name)
        elif isinstance(node, ast.arg) and node.annotation is not None:
            ann = ast.unparse(node.annotation)
            if re.search(r"(Exception|Error)\b", ann):
                names.add(node.arg)
    return names


def _reads_exception_text(expr: ast.AST, names: set[str]) -> list[str]:
    found = []
    for node in ast.walk(expr):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in ("str", "repr", "format")
            and any(isinstance(a, ast.Name) and a.id in names for a in node.args)
        ):
            found.append(ast.unparse(node))
        elif isinstance(node, ast.Attribute) and node.attr == "args" and isinstance(node.value, ast.Name):
            if node.value.id in names:
                found.append(ast.unparse(node))
        elif (
            isinstance(node, ast.FormattedValue)
            and isinstance(node.value, ast.Name)
            and node.value.id in names
        ):
            found.append(ast.unparse(node))
    return found


def text_decisions(source: str) -> list[str]:
    """Every condition (if, ternary, match guard, while, boolean operand) that reads an error's text."""
    tree = ast.parse(source)
    names = _exception_names(tree)
    conditions: list[ast.AST] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.If | ast.IfExp | ast.While):
            conditions.append(node.test)
        elif isinstance(node, ast.match_case) and node.guard is not None:
            conditions.append(node.guard)
        elif isinstance(node, ast.Match):
            conditions.append(node.subject)
        elif isinstance(node, ast.Subscript):  # a status looked up by the message: TABLE[str(e)]
            conditions.append(node.slice)
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get":
            conditions.extend(node.args[:1])
    return [hit for c in conditions for hit in _reads_exception_text(c, names)]


@pytest.mark.parametrize("path", ["cloud/app.py", "cloud/fleet/http.py"])
def test_the_http_layer_never_reads_an_errors_text_to_choose_a_status(path: str) -> None:
    assert text_decisions((ROOT / path).read_text()) == []


def test_the_text_checker_catches_the_old_matchers() -> None:
    old = """
def _to_api_error(e: Exception):
    match e:
        case RentalError() if str(e).startswith(("no ", "unknown")):
            return 404
        case CommandRefused():
            return 404 if str(e).startswith("unknown cabinet") else 400
    try:
        pass
    except ValueError as err:
        if "unknown" in err.args[0]:
            return 404
        return TABLE[f"{err}"]
"""
    assert sorted(text_decisions(old)) == ["err.args", "str(e)", "str(e)", "{err}"]
    # a message built from the error is fine: it is for people, it decides nothing
    assert text_decisions("try:\n    pass\nexcept ValueError as e:\n    raise BadJson(str(e)[:200])\n") == []


# --- docs/cloud.md's Errors table ------------------------------------------------------------


def errors_table() -> str:
    """The markdown table of every CloudError class (docs/cloud.md, section "Errors")."""
    rows = ["| class | is a | status | `error` |", "|---|---|---|---|"]
    for cls in _cloud_error_classes():
        base = next((b for b in cls.__bases__ if issubclass(b, CloudError)), None)
        code = INTERNAL_CODE if cls.status == INTERNAL_STATUS else cls.code
        note = (
            f" (logged; `{cls.code}` in logs)" if cls.status == INTERNAL_STATUS and cls.code != code else ""
        )
        rows.append(
            f"| `{_name(cls)}` | {f'`{base.__name__}`' if base else ''} | {cls.status} | `{code}`{note} |"
        )
    return "\n".join([BEGIN, *rows, END])


def test_the_docs_errors_table_is_the_classes_own() -> None:
    text = (ROOT / "docs" / "cloud.md").read_text()
    table = errors_table()
    assert table in text, "replace docs/cloud.md's errors table with:\n" + table
