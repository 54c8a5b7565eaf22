"""Each of money-check's per-rental invariants on its own: a small database where it holds,
and one where a tampered row or entry breaks it."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import update

from cloud import money
from cloud.db import rentals

HOUR = 3600


def start(world, user, sn, cabinet="CAB-A"):
    rental_id = world.service.start_app_rental(user, cabinet).rental_id
    ev = world.event(cabinet, "rental_started", boot=f"{sn}-boot", rental_id=rental_id, sn=sn, source="cloud")
    world.service.on_rental_started(cabinet, ev)
    return rental_id


def rent(world, user, hours, sn, cabinet="CAB-A"):
    rental_id = start(world, user, sn, cabinet)
    world.clock.advance(hours * HOUR)
    back = world.event(cabinet, "battery_returned", mono=hours * HOUR, boot=f"{sn}-boot", sn=sn)
    world.service.on_battery_returned(cabinet, back)
    return rental_id


@pytest.fixture
def closed(world):
    """A three-hour rental, ended and paid (fee 750); returns (rental id, renter id)."""
    user = world.renter()
    return rent(world, user, 3, "S1"), user


def books(world, rental_id) -> money.RentalBooks:
    with world.engine.connect() as conn:
        all_books, _ = money.rental_books(conn)
    return next(b for b in all_books if b.rental["id"] == rental_id)


def set_row(world, rental_id, **values):
    with world.engine.begin() as conn:
        conn.execute(update(rentals).where(rentals.c.id == rental_id).values(**values))


def smuggle(world, rental_id, *postings):
    """A balanced entry on the rental that no service booked."""
    with world.engine.begin() as conn:
        lines = [money.Posting(a, n, "EUR") for a, n in postings]
        money.post(conn, "x", lines, f"smuggled-{uuid.uuid4()}", 1.0, rental_id=rental_id)


def messages(invariant, b):
    return [str(p) for p in invariant(b)]


def test_every_invariant_holds_on_a_normal_rental(world, closed):
    rental_id, _ = closed
    b = books(world, rental_id)
    assert (b.booked.fee, b.paid.capture, b.rental["payment_status"]) == (750, 750, "paid")
    for invariant in money.RENTAL_INVARIANTS:
        assert invariant(b) == [], invariant.__name__


def test_fee_booked_as_charged(world, closed):
    rental_id, _ = closed
    set_row(world, rental_id, fee=700)
    assert messages(money._fee_booked_as_charged, books(world, rental_id)) == [
        f"rental {rental_id}: fee booked 750 but the rental's fee is 700"
    ]


def test_no_fee_before_the_end(world, closed):
    rental_id, _ = closed
    running = start(world, world.renter("bo@example.com"), "S2", "CAB-B")
    assert money._no_fee_before_the_end(books(world, running)) == []
    set_row(world, rental_id, status="active")
    assert messages(money._no_fee_before_the_end, books(world, rental_id)) == [
        f"rental {rental_id}: active rental has a fee of 750 booked"
    ]


def test_captured_as_paid(world, closed):
    rental_id, _ = closed
    set_row(world, rental_id, captured=751)
    assert messages(money._captured_as_paid, books(world, rental_id)) == [
        f"rental {rental_id}: payments captured 750 but the rental says 751"
    ]


def test_refunded_as_paid(world, closed):
    rental_id, _ = closed
    world.service.billing.refund(rental_id, 100, "half empty", actor_user_id=None)
    assert money._refunded_as_paid(books(world, rental_id)) == []
    set_row(world, rental_id, refunded=105)
    assert messages(money._refunded_as_paid, books(world, rental_id)) == [
        f"rental {rental_id}: payments refunded 100 but the rental says 105"
    ]


def test_clearing_is_captured_less_refunded(world, closed):
    rental_id, _ = closed
    smuggle(world, rental_id, (money.PROVIDER_CLEARING, -50), ("platform:bank", 50))
    assert messages(money._clearing_is_captured_less_refunded, books(world, rental_id)) == [
        f"rental {rental_id}: provider clearing moved 700, expected captured 750 - refunded 0"
    ]


def test_renter_balance_and_paid_means_settled(world, closed):
    rental_id, user = closed
    smuggle(world, rental_id, (money.renter(user), 10), ("platform:bank", -10))
    b = books(world, rental_id)
    assert messages(money._renter_balance_is_fee_less_captured, b) == [
        f"rental {rental_id}: renter balance 10, expected fee - captured + excess refunds = 0"
    ]
    assert messages(money._paid_means_settled, b) == [
        f"rental {rental_id}: marked paid but the renter's balance for it is 10"
    ]
    set_row(world, rental_id, payment_status="failed")
    assert money._paid_means_settled(books(world, rental_id)) == []


def test_holds_released_at_the_end(world, closed):
    rental_id, user = closed
    running = start(world, user, "S2", "CAB-B")
    assert books(world, running).booked.holds > 0
    assert money._holds_released_at_the_end(books(world, running)) == []
    smuggle(world, rental_id, (money.renter_holds(user), 100), (money.HOLDS_PROVIDER, -100))
    assert messages(money._holds_released_at_the_end, books(world, rental_id)) == [
        f"rental {rental_id}: closed rental still has 100 reserved by a hold"
    ]


def test_earnings_split_by_share(world, closed):
    rental_id, _ = closed
    payable = money.merchant_payable(world.merchant.id)
    smuggle(world, rental_id, (money.PLATFORM_REVENUE, 100), (payable, -100))  # right total, wrong split
    assert messages(money._earnings_split_by_share, books(world, rental_id)) == [
        f"rental {rental_id}: merchant share booked 325, expected 225 (3000 bp of 750)"
    ]
    smuggle(world, rental_id, (money.PLATFORM_REVENUE, 40), ("platform:bank", -40))  # wrong total
    assert messages(money._earnings_split_by_share, books(world, rental_id)) == [
        f"rental {rental_id}: revenue + merchant share booked 710, expected 750"
    ]


def test_unknown_rentals(world, closed):
    with world.engine.connect() as conn:
        assert money.rental_books(conn)[1] == []
    smuggle(world, "R-GHOST", ("a", 1), ("b", -1))
    with world.engine.connect() as conn:
        _, unknown = money.rental_books(conn)
    assert [str(p) for p in money._unknown_rentals(unknown)] == [
        "rental R-GHOST: journal entries name a rental that does not exist"
    ]


def test_check_runs_the_invariants_in_their_order(world, closed):
    rental_id, _ = closed
    set_row(world, rental_id, captured=751, fee=700)
    with world.engine.connect() as conn:
        found = money._check_rentals(conn)
    assert [p.message.split()[0:2] for p in found] == [
        ["fee", "booked"],  # _fee_booked_as_charged
        ["payments", "captured"],  # _captured_as_paid
        ["provider", "clearing"],  # _clearing_is_captured_less_refunded
        ["renter", "balance"],  # _renter_balance_is_fee_less_captured
    ]
