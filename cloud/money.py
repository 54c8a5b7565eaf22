"""The double-entry money journal: integer minor units, immutable entries, corrections as new entries.

Each entry's postings sum to zero per currency (debit > 0, credit < 0). Accounts:

- ``renter:<user>``: what a renter owes us (> 0) or we owe them (< 0);
- ``provider:clearing``: money the payment provider collected for us and has not paid out;
- ``platform:revenue``: our share of fees (a credit balance, < 0);
- ``merchant:<id>:payable``: the merchant's share, owed to them until paid out (< 0);
- ``platform:bank``: our bank account (payouts from the provider, to merchants);
- ``holds:renter:<user>`` / ``holds:provider``: memo pair for money reserved by holds; a hold
  moves no money, but recording it proves every hold is released exactly once.

``check`` proves the books (see docs/money.md); ``cabinet-cloud money-check`` runs it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from sqlalchemy import Connection, Engine, RowMapping, func, insert, select

from cloud.db import journal_entries, journal_postings, payments, rentals
from cloud.errors import CloudError
from sync.events import RentalStatus

PROVIDER_CLEARING = "provider:clearing"
#: What a provider withheld from us while a dispute is open (Stripe withdraws at the open)
PROVIDER_DISPUTED = "provider:disputed"
PLATFORM_REVENUE = "platform:revenue"
PLATFORM_BANK = "platform:bank"
HOLDS_PROVIDER = "holds:provider"


def renter(user_id: int) -> str:
    return f"renter:{user_id}"


def renter_holds(user_id: int) -> str:
    return f"holds:renter:{user_id}"


def merchant_payable(merchant_id: int | None) -> str:
    return f"merchant:{merchant_id}:payable" if merchant_id is not None else "merchant:none:payable"


def merchant_share(amount: int, share_bp: int) -> int:
    """The merchant's part of ``amount`` (rounded down; the platform keeps the odd unit)."""
    return amount * share_bp // 10_000


class UnbalancedEntry(CloudError, ValueError):
    """An entry's postings do not sum to zero; the message shows them."""

    status = 500  # a bug: the books refuse it, the request fails and it is logged
    code = "unbalanced_entry"


@dataclass(frozen=True)
class Posting:
    account: str
    amount: int  # debit > 0, credit < 0
    currency: str


def post(
    conn: Connection,
    kind: str,
    postings: Iterable[Posting],
    idempotency_key: str,
    at: float,
    *,
    rental_id: str | None = None,
    merchant_id: int | None = None,
    memo: str | None = None,
    corrects_entry_id: int | None = None,
) -> int:
    """Append one balanced entry inside the caller's transaction; returns its id.

    Posting the same ``idempotency_key`` again returns the first entry's id and adds nothing,
    so a retried operation never books money twice.
    """
    existing = conn.execute(
        select(journal_entries.c.id).where(journal_entries.c.idempotency_key == idempotency_key)
    ).scalar_one_or_none()
    if existing is not None:
        return existing
    lines = [p for p in postings if p.amount != 0]
    totals: dict[str, int] = defaultdict(int)
    for p in lines:
        if not isinstance(p.amount, int) or isinstance(p.amount, bool):
            raise UnbalancedEntry(
                f"{kind} {idempotency_key}: amount {p.amount!r} of {p.account} is not an integer"
            )
        totals[p.currency] += p.amount
    if any(totals.values()):
        raise UnbalancedEntry(f"{kind} {idempotency_key}: postings {lines} sum to {dict(totals)}, not zero")
    entry_id = conn.execute(
        insert(journal_entries)
        .values(
            kind=kind,
            rental_id=rental_id,
            merchant_id=merchant_id,
            idempotency_key=idempotency_key,
            corrects_entry_id=corrects_entry_id,
            memo=memo,
            created_at=at,
        )
        .returning(journal_entries.c.id)
    ).scalar_one()
    if lines:
        conn.execute(
            insert(journal_postings),
            [
                {"entry_id": entry_id, "account": p.account, "amount": p.amount, "currency": p.currency}
                for p in lines
            ],
        )
    return entry_id


def correct(conn: Connection, entry_id: int, reason: str, at: float) -> int:
    """Reverse a wrong entry with a new one (the original stays, as the law wants)."""
    original = conn.execute(select(journal_entries).where(journal_entries.c.id == entry_id)).first()
    if original is None:
        raise ValueError(f"no journal entry {entry_id} to correct")
    lines = conn.execute(select(journal_postings).where(journal_postings.c.entry_id == entry_id)).all()
    return post(
        conn,
        "correction",
        [Posting(r.account, -r.amount, r.currency) for r in lines],
        f"correction:{entry_id}",
        at,
        rental_id=original.rental_id,
        merchant_id=original.merchant_id,
        memo=reason,
        corrects_entry_id=entry_id,
    )


# --- the entries of a rental's money life --------------------------------------------------


@dataclass(frozen=True)
class RentalMoney:
    """What the journal needs to know about a rental."""

    rental_id: str
    user_id: int
    merchant_id: int | None
    share_bp: int
    currency: str


def post_hold(conn: Connection, r: RentalMoney, amount: int, n: int, at: float) -> int:
    return post(
        conn,
        "hold",
        [Posting(renter_holds(r.user_id), amount, r.currency), Posting(HOLDS_PROVIDER, -amount, r.currency)],
        f"rental:{r.rental_id}:hold:{n}",
        at,
        rental_id=r.rental_id,
    )


def post_hold_released(conn: Connection, r: RentalMoney, amount: int, n: int, why: str, at: float) -> int:
    """A hold ends (captured, voided or expired): its reservation is gone."""
    return post(
        conn,
        "hold_released",
        [Posting(HOLDS_PROVIDER, amount, r.currency), Posting(renter_holds(r.user_id), -amount, r.currency)],
        f"rental:{r.rental_id}:hold_released:{n}",
        at,
        rental_id=r.rental_id,
        memo=why,
    )


def post_fee(conn: Connection, r: RentalMoney, fee: int, at: float) -> int:
    """The renter owes the fee; it is split between the platform and the merchant."""
    share = merchant_share(fee, r.share_bp)
    return post(
        conn,
        "fee",
        [
            Posting(renter(r.user_id), fee, r.currency),
            Posting(merchant_payable(r.merchant_id), -share, r.currency),
            Posting(PLATFORM_REVENUE, -(fee - share), r.currency),
        ],
        f"rental:{r.rental_id}:fee",
        at,
        rental_id=r.rental_id,
        merchant_id=r.merchant_id,
    )


def post_capture(conn: Connection, r: RentalMoney, amount: int, n: int, at: float) -> int:
    """The provider took money from the renter's card for us."""
    return post(
        conn,
        "capture",
        [Posting(PROVIDER_CLEARING, amount, r.currency), Posting(renter(r.user_id), -amount, r.currency)],
        f"rental:{r.rental_id}:capture:{n}",
        at,
        rental_id=r.rental_id,
    )


def post_refund(
    conn: Connection,
    r: RentalMoney,
    amount: int,
    fee: int,
    refunded_before: int,
    ref: str,
    reason: str,
    at: float,
) -> int:
    """A fee refund: revenue and the merchant's share are reversed, the provider pays the renter back."""
    merchant_part = merchant_share(fee - refunded_before, r.share_bp) - merchant_share(
        fee - refunded_before - amount, r.share_bp
    )
    return post(
        conn,
        "refund",
        [
            Posting(merchant_payable(r.merchant_id), merchant_part, r.currency),
            Posting(PLATFORM_REVENUE, amount - merchant_part, r.currency),
            Posting(PROVIDER_CLEARING, -amount, r.currency),
        ],
        f"rental:{r.rental_id}:refund:{ref}",
        at,
        rental_id=r.rental_id,
        merchant_id=r.merchant_id,
        memo=reason,
    )


def post_excess_refund(conn: Connection, r: RentalMoney, amount: int, n: int | str, at: float) -> int:
    """Money captured above the fee (a long rental's early capture) goes back to the renter."""
    return post(
        conn,
        "refund_excess",
        [Posting(renter(r.user_id), amount, r.currency), Posting(PROVIDER_CLEARING, -amount, r.currency)],
        f"rental:{r.rental_id}:refund_excess:{n}",
        at,
        rental_id=r.rental_id,
    )


def post_chargeback(
    conn: Connection, r: RentalMoney, amount: int, ref: str, at: float, withdrawn: bool = False
) -> int:
    """A lost dispute: the provider took ``amount`` back from us for the renter, who owes it again.

    ``withdrawn``: the provider already took it when the dispute opened (Stripe), so it comes
    out of what is withheld (:func:`post_dispute_withdrawal`), not out of clearing again."""
    source = PROVIDER_DISPUTED if withdrawn else PROVIDER_CLEARING
    return post(
        conn,
        "chargeback",
        [Posting(renter(r.user_id), amount, r.currency), Posting(source, -amount, r.currency)],
        f"rental:{r.rental_id}:chargeback:{ref}",
        at,
        rental_id=r.rental_id,
    )


def post_dispute_withdrawal(conn: Connection, r: RentalMoney, amount: int, ref: str, at: float) -> int:
    """The provider withheld ``amount`` of a captured payment while its dispute is open."""
    return post(
        conn,
        "withheld",
        [Posting(PROVIDER_DISPUTED, amount, r.currency), Posting(PROVIDER_CLEARING, -amount, r.currency)],
        f"rental:{r.rental_id}:dispute_withdrawal:{ref}",
        at,
        rental_id=r.rental_id,
    )


def post_dispute_reinstated(conn: Connection, r: RentalMoney, amount: int, ref: str, at: float) -> int:
    """A won dispute: what the provider withheld comes back to clearing."""
    return post(
        conn,
        "reinstated",
        [Posting(PROVIDER_CLEARING, amount, r.currency), Posting(PROVIDER_DISPUTED, -amount, r.currency)],
        f"rental:{r.rental_id}:dispute_reinstated:{ref}",
        at,
        rental_id=r.rental_id,
    )


def post_merchant_payout(
    conn: Connection, merchant_id: int, amount: int, currency: str, ref: str, at: float
) -> int:
    """We paid a merchant their share (a settlement)."""
    return post(
        conn,
        "merchant_payout",
        [Posting(merchant_payable(merchant_id), amount, currency), Posting(PLATFORM_BANK, -amount, currency)],
        f"merchant:{merchant_id}:payout:{ref}",
        at,
        merchant_id=merchant_id,
    )


# --- the proof ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Problem:
    """One thing that does not add up, and where."""

    where: str
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.message}"


def balances(conn: Connection) -> dict[tuple[str, str], int]:
    """Every account's balance per currency: {(account, currency): amount}."""
    rows = conn.execute(
        select(
            journal_postings.c.account, journal_postings.c.currency, func.sum(journal_postings.c.amount)
        ).group_by(journal_postings.c.account, journal_postings.c.currency)
    )
    return {(a, c): int(s) for a, c, s in rows}


def check(engine: Engine) -> list[Problem]:
    """Prove the books: an empty list means every entry, account and rental adds up."""
    problems: list[Problem] = []
    with engine.connect() as conn:
        problems += _check_entries(conn)
        problems += _check_accounts(conn)
        problems += _check_rentals(conn)
    return problems


def _check_entries(conn: Connection) -> list[Problem]:
    problems = []
    rows = conn.execute(
        select(journal_postings.c.entry_id, journal_postings.c.currency, func.sum(journal_postings.c.amount))
        .group_by(journal_postings.c.entry_id, journal_postings.c.currency)
        .having(func.sum(journal_postings.c.amount) != 0)
    )
    for entry_id, currency, total in rows:
        problems.append(Problem(f"journal entry {entry_id}", f"postings sum to {total} {currency}, not zero"))
    orphans = conn.execute(
        select(journal_postings.c.id).where(journal_postings.c.entry_id.not_in(select(journal_entries.c.id)))
    ).all()
    for (pid,) in orphans:
        problems.append(Problem(f"journal posting {pid}", "belongs to no entry"))
    return problems


def _check_accounts(conn: Connection) -> list[Problem]:
    problems = []
    totals: dict[str, int] = defaultdict(int)
    for (account, currency), amount in balances(conn).items():
        totals[currency] += amount
        if account == PROVIDER_CLEARING and amount < 0:
            problems.append(
                Problem(
                    f"account {account} ({currency})",
                    f"negative balance {amount}: refunded more than captured",
                )
            )
        if account == PROVIDER_DISPUTED and amount < 0:
            problems.append(
                Problem(
                    f"account {account} ({currency})",
                    f"negative balance {amount}: more reinstated or charged back than withheld",
                )
            )
        if account.startswith("merchant:") and amount > 0:
            problems.append(
                Problem(
                    f"account {account} ({currency})",
                    f"debit balance {amount}: merchant paid more than earned",
                )
            )
        if account.startswith("holds:renter:") and amount < 0:
            problems.append(
                Problem(f"account {account} ({currency})", f"holds released more than placed ({amount})")
            )
    for currency, total in totals.items():
        if total != 0:
            problems.append(Problem(f"trial balance ({currency})", f"all accounts sum to {total}, not zero"))
    return problems


@dataclass(frozen=True)
class Booked:
    """What a rental's journal entries moved, per kind of account (fee: the renter's fee postings)."""

    renter: int = 0
    holds: int = 0
    clearing: int = 0
    disputed: int = 0  # withheld by the provider while a dispute is open
    merchant: int = 0
    revenue: int = 0
    fee: int = 0


@dataclass(frozen=True)
class Paid:
    """What a rental's succeeded or confirmed payment records add up to, per kind."""

    capture: int = 0
    refund: int = 0
    refund_excess: int = 0
    chargeback: int = 0  # taken back by the renter's bank or the provider (a lost dispute)


@dataclass(frozen=True)
class RentalBooks:
    """One rental's row next to its journal sums and its payment sums: what each invariant reads."""

    rental: RowMapping  # the rentals row
    booked: Booked
    paid: Paid

    @property
    def where(self) -> str:
        return f"rental {self.rental['id']}"


def _booked_per_rental(conn: Connection) -> dict[str, Booked]:
    """The journal's sums per rental id (rental ids with no row included)."""
    per_rental: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    rows = conn.execute(
        select(
            journal_entries.c.rental_id,
            journal_entries.c.kind,
            journal_postings.c.account,
            journal_postings.c.amount,
        )
        .join(journal_postings, journal_postings.c.entry_id == journal_entries.c.id)
        .where(journal_entries.c.rental_id.is_not(None))
    )
    for rental_id, kind, account, amount in rows:
        sums = per_rental[rental_id]
        if account.startswith("renter:"):
            sums["renter"] += amount
        elif account.startswith("holds:renter:"):
            sums["holds"] += amount
        elif account == PROVIDER_CLEARING:
            sums["clearing"] += amount
        elif account == PROVIDER_DISPUTED:
            sums["disputed"] += amount
        elif account.startswith("merchant:"):
            sums["merchant"] += amount
        elif account == PLATFORM_REVENUE:
            sums["revenue"] += amount
        if kind == "fee" and account.startswith("renter:"):
            sums["fee"] += amount
    return {rental_id: Booked(**sums) for rental_id, sums in per_rental.items()}


def _paid_per_rental(conn: Connection) -> dict[str, Paid]:
    paid: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for rental_id, kind, amount in conn.execute(
        select(payments.c.rental_id, payments.c.kind, payments.c.amount).where(
            payments.c.status.in_(("succeeded", "confirmed"))
        )
    ):
        paid[rental_id][kind] += amount
    return {
        rental_id: Paid(**{k: p[k] for k in ("capture", "refund", "refund_excess", "chargeback") if k in p})
        for rental_id, p in paid.items()
    }


def rental_books(conn: Connection) -> tuple[list[RentalBooks], list[str]]:
    """Every rental's books (in the rentals table's order), and the rental ids that only the
    journal names."""
    booked = _booked_per_rental(conn)
    paid = _paid_per_rental(conn)
    books = [
        RentalBooks(r, booked.pop(r["id"], Booked()), paid.get(r["id"], Paid()))
        for r in conn.execute(select(rentals)).mappings()
    ]
    return books, list(booked)


def _fee_booked_as_charged(b: RentalBooks) -> list[Problem]:
    """An ended rental's booked fee is the fee on its row."""
    fee = b.rental["fee"] or 0
    if b.rental["status"] in (RentalStatus.CLOSED, RentalStatus.PURCHASED) and b.booked.fee != fee:
        return [Problem(b.where, f"fee booked {b.booked.fee} but the rental's fee is {fee}")]
    return []


def _no_fee_before_the_end(b: RentalBooks) -> list[Problem]:
    """A pending, active or aborted rental has no fee booked."""
    if (
        b.rental["status"] in (RentalStatus.PENDING, RentalStatus.ACTIVE, RentalStatus.ABORTED)
        and b.booked.fee != 0
    ):
        return [Problem(b.where, f"{b.rental['status']} rental has a fee of {b.booked.fee} booked")]
    return []


def _captured_as_paid(b: RentalBooks) -> list[Problem]:
    """The row's captured amount is what the capture payments add up to."""
    if b.paid.capture != b.rental["captured"]:
        return [
            Problem(b.where, f"payments captured {b.paid.capture} but the rental says {b.rental['captured']}")
        ]
    return []


def _refunded_as_paid(b: RentalBooks) -> list[Problem]:
    """The row's refunded amount is what the fee and excess refunds and chargebacks add up to."""
    refunded = b.paid.refund + b.paid.refund_excess + b.paid.chargeback
    if refunded != b.rental["refunded"]:
        return [Problem(b.where, f"payments refunded {refunded} but the rental says {b.rental['refunded']}")]
    return []


def _clearing_is_captured_less_refunded(b: RentalBooks) -> list[Problem]:
    """Provider clearing (with what the provider withholds for an open dispute) moved exactly
    what was captured less what was refunded."""
    r = b.rental
    if b.booked.clearing + b.booked.disputed != r["captured"] - r["refunded"]:
        return [
            Problem(
                b.where,
                f"provider clearing moved {b.booked.clearing}"
                + (f" (+ {b.booked.disputed} withheld for a dispute)" if b.booked.disputed else "")
                + f", expected captured {r['captured']} - refunded {r['refunded']}",
            )
        ]
    return []


def _nothing_withheld_once_the_dispute_closed(b: RentalBooks) -> list[Problem]:
    """What a provider withheld for a dispute is reinstated (won) or charged back (lost) by the
    time the dispute is closed."""
    if b.booked.disputed and b.rental["flag"] in ("chargeback_won", "chargeback_lost"):
        return [
            Problem(b.where, f"dispute closed ({b.rental['flag']}) but {b.booked.disputed} still withheld")
        ]
    return []


def _renter_balance_is_fee_less_captured(b: RentalBooks) -> list[Problem]:
    """The renter's balance for the rental is fee - captured + excess refunds + chargebacks."""
    expected_renter = b.booked.fee - b.rental["captured"] + b.paid.refund_excess + b.paid.chargeback
    if b.booked.renter != expected_renter:
        return [
            Problem(
                b.where,
                f"renter balance {b.booked.renter}, expected fee - captured + excess refunds = {expected_renter}",
            )
        ]
    return []


def _paid_means_settled(b: RentalBooks) -> list[Problem]:
    """A rental marked paid leaves the renter owing nothing for it."""
    if b.rental["payment_status"] == "paid" and b.booked.renter != 0:
        return [Problem(b.where, f"marked paid but the renter's balance for it is {b.booked.renter}")]
    return []


def _holds_released_at_the_end(b: RentalBooks) -> list[Problem]:
    """Once a rental is no longer pending or active, none of its holds reserves money, except the
    hold of a fee still due that its capture is retried on (a declined capture keeps the hold)."""
    retrying = b.rental["payment_status"] == "due" and b.rental["hold_status"] == "held"
    if (
        b.rental["status"] not in (RentalStatus.PENDING, RentalStatus.ACTIVE)
        and b.booked.holds != 0
        and not retrying
    ):
        return [
            Problem(b.where, f"{b.rental['status']} rental still has {b.booked.holds} reserved by a hold")
        ]
    return []


def _earnings_split_by_share(b: RentalBooks) -> list[Problem]:
    """Revenue and the merchant's share add up to the fee less fee refunds, split by ``share_bp``."""
    earned = b.booked.fee - b.paid.refund
    booked = -(b.booked.merchant + b.booked.revenue)
    if booked != earned:
        return [Problem(b.where, f"revenue + merchant share booked {booked}, expected {earned}")]
    share = merchant_share(earned, b.rental["share_bp"])
    if -b.booked.merchant != share:
        return [
            Problem(
                b.where,
                f"merchant share booked {-b.booked.merchant}, expected {share} ({b.rental['share_bp']} bp of {earned})",
            )
        ]
    return []


RENTAL_INVARIANTS: tuple[Callable[[RentalBooks], list[Problem]], ...] = (
    _fee_booked_as_charged,
    _no_fee_before_the_end,
    _captured_as_paid,
    _refunded_as_paid,
    _clearing_is_captured_less_refunded,
    _nothing_withheld_once_the_dispute_closed,
    _renter_balance_is_fee_less_captured,
    _paid_means_settled,
    _holds_released_at_the_end,
    _earnings_split_by_share,
)
"""What must hold for each rental, checked in this order."""


def _unknown_rentals(rental_ids: Iterable[str]) -> list[Problem]:
    """Journal entries only name rentals that exist."""
    return [Problem(f"rental {i}", "journal entries name a rental that does not exist") for i in rental_ids]


def _check_rentals(conn: Connection) -> list[Problem]:
    """Each rental's entries agree with the rental row and its payment records."""
    books, unknown = rental_books(conn)
    problems = [p for b in books for invariant in RENTAL_INVARIANTS for p in invariant(b)]
    return problems + _unknown_rentals(unknown)
