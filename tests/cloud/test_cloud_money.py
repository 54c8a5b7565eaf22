"""The journal itself: balanced entries only, booked once, corrected by new entries, proven by check()."""

from __future__ import annotations

import pytest
from sqlalchemy import insert

from cloud import money
from cloud.db import journal_postings
from cloud.money import PLATFORM_BANK, PROVIDER_CLEARING, Posting, UnbalancedEntry


def test_unbalanced_entry_is_refused(engine):
    with pytest.raises(UnbalancedEntry, match="sum to"):
        with engine.begin() as conn:
            money.post(conn, "x", [Posting("a", 100, "EUR"), Posting("b", -99, "EUR")], "k", 1.0)
    with pytest.raises(UnbalancedEntry, match="sum to"):
        with engine.begin() as conn:
            money.post(conn, "x", [Posting("a", 100, "EUR"), Posting("b", -100, "CNY")], "k", 1.0)
    assert money.check(engine) == []


def test_same_idempotency_key_books_once(engine):
    with engine.begin() as conn:
        first = money.post(conn, "x", [Posting("a", 100, "EUR"), Posting("b", -100, "EUR")], "k", 1.0)
        again = money.post(conn, "x", [Posting("a", 100, "EUR"), Posting("b", -100, "EUR")], "k", 2.0)
        assert first == again
        assert money.balances(conn)[("a", "EUR")] == 100


def test_correction_is_a_new_reversing_entry(engine):
    with engine.begin() as conn:
        wrong = money.post_merchant_payout(conn, 7, 500, "EUR", "2026-11", 1.0)
        fix = money.correct(conn, wrong, "paid the wrong merchant", 2.0)
        assert fix != wrong
        bal = money.balances(conn)
    assert bal[(money.merchant_payable(7), "EUR")] == 0
    assert bal[(PLATFORM_BANK, "EUR")] == 0


def test_check_finds_a_smuggled_unbalanced_posting(engine):
    with engine.begin() as conn:
        entry = money.post(
            conn, "x", [Posting(PROVIDER_CLEARING, 100, "EUR"), Posting(PLATFORM_BANK, -100, "EUR")], "k", 1.0
        )
        conn.execute(
            insert(journal_postings).values(entry_id=entry, account=PLATFORM_BANK, amount=-1, currency="EUR")
        )
    problems = [str(p) for p in money.check(engine)]
    assert any(f"journal entry {entry}: postings sum to -1 EUR" in p for p in problems)
    assert any("trial balance (EUR)" in p for p in problems)


def test_merchant_share_rounds_down_and_refund_split_telescopes():
    fee, bp = 999, 3333
    assert money.merchant_share(fee, bp) == 332
    parts = []
    refunded = 0
    for amount in (1, 500, 498):
        parts.append(
            money.merchant_share(fee - refunded, bp) - money.merchant_share(fee - refunded - amount, bp)
        )
        refunded += amount
    assert sum(parts) == money.merchant_share(fee, bp)
