"""The money side of one rental: holds, captures, voids and refunds through the provider, each
recorded in ``payments``, on the rental row and in the journal.

Every provider call uses an idempotency key derived from the rental and the attempt number,
and happens outside any database transaction; the recording step is idempotent too (keyed by
the same string), so any step can be re-run after a crash and books its effect once.

Offline passes are paid for before use (issue 11.1): ``place_pass_holds`` reserves, when the
pass is issued, one hold per rental the pass allows, each the most one rental can cost; the
provider captures a hold once, so a pass of ``max_rentals`` draws on that many holds.
``attach_pass_hold`` hands one of them to a pass rental when its start arrives (the rental
then settles like any other), ``release_pass_holds`` voids the ones never used. Their journal
memo entries (``pass:<id>:hold:<k>`` / ``pass:<id>:hold_released:<k>``) name no rental: a
hold drawn by a rental is released from the pass and booked again as the rental's hold.
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from collections.abc import Callable, Mapping
from typing import Any

from sqlalchemy import Connection, Engine, func, insert, select, update

from cloud import money
from cloud.db import audit_log, merchants, pass_holds, passes, payment_methods, payments, rentals, users
from cloud.errors import CloudError
from cloud.payments import Declined, Hold, HoldExpired, InvalidRequest, PaymentError, Provider, rental_key
from sync.events import RentalStatus

log = logging.getLogger(__name__)


class BillingError(CloudError, ValueError):
    """A money operation on a rental is not allowed; the message says why."""

    status = 400
    code = "bad_request"


class Billing:
    """Holds, captures and refunds for rentals (see module doc)."""

    def __init__(
        self,
        engine: Engine,
        provider: Provider | Mapping[str, Provider],
        clock: Callable[[], float],
        default: str | None = None,
    ) -> None:
        """``provider``: one provider, or every configured one by name (``default``: the one for
        merchants that name none, rentals from before providers were recorded, and passes)."""
        if isinstance(provider, Mapping):
            self.providers: dict[str, Provider] = dict(provider)
            default = default or next(iter(self.providers))
        else:
            self.providers = {provider.name: provider}
            default = provider.name
        self.default = default
        provider = self.providers[default]
        self.engine = engine
        self.provider = provider
        self.clock = clock

    # --- holds ---------------------------------------------------------------------------

    def provider_of(self, r: Mapping[Any, Any]) -> Provider:
        """The provider a rental's money lives at."""
        name = r["provider"] or self.default
        found = self.providers.get(name)
        if found is None:
            raise PaymentError(
                f"rental {r['id']} is paid through {name!r}, not configured here", "no_provider"
            )
        return found

    def method_for(
        self, conn: Connection, user_id: int, merchant_id: int | None, only: str | None = None
    ) -> tuple[str, str]:
        """(provider, token) to charge: the merchant's accepted providers in their order of
        preference (``only``: that one), the renter's newest method at each; raises Declined
        ``no_method``."""
        accepted_csv = None
        if merchant_id is not None:
            accepted_csv = conn.execute(
                select(merchants.c.providers).where(merchants.c.id == merchant_id)
            ).scalar_one_or_none()
        accepted = [p.strip() for p in (accepted_csv or self.default).split(",") if p.strip()]
        if only is not None:
            accepted = [only]
        methods = [
            (m.provider, m.token)
            for m in conn.execute(
                select(payment_methods.c.provider, payment_methods.c.token)
                .where(payment_methods.c.user_id == user_id, payment_methods.c.deleted_at.is_(None))
                .order_by(payment_methods.c.id.desc())
            )
        ]
        card = conn.execute(select(users.c.card_token).where(users.c.id == user_id)).scalar_one_or_none()
        if card:
            methods.append((self.default, card))  # the card of PUT /api/me/card: the default provider's
        for name in accepted:
            if name not in self.providers:
                continue
            for provider, token in methods:
                if provider == name:
                    return provider, token
        if not methods:
            raise Declined("no card on file for this renter (add one at PUT /api/me/card)", "no_card")
        raise Declined(
            f"no payment method this merchant accepts (accepted: {', '.join(accepted)})", "no_method"
        )

    def place_hold(self, rental_id: str) -> Hold:
        """Reserve the rental's hold amount with the renter's method; returns the hold (``pending``:
        the renter confirms it in the provider's app, see ``confirm_hold``) or raises PaymentError."""
        r = self._rental(rental_id)
        no_method: Declined | None = None
        name, token = r["provider"] or self.default, ""
        with self.engine.connect() as conn:
            n = self._attempts(conn, rental_id, "hold")
            try:
                # a rental's later holds stay with its provider: its refunds and captures go there
                name, token = self.method_for(conn, r["user_id"], r["merchant_id"], r["provider"])
            except Declined as e:
                no_method = e
        key = rental_key(rental_id, "hold", n)
        r = {**r, "provider": name}
        try:
            if no_method is not None:
                raise no_method
            hold = self.providers[name].authorize(token, r["hold_amount"], r["currency"], key)
        except PaymentError as e:
            with self.engine.begin() as conn:
                if not self._recorded(conn, key):
                    self._payment(conn, r, "hold", None, r["hold_amount"], "failed", key, code=e.code, n=n)
                    conn.execute(
                        update(rentals)
                        .where(rentals.c.id == rental_id, rentals.c.hold_status.is_distinct_from("held"))
                        .values(hold_status="declined")
                    )
            raise
        with self.engine.begin() as conn:
            if not self._recorded(conn, key):
                self._payment(conn, r, "hold", hold.hold_ref, hold.amount, "succeeded", key, n=n)
                status = "pending" if hold.status == "pending" else "held"
                conn.execute(
                    update(rentals)
                    .where(rentals.c.id == rental_id)
                    .values(
                        provider=name,
                        hold_ref=hold.hold_ref,
                        hold_status=status,
                        hold_expires_at=hold.expires_at,
                    )
                )
                if status == "held":
                    money.post_hold(conn, rental_money(r), hold.amount, n, self.clock())
        return hold

    def confirm_hold(self, rental_id: str) -> bool:
        """The renter confirmed a pending hold (a provider notification or a status query): the
        money is reserved now. True when this call made it ``held``."""
        r = self._rental(rental_id)
        if r["hold_status"] != "pending":
            return False
        n = self._hold_n(r)  # before the transaction: SQLite takes one writer at a time
        with self.engine.begin() as conn:
            changed = conn.execute(
                update(rentals)
                .where(rentals.c.id == rental_id, rentals.c.hold_status == "pending")
                .values(hold_status="held")
            ).rowcount
            if changed:
                money.post_hold(conn, rental_money(r), r["hold_amount"], n, self.clock())
        return bool(changed)

    def release_hold(self, rental_id: str, why: str) -> None:
        """Void the rental's current hold (if still held), and book the end of any expired one."""
        r = self._rental(rental_id)
        if r["hold_status"] == "pending":  # never confirmed: cancel it, no money was reserved
            n = self._hold_n(r)
            key = rental_key(rental_id, "void", n)
            try:
                result = self.provider_of(r).void(r["hold_ref"], key)
            except PaymentError as e:
                log.warning("rental %s: cancel of pending hold %s failed: %s", rental_id, r["hold_ref"], e)
                return
            with self.engine.begin() as conn:
                if not self._recorded(conn, key):
                    self._payment(conn, r, "void", r["hold_ref"], result.released, "succeeded", key, n=n)
                    self._set(conn, rental_id, hold_status="voided")
        elif r["hold_status"] == "held":
            n = self._hold_n(r)
            try:
                result = self.provider_of(r).void(r["hold_ref"], rental_key(rental_id, "void", n))
            except PaymentError as e:
                log.warning("rental %s: void of hold %s failed: %s", rental_id, r["hold_ref"], e)
                return
            with self.engine.begin() as conn:
                key = rental_key(rental_id, "void", n)
                if not self._recorded(conn, key):
                    self._payment(conn, r, "void", r["hold_ref"], result.released, "succeeded", key, n=n)
                    self._set(conn, rental_id, hold_status="voided" if result.released else "expired")
                    money.post_hold_released(conn, rental_money(r), r["hold_amount"], n, why, self.clock())
        elif r["hold_status"] == "expired":
            n = self._hold_n(r)
            with self.engine.begin() as conn:
                money.post_hold_released(conn, rental_money(r), r["hold_amount"], n, "expired", self.clock())

    def capture_hold_in_full(self, rental_id: str) -> bool:
        """Take the whole hold now (a long rental whose hold would expire); the excess is refunded at return."""
        r = self._rental(rental_id)
        if r["hold_status"] != "held":
            return False
        return self._capture(r, r["hold_amount"])

    # --- offline passes: holds placed when the pass is issued ---------------------------

    def place_pass_holds(self, pass_id: str) -> list[str]:
        """Reserve every hold of a pass being issued; all or nothing.

        A refused hold voids the ones already placed, marks the pass ``declined`` (it is never
        signed) and raises the ``PaymentError``. Re-running after a crash replays the same keys.
        """
        with self.engine.connect() as conn:
            p = conn.execute(select(passes).where(passes.c.pass_id == pass_id)).mappings().one()
            try:  # a pass is not bound to a merchant: the default provider, the renter's method there
                provider_name, card = self.method_for(conn, p["user_id"], None)
            except Declined:
                provider_name, card = self.default, None
            rows = (
                conn.execute(
                    select(pass_holds).where(pass_holds.c.pass_id == pass_id).order_by(pass_holds.c.k)
                )
                .mappings()
                .all()
            )
        refs = []
        for h in rows:
            if h["status"] == "held":
                refs.append(h["hold_ref"])
                continue
            key = pass_key(pass_id, "hold", h["k"])
            try:
                if not card:
                    raise Declined("no card on file for this renter (add one at PUT /api/me/card)", "no_card")
                hold = self.providers[provider_name].authorize(card, h["amount"], h["currency"], key)
            except PaymentError:
                with self.engine.begin() as conn:
                    conn.execute(
                        update(pass_holds)
                        .where(pass_holds.c.pass_id == pass_id, pass_holds.c.status == "placing")
                        .values(status="declined", ended_at=self.clock())
                    )
                    conn.execute(
                        update(passes).where(passes.c.pass_id == pass_id).values(hold_status="declined")
                    )
                self.release_pass_holds(pass_id, "pass refused: a hold was declined")
                raise
            with self.engine.begin() as conn:
                changed = conn.execute(
                    update(pass_holds)
                    .where(
                        pass_holds.c.pass_id == pass_id,
                        pass_holds.c.k == h["k"],
                        pass_holds.c.status == "placing",
                    )
                    .values(status="held", hold_ref=hold.hold_ref, expires_at=hold.expires_at)
                ).rowcount
                if changed:
                    self._post_pass_memo(conn, h, hold.amount, "hold", f"pass {pass_id}")
            refs.append(hold.hold_ref)
        with self.engine.begin() as conn:
            conn.execute(
                update(passes)
                .where(passes.c.pass_id == pass_id, passes.c.hold_status == "placing")
                .values(hold_status="held")
            )
        return refs

    def attach_pass_hold(self, rental_id: str, pass_id: str) -> bool:
        """Give a pass rental one of its pass's unused holds; False when none is left (over-use...).

        Idempotent: a rental that already drew one keeps it. Two workers never take the same
        hold (compare-and-set on its status).
        """
        now = self.clock()
        with self.engine.begin() as conn:
            r = conn.execute(select(rentals).where(rentals.c.id == rental_id)).mappings().one()
            mine = (
                conn.execute(select(pass_holds).where(pass_holds.c.rental_id == rental_id)).mappings().first()
            )
            while mine is None:
                free = (
                    conn.execute(
                        select(pass_holds)
                        .where(
                            pass_holds.c.pass_id == pass_id,
                            pass_holds.c.status == "held",
                            pass_holds.c.rental_id.is_(None),
                            pass_holds.c.currency == r["currency"],
                            pass_holds.c.expires_at > now,
                        )
                        .order_by(pass_holds.c.k)
                        .limit(1)
                    )
                    .mappings()
                    .first()
                )
                if free is None:
                    return False
                taken = conn.execute(
                    update(pass_holds)
                    .where(
                        pass_holds.c.pass_id == pass_id,
                        pass_holds.c.k == free["k"],
                        pass_holds.c.status == "held",
                    )
                    .values(status="assigned", rental_id=rental_id, ended_at=now)
                ).rowcount
                if taken:
                    mine = free
            n = self._attempts(conn, rental_id, "hold")
            if r["hold_ref"] == mine["hold_ref"]:
                return True  # recorded before
            key = rental_key(rental_id, "hold", n)
            self._payment(
                conn,
                r,
                "hold",
                mine["hold_ref"],
                mine["amount"],
                "succeeded",
                key,
                n=n,
                pass_id=pass_id,
                k=mine["k"],
            )
            conn.execute(
                update(rentals)
                .where(rentals.c.id == rental_id)
                .values(
                    hold_ref=mine["hold_ref"],
                    hold_status="held",
                    hold_amount=mine["amount"],
                    hold_expires_at=mine["expires_at"],
                )
            )
            self._post_pass_memo(conn, mine, mine["amount"], "hold_released", f"drawn by rental {rental_id}")
            money.post_hold(conn, rental_money(r), mine["amount"], n, now)
        return True

    def release_pass_holds(self, pass_id: str, why: str) -> int:
        """Void the pass's holds no rental drew on (expiry, refusal); returns how many were released."""
        with self.engine.connect() as conn:
            rows = (
                conn.execute(
                    select(pass_holds).where(pass_holds.c.pass_id == pass_id, pass_holds.c.status == "held")
                )
                .mappings()
                .all()
            )
        released = 0
        for h in rows:
            if h["expires_at"] is not None and h["expires_at"] > self.clock():
                try:
                    self.provider.void(h["hold_ref"], pass_key(pass_id, "void", h["k"]))
                except PaymentError as e:
                    log.warning("pass %s: void of hold %s failed: %s", pass_id, h["hold_ref"], e)
                    continue
            with self.engine.begin() as conn:
                changed = conn.execute(
                    update(pass_holds)
                    .where(
                        pass_holds.c.pass_id == pass_id,
                        pass_holds.c.k == h["k"],
                        pass_holds.c.status == "held",
                    )
                    .values(status="released", ended_at=self.clock())
                ).rowcount
                if changed:
                    self._post_pass_memo(conn, h, h["amount"], "hold_released", why)
                    released += 1
        return released

    def _post_pass_memo(
        self, conn: Connection, h: Mapping[Any, Any], amount: int, kind: str, memo: str
    ) -> None:
        """The holds memo pair for a pass hold (no rental yet): placed, or released / drawn."""
        sign = 1 if kind == "hold" else -1
        money.post(
            conn,
            kind,
            [
                money.Posting(money.renter_holds(h["user_id"]), sign * amount, h["currency"]),
                money.Posting(money.HOLDS_PROVIDER, -sign * amount, h["currency"]),
            ],
            pass_key(h["pass_id"], kind, h["k"]),
            self.clock(),
            memo=memo,
        )

    # --- provider disputes (chargebacks) -------------------------------------------------

    def book_chargeback(self, rental_id: str, amount: int, dispute_ref: str, withdrawn: bool = False) -> bool:
        """A dispute the renter won at their bank or the provider: ``amount`` left provider
        clearing for them, so they owe it again (the rental's fee stands). Booked once per
        dispute; the rental is flagged ``chargeback_lost``. True when this call booked it.

        ``withdrawn``: the provider took the money when the dispute opened (Stripe; booked by
        :meth:`book_dispute_withdrawal`), so the loss takes it out of what was withheld, and no
        statement line matches it (``detail.withheld``)."""
        r = self._rental(rental_id)
        key = rental_key(rental_id, "chargeback", dispute_ref)
        with self.engine.begin() as conn:
            if self._recorded(conn, key):
                return False
            if withdrawn:
                part = self._withheld(conn, rental_id, dispute_ref)
            else:
                part = max(0, min(amount, r["captured"] - r["refunded"]))
            self._payment(conn, r, "chargeback", dispute_ref, part, "succeeded", key, contested=amount,
                          **({"withheld": True} if withdrawn else {}))  # fmt: skip
            conn.execute(
                update(rentals)
                .where(rentals.c.id == rental_id)
                .values(refunded=rentals.c.refunded + part, flag="chargeback_lost", payment_status="due")
            )
            if part:
                money.post_chargeback(
                    conn, rental_money(r), part, dispute_ref, self.clock(), withdrawn=withdrawn
                )
        return True

    def book_dispute_withdrawal(self, rental_id: str, amount: int, dispute_ref: str) -> bool:
        """The provider withheld ``amount`` (at most what is captured and not refunded) while the
        dispute ``dispute_ref`` is open. Booked once per dispute; True when this call booked it."""
        r = self._rental(rental_id)
        key = rental_key(rental_id, "dispute_withdrawal", dispute_ref)
        with self.engine.begin() as conn:
            if self._recorded(conn, key):
                return False
            part = max(0, min(amount, r["captured"] - r["refunded"]))
            self._payment(conn, r, "withheld", dispute_ref, part, "succeeded", key, contested=amount)
            if part:
                money.post_dispute_withdrawal(conn, rental_money(r), part, dispute_ref, self.clock())
        return True

    def book_dispute_reinstated(self, rental_id: str, dispute_ref: str) -> bool:
        """A won dispute: what was withheld for it comes back. Booked once per dispute, and only
        after its withdrawal; True when this call booked it."""
        r = self._rental(rental_id)
        key = rental_key(rental_id, "dispute_reinstated", dispute_ref)
        with self.engine.begin() as conn:
            if self._recorded(conn, key) or self._recorded(
                conn, rental_key(rental_id, "chargeback", dispute_ref)
            ):
                return False
            part = self._withheld(conn, rental_id, dispute_ref)
            # the reference of Stripe's balance transaction that gives it back (StripeProvider.statement)
            self._payment(conn, r, "reinstated", f"{dispute_ref}:reinstated", part, "succeeded", key)
            if part:
                money.post_dispute_reinstated(conn, rental_money(r), part, dispute_ref, self.clock())
        return True

    def _withheld(self, conn: Connection, rental_id: str, dispute_ref: str) -> int:
        """What was withheld for ``dispute_ref`` on this rental (0 if no withdrawal is booked)."""
        amount = conn.execute(
            select(payments.c.amount).where(
                payments.c.idempotency_key == rental_key(rental_id, "dispute_withdrawal", dispute_ref)
            )
        ).scalar()
        return int(amount or 0)

    # --- settling a finished rental -----------------------------------------------------

    def settle(self, rental_id: str, max_new_holds: int = 2) -> str:
        """Make what the renter paid equal the fee: capture, charge again, or refund the excess.

        Returns the payment status: ``paid``, or ``due`` when the card refused (a debt the
        operator sees; ``settle`` can be run again later).
        """
        r = self._rental(rental_id)
        if r["fee"] is None:
            raise BillingError(f"rental {rental_id} has no fee yet (status {r['status']})")
        if r["hold_status"] == "expired":
            self.release_hold(rental_id, "expired")  # books the end of a hold the provider expired
        new_holds = 0
        while True:
            r = self._rental(rental_id)
            due = self._due(r)
            if due > 0 and r["hold_status"] == "held":
                if self._capture(r, min(due, r["hold_amount"])):
                    continue
                if self._rental(rental_id)["hold_status"] == "held":
                    break  # declined or refused, the hold stands: the debt retry captures on it later
            elif due <= 0 and r["hold_status"] == "held":
                self.release_hold(rental_id, "rental ended")
                if self._rental(rental_id)["hold_status"] == "held":
                    break  # the void failed: keep the hold, try again next sweep
                continue
            if due > 0:
                if new_holds >= max_new_holds:
                    break
                new_holds += 1
                try:
                    self.place_hold(rental_id)
                except PaymentError as e:
                    log.info("rental %s: new hold for %s refused: %s", rental_id, due, e)
                    break
                continue
            if due < 0:
                self._refund_excess(r, -due)
            break
        r = self._rental(rental_id)
        status = "paid" if self._due(r) == 0 else "due"
        with self.engine.begin() as conn:
            self._set(conn, rental_id, payment_status=status)
        return status

    def refund(self, rental_id: str, amount: int, reason: str, actor_user_id: int | None) -> int:
        """An operator gives back part of a fee (a dispute); audited. Returns the rental's refunded total."""
        r = self._rental(rental_id)
        if not reason.strip():
            raise BillingError("a refund needs a reason (it is audited)")
        if r["status"] not in (RentalStatus.CLOSED, RentalStatus.PURCHASED):
            raise BillingError(f"rental {rental_id} is {r['status']}: only finished rentals are refunded")
        with self.engine.connect() as conn:
            fee_refunded = self._paid(conn, rental_id, "refund")
            captures = self._refundable(conn, rental_id)
        refundable_fee = (r["fee"] or 0) - fee_refunded
        if not isinstance(amount, int) or not 0 < amount <= min(refundable_fee, sum(captures.values())):
            raise BillingError(
                f"refund must be 1..{min(refundable_fee, sum(captures.values()))} {r['currency']} minor units "
                f"(fee {r['fee']}, refunded {fee_refunded}, paid {sum(captures.values())}), got {amount!r}"
            )
        n = self._attempts_any(rental_id, "refund")
        left = amount
        for hold_ref, refundable in captures.items():
            part = min(left, refundable)
            if part <= 0:
                continue
            key = rental_key(rental_id, "refund", f"{n}:{hold_ref}")
            result = self.provider_of(r).refund(hold_ref, part, key)
            with self.engine.begin() as conn:
                if not self._recorded(conn, key):
                    before = self._paid(conn, rental_id, "refund")
                    self._payment(
                        conn,
                        r,
                        "refund",
                        result.refund_ref,
                        part,
                        "succeeded",
                        key,
                        hold_ref=hold_ref,
                        reason=reason,
                    )
                    conn.execute(
                        update(rentals)
                        .where(rentals.c.id == rental_id)
                        .values(refunded=rentals.c.refunded + part)
                    )
                    money.post_refund(
                        conn, rental_money(r), part, r["fee"], before, key, reason, self.clock()
                    )
                    conn.execute(
                        insert(audit_log).values(
                            at=self.clock(),
                            actor_user_id=actor_user_id,
                            action="refund",
                            target=f"rental:{rental_id}",
                            detail=json.dumps(
                                {"amount": part, "currency": r["currency"], "reason": reason, "key": key}
                            ),
                        )
                    )
            left -= part
        return self._rental(rental_id)["refunded"]

    # --- internals -----------------------------------------------------------------------

    def _capture(self, r: Mapping[Any, Any], amount: int) -> bool:
        n = self._hold_n(r)
        key = rental_key(r["id"], "capture", n)
        try:
            result = self.provider_of(r).capture(r["hold_ref"], amount, key)
        except HoldExpired:
            with self.engine.begin() as conn:
                self._set(conn, r["id"], hold_status="expired")
                money.post_hold_released(conn, rental_money(r), r["hold_amount"], n, "expired", self.clock())
            return False
        except InvalidRequest as e:
            log.warning("rental %s: capture on %s refused: %s", r["id"], r["hold_ref"], e)
            return False
        except Declined as e:  # a provider that collects at capture (Alipay balance, WeChat Pay Score)
            log.warning(
                "rental %s: capture on %s declined: %s (the fee stays due)", r["id"], r["hold_ref"], e
            )
            return False
        with self.engine.begin() as conn:
            if not self._recorded(conn, key):
                self._payment(
                    conn,
                    r,
                    "capture",
                    result.capture_ref,
                    result.amount,
                    "succeeded",
                    key,
                    hold_ref=r["hold_ref"],
                    n=n,
                )
                conn.execute(
                    update(rentals)
                    .where(rentals.c.id == r["id"])
                    .values(captured=rentals.c.captured + result.amount, hold_status="captured")
                )
                money.post_capture(conn, rental_money(r), result.amount, n, self.clock())
                money.post_hold_released(conn, rental_money(r), r["hold_amount"], n, "captured", self.clock())
        return True

    def _refund_excess(self, r: Mapping[Any, Any], amount: int) -> None:
        with self.engine.connect() as conn:
            captures = self._refundable(conn, r["id"])
        n = self._attempts_any(r["id"], "refund_excess")
        left = amount
        for hold_ref, refundable in captures.items():
            part = min(left, refundable)
            if part <= 0:
                continue
            key = rental_key(r["id"], "refund_excess", f"{n}:{hold_ref}")
            result = self.provider_of(r).refund(hold_ref, part, key)
            with self.engine.begin() as conn:
                if not self._recorded(conn, key):
                    self._payment(
                        conn, r, "refund_excess", result.refund_ref, part, "succeeded", key, hold_ref=hold_ref
                    )
                    conn.execute(
                        update(rentals)
                        .where(rentals.c.id == r["id"])
                        .values(refunded=rentals.c.refunded + part)
                    )
                    money.post_excess_refund(conn, rental_money(r), part, f"{n}:{hold_ref}", self.clock())
            left -= part

    def _due(self, r: Mapping[Any, Any]) -> int:
        """What the renter still owes for the rental (< 0: we owe them)."""
        with self.engine.connect() as conn:
            excess = self._paid(conn, r["id"], "refund_excess")
        return (r["fee"] or 0) - r["captured"] + excess

    def _rental(self, rental_id: str) -> Mapping[Any, Any]:
        with self.engine.connect() as conn:
            row = conn.execute(select(rentals).where(rentals.c.id == rental_id)).mappings().first()
        if row is None:
            raise BillingError(f"no rental {rental_id}")
        return row

    def _hold_n(self, r: Mapping[Any, Any]) -> int:
        with self.engine.connect() as conn:
            detail = conn.execute(
                select(payments.c.detail).where(
                    payments.c.rental_id == r["id"],
                    payments.c.kind == "hold",
                    payments.c.provider_ref == r["hold_ref"],
                )
            ).scalar_one()
        return int(json.loads(detail)["n"])

    @staticmethod
    def _attempts(conn: Connection, rental_id: str, kind: str) -> int:
        return conn.execute(
            select(func.count()).where(payments.c.rental_id == rental_id, payments.c.kind == kind)
        ).scalar_one()

    def _attempts_any(self, rental_id: str, kind: str) -> int:
        with self.engine.connect() as conn:
            return self._attempts(conn, rental_id, kind)

    @staticmethod
    def _paid(conn: Connection, rental_id: str, kind: str) -> int:
        return int(
            conn.execute(
                select(func.coalesce(func.sum(payments.c.amount), 0)).where(
                    payments.c.rental_id == rental_id,
                    payments.c.kind == kind,
                    payments.c.status.in_(("succeeded", "confirmed")),
                )
            ).scalar_one()
        )

    @staticmethod
    def _refundable(conn: Connection, rental_id: str) -> dict[str, int]:
        """Money still refundable per hold: captured minus every refund on it."""
        per_hold: dict[str, int] = defaultdict(int)
        rows = conn.execute(
            select(payments.c.kind, payments.c.amount, payments.c.detail).where(
                payments.c.rental_id == rental_id,
                payments.c.kind.in_(("capture", "refund", "refund_excess")),
                payments.c.status.in_(("succeeded", "confirmed")),
            )
        )
        for kind, amount, detail in rows:
            hold_ref = json.loads(detail)["hold_ref"]
            per_hold[hold_ref] += amount if kind == "capture" else -amount
        return dict(per_hold)

    @staticmethod
    def _recorded(conn: Connection, key: str) -> bool:
        return (
            conn.execute(select(payments.c.id).where(payments.c.idempotency_key == key)).first() is not None
        )

    def _payment(
        self,
        conn: Connection,
        r: Mapping[Any, Any],
        kind: str,
        ref: str | None,
        amount: int,
        status: str,
        key: str,
        **detail: Any,
    ) -> None:
        conn.execute(
            insert(payments).values(
                rental_id=r["id"],
                kind=kind,
                provider=r["provider"] or self.default,
                provider_ref=ref,
                amount=amount,
                currency=r["currency"],
                status=status,
                idempotency_key=key,
                detail=json.dumps(detail),
                created_at=self.clock(),
            )
        )

    @staticmethod
    def _set(conn: Connection, rental_id: str, **values: Any) -> None:
        conn.execute(update(rentals).where(rentals.c.id == rental_id).values(**values))


def pass_key(pass_id: str, operation: str, k: int) -> str:
    """The idempotency key of one money operation on a pass's hold ``k``, e.g. ``pass:P-1:hold:0``."""
    return f"pass:{pass_id}:{operation}:{k}"


def rental_money(r: Mapping[Any, Any]) -> money.RentalMoney:
    """The journal's view of a rental row."""
    return money.RentalMoney(r["id"], r["user_id"], r["merchant_id"], r["share_bp"], r["currency"])
