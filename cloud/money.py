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
from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import Connection, Engine, func, insert, select

from cloud.db import journal_entries, journal_postings, payments, rentals

PROVIDER_CLEARING = "provider:clearing"
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


class UnbalancedEntry(ValueError):
    """An entry's postings do not sum to zero; the message shows them."""


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


def _check_rentals(conn: Connection) -> list[Problem]:
    """Each rental's entries agree with the rental row and its payment records."""
    problems = []
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
        elif account.startswith("merchant:"):
            sums["merchant"] += amount
        elif account == PLATFORM_REVENUE:
            sums["revenue"] += amount
        if kind == "fee" and account.startswith("renter:"):
            sums["fee"] += amount
    paid: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for rental_id, kind, amount in conn.execute(
        select(payments.c.rental_id, payments.c.kind, payments.c.amount).where(
            payments.c.status.in_(("succeeded", "confirmed"))
        )
    ):
        paid[rental_id][kind] += amount
    for r in conn.execute(select(rentals)).mappings():
        where = f"rental {r['id']}"
        s = per_rental.pop(r["id"], defaultdict(int))
        p: dict[str, int] = paid.get(r["id"], {})
        fee = r["fee"] or 0
        fee_refunds = p.get("refund", 0)
        excess = p.get("refund_excess", 0)
        if r["status"] in ("closed", "purchased") and s["fee"] != fee:
            problems.append(Problem(where, f"fee booked {s['fee']} but the rental's fee is {fee}"))
        if r["status"] in ("pending", "active", "aborted") and s["fee"] != 0:
            problems.append(Problem(where, f"{r['status']} rental has a fee of {s['fee']} booked"))
        if p.get("capture", 0) != r["captured"]:
            problems.append(
                Problem(where, f"payments captured {p.get('capture', 0)} but the rental says {r['captured']}")
            )
        if fee_refunds + excess != r["refunded"]:
            problems.append(
                Problem(
                    where, f"payments refunded {fee_refunds + excess} but the rental says {r['refunded']}"
                )
            )
        if s["clearing"] != r["captured"] - r["refunded"]:
            problems.append(
                Problem(
                    where,
                    f"provider clearing moved {s['clearing']}, expected captured {r['captured']} - refunded {r['refunded']}",
                )
            )
        expected_renter = s["fee"] - r["captured"] + excess
        if s["renter"] != expected_renter:
            problems.append(
                Problem(
                    where,
                    f"renter balance {s['renter']}, expected fee - captured + excess refunds = {expected_renter}",
                )
            )
        if r["payment_status"] == "paid" and s["renter"] != 0:
            problems.append(Problem(where, f"marked paid but the renter's balance for it is {s['renter']}"))
        if r["status"] not in ("pending", "active") and s["holds"] != 0:
            problems.append(Problem(where, f"{r['status']} rental still has {s['holds']} reserved by a hold"))
        earned = s["fee"] - fee_refunds
        if -(s["merchant"] + s["revenue"]) != earned:
            problems.append(
                Problem(
                    where,
                    f"revenue + merchant share booked {-(s['merchant'] + s['revenue'])}, expected {earned}",
                )
            )
        elif -s["merchant"] != merchant_share(earned, r["share_bp"]):
            problems.append(
                Problem(
                    where,
                    f"merchant share booked {-s['merchant']}, expected {merchant_share(earned, r['share_bp'])} ({r['share_bp']} bp of {earned})",
                )
            )
    for rental_id in per_rental:
        problems.append(Problem(f"rental {rental_id}", "journal entries name a rental that does not exist"))
    return problems
