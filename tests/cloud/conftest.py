"""Cloud test fixtures: a settable clock, an engine on the migrated database, and a small world.

The database itself (``db_url``: SQLite and PostgreSQL, ``sqlite_template``, ``pg_database_url``)
comes from the plugin ``tests/cloud_db.py``, registered in ``tests/conftest.py``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import pytest
from sqlalchemy import Engine

from cloud.db import make_engine

if TYPE_CHECKING:
    from cloud.rentals import CabinetEvent


class Clock:
    """A settable clock (unix seconds) handed to services so tests control time."""

    def __init__(self, start: float = 1_789_963_200.0) -> None:  # 2026-09-21 06:00 in Berlin
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    eng = make_engine(db_url)
    yield eng
    eng.dispose()


# --- a small world: one merchant, two cabinets, a renter with a card ----------------------

EUROPE_TARIFF: dict[str, Any] = dict(
    currency="EUR",
    price_per_period=250,
    period_minutes=60,
    free_minutes=5,
    daily_cap=1500,
    total_cap=3500,
    purchase_after_days=5,
    timezone="Europe/Berlin",
)


class World:
    """The rental service wired to a sandbox provider on a real database, with helpers."""

    def __init__(self, engine: Engine, clock: Clock, hold_ttl_s: float = 7 * 86400) -> None:
        from cloud.payments import SandboxProvider, WebhookInbox
        from cloud.pricing import Tariff
        from cloud.rentals import RentalService
        from cloud.users import Accounts

        self.engine = engine
        self.clock = clock
        self.sandbox = SandboxProvider(engine, clock, "whsec", hold_ttl_s=hold_ttl_s, webhook_copies=2)
        self.inbox = WebhookInbox(engine, "sandbox", "whsec", clock)
        self.service = RentalService(
            engine, self.sandbox, clock, eject_timeout_s=120, hold_capture_margin_s=6 * 3600
        )
        self.accounts = Accounts(engine, clock, scrypt_n=2**10)
        cat = self.service.catalog
        self.merchant = cat.create_merchant("Cafe Aurora", 3000, "EUR", "Europe/Berlin")
        self.tariff_id = cat.create_tariff(
            "standard", Tariff(**EUROPE_TARIFF), self.merchant.id, default=True
        )
        venue = cat.create_venue(self.merchant.id, "Aurora Mitte")
        cat.add_cabinet("CAB-A", venue)
        cat.add_cabinet("CAB-B", venue)
        self._seq: dict[str, int] = {}

    def renter(self, email: str = "ana@example.com", card: str | None = "tok_ok") -> int:
        user = self.accounts.register(email, "correct horse battery")
        if card:
            self.accounts.set_card(user.id, card)
        return user.id

    def event(
        self,
        cabinet: str,
        type_: str,
        *,
        wall: float | None = None,
        mono: float = 0.0,
        boot: str = "boot-1",
        **body: Any,
    ) -> CabinetEvent:
        from cloud.rentals import CabinetEvent

        self._seq[cabinet] = self._seq.get(cabinet, 0) + 1
        seq = self._seq[cabinet]
        return CabinetEvent(
            cabinet, seq, f"{cabinet}-{seq}", type_, self.clock() if wall is None else wall, mono, boot, body
        )

    def deliver_webhooks(self) -> int:
        from cloud.payments import SIGNATURE_HEADER

        fresh = 0
        for d in self.sandbox.due_webhooks():
            fresh += not self.inbox.handle(d.body, d.headers[SIGNATURE_HEADER]).duplicate
        return fresh


@pytest.fixture
def world(engine: Engine, clock: Clock) -> World:
    return World(engine, clock)


@pytest.fixture
def make_world(engine: Engine, clock: Clock) -> Callable[..., World]:
    """Build a World with other settings, e.g. ``make_world(hold_ttl_s=7200)``."""
    return lambda **kw: World(engine, clock, **kw)
