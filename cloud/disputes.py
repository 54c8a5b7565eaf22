"""Disputes: a renter complains about one of their rentals; an operator refunds or rejects it.

A rental has at most one unresolved dispute (a partial unique index enforces it, so two
requests at once cannot both open one). Resolving first claims the dispute (``open`` ->
``resolving``) in its own transaction, so two operators cannot both refund it; a refund then
goes through ``Billing.refund`` (provider call, payment row, journal entry, audit row), and
the outcome (``refunded`` / ``rejected``) is written with its own audit row. A refund the
provider or billing refuses puts the dispute back to ``open``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine, insert, select, update
from sqlalchemy.exc import IntegrityError

from cloud.billing import Billing, BillingError
from cloud.db import audit_log, disputes, rentals
from cloud.errors import CloudError
from cloud.payments import PaymentError

STATUSES = ("open", "resolving", "refunded", "rejected")
DECISIONS = ("refund", "reject")
MAX_REASON = 2000


class DisputeError(CloudError, ValueError):
    """A dispute request is wrong (bad amount, empty reason...); the message says what."""

    status = 400
    code = "bad_request"


class DisputeNotFound(DisputeError):
    """No such dispute, or the rental is not the renter's."""

    status = 404
    code = "not_found"


class DisputeConflict(DisputeError):
    """The rental already has an open dispute, or the dispute is already resolved."""

    status = 409
    code = "conflict"


class DisputeRefundFailed(DisputeError):
    """The payment provider refused the refund; the dispute is open again."""

    status = 502
    code = "refund_failed"


@dataclass(frozen=True)
class Dispute:
    id: int
    rental_id: str
    user_id: int
    status: str
    reason: str
    amount_claimed: int | None
    currency: str
    opened_at: float
    resolved_by: int | None
    resolved_at: float | None
    refund_amount: int | None
    note: str | None

    @classmethod
    def from_row(cls, row: Mapping[Any, Any]) -> Dispute:
        return cls(**{name: row[name] for name in cls.__dataclass_fields__})


class Disputes:
    """Open, list and resolve disputes (see module doc). Methods block: call them in a thread."""

    def __init__(self, engine: Engine, billing: Billing, clock: Callable[[], float]) -> None:
        self.engine = engine
        self.billing = billing
        self.clock = clock

    def open(self, user_id: int, rental_id: str, reason: str, amount_claimed: int | None = None) -> Dispute:
        """A renter disputes one of their rentals; ``amount_claimed`` is at most what they paid."""
        reason = reason.strip()
        if not reason or len(reason) > MAX_REASON:
            raise DisputeError(f"reason must have 1..{MAX_REASON} characters (not only spaces)")
        with self.engine.connect() as conn:
            r = conn.execute(select(rentals).where(rentals.c.id == rental_id)).mappings().first()
        if r is None or r["user_id"] != user_id:
            raise DisputeNotFound(f"no rental {rental_id} in your account")
        paid = r["captured"] - r["refunded"]
        if amount_claimed is not None and not (
            isinstance(amount_claimed, int)
            and not isinstance(amount_claimed, bool)
            and 0 < amount_claimed <= paid
        ):
            if paid <= 0:
                raise DisputeError(
                    f"nothing is paid on rental {rental_id} yet: open the dispute without amount_claimed"
                )
            raise DisputeError(
                f"amount_claimed must be 1..{paid} {r['currency']} minor units (what rental {rental_id} "
                f"cost you so far), got {amount_claimed!r}"
            )
        try:
            with self.engine.begin() as conn:
                if self._unresolved(conn, rental_id) is not None:
                    raise DisputeConflict(f"rental {rental_id} already has an open dispute")
                dispute_id = conn.execute(
                    insert(disputes)
                    .values(
                        rental_id=rental_id,
                        user_id=user_id,
                        status="open",
                        reason=reason,
                        amount_claimed=amount_claimed,
                        currency=r["currency"],
                        opened_at=self.clock(),
                    )
                    .returning(disputes.c.id)
                ).scalar_one()
        except IntegrityError as e:  # another request opened one between our check and insert
            raise DisputeConflict(f"rental {rental_id} already has an open dispute") from e
        return self.dispute(dispute_id)

    def dispute(self, dispute_id: int) -> Dispute:
        with self.engine.connect() as conn:
            row = conn.execute(select(disputes).where(disputes.c.id == dispute_id)).mappings().first()
        if row is None:
            raise DisputeNotFound(f"no dispute {dispute_id}")
        return Dispute.from_row(row)

    def of_user(self, user_id: int) -> list[Dispute]:
        """A renter's disputes, newest first."""
        return self.find(status="all", user_id=user_id)

    def find(self, status: str = "open", user_id: int | None = None) -> list[Dispute]:
        """Disputes with ``status`` (or ``all``), optionally of one user; newest first."""
        if status != "all" and status not in STATUSES:
            raise DisputeError(f"status must be one of {', '.join(STATUSES)} or all, got {status!r}")
        query = select(disputes).order_by(disputes.c.opened_at.desc(), disputes.c.id.desc())
        if status != "all":
            query = query.where(disputes.c.status == status)
        if user_id is not None:
            query = query.where(disputes.c.user_id == user_id)
        with self.engine.connect() as conn:
            return [Dispute.from_row(row) for row in conn.execute(query).mappings()]

    def resolve(
        self, dispute_id: int, decision: str, note: str, actor_user_id: int, amount: int | None = None
    ) -> Dispute:
        """An operator refunds (``amount``, default the amount claimed) or rejects; audited."""
        if decision not in DECISIONS:
            raise DisputeError(f"decision must be one of {', '.join(DECISIONS)}, got {decision!r}")
        note = note.strip()
        if not note:
            raise DisputeError("a resolution needs a note (it is audited)")
        d = self.dispute(dispute_id)
        if decision == "refund":
            amount = d.amount_claimed if amount is None else amount
            self._check_refund(d, amount)
        elif amount is not None:
            raise DisputeError("amount is only for decision 'refund'")
        self._claim(d)
        if decision == "refund":
            assert amount is not None
            try:
                self.billing.refund(d.rental_id, amount, f"dispute {d.id}: {note}", actor_user_id)
            except (BillingError, PaymentError) as e:
                self._release_claim(d)
                if isinstance(e, PaymentError):
                    raise DisputeRefundFailed(f"dispute {d.id}: the provider refused the refund: {e}") from e
                raise
        self._finish(d, "refunded" if decision == "refund" else "rejected", amount, note, actor_user_id)
        return self.dispute(dispute_id)

    # --- internals -----------------------------------------------------------------------

    def _check_refund(self, d: Dispute, amount: int | None) -> None:
        if amount is None:
            raise DisputeError(f"dispute {d.id} claims no amount: give the refund amount")
        with self.engine.connect() as conn:
            r = conn.execute(select(rentals).where(rentals.c.id == d.rental_id)).mappings().one()
        paid = r["captured"] - r["refunded"]
        if isinstance(amount, bool) or not isinstance(amount, int) or not 0 < amount <= paid:
            raise DisputeError(
                f"refund must be 1..{paid} {r['currency']} minor units (captured {r['captured']} - "
                f"refunded {r['refunded']} on rental {d.rental_id}), got {amount!r}"
            )

    def _claim(self, d: Dispute) -> None:
        """open -> resolving, only if still open: the one operator who wins this may pay out."""
        with self.engine.begin() as conn:
            claimed = conn.execute(
                update(disputes)
                .where(disputes.c.id == d.id, disputes.c.status == "open")
                .values(status="resolving")
            ).rowcount
            if claimed != 1:
                status = conn.execute(select(disputes.c.status).where(disputes.c.id == d.id)).scalar_one()
                raise DisputeConflict(f"dispute {d.id} is {status}, not open")

    def _release_claim(self, d: Dispute) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                update(disputes)
                .where(disputes.c.id == d.id, disputes.c.status == "resolving")
                .values(status="open")
            )

    def _unresolved(self, conn: Connection, rental_id: str) -> int | None:
        return conn.execute(
            select(disputes.c.id).where(
                disputes.c.rental_id == rental_id, disputes.c.status.in_(("open", "resolving"))
            )
        ).scalar_one_or_none()

    def _finish(self, d: Dispute, status: str, amount: int | None, note: str, actor_user_id: int) -> None:
        now = self.clock()
        with self.engine.begin() as conn:
            conn.execute(
                update(disputes)
                .where(disputes.c.id == d.id)
                .values(
                    status=status,
                    resolved_by=actor_user_id,
                    resolved_at=now,
                    refund_amount=amount if status == "refunded" else None,
                    note=note,
                )
            )
            conn.execute(
                insert(audit_log).values(
                    at=now,
                    actor_user_id=actor_user_id,
                    action=f"dispute_{status}",
                    target=f"dispute:{d.id}",
                    detail=json.dumps(
                        {
                            "rental_id": d.rental_id,
                            "decision": "refund" if status == "refunded" else "reject",
                            "amount": amount if status == "refunded" else None,
                            "currency": d.currency,
                            "note": note,
                        }
                    ),
                )
            )
