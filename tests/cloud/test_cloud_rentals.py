"""The rental life cycle end to end with the sandbox provider: the right money, once, in any order."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from cloud import money
from cloud.db import batteries, payments
from cloud.rentals import RentalError, RentalRefused

HOUR = 3600


def start_and_take(world, user_id, cabinet="CAB-A", sn="SN-1", mono=100.0, boot="a1"):
    start = world.service.start_app_rental(user_id, cabinet)
    ev = world.event(
        cabinet,
        "rental_started",
        mono=mono,
        boot=boot,
        rental_id=start.rental_id,
        sn=sn,
        slot=3,
        source="cloud",
    )
    world.service.on_rental_started(cabinet, ev)
    return start, ev


def assert_books_balance(world):
    problems = money.check(world.engine)
    assert problems == [], "\n".join(map(str, problems))


def test_app_rental_returned_at_another_cabinet_captures_fee_and_releases_rest(world, clock):
    user = world.renter()
    start, _ = start_and_take(world, user)
    assert start.command.kind == "eject" and start.command.args["rental_id"] == start.rental_id
    assert start.command.counter == 1 and start.hold_amount == 3500
    assert world.service.rental(start.rental_id)["status"] == "active"
    clock.advance(90 * 60)
    ret = world.event("CAB-B", "battery_returned", mono=7.0, boot="b1", sn="SN-1", slot=1, rental_id=None)
    assert world.service.on_battery_returned("CAB-B", ret) == start.rental_id
    r = world.service.rental(start.rental_id)
    assert (r["status"], r["fee"], r["captured"], r["payment_status"]) == ("closed", 500, 500, "paid")
    hold = world.sandbox.hold_status(r["hold_ref"])
    assert (hold["status"], hold["captured"]) == ("captured", 500)
    receipt = world.service.receipt(start.rental_id)
    assert (receipt["paid"], receipt["returned_to"], receipt["currency"]) == (500, "CAB-B", "EUR")
    assert world.deliver_webhooks() == 2  # hold.authorized and hold.captured, each sent twice
    with world.engine.connect() as conn:
        statuses = conn.execute(select(payments.c.kind, payments.c.status)).all()
    assert ("capture", "confirmed") in statuses
    assert_books_balance(world)


def test_redelivered_events_and_sweeps_charge_once(world, clock):
    user = world.renter()
    start, started = start_and_take(world, user)
    world.service.on_rental_started("CAB-A", started)
    clock.advance(3 * HOUR)
    ret = world.event(
        "CAB-A", "battery_returned", mono=100.0 + 3 * HOUR, boot="a1", sn="SN-1", rental_id=start.rental_id
    )
    for _ in range(3):
        world.service.on_battery_returned("CAB-A", ret)
        world.service.on_rental_started("CAB-A", started)
        world.service.sweep()
    r = world.service.rental(start.rental_id)
    assert (r["fee"], r["captured"], r["duration_method"]) == (750, 750, "monotonic")
    with world.engine.connect() as conn:
        assert len(conn.execute(select(payments).where(payments.c.kind == "capture")).all()) == 1
    assert_books_balance(world)


def test_declined_card_refuses_the_rental_and_no_eject_is_sent(world):
    user = world.renter(card="tok_decline")
    with pytest.raises(RentalRefused) as err:
        world.service.start_app_rental(user, "CAB-A")
    assert err.value.code == "card_declined"
    (r,) = world.service.rentals_of(user)
    assert (r["status"], r["cmd_id"], r["hold_status"]) == ("aborted", None, "declined")
    assert_books_balance(world)


def test_renter_without_card_or_with_open_rental_is_refused(world):
    nocard = world.renter("bo@example.com", card=None)
    with pytest.raises(RentalRefused, match="add a card"):
        world.service.start_app_rental(nocard, "CAB-A")
    user = world.renter()
    world.service.start_app_rental(user, "CAB-A")
    with pytest.raises(RentalRefused) as err:
        world.service.start_app_rental(user, "CAB-B")
    assert err.value.code == "open_rental"
    with pytest.raises(RentalRefused) as err:
        world.service.start_app_rental(user, "CAB-NOPE")
    assert err.value.code == "unknown_cabinet"


def test_abandoned_eject_voids_the_hold_after_the_timeout(world, clock):
    user = world.renter()
    start = world.service.start_app_rental(user, "CAB-A")
    clock.advance(60)
    assert world.service.sweep().timed_out == []
    clock.advance(61)
    assert world.service.sweep().timed_out == [start.rental_id]
    r = world.service.rental(start.rental_id)
    assert (r["status"], r["hold_status"]) == ("aborted", "voided")
    assert world.sandbox.hold_status(r["hold_ref"])["status"] == "voided"
    assert_books_balance(world)
    # the user may rent again
    world.service.start_app_rental(user, "CAB-B")


def test_battery_that_leaves_after_the_timeout_is_secured_by_a_new_hold(world, clock):
    user = world.renter()
    start = world.service.start_app_rental(user, "CAB-A")
    clock.advance(200)
    world.service.sweep()
    late = world.event(
        "CAB-A", "rental_started", mono=5.0, boot="a1", rental_id=start.rental_id, sn="SN-9", source="cloud"
    )
    world.service.on_rental_started("CAB-A", late)
    r = world.service.rental(start.rental_id)
    assert (r["status"], r["hold_status"]) == ("active", "held")
    clock.advance(HOUR)
    world.service.on_battery_returned(
        "CAB-A", world.event("CAB-A", "battery_returned", mono=5.0 + HOUR, boot="a1", sn="SN-9")
    )
    r = world.service.rental(start.rental_id)
    assert (r["fee"], r["captured"], r["payment_status"]) == (250, 250, "paid")
    assert_books_balance(world)


def test_cabinet_abort_voids_the_hold(world):
    user = world.renter()
    start = world.service.start_app_rental(user, "CAB-A")
    ev = world.event("CAB-A", "rental_aborted", rental_id=start.rental_id, slot=3, reason="lock jammed")
    world.service.on_rental_aborted("CAB-A", ev)
    world.service.on_rental_aborted("CAB-A", ev)
    r = world.service.rental(start.rental_id)
    assert (r["status"], r["abort_reason"], r["hold_status"]) == ("aborted", "lock jammed", "voided")
    assert_books_balance(world)


@pytest.mark.parametrize("return_first", [True, False], ids=["return-synced-first", "start-synced-first"])
def test_offline_pass_rental_returned_elsewhere_is_charged_once_in_either_sync_order(
    world, clock, return_first
):
    user = world.renter()
    world.service.issue_pass(user, "PASS-1", clock() + 7 * 86400)
    t0 = clock()
    started = world.event(
        "CAB-A",
        "rental_started",
        wall=t0,
        mono=1000.0,
        boot="a1",
        rental_id="R-OFFLINE-1",
        sn="SN-7",
        slot=2,
        source="pass",
        pass_id="PASS-1",
        user=str(user),
    )
    returned = world.event(
        "CAB-B", "battery_returned", wall=t0 + 2 * HOUR + 60, mono=50.0, boot="b1", sn="SN-7", rental_id=None
    )
    clock.advance(2 * 86400)  # both cabinets were offline for two days
    if return_first:
        assert world.service.on_battery_returned("CAB-B", returned) is None
        world.service.on_rental_started("CAB-A", started)
    else:
        world.service.on_rental_started("CAB-A", started)
        world.service.on_battery_returned("CAB-B", returned)
    world.service.on_battery_returned("CAB-B", returned)  # redelivered
    world.service.on_rental_started("CAB-A", started)
    r = world.service.rental("R-OFFLINE-1")
    assert (r["source"], r["user_id"], r["status"]) == ("pass", user, "closed")
    assert (r["fee"], r["captured"], r["payment_status"]) == (
        750,
        750,
        "paid",
    )  # 2 h 1 min: three started hours
    assert_books_balance(world)


def test_unknown_pass_or_rental_is_an_error_not_a_charge(world):
    ev = world.event("CAB-A", "rental_started", rental_id="R-X", sn="SN-1", source="pass", pass_id="FORGED")
    with pytest.raises(RentalError, match="unknown pass"):
        world.service.on_rental_started("CAB-A", ev)
    ev = world.event("CAB-A", "rental_started", rental_id="R-Y", sn="SN-1", source="cloud")
    with pytest.raises(RentalError, match="unknown rental"):
        world.service.on_rental_started("CAB-A", ev)


def test_expired_hold_is_replaced_by_a_new_one_at_return(make_world, clock):
    world = make_world(hold_ttl_s=2 * HOUR)
    world.service.hold_capture_margin_s = 0  # no sweeper ran in time
    user = world.renter()
    start, _ = start_and_take(world, user)
    clock.advance(3 * HOUR)
    world.sandbox.expire_holds()
    assert world.deliver_webhooks() >= 1  # hold.expired reaches us
    assert world.service.rental(start.rental_id)["hold_status"] == "expired"
    world.service.on_battery_returned(
        "CAB-A", world.event("CAB-A", "battery_returned", mono=100.0 + 3 * HOUR, boot="a1", sn="SN-1")
    )
    r = world.service.rental(start.rental_id)
    assert (r["fee"], r["captured"], r["payment_status"]) == (750, 750, "paid")
    with world.engine.connect() as conn:
        holds = conn.execute(select(payments.c.status).where(payments.c.kind == "hold")).scalars().all()
    assert holds == ["succeeded", "succeeded"]
    assert_books_balance(world)


def test_expired_hold_and_declined_card_leaves_a_visible_debt(make_world, clock):
    world = make_world(hold_ttl_s=2 * HOUR)
    world.service.hold_capture_margin_s = 0
    user = world.renter(card="tok_limit_3500")
    start, _ = start_and_take(world, user)
    world.accounts.set_card(user, "tok_insufficient")  # the card ran dry meanwhile
    clock.advance(3 * HOUR)
    world.service.on_battery_returned(
        "CAB-A", world.event("CAB-A", "battery_returned", mono=100.0 + 3 * HOUR, boot="a1", sn="SN-1")
    )
    r = world.service.rental(start.rental_id)
    assert (r["fee"], r["captured"], r["payment_status"]) == (750, 0, "due")
    with world.engine.connect() as conn:
        assert money.balances(conn)[(money.renter(user), "EUR")] == 750  # the renter owes it
    assert_books_balance(world)


def test_long_rental_captures_the_cap_before_the_hold_expires(make_world, clock):
    world = make_world(hold_ttl_s=26 * HOUR)
    user = world.renter()
    start, _ = start_and_take(world, user)
    clock.advance(19 * HOUR)
    assert world.service.sweep().captured_early == []
    clock.advance(2 * HOUR)  # 5 h before the hold expires: inside the 6 h margin
    report = world.service.sweep()
    assert (report.captured_early, report.purchased) == ([start.rental_id], [])
    assert world.service.rental(start.rental_id)["captured"] == 3500
    clock.advance(2 * 86400)  # the hold would be long gone now
    world.service.on_battery_returned("CAB-B", world.event("CAB-B", "battery_returned", boot="b1", sn="SN-1"))
    r = world.service.rental(start.rental_id)
    # nearly three days: the daily caps add up past the battery price, so it is a purchase
    assert (r["status"], r["fee"], r["captured"], r["refunded"], r["payment_status"]) == (
        "purchased",
        3500,
        3500,
        0,
        "paid",
    )
    assert_books_balance(world)


def test_early_capture_then_short_remainder_refunds_excess(make_world, clock):
    world = make_world(hold_ttl_s=20 * HOUR)
    user = world.renter()
    start, _ = start_and_take(world, user)
    clock.advance(15 * HOUR)
    assert world.service.sweep().captured_early == [start.rental_id]
    clock.advance(HOUR)
    world.service.on_battery_returned(
        "CAB-A", world.event("CAB-A", "battery_returned", mono=100.0 + 16 * HOUR, boot="a1", sn="SN-1")
    )
    r = world.service.rental(start.rental_id)
    assert (r["fee"], r["captured"], r["refunded"], r["payment_status"]) == (1500, 3500, 2000, "paid")
    assert world.sandbox.hold_status(r["hold_ref"])["refunded"] == 2000
    assert_books_balance(world)


def test_battery_never_returned_becomes_a_purchase(world, clock):
    user = world.renter()
    start, _ = start_and_take(world, user, sn="SN-LOST")
    # from 06:00: 15 EUR on day one, 15 EUR on day two, and the 35 EUR cap at 01:00 on day three
    clock.advance(42 * HOUR)
    assert world.service.sweep().purchased == []
    clock.advance(2 * HOUR)
    assert world.service.sweep().purchased == [start.rental_id]
    r = world.service.rental(start.rental_id)
    assert (r["status"], r["fee"], r["captured"], r["payment_status"]) == ("purchased", 3500, 3500, "paid")
    with world.engine.connect() as conn:
        assert (
            conn.execute(select(batteries.c.status).where(batteries.c.sn == "SN-LOST")).scalar_one()
            == "written_off"
        )
    assert_books_balance(world)


def test_wrong_wall_clock_on_the_same_boot_prices_by_monotonic_time(world, clock):
    user = world.renter()
    start = world.service.start_app_rental(user, "CAB-A")
    world.service.on_rental_started(
        "CAB-A",
        world.event(
            "CAB-A",
            "rental_started",
            wall=clock() - 86400 * 365,
            mono=10.0,
            boot="a1",
            rental_id=start.rental_id,
            sn="SN-1",
            source="cloud",
        ),
    )
    clock.advance(HOUR)
    world.service.on_battery_returned(
        "CAB-A",
        world.event("CAB-A", "battery_returned", wall=clock(), mono=10.0 + 50 * 60, boot="a1", sn="SN-1"),
    )
    r = world.service.rental(start.rental_id)
    assert (r["duration_s"], r["fee"]) == (50 * 60, 250)


def test_clock_anchor_corrects_a_cabinet_whose_clock_was_wrong(world, clock):
    user = world.renter()
    start, _ = start_and_take(world, user, mono=100.0, boot="a1")
    world.service.record_clock_anchor("CAB-A", "a1", 100.0, clock())
    world.service.record_clock_anchor("CAB-B", "b1", 500.0, clock() + 10)
    clock.advance(30 * 60)
    # CAB-B thinks it is 1970: its anchor says mono 500 was at t+10, so mono 500+1790 is t+30 min
    ret = world.event("CAB-B", "battery_returned", wall=1000.0, mono=500.0 + 1790, boot="b1", sn="SN-1")
    world.service.on_battery_returned("CAB-B", ret)
    r = world.service.rental(start.rental_id)
    assert (round(r["duration_s"]), r["duration_method"], r["fee"]) == (1800, "anchored", 250)


def test_operator_refund_is_audited_and_reverses_the_merchant_share(world, clock):
    user = world.renter()
    start, _ = start_and_take(world, user)
    clock.advance(4 * HOUR)
    world.service.on_battery_returned(
        "CAB-A", world.event("CAB-A", "battery_returned", mono=100.0 + 4 * HOUR, boot="a1", sn="SN-1")
    )
    with pytest.raises(ValueError, match="reason"):
        world.service.billing.refund(start.rental_id, 100, " ", actor_user_id=None)
    with pytest.raises(ValueError, match=r"refund must be 1\.\.1000"):
        world.service.billing.refund(start.rental_id, 1001, "too much", actor_user_id=None)
    assert world.service.billing.refund(start.rental_id, 333, "slow charging", actor_user_id=None) == 333
    with world.engine.connect() as conn:
        bal = money.balances(conn)
    # fee 1000 at 30 %: merchant 300, then 333 refunded -> merchant keeps 30 % of 667 = 200
    assert bal[(money.merchant_payable(world.merchant.id), "EUR")] == -200
    assert bal[(money.PLATFORM_REVENUE, "EUR")] == -(667 - 200)
    assert_books_balance(world)


def test_concurrent_requests_and_redeliveries_do_not_double_rent_or_charge(world, clock):
    from concurrent.futures import ThreadPoolExecutor

    user = world.renter()

    def try_rent(cabinet):
        try:
            return world.service.start_app_rental(user, cabinet).rental_id
        except RentalRefused as e:
            return e.code

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(try_rent, ["CAB-A", "CAB-B", "CAB-A", "CAB-B"]))
    started = [r for r in results if r != "open_rental"]
    assert len(started) == 1, results
    rental_id = started[0]
    world.service.on_rental_started("CAB-A", world.event("CAB-A", "rental_started", mono=0.0, boot="a", rental_id=rental_id,
                                                         sn="S1", source="cloud"))  # fmt: skip
    clock.advance(2 * HOUR)
    ret = world.event("CAB-A", "battery_returned", mono=2 * HOUR, boot="a", sn="S1")
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda _: world.service.on_battery_returned("CAB-A", ret), range(4)))
    r = world.service.rental(rental_id)
    assert (r["fee"], r["captured"]) == (500, 500)
    with world.engine.connect() as conn:
        assert len(conn.execute(select(payments).where(payments.c.kind == "capture")).all()) == 1
    assert_books_balance(world)


def test_stale_return_of_an_older_rental_does_not_end_a_new_one(world, clock):
    user = world.renter()
    # a return nobody could match (its rental was never reported), at CAB-B, boot b1, mono 100
    stale = world.event("CAB-B", "battery_returned", mono=100.0, boot="b1", sn="SN-5")
    assert world.service.on_battery_returned("CAB-B", stale) is None
    clock.advance(HOUR)
    # the same battery is rented again from CAB-B later in the same boot: the monotonic clock
    # proves the stale return is older, so it must not close this rental
    start = world.service.start_app_rental(user, "CAB-B")
    world.service.on_rental_started("CAB-B", world.event("CAB-B", "rental_started", mono=100.0 + HOUR, boot="b1",
                                                         rental_id=start.rental_id, sn="SN-5", source="cloud"))  # fmt: skip
    assert world.service.rental(start.rental_id)["status"] == "active"


def test_return_placed_before_the_start_only_by_bare_wall_clocks_is_matched_and_flagged(world, clock):
    user = world.renter()
    world.service.issue_pass(user, "PASS-2", clock() + 86400)
    t0 = clock()
    # CAB-B's clock runs 2 h behind and no anchor corrects it: its return looks 1 h before the start
    returned = world.event("CAB-B", "battery_returned", wall=t0 - HOUR, mono=9.0, boot="b9", sn="SN-8")
    started = world.event("CAB-A", "rental_started", wall=t0, mono=5.0, boot="a9", rental_id="R-P2", sn="SN-8",
                          source="pass", pass_id="PASS-2")  # fmt: skip
    world.service.on_battery_returned("CAB-B", returned)
    world.service.on_rental_started("CAB-A", started)
    r = world.service.rental("R-P2")
    assert (r["status"], r["duration_method"], r["fee"]) == ("closed", "wall?", 0)
