"""Cloud test fixtures: a migrated database on SQLite (a temp file) and on PostgreSQL.

PostgreSQL comes from env CABINET_TEST_PG_URL (default: the local server, user postgres,
database test); the suite creates its own database there and drops it at the end.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, make_url, text

from cloud.db import make_engine, metadata, migrate

PG_DEFAULT = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


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


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("cloud-db") / "template.db"
    engine = make_engine(f"sqlite:///{path}")
    migrate(engine)
    engine.dispose()  # the last connection's close folds the WAL into the file we copy
    return path


@pytest.fixture(scope="session")
def pg_database_url() -> Iterator[str]:
    admin_url = os.environ.get("CABINET_TEST_PG_URL", PG_DEFAULT)
    name = f"cloud_test_{uuid.uuid4().hex[:10]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 5})
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as e:
        admin.dispose()
        pytest.skip(
            f"PostgreSQL not reachable at {admin_url} ({type(e).__name__}); "
            "set CABINET_TEST_PG_URL=postgresql+psycopg://user@host:port/db to a server where the user may CREATE DATABASE"
        )
    url = make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    engine = make_engine(url)
    migrate(engine)
    engine.dispose()
    try:
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A freshly migrated, empty database on each engine."""
    if request.param == "sqlite":
        path = tmp_path / "cloud.db"
        shutil.copy(request.getfixturevalue("sqlite_template"), path)
        return f"sqlite:///{path}"
    url = request.getfixturevalue("pg_database_url")
    engine = create_engine(url)
    names = ", ".join(t.name for t in metadata.sorted_tables)
    with engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
    engine.dispose()
    return url


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    eng = make_engine(db_url)
    yield eng
    eng.dispose()


# --- a small world: one merchant, two cabinets, a renter with a card ----------------------

EUROPE_TARIFF = dict(
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
        **body,
    ):
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
def make_world(engine: Engine, clock: Clock):
    """Build a World with other settings, e.g. ``make_world(hold_ttl_s=7200)``."""
    return lambda **kw: World(engine, clock, **kw)
