"""Several providers at once (issue 14): the merchant's choice, pending holds the renter confirms,
provider notifications applied once, debts retried with backoff, chargebacks in the books.

The provider here is an in-memory stand-in that behaves like the real ones at the interface
(a hold the renter confirms later, notifications as ``ProviderEvent``); each real provider's own
contract tests run its SDK against its local fake (tests/payments/).
"""

from __future__ import annotations

import itertools

import pytest
from sqlalchemy import insert, select, update

from cloud import money
from cloud.db import merchants, payment_methods, payments, rentals
from cloud.payments import Capture, Declined, Hold, Payout, ProviderEvent, Refund, StatementLine, Void
from cloud.payouts import PayoutError, pay_merchant
from cloud.provider_events import apply_provider_event
from cloud.reconcile import reconcile
from cloud.rentals import CardRefused, InDebt, RentalService


class PendingPay:
    """Holds the renter must confirm (like a WeChat Pay Score order); ``fail_capture`` declines."""

    name = "pendingpay"

    def __init__(self) -> None:
        self.ids = itertools.count(1)
        self.holds: dict[str, dict] = {}
        self.by_key: dict[str, object] = {}
        self.fail_capture = False
        self.calls: list[str] = []

    def _once(self, key: str, make):  # type: ignore[no-untyped-def]
        if key not in self.by_key:
            self.by_key[key] = make()
        return self.by_key[key]

    def authorize(self, card_token: str, amount: int, currency: str, idempotency_key: str) -> Hold:
        self.calls.append(f"authorize {card_token}")
        if card_token == "openid-decline":
            raise Declined("score too low", "user_not_enough_score")

        def make() -> Hold:
            ref = f"order-{next(self.ids)}"
            self.holds[ref] = {"amount": amount, "state": "pending"}
            return Hold(ref, amount, currency, 1e12, "pending", {"package": f"pkg-{ref}"})

        return self._once(idempotency_key, make)  # type: ignore[no-any-return]

    def capture(self, hold_ref: str, amount: int, idempotency_key: str) -> Capture:
        self.calls.append(f"capture {hold_ref} {amount}")
        if self.fail_capture:
            raise Declined("balance too low", "insufficient_funds")

        def make() -> Capture:
            self.holds[hold_ref]["state"] = "captured"
            return Capture(hold_ref, f"pay-{hold_ref}", amount, self.holds[hold_ref]["amount"] - amount)

        return self._once(idempotency_key, make)  # type: ignore[no-any-return]

    def void(self, hold_ref: str, idempotency_key: str) -> Void:
        self.calls.append(f"void {hold_ref}")

        def make() -> Void:
            self.holds[hold_ref]["state"] = "voided"
            return Void(hold_ref, self.holds[hold_ref]["amount"])

        return self._once(idempotency_key, make)  # type: ignore[no-any-return]

    def refund(self, hold_ref: str, amount: int, idempotency_key: str) -> Refund:
        return self._once(idempotency_key, lambda: Refund(hold_ref, f"rf-{hold_ref}", amount, amount))  # type: ignore[no-any-return]

    def payout(self, destination, amount, currency, hold_ref, idempotency_key):  # type: ignore[no-untyped-def]
        self.calls.append(f"payout {destination} {amount}")
        return self._once(
            idempotency_key, lambda: Payout(f"po-{next(self.ids)}", destination, amount, currency, "paid")
        )


@pytest.fixture
def rails(world):  # type: ignore[no-untyped-def]
    pay = PendingPay()
    service = RentalService(
        world.engine,
        {"sandbox": world.sandbox, "pendingpay": pay},
        world.clock,
        eject_timeout_s=120,
        confirm_timeout_s=300,
        debt_retry_s=600,
        default_provider="sandbox",
    )
    with world.engine.begin() as conn:
        conn.execute(
            update(merchants)
            .where(merchants.c.id == world.merchant.id)
            .values(providers="pendingpay,sandbox")
        )
    return world, service, pay


def add_method(world, user_id: int, provider: str, token: str) -> None:  # type: ignore[no-untyped-def]
    with world.engine.begin() as conn:
        conn.execute(
            insert(payment_methods).values(
                user_id=user_id, provider=provider, token=token, label=provider, created_at=world.clock()
            )
        )


def event(kind: str, hold_ref: str, event_id: str = "ev-1", **data) -> ProviderEvent:  # type: ignore[no-untyped-def]
    return ProviderEvent(event_id, kind, hold_ref, data.pop("amount", None), "EUR", kind, data)


def test_the_merchants_preferred_provider_is_used_and_the_eject_waits_for_the_confirmation(rails) -> None:
    world, service, _ = rails
    user = world.renter()  # a sandbox card too: the merchant prefers pendingpay
    add_method(world, user, "pendingpay", "openid-1")
    start = service.start_app_rental(user, "CAB-A")
    assert start.command is None and start.provider == "pendingpay"
    assert start.client_action == {"package": "pkg-order-1"}
    r = service.rental(start.rental_id)
    assert (r["provider"], r["hold_status"], r["status"]) == ("pendingpay", "pending", "pending")

    first = apply_provider_event(
        world.engine, service, "pendingpay", event("hold.confirmed", "order-1"), world.clock
    )
    assert first.command is not None and first.command.args["rental_id"] == start.rental_id
    again = apply_provider_event(
        world.engine, service, "pendingpay", event("hold.confirmed", "order-1"), world.clock
    )
    assert again.duplicate and again.command is None  # a second delivery queues nothing
    other_id = apply_provider_event(
        world.engine, service, "pendingpay", event("hold.confirmed", "order-1", "ev-2"), world.clock
    )
    assert other_id.command is None  # the same confirmation under another id: already held
    assert service.rental(start.rental_id)["hold_status"] == "held"
    assert money.check(world.engine) == []
    with world.engine.connect() as conn:
        assert conn.execute(
            select(payments.c.provider).where(payments.c.rental_id == start.rental_id)
        ).scalars().all() == ["pendingpay"]


def test_a_hold_the_renter_never_confirms_is_cancelled_and_the_rental_aborted(rails) -> None:
    world, service, pay = rails
    user = world.renter(card=None)
    add_method(world, user, "pendingpay", "openid-2")
    start = service.start_app_rental(user, "CAB-A")
    world.clock.advance(299)
    service.sweep()
    assert service.rental(start.rental_id)["status"] == "pending"  # still waiting
    world.clock.advance(2)
    report = service.sweep()
    r = service.rental(start.rental_id)
    assert start.rental_id in report.timed_out
    assert (r["status"], r["hold_status"]) == ("aborted", "voided") and "not confirmed" in r["abort_reason"]
    assert pay.calls[-1] == "void order-1"
    late = apply_provider_event(
        world.engine, service, "pendingpay", event("hold.confirmed", "order-1"), world.clock
    )
    assert late.command is None  # a confirmation after giving up ejects nothing
    assert money.check(world.engine) == []


def test_a_merchant_that_accepts_only_one_provider_refuses_the_other_method(rails) -> None:
    world, service, _ = rails
    with world.engine.begin() as conn:
        conn.execute(
            update(merchants).where(merchants.c.id == world.merchant.id).values(providers="pendingpay")
        )
    user = world.renter()  # only a sandbox card
    with pytest.raises(CardRefused) as e:
        service.start_app_rental(user, "CAB-A")
    assert e.value.code == "no_method"


def test_a_fee_that_cannot_be_collected_is_retried_with_backoff_and_blocks_new_rentals(rails) -> None:
    world, service, pay = rails
    user = world.renter(card=None)
    add_method(world, user, "pendingpay", "openid-3")
    start = service.start_app_rental(user, "CAB-A")
    apply_provider_event(world.engine, service, "pendingpay", event("hold.confirmed", "order-1"), world.clock)
    service.on_rental_started("CAB-A", world.event("CAB-A", "rental_started", rental_id=start.rental_id, mono=100.0,
                                                   boot="a1", slot=1, sn="PB000001", source="cloud"))  # fmt: skip
    world.clock.advance(3 * 3600)
    pay.fail_capture = True
    service.on_battery_returned("CAB-B", world.event("CAB-B", "battery_returned", rental_id=None, mono=7.0,
                                                     boot="b1", slot=2, sn="PB000001"))  # fmt: skip
    r = service.rental(start.rental_id)
    assert r["payment_status"] == "due"
    with pytest.raises(InDebt):
        service.start_app_rental(user, "CAB-A")
    debts = service.debts()
    assert [(d["rental_id"], d["due"] > 0) for d in debts] == [(start.rental_id, True)]

    service.sweep()  # retry 1 fails: next in 600 s, then 1200 s
    assert service.rental(start.rental_id)["debt_attempts"] == 1
    captures = len([c for c in pay.calls if c.startswith("capture")])
    world.clock.advance(300)
    service.sweep()
    assert len([c for c in pay.calls if c.startswith("capture")]) == captures  # not before the backoff
    world.clock.advance(301)
    service.sweep()
    assert service.rental(start.rental_id)["debt_attempts"] == 2
    assert service.rental(start.rental_id)["debt_retry_at"] == pytest.approx(world.clock() + 1200)
    assert money.check(world.engine) == []


def test_a_lost_dispute_is_booked_as_a_chargeback_and_the_books_still_prove(rails) -> None:
    world, service, _ = rails
    user = world.renter()
    with world.engine.begin() as conn:
        conn.execute(update(merchants).where(merchants.c.id == world.merchant.id).values(providers="sandbox"))
    start = service.start_app_rental(user, "CAB-A")
    service.on_rental_started("CAB-A", world.event("CAB-A", "rental_started", rental_id=start.rental_id, mono=100.0,
                                                   boot="a1", slot=1, sn="PB000001", source="cloud"))  # fmt: skip
    world.clock.advance(2 * 3600)
    service.on_battery_returned("CAB-A", world.event("CAB-B", "battery_returned", rental_id=None, mono=7.0,
                                                     boot="b1", slot=1, sn="PB000001"))  # fmt: skip
    r = service.rental(start.rental_id)
    assert r["payment_status"] == "paid" and r["captured"] > 0
    hold_ref = r["hold_ref"]
    opened = apply_provider_event(world.engine, service, "sandbox",
                                  event("dispute.opened", hold_ref, "dp-1", amount=r["captured"]), world.clock)  # fmt: skip
    assert opened.applied and service.rental(start.rental_id)["flag"] == "chargeback_open"
    closed = event("dispute.closed", hold_ref, "dp-2", amount=r["captured"], outcome="lost", dispute_ref="dp")
    apply_provider_event(world.engine, service, "sandbox", closed, world.clock)
    apply_provider_event(world.engine, service, "sandbox", closed, world.clock)  # duplicate delivery
    after = service.rental(start.rental_id)
    assert (after["flag"], after["refunded"], after["payment_status"]) == (
        "chargeback_lost",
        r["captured"],
        "due",
    )
    assert money.check(world.engine) == []
    with world.engine.connect() as conn:
        kinds = (
            conn.execute(select(payments.c.kind).where(payments.c.rental_id == start.rental_id))
            .scalars()
            .all()
        )
        assert kinds.count("chargeback") == 1
        assert (
            conn.execute(select(rentals.c.flag).where(rentals.c.id == start.rental_id)).scalar()
            == "chargeback_lost"
        )


def rent_and_return(world, service, user: int, hours: float = 2) -> dict:  # type: ignore[no-untyped-def]
    start = service.start_app_rental(user, "CAB-A")
    if start.command is None:
        apply_provider_event(world.engine, service, start.provider,
                             event("hold.confirmed", service.rental(start.rental_id)["hold_ref"],
                                   f"c-{start.rental_id}"), world.clock)  # fmt: skip
    service.on_rental_started("CAB-A", world.event("CAB-A", "rental_started", rental_id=start.rental_id, mono=100.0,
                                                   boot="a1", slot=1, sn="PB000001", source="cloud"))  # fmt: skip
    world.clock.advance(hours * 3600)
    service.on_battery_returned("CAB-B", world.event("CAB-B", "battery_returned", rental_id=None, mono=7.0,
                                                     boot="b1", slot=2, sn="PB000001"))  # fmt: skip
    return service.rental(start.rental_id)


def test_a_payout_is_paid_once_per_reference_and_never_above_what_is_owed(rails) -> None:
    world, service, pay = rails
    user = world.renter(card=None)
    add_method(world, user, "pendingpay", "openid-4")
    r = rent_and_return(world, service, user)
    assert r["payment_status"] == "paid"
    share = r["fee"] * world.merchant.revenue_share_bp // 10_000
    providers = service.billing.providers
    with pytest.raises(PayoutError, match="is owed"):
        pay_merchant(world.engine, providers, world.merchant.id, share + 1, "EUR", "2026-12", world.clock)
    first = pay_merchant(world.engine, providers, world.merchant.id, share, "EUR", "2026-12", world.clock)
    again = pay_merchant(world.engine, providers, world.merchant.id, share, "EUR", "2026-12", world.clock)
    assert first == again and first["status"] == "paid" and first["provider"] == "pendingpay"
    assert [c for c in pay.calls if c.startswith("payout")] == [
        f"payout merchant:{world.merchant.id} {share}"
    ]
    with world.engine.connect() as conn:
        payable = money.balances(conn).get((money.merchant_payable(world.merchant.id), "EUR"), 0)
    assert payable == 0  # the share was owed, and is paid
    assert money.check(world.engine) == []


def test_reconcile_matches_the_statement_and_reports_both_sides_of_a_difference(rails) -> None:
    import datetime as dt

    world, service, _ = rails
    user = world.renter(card=None)
    add_method(world, user, "pendingpay", "openid-5")
    r = rent_and_return(world, service, user)
    day = dt.datetime.fromtimestamp(world.clock(), dt.UTC).date()
    with world.engine.connect() as conn:
        capture_ref = conn.execute(
            select(payments.c.provider_ref).where(
                payments.c.rental_id == r["id"], payments.c.kind == "capture"
            )
        ).scalar_one()
    good = [StatementLine(capture_ref, "capture", r["captured"], "EUR", world.clock(), r["hold_ref"]),
            StatementLine("fee-1", "fee", -12, "EUR", world.clock())]  # fmt: skip
    ok = reconcile(world.engine, "pendingpay", good, day, world.clock)
    assert (ok.ok, ok.matched, ok.fees) == (True, 1, {"EUR": -12})

    bad = [StatementLine(capture_ref, "capture", r["captured"] - 1, "EUR", world.clock()),
           StatementLine("pay-unknown", "capture", 500, "EUR", world.clock())]  # fmt: skip
    out = reconcile(world.engine, "pendingpay", bad, day, world.clock)
    assert sorted(m.what for m in out.mismatches) == ["amount_differs", "missing_in_journal"]
    missing = reconcile(world.engine, "pendingpay", [], day, world.clock)
    assert [m.what for m in missing.mismatches] == ["missing_at_provider"]
    from cloud.fleet.view import alerts

    kinds = [a["kind"] for a in alerts(world.engine)]
    assert kinds.count("reconciliation_mismatch") == 3


def test_per_payment_payouts_are_split_over_rentals_and_references_never_alias(world) -> None:
    """A provider that pays out of single payments (named wechat here): a payout is split over
    the merchant's paid rentals; a reference with LIKE's wildcards (a_c) is not taken for an
    earlier payout's (abc)."""
    pay = PendingPay()
    service = RentalService(world.engine, {"sandbox": world.sandbox, "wechat": pay}, world.clock,
                            default_provider="sandbox")  # fmt: skip
    with world.engine.begin() as conn:
        conn.execute(update(merchants).where(merchants.c.id == world.merchant.id).values(providers="wechat"))
    fees = []
    for n in range(2):
        user = world.renter(f"r{n}@example.com", card=None)
        add_method(world, user, "wechat", f"openid-p{n}")
        fees.append(rent_and_return(world, service, user, hours=2 + n)["fee"])
    shares = [f * world.merchant.revenue_share_bp // 10_000 for f in fees]
    providers = service.billing.providers
    first = pay_merchant(world.engine, providers, world.merchant.id, shares[0] + 1, "EUR", "abc", world.clock)
    assert [p["amount"] for p in first["pieces"]] == [shares[0], 1]  # the first rental's share, then the next
    second = pay_merchant(
        world.engine, providers, world.merchant.id, shares[1] - 1, "EUR", "a_c", world.clock
    )
    assert [p["amount"] for p in second["pieces"]] == [shares[1] - 1]
    assert len([c for c in pay.calls if c.startswith("payout")]) == 3
    again = pay_merchant(world.engine, providers, world.merchant.id, shares[1] - 1, "EUR", "a_c", world.clock)
    assert again["pieces"] == second["pieces"] and len([c for c in pay.calls if c.startswith("payout")]) == 3
    assert money.check(world.engine) == []
