"""The rental life cycle, driven by the app and by the events cabinets report.

    app:     start_app_rental  -> hold placed, eject command returned (the caller signs and sends it)
    cabinet: rental_started    -> on_rental_started   (active; or created, for an offline pass,
                                                   drawing on a hold placed when the pass was issued)
             rental_aborted    -> on_rental_aborted   (hold voided)
             battery_returned  -> on_battery_returned (fee computed and settled)
    timer:   sweep             -> eject timeouts, captures before holds expire, purchases,
                                  unused pass holds released once the pass has expired

Every ``on_*`` method is idempotent (cabinet events arrive at least once) and tolerates any
order between cabinets: a return reported before its rental's start (two offline cabinets
syncing in either order) is kept and matched when the start arrives.
Methods block (database, provider): call them from asyncio through a worker thread.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, Engine, and_, func, insert, or_, select, update
from sqlalchemy.exc import IntegrityError

from cloud import money
from cloud.alerts import add_alert
from cloud.billing import Billing, rental_money
from cloud.db import (
    batteries,
    cabinets,
    clock_anchors,
    commands,
    orphan_returns,
    pass_holds,
    passes,
    payment_methods,
    rentals,
    users,
)
from cloud.errors import CloudError
from cloud.merchants import Catalog, CatalogError
from cloud.payments import PaymentError, Provider
from cloud.pricing import CabinetTime, ClockAnchor, Tariff, quote, rental_duration, true_time
from sync.amounts import format_money
from sync.events import CommandStatus, RentalSource, RentalStatus

log = logging.getLogger(__name__)

OPEN = (RentalStatus.PENDING, RentalStatus.ACTIVE)


class RentalError(CloudError, ValueError):
    """A rental request or cabinet event cannot be applied; the message says why."""

    status = 400
    code = "bad_request"


class RentalNotFound(RentalError):
    """No such rental."""

    status = 404
    code = "not_found"


class RentalRefused(RentalError):
    """The app's rental request is refused; each reason is a subclass with its own ``code``."""

    status = 402
    code = "rental_refused"


class UnknownCabinet(RentalRefused):
    """The cabinet is not registered, or has no tariff to rent at."""

    status = 404
    code = "unknown_cabinet"


class UnknownUser(RentalRefused):
    """The account does not exist (or was deleted)."""

    status = 404
    code = "unknown_user"


class NoCard(RentalRefused):
    """The account has no card on file to hold the rental's money on."""

    status = 402
    code = "no_card"


class OpenRental(RentalRefused):
    """The renter already has a rental in progress (one at a time)."""

    status = 409
    code = "open_rental"


class InDebt(RentalRefused):
    """The renter owes the fee of an earlier rental that could not be collected (it is retried
    automatically); no new rental until it is paid."""

    status = 402
    code = "debt"


class CardRefused(RentalRefused):
    """The provider refused the hold; ``code`` is the provider's (card_declined, insufficient_funds...)."""

    status = 402
    code = "card_declined"

    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class CabinetEvent:
    """A ledger event as a cabinet reported it (the fields of sync's WireEvent)."""

    cabinet: str
    seq: int
    id: str
    type: str
    at_wall: float
    at_mono: float
    boot_id: str
    body: Mapping[Any, Any] = field(default_factory=dict)

    @property
    def time(self) -> CabinetTime:
        return CabinetTime(self.cabinet, self.at_wall, self.at_mono, self.boot_id)


@dataclass(frozen=True)
class EjectCommand:
    """The command to sign and publish on ``cab/v1/{cabinet}/cmd`` for an app rental."""

    cmd_id: str
    cabinet: str
    counter: int
    kind: str
    args: dict
    issued_at: float
    expires_at: float


@dataclass(frozen=True)
class RentalStart:
    """A rental the app asked for: its eject ``command`` to sign and send, or ``None`` while the
    renter still has to confirm the hold in the provider's app (``client_action``: what the
    provider's SDK on the phone needs); the eject is then queued by ``on_hold_confirmed``."""

    rental_id: str
    hold_amount: int
    currency: str
    command: EjectCommand | None
    client_action: Mapping[str, Any] | None = None
    provider: str = ""


@dataclass
class SweepReport:
    """What one sweep did (for logs and tests)."""

    timed_out: list[str] = field(default_factory=list)
    captured_early: list[str] = field(default_factory=list)
    purchased: list[str] = field(default_factory=list)
    settled: list[str] = field(default_factory=list)
    passes_released: list[str] = field(default_factory=list)
    debts_retried: list[str] = field(default_factory=list)


class RentalService:
    """The rental life cycle (see module doc)."""

    def __init__(
        self,
        engine: Engine,
        provider: Provider | Mapping[str, Provider],
        clock: Callable[[], float],
        *,
        eject_timeout_s: float = 120,
        hold_capture_margin_s: float = 6 * 3600,
        pass_hold_grace_s: float = 86400,
        confirm_timeout_s: float = 300,
        debt_retry_s: float = 600,
        debt_retry_max_s: float = 86400,
        default_provider: str | None = None,
    ) -> None:
        self.engine = engine
        self.clock = clock
        self.catalog = Catalog(engine, clock)
        self.billing = Billing(engine, provider, clock, default_provider)
        self.eject_timeout_s = eject_timeout_s
        self.confirm_timeout_s = confirm_timeout_s  # a hold the renter never confirms is cancelled
        self.pending_commands: list[EjectCommand] = []  # ejects queued outside a request (to send)
        self.debt_retry_s, self.debt_retry_max_s = debt_retry_s, debt_retry_max_s  # backoff of due fees
        self.hold_capture_margin_s = hold_capture_margin_s
        # unused pass holds are kept this long after the pass expires: a rental started just
        # before the expiry on a cabinet that was offline still finds its hold when it syncs
        self.pass_hold_grace_s = pass_hold_grace_s

    # --- the app -------------------------------------------------------------------------

    def start_app_rental(self, user_id: int, cabinet_id: str) -> RentalStart:
        """Place a hold for a rental at ``cabinet_id`` and return the eject command to send."""
        try:
            pricing = self.catalog.pricing(cabinet_id)
        except CatalogError as e:
            raise UnknownCabinet(str(e)) from e
        rental_id = str(uuid.uuid4())
        now = self.clock()
        try:
            with self.engine.begin() as conn:
                user = conn.execute(
                    select(users).where(users.c.id == user_id, users.c.deleted_at.is_(None))
                ).first()
                if user is None:
                    raise UnknownUser(f"no user {user_id}")
                methods = conn.execute(
                    select(func.count())
                    .select_from(payment_methods)
                    .where(payment_methods.c.user_id == user_id, payment_methods.c.deleted_at.is_(None))
                ).scalar_one()
                if not user.card_token and not methods:
                    raise NoCard("add a card before renting (PUT /api/me/card)")
                if self._open_rental(conn, user_id):
                    raise OpenRental("you already have a rental in progress: return that battery first")
                debt = conn.execute(
                    select(rentals.c.id, rentals.c.fee, rentals.c.captured, rentals.c.currency)
                    .where(rentals.c.user_id == user_id, rentals.c.payment_status == "due")
                    .limit(1)
                ).first()
                if debt is not None:
                    raise InDebt(
                        f"rental {debt.id} is not paid yet ({format_money((debt.fee or 0) - debt.captured, debt.currency)} "
                        "due; it is charged again automatically): no new rental until it is paid"
                    )
                self._insert_rental(
                    conn, rental_id, user_id, "app", None, cabinet_id, pricing, RentalStatus.PENDING, now
                )
        except IntegrityError as e:  # a concurrent request won the one-open-rental index
            raise OpenRental("you already have a rental in progress") from e
        try:
            hold = self.billing.place_hold(rental_id)
        except PaymentError as e:
            with self.engine.begin() as conn:
                self._set(
                    conn, rental_id, status=RentalStatus.ABORTED, abort_reason=f"hold refused: {e.code}"
                )
            raise CardRefused(f"the card was refused: {e}", e.code) from e
        provider = self.rental(rental_id)["provider"] or self.billing.default
        if hold.status == "pending":
            return RentalStart(
                rental_id, pricing.tariff.hold, pricing.tariff.currency, None, hold.client_action, provider
            )
        cmd = self._queue_eject(rental_id, cabinet_id, user_id)
        return RentalStart(rental_id, pricing.tariff.hold, pricing.tariff.currency, cmd, None, provider)

    def on_hold_confirmed(self, provider: str, hold_ref: str) -> EjectCommand | None:
        """A pending hold was confirmed by the renter: queue the rental's eject (to sign and send).

        Idempotent: a duplicate notification, or one for a rental that gave up waiting, gives None.
        """
        with self.engine.connect() as conn:
            r = (
                conn.execute(
                    select(rentals).where(
                        rentals.c.hold_ref == hold_ref,
                        func.coalesce(rentals.c.provider, self.billing.default) == provider,
                    )
                )
                .mappings()
                .first()
            )
        if r is None or not self.billing.confirm_hold(r["id"]):
            return None
        if r["status"] != RentalStatus.PENDING or r["cmd_id"] is not None:
            return None
        return self._queue_eject(r["id"], r["cabinet_id"], r["user_id"])

    def _queue_eject(self, rental_id: str, cabinet_id: str, user_id: int) -> EjectCommand:
        now = self.clock()
        with self.engine.begin() as conn:
            counter = self._next_counter(conn, cabinet_id)
            cmd = EjectCommand(
                cmd_id=str(uuid.uuid4()),
                cabinet=cabinet_id,
                counter=counter,
                kind="eject",
                args={"rental_id": rental_id, "user": str(user_id)},
                issued_at=now,
                expires_at=now + self.eject_timeout_s,
            )
            conn.execute(
                insert(commands).values(
                    cmd_id=cmd.cmd_id,
                    cabinet_id=cabinet_id,
                    counter=counter,
                    kind="eject",
                    args=json.dumps(cmd.args),
                    created_at=now,
                    expires_at=cmd.expires_at,
                    status=CommandStatus.QUEUED,
                )
            )
            self._set(conn, rental_id, cmd_id=cmd.cmd_id, eject_requested_at=now)
        return cmd

    def issue_pass(
        self, user_id: int, pass_id: str, expires_at: float, max_rentals: int = 1, currency: str | None = None
    ) -> str:
        """Record an offline pass and pay for it first: the caller signs it only when this returns.

        The card on file is authorised ``max_rentals`` times for the most one rental can cost
        anywhere in the fleet (``pass_hold_size``), before anything is signed; a refused hold
        raises ``RentalRefused`` with the provider's code and no pass exists to use.
        """
        if not isinstance(max_rentals, int) or not 1 <= max_rentals <= 100:
            raise RentalError(f"max_rentals must be 1..100, got {max_rentals!r}")
        currency, each = self.pass_hold_size(currency)
        now = self.clock()
        with self.engine.begin() as conn:
            user = conn.execute(
                select(users).where(users.c.id == user_id, users.c.deleted_at.is_(None))
            ).first()
            if user is None:
                raise NoCard("an offline pass needs an account with a card on file")
            try:
                self.billing.method_for(conn, user_id, None)  # the default provider's method
            except PaymentError as e:
                raise NoCard("an offline pass needs an account with a card on file") from e
            conn.execute(
                insert(passes).values(
                    pass_id=pass_id,
                    user_id=user_id,
                    issued_at=now,
                    expires_at=expires_at,
                    max_rentals=max_rentals,
                    currency=currency,
                    hold_each=each,
                    hold_status="placing",
                )
            )
            conn.execute(
                insert(pass_holds),
                [
                    {
                        "pass_id": pass_id,
                        "k": k,
                        "user_id": user_id,
                        "status": "placing",
                        "amount": each,
                        "currency": currency,
                        "created_at": now,
                    }
                    for k in range(max_rentals)
                ],
            )
        try:
            self.billing.place_pass_holds(pass_id)
        except PaymentError as e:
            raise CardRefused(
                f"the card was refused for the pass's hold ({max_rentals} x {format_money(each, currency)}): {e}",
                e.code,
            ) from e
        return pass_id

    def pass_hold_size(self, currency: str | None = None) -> tuple[str, int]:
        """The currency and the hold of each rental of a pass: the highest rental cap in the fleet.

        A pass is not bound to a cabinet, so each of its rentals may happen at the dearest
        cabinet: the hold is the highest ``total_cap`` (the fee never exceeds it; see pricing)
        or ``hold``, over the tariffs of every registered cabinet in that currency.
        """
        caps: dict[str, int] = {}
        with self.engine.connect() as conn:
            ids = conn.execute(select(cabinets.c.id)).scalars().all()
        for cab in ids:
            try:
                t = self.catalog.pricing(cab).tariff
            except CatalogError:
                continue
            caps[t.currency] = max(caps.get(t.currency, 0), t.total_cap, t.hold)
        if currency is not None:
            if currency not in caps:
                raise RentalError(f"cannot price an offline pass in {currency!r}: no cabinet charges in it")
            return currency, caps[currency]
        if not caps:
            raise RentalError("cannot price an offline pass: no cabinet has a tariff yet")
        if len(caps) > 1:
            raise RentalError(f"cabinets charge in {', '.join(sorted(caps))}: name the pass's currency")
        return next(iter(caps.items()))

    def release_expired_pass_holds(self) -> list[str]:
        """Void the unused holds of passes expired more than ``pass_hold_grace_s`` ago (or whose hold lapsed)."""
        now = self.clock()
        with self.engine.connect() as conn:
            ids = (
                conn.execute(
                    select(pass_holds.c.pass_id)
                    .join(passes, passes.c.pass_id == pass_holds.c.pass_id)
                    .where(
                        pass_holds.c.status == "held",
                        or_(
                            passes.c.expires_at + self.pass_hold_grace_s <= now,
                            pass_holds.c.expires_at <= now,
                        ),
                    )
                    .distinct()
                )
                .scalars()
                .all()
            )
        out = []
        for pass_id in ids:
            with self.engine.connect() as conn:
                p = conn.execute(select(passes).where(passes.c.pass_id == pass_id)).mappings().one()
            if p["expires_at"] + self.pass_hold_grace_s <= now:
                why = "pass expired"
            else:
                why = "hold expired"
            if self.billing.release_pass_holds(pass_id, why):
                out.append(pass_id)
            if why == "pass expired":
                with self.engine.begin() as conn:
                    conn.execute(
                        update(passes)
                        .where(passes.c.pass_id == pass_id, passes.c.hold_status == "held")
                        .values(hold_status="released")
                    )
        return out

    # --- cabinet events ------------------------------------------------------------------

    def on_rental_started(self, cabinet_id: str, event: CabinetEvent) -> str:
        """A battery left ``cabinet_id`` for a rental; returns the rental id."""
        body = event.body
        rental_id = str(body.get("rental_id") or "")
        if not rental_id:
            raise RentalError(f"rental_started {event.id} from {cabinet_id} has no rental_id")
        source = body.get("source", RentalSource.CLOUD)
        with self.engine.begin() as conn:
            row = conn.execute(select(rentals).where(rentals.c.id == rental_id)).mappings().first()
        if row is None:
            if source != RentalSource.PASS:
                raise RentalError(
                    f"rental_started {event.id}: cabinet {cabinet_id} names unknown rental {rental_id}"
                )
            self._create_pass_rental(cabinet_id, event)
        elif row["start_event_id"] is None:
            start = {
                "status": RentalStatus.ACTIVE,
                "slot": body.get("slot"),
                "battery_sn": body.get("sn"),
                "start_event_id": event.id,
                "start_wall": event.at_wall,
                "start_mono": event.at_mono,
                "start_boot_id": event.boot_id,
            }
            with self.engine.begin() as conn:
                self._set(conn, rental_id, **start)
                self._battery(conn, body.get("sn"), "rented", None)
                if row["cmd_id"]:
                    conn.execute(
                        update(commands)
                        .where(commands.c.cmd_id == row["cmd_id"])
                        .values(status=CommandStatus.OK)
                    )
            if row["status"] == RentalStatus.ABORTED:
                # the eject timed out and the hold was voided, yet the battery did leave: secure it again
                log.warning(
                    "rental %s started after it was aborted (%s): placing a new hold",
                    rental_id,
                    row["abort_reason"],
                )
                with self.engine.begin() as conn:
                    self._set(conn, rental_id, abort_reason=None)
                self._try_hold(rental_id)
        self._match_orphan_return(rental_id)
        return rental_id

    def on_rental_aborted(self, cabinet_id: str, event: CabinetEvent) -> str:
        """No battery came out (jam, empty slot...): the rental is cancelled and its hold released."""
        rental_id = str(event.body.get("rental_id") or "")
        with self.engine.begin() as conn:
            row = conn.execute(select(rentals).where(rentals.c.id == rental_id)).mappings().first()
            if row is None:
                if event.body.get("source") == RentalSource.PASS:
                    # an offline pass rental that never started: the cloud never knew it, nothing to undo
                    return rental_id
                raise RentalError(
                    f"rental_aborted {event.id}: cabinet {cabinet_id} names unknown rental {rental_id}"
                )
            if row["status"] not in (RentalStatus.PENDING, RentalStatus.ABORTED):
                raise RentalError(f"rental_aborted {event.id}: rental {rental_id} is already {row['status']}")
            self._set(
                conn,
                rental_id,
                status=RentalStatus.ABORTED,
                abort_reason=str(event.body.get("reason") or "aborted by cabinet"),
            )
            if row["cmd_id"]:
                conn.execute(
                    update(commands)
                    .where(commands.c.cmd_id == row["cmd_id"])
                    .values(status=CommandStatus.FAILED)
                )
        self.billing.release_hold(rental_id, "rental aborted")
        return rental_id

    def on_battery_returned(self, cabinet_id: str, event: CabinetEvent) -> str | None:
        """A battery came back to ``cabinet_id``; closes and bills its rental. None: no rental known yet."""
        sn = event.body.get("sn")
        with self.engine.begin() as conn:
            done = conn.execute(
                select(rentals.c.id).where(rentals.c.end_event_id == event.id)
            ).scalar_one_or_none()
            if done is not None:
                return done  # a redelivered event
            rental_id = event.body.get("rental_id")
            row = rental_for_return(conn, rental_id, sn)
            if row is None or row["status"] != RentalStatus.ACTIVE:
                self._battery(conn, sn, "in_fleet", cabinet_id)
                if (
                    sn
                    and not conn.execute(
                        select(orphan_returns.c.event_id).where(orphan_returns.c.event_id == event.id)
                    ).first()
                ):
                    conn.execute(
                        insert(orphan_returns).values(
                            event_id=event.id,
                            cabinet_id=cabinet_id,
                            battery_sn=sn,
                            at_wall=event.at_wall,
                            at_mono=event.at_mono,
                            boot_id=event.boot_id,
                            received_at=self.clock(),
                        )
                    )
                return None
        self._close(row["id"], event.time, event.id, RentalStatus.CLOSED)
        return row["id"]

    def record_clock_anchor(self, cabinet_id: str, boot_id: str, at_mono: float, received_at: float) -> None:
        """Tie a cabinet boot's monotonic clock to true time (from a message that arrived live).

        The tightest anchor is kept: the one whose receipt was closest to the reading.
        """
        offset = received_at - at_mono
        with self.engine.begin() as conn:
            row = conn.execute(
                select(clock_anchors).where(
                    clock_anchors.c.cabinet_id == cabinet_id, clock_anchors.c.boot_id == boot_id
                )
            ).first()
            if row is None:
                conn.execute(
                    insert(clock_anchors).values(
                        cabinet_id=cabinet_id, boot_id=boot_id, at_mono=at_mono, true_wall=received_at
                    )
                )
            elif offset < row.true_wall - row.at_mono:
                conn.execute(
                    update(clock_anchors)
                    .where(clock_anchors.c.cabinet_id == cabinet_id, clock_anchors.c.boot_id == boot_id)
                    .values(at_mono=at_mono, true_wall=received_at)
                )

    # --- the timer -----------------------------------------------------------------------

    def sweep(self) -> SweepReport:
        """Periodic work: eject timeouts, early captures before holds expire, purchases, unpaid settlements."""
        now = self.clock()
        report = SweepReport()
        with self.engine.connect() as conn:
            pending = (
                conn.execute(
                    select(rentals.c.id).where(
                        rentals.c.status == RentalStatus.PENDING,
                        rentals.c.hold_status.is_distinct_from("pending"),
                        func.coalesce(rentals.c.eject_requested_at, rentals.c.created_at)
                        <= now - self.eject_timeout_s,
                    )
                )
                .scalars()
                .all()
            )
            unconfirmed = (
                conn.execute(
                    select(rentals.c.id).where(
                        rentals.c.status == RentalStatus.PENDING,
                        rentals.c.hold_status == "pending",
                        rentals.c.created_at <= now - self.confirm_timeout_s,
                    )
                )
                .scalars()
                .all()
            )
            debts = (
                conn.execute(
                    select(rentals.c.id).where(
                        rentals.c.payment_status == "due",
                        or_(rentals.c.debt_retry_at.is_(None), rentals.c.debt_retry_at <= now),
                    )
                )
                .scalars()
                .all()
            )
            expiring = (
                conn.execute(
                    select(rentals.c.id).where(
                        rentals.c.status == RentalStatus.ACTIVE,
                        rentals.c.hold_status == "held",
                        rentals.c.hold_expires_at <= now + self.hold_capture_margin_s,
                    )
                )
                .scalars()
                .all()
            )
            active = (
                conn.execute(select(rentals).where(rentals.c.status == RentalStatus.ACTIVE)).mappings().all()
            )
            unsettled = (
                conn.execute(
                    select(rentals.c.id).where(
                        rentals.c.status.in_((RentalStatus.CLOSED, RentalStatus.PURCHASED)),
                        or_(
                            rentals.c.payment_status == "none",
                            and_(rentals.c.hold_status == "held", rentals.c.payment_status != "due"),
                        ),  # a due fee is retried with backoff (debts below), not every sweep
                    )
                )
                .scalars()
                .all()
            )
            unsecured = (
                conn.execute(
                    select(rentals.c.id).where(
                        rentals.c.source == "pass",
                        rentals.c.status == RentalStatus.ACTIVE,
                        rentals.c.hold_status == "none",
                    )
                )
                .scalars()
                .all()
            )
        for rental_id in pending:
            if self._abort_pending(rental_id, f"no answer from the cabinet within {self.eject_timeout_s:.0f} s",
                                   "eject timed out"):  # fmt: skip
                report.timed_out.append(rental_id)
        for rental_id in unconfirmed:  # the renter never confirmed the hold in the provider's app
            if self._abort_pending(rental_id, f"hold not confirmed within {self.confirm_timeout_s:.0f} s",
                                   "not confirmed"):  # fmt: skip
                report.timed_out.append(rental_id)
        for rental_id in expiring:
            if self.billing.capture_hold_in_full(rental_id):
                report.captured_early.append(rental_id)
        for r in active:
            start = _start_time(r)
            started, _ = true_time(start, self._anchors(start))
            if quote(Tariff.from_json(r["tariff"]), max(now - started, 0.0), started).purchased:
                end = CabinetTime("cloud", now, 0.0, "cloud")
                self._close(r["id"], end, None, RentalStatus.PURCHASED)
                report.purchased.append(r["id"])
        for rental_id in unsettled:
            self.billing.settle(rental_id)
            report.settled.append(rental_id)
        for rental_id in debts:
            report.debts_retried.append(rental_id)
            if self.billing.settle(rental_id) == "due":
                self._schedule_debt_retry(rental_id, now)
        for rental_id in unsecured:  # a crash between recording a pass rental and securing it
            self._secure_pass_rental(rental_id, None)
        report.passes_released = self.release_expired_pass_holds()
        return report

    def _abort_pending(self, rental_id: str, reason: str, why: str) -> bool:
        """Abort a rental still pending (its eject command expires) and release its hold; False
        when it was no longer pending (started or aborted meanwhile)."""
        with self.engine.begin() as conn:
            changed = conn.execute(
                update(rentals)
                .where(rentals.c.id == rental_id, rentals.c.status == RentalStatus.PENDING)
                .values(status=RentalStatus.ABORTED, abort_reason=reason)
            ).rowcount
            conn.execute(
                update(commands)
                .where(
                    commands.c.cmd_id
                    == select(rentals.c.cmd_id).where(rentals.c.id == rental_id).scalar_subquery()
                )
                .values(status=CommandStatus.EXPIRED)
            )
        if changed:
            self.billing.release_hold(rental_id, why)
        return bool(changed)

    def holds_to_query(self, provider: str, limit: int = 100) -> list[str]:
        """Holds whose state a provider that does not notify every change should be asked for:
        pending confirmations, and holds of ended rentals not yet settled or still due."""
        prov = func.coalesce(rentals.c.provider, self.billing.default) == provider
        with self.engine.connect() as conn:
            return list(
                conn.execute(
                    select(rentals.c.hold_ref)
                    .where(
                        prov,
                        rentals.c.hold_ref.is_not(None),
                        or_(
                            and_(
                                rentals.c.status == RentalStatus.PENDING, rentals.c.hold_status == "pending"
                            ),
                            and_(
                                rentals.c.status.in_((RentalStatus.CLOSED, RentalStatus.PURCHASED)),
                                rentals.c.payment_status == "due",
                            ),
                        ),
                    )
                    .order_by(rentals.c.created_at)
                    .limit(limit)
                ).scalars()
            )

    def _schedule_debt_retry(self, rental_id: str, now: float) -> None:
        """Back off: retry a due fee after debt_retry_s, doubling up to debt_retry_max_s."""
        with self.engine.begin() as conn:
            attempts = conn.execute(
                select(rentals.c.debt_attempts).where(rentals.c.id == rental_id)
            ).scalar_one()
            delay = min(self.debt_retry_max_s, self.debt_retry_s * 2 ** min(attempts, 30))
            self._set(conn, rental_id, debt_attempts=attempts + 1, debt_retry_at=now + delay)
        log.info("rental %s: fee still due after %d retries, next in %.0f s", rental_id, attempts + 1, delay)

    def debts(self, user_id: int | None = None) -> list[dict[str, Any]]:
        """Rentals whose fee could not be collected (all, or one renter's), oldest first."""
        q = (
            select(rentals)
            .where(rentals.c.payment_status == "due")
            .order_by(rentals.c.ended_at, rentals.c.id)
        )
        if user_id is not None:
            q = q.where(rentals.c.user_id == user_id)
        with self.engine.connect() as conn:
            rows = conn.execute(q).mappings().all()
        return [
            {
                "rental_id": r["id"],
                "user_id": r["user_id"],
                "due": (r["fee"] or 0) - r["captured"],
                "currency": r["currency"],
                "fee": r["fee"],
                "captured": r["captured"],
                "ended_at": r["ended_at"],
                "retries": r["debt_attempts"],
                "next_retry_at": r["debt_retry_at"],
                "provider": r["provider"] or self.billing.default,
            }
            for r in rows
        ]

    # --- reading -------------------------------------------------------------------------

    def rental(self, rental_id: str) -> dict[str, Any]:
        with self.engine.connect() as conn:
            row = conn.execute(select(rentals).where(rentals.c.id == rental_id)).mappings().first()
        if row is None:
            raise RentalNotFound(f"no rental {rental_id}")
        return dict(row)

    def rentals_of(self, user_id: int) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(rentals).where(rentals.c.user_id == user_id).order_by(rentals.c.created_at.desc())
            ).mappings()
            return [dict(r) for r in rows]

    def receipt(self, rental_id: str) -> dict[str, Any]:
        """What the renter paid for one rental and why."""
        r = self.rental(rental_id)
        tariff = Tariff.from_json(r["tariff"])
        return {
            "rental_id": r["id"],
            "status": r["status"],
            "cabinet": r["cabinet_id"],
            "returned_to": r["end_cabinet_id"],
            "battery": r["battery_sn"],
            "started_at": r["start_wall"],
            "duration_s": r["duration_s"],
            "duration_method": r["duration_method"],
            "currency": r["currency"],
            "fee": r["fee"],
            "captured": r["captured"],
            "refunded": r["refunded"],
            "paid": r["captured"] - r["refunded"],
            "payment_status": r["payment_status"],
            "tariff": {
                "free_minutes": tariff.free_minutes,
                "period_minutes": tariff.period_minutes,
                "price_per_period": tariff.price_per_period,
                "daily_cap": tariff.daily_cap,
                "total_cap": tariff.total_cap,
            },
            "purchased": r["status"] == RentalStatus.PURCHASED,
        }

    # --- internals -----------------------------------------------------------------------

    def _create_pass_rental(self, cabinet_id: str, event: CabinetEvent) -> None:
        body = event.body
        pass_id = body.get("pass_id")
        with self.engine.connect() as conn:
            user_id = conn.execute(
                select(passes.c.user_id).where(passes.c.pass_id == pass_id)
            ).scalar_one_or_none()
        if user_id is None:
            raise RentalError(f"rental_started {event.id} from {cabinet_id}: unknown pass {pass_id!r}")
        pricing = self.catalog.pricing(cabinet_id)
        try:
            with self.engine.begin() as conn:
                self._insert_rental(
                    conn,
                    str(body["rental_id"]),
                    user_id,
                    "pass",
                    pass_id,
                    cabinet_id,
                    pricing,
                    RentalStatus.ACTIVE,
                    self.clock(),
                )
                self._set(
                    conn,
                    str(body["rental_id"]),
                    slot=body.get("slot"),
                    battery_sn=body.get("sn"),
                    start_event_id=event.id,
                    start_wall=event.at_wall,
                    start_mono=event.at_mono,
                    start_boot_id=event.boot_id,
                )
                self._battery(conn, body.get("sn"), "rented", None)
        except IntegrityError:
            return  # created concurrently by another worker
        self._secure_pass_rental(str(body["rental_id"]), event)

    def _secure_pass_rental(self, rental_id: str, event: CabinetEvent | None) -> None:
        """Draw the pass rental's hold from its pass; over-use of the pass is billed and alerted.

        ``max_rentals`` counts across the fleet: a cabinet only knows its own rentals, so the
        cloud counts every pass rental it has recorded. One beyond the limit was still taken
        (the pack is out), so it is recorded and billed (a new hold on the card on file, or a
        debt at return), the pass is revoked and a ``pass_overuse`` alert names the cabinet.
        """
        r = self.rental(rental_id)
        with self.engine.connect() as conn:
            p = conn.execute(select(passes).where(passes.c.pass_id == r["pass_id"])).mappings().one()
            used = conn.execute(
                select(func.count()).where(
                    rentals.c.pass_id == p["pass_id"],
                    rentals.c.source == "pass",
                    rentals.c.status != RentalStatus.ABORTED,
                    or_(
                        rentals.c.created_at < r["created_at"],
                        and_(rentals.c.created_at == r["created_at"], rentals.c.id <= rental_id),
                    ),
                )
            ).scalar_one()
        drawn = p["hold_status"] is not None and self.billing.attach_pass_hold(rental_id, p["pass_id"])
        if not drawn:
            if p["hold_status"] is not None:
                log.warning(
                    "pass rental %s: no hold of pass %s left, charging the card on file",
                    rental_id,
                    p["pass_id"],
                )
            self._try_hold(rental_id)  # passes issued before holds at issue (migration 0005) land here too
        if used > p["max_rentals"]:
            now = self.clock()
            with self.engine.begin() as conn:
                add_alert(
                    conn,
                    r["cabinet_id"],
                    "pass_overuse",
                    "critical",
                    f"pass {p['pass_id']} of user {p['user_id']} allows {p['max_rentals']} rental(s); "
                    f"rental {rental_id} at {r['cabinet_id']} is number {used} across the fleet "
                    f"({'drawn on the pass hold' if drawn else 'charged separately'}); the pass is revoked",
                    at=now,
                    event_id=event.id if event is not None else rental_id,
                )
                conn.execute(
                    update(passes)
                    .where(passes.c.pass_id == p["pass_id"], passes.c.revoked_at.is_(None))
                    .values(revoked_at=now, revoke_reason="over-use")
                )

    def _try_hold(self, rental_id: str) -> None:
        try:
            self.billing.place_hold(rental_id)
        except PaymentError as e:
            log.warning("rental %s runs without a hold: %s", rental_id, e)

    def _match_orphan_return(self, rental_id: str) -> None:
        """Close the rental with a return that arrived before its start, if there is one.

        The first return of the battery at or after the start wins. When every return looks
        earlier, a return that only bare wall clocks of two cabinets place earlier (a wrong
        clock nothing corrects) is still taken, its duration flagged suspect, rather than
        billing the renter until the battery counts as bought; a return that a monotonic clock
        or a clock anchor proves earlier is never taken (it ended an older rental).
        """
        r = self.rental(rental_id)
        if r["status"] != RentalStatus.ACTIVE or not r["battery_sn"]:
            return
        with self.engine.connect() as conn:
            candidates = conn.execute(
                select(orphan_returns)
                .where(
                    orphan_returns.c.battery_sn == r["battery_sn"],
                    orphan_returns.c.matched_rental_id.is_(None),
                )
                .order_by(orphan_returns.c.at_wall)
            ).all()
        if not candidates:
            return
        start = _start_time(r)
        ends = [CabinetTime(o.cabinet_id, o.at_wall, o.at_mono, o.boot_id) for o in candidates]
        anchors = self._anchors(start, *ends)
        durations = [rental_duration(start, end, anchors) for end in ends]
        chosen = next((i for i, d in enumerate(durations) if not d.suspect), None)
        if chosen is None:
            # only bare wall clocks of two cabinets disagree: nothing proves the return is older
            unproven = [i for i, d in enumerate(durations) if d.method == "wall"]
            if not unproven:
                return  # every return is provably before this start: they belong to older rentals
            chosen = unproven[-1]
            log.warning(
                "rental %s: matched return %s against contradicting wall clocks",
                rental_id,
                candidates[chosen].event_id,
            )
        with self.engine.begin() as conn:
            conn.execute(
                update(orphan_returns)
                .where(orphan_returns.c.event_id == candidates[chosen].event_id)
                .values(matched_rental_id=rental_id)
            )
        self._close(rental_id, ends[chosen], candidates[chosen].event_id, RentalStatus.CLOSED)

    def _close(
        self, rental_id: str, end: CabinetTime, end_event_id: str | None, status: RentalStatus
    ) -> None:
        """Price the rental from its start to ``end``, book the fee, then settle the payment."""
        with self.engine.begin() as conn:
            r = (
                conn.execute(select(rentals).where(rentals.c.id == rental_id).with_for_update())
                .mappings()
                .first()
            )
            if r is None or r["status"] != RentalStatus.ACTIVE:
                return
            anchors = self._anchors(_start_time(r), end, conn=conn)
            start = _start_time(r)
            if end.cabinet == "cloud":  # closed by the cloud itself (a purchase): cloud time
                started, _ = true_time(start, anchors)
                duration_s, method = max(end.at_wall - started, 0.0), "cloud"
            else:
                d = rental_duration(start, end, anchors)
                duration_s, method = d.seconds, d.method + ("?" if d.suspect else "")
            q = quote(Tariff.from_json(r["tariff"]), duration_s, true_time(start, anchors)[0])
            final = RentalStatus.PURCHASED if q.purchased else status
            self._set(
                conn,
                rental_id,
                status=final,
                end_cabinet_id=None if end.cabinet == "cloud" else end.cabinet,
                end_event_id=end_event_id,
                end_wall=end.at_wall,
                end_mono=end.at_mono,
                end_boot_id=end.boot_id,
                ended_at=self.clock(),
                duration_s=duration_s,
                duration_method=method,
                fee=q.amount,
            )
            self._battery(
                conn,
                r["battery_sn"],
                "written_off" if final == RentalStatus.PURCHASED else "in_fleet",
                end.cabinet,
            )
            money.post_fee(conn, rental_money(r), q.amount, self.clock())
        self.billing.settle(rental_id)

    def _insert_rental(
        self,
        conn: Connection,
        rental_id: str,
        user_id: int,
        source: str,
        pass_id: str | None,
        cabinet_id: str,
        pricing: Any,
        status: RentalStatus,
        now: float,
    ) -> None:
        conn.execute(
            insert(rentals).values(
                id=rental_id,
                user_id=user_id,
                source=source,
                pass_id=pass_id,
                status=status,
                cabinet_id=cabinet_id,
                merchant_id=pricing.merchant_id,
                share_bp=pricing.share_bp,
                tariff=pricing.tariff.to_json(),
                currency=pricing.tariff.currency,
                hold_amount=pricing.tariff.hold,
                hold_status="none",
                created_at=now,
            )
        )

    def _open_rental(self, conn: Connection, user_id: int) -> bool:
        return bool(
            conn.execute(
                select(func.count()).where(rentals.c.user_id == user_id, rentals.c.status.in_(OPEN))
            ).scalar_one()
        )

    def _next_counter(self, conn: Connection, cabinet_id: str) -> int:
        conn.execute(
            update(cabinets).where(cabinets.c.id == cabinet_id).values(cmd_counter=cabinets.c.cmd_counter + 1)
        )
        return conn.execute(select(cabinets.c.cmd_counter).where(cabinets.c.id == cabinet_id)).scalar_one()

    def _anchors(
        self, *times: CabinetTime, conn: Connection | None = None
    ) -> dict[tuple[str, str], ClockAnchor]:
        """The clock anchors of the boots these times were taken in."""
        anchors = {}
        with self.engine.connect() if conn is None else _borrowed(conn) as c:
            for t in {(t.cabinet, t.boot_id) for t in times}:
                a = c.execute(
                    select(clock_anchors).where(
                        clock_anchors.c.cabinet_id == t[0], clock_anchors.c.boot_id == t[1]
                    )
                ).first()
                if a is not None:
                    anchors[t] = ClockAnchor(a.cabinet_id, a.boot_id, a.at_mono, a.true_wall)
        return anchors

    def _battery(self, conn: Connection, sn: str | None, status: str, cabinet_id: str | None) -> None:
        if not sn:
            return
        values = {"status": status, "cabinet_id": cabinet_id, "updated_at": self.clock()}
        if not conn.execute(update(batteries).where(batteries.c.sn == sn).values(**values)).rowcount:
            conn.execute(insert(batteries).values(sn=sn, **values))

    @staticmethod
    def _set(conn: Connection, rental_id: str, **values: Any) -> None:
        conn.execute(update(rentals).where(rentals.c.id == rental_id).values(**values))


def rental_for_return(conn: Connection, rental_id: str | None, sn: str | None) -> Any:
    """The rental a return names, else the newest active rental of its battery (None: neither)."""
    row = (
        conn.execute(select(rentals).where(rentals.c.id == rental_id)).mappings().first()
        if rental_id
        else None
    )
    if row is None and sn:
        row = (
            conn.execute(
                select(rentals)
                .where(rentals.c.battery_sn == sn, rentals.c.status == RentalStatus.ACTIVE)
                .order_by(rentals.c.start_wall.desc())
            )
            .mappings()
            .first()
        )
    return row


def _start_time(r: Mapping[Any, Any]) -> CabinetTime:
    return CabinetTime(r["cabinet_id"], r["start_wall"], r["start_mono"], r["start_boot_id"])


@contextmanager
def _borrowed(conn: Connection) -> Iterator[Connection]:
    """Use the caller's connection in a ``with`` without closing it."""
    yield conn
