"""Merchants, their venues and cabinets, and tariffs: the catalogue the rentals are priced from."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import Engine, insert, select, update
from sqlalchemy.exc import IntegrityError

from cloud.db import cabinets, merchants, tariffs, venues
from cloud.errors import CloudError
from cloud.pricing import Tariff
from sync.errors import InvalidTopic
from sync.topics import validate_cabinet_id


class CatalogError(CloudError, ValueError):
    """A merchant/venue/cabinet/tariff request is wrong; the message names the thing."""

    status = 400
    code = "bad_request"


class CatalogNotFound(CatalogError):
    """No such merchant, tariff or cabinet."""

    status = 404
    code = "not_found"


@dataclass(frozen=True)
class Merchant:
    id: int
    name: str
    revenue_share_bp: int
    currency: str
    timezone: str
    default_tariff_id: int | None


@dataclass(frozen=True)
class Pricing:
    """What a rental at a cabinet is priced with, and who shares the revenue."""

    cabinet_id: str
    tariff: Tariff
    tariff_id: int
    merchant_id: int | None
    share_bp: int


class Catalog:
    """Create and look up merchants, venues, cabinets and tariffs."""

    def __init__(self, engine: Engine, clock: Callable[[], float]) -> None:
        self.engine = engine
        self.clock = clock

    def create_merchant(
        self, name: str, revenue_share_bp: int, currency: str, timezone: str = "UTC"
    ) -> Merchant:
        if not name.strip():
            raise CatalogError("merchant name must not be empty")
        if not isinstance(revenue_share_bp, int) or not 0 <= revenue_share_bp <= 10_000:
            raise CatalogError(
                f"revenue_share_bp must be an integer 0..10000 (basis points), got {revenue_share_bp!r}"
            )
        if len(currency) != 3 or not currency.isupper():
            raise CatalogError(f"currency must be an ISO 4217 code like 'EUR', got {currency!r}")
        try:
            ZoneInfo(timezone)
        except (ZoneInfoNotFoundError, ValueError) as e:
            raise CatalogError(f"timezone {timezone!r} is not a known IANA zone") from e
        with self.engine.begin() as conn:
            mid = conn.execute(
                insert(merchants)
                .values(
                    name=name,
                    revenue_share_bp=revenue_share_bp,
                    currency=currency,
                    timezone=timezone,
                    created_at=self.clock(),
                )
                .returning(merchants.c.id)
            ).scalar_one()
        return self.merchant(mid)

    def merchant(self, merchant_id: int) -> Merchant:
        with self.engine.connect() as conn:
            row = conn.execute(select(merchants).where(merchants.c.id == merchant_id)).first()
        if row is None:
            raise CatalogNotFound(f"no merchant {merchant_id}")
        return Merchant(
            row.id, row.name, row.revenue_share_bp, row.currency, row.timezone, row.default_tariff_id
        )

    def merchants(self) -> list[Merchant]:
        with self.engine.connect() as conn:
            ids = conn.execute(select(merchants.c.id).order_by(merchants.c.id)).scalars().all()
        return [self.merchant(i) for i in ids]

    def set_revenue_share(self, merchant_id: int, revenue_share_bp: int) -> Merchant:
        """Change a merchant's share for future rentals (running ones keep theirs)."""
        if not isinstance(revenue_share_bp, int) or not 0 <= revenue_share_bp <= 10_000:
            raise CatalogError(f"revenue_share_bp must be an integer 0..10000, got {revenue_share_bp!r}")
        self.merchant(merchant_id)
        with self.engine.begin() as conn:
            conn.execute(
                update(merchants)
                .where(merchants.c.id == merchant_id)
                .values(revenue_share_bp=revenue_share_bp)
            )
        return self.merchant(merchant_id)

    def create_tariff(
        self, name: str, tariff: Tariff, merchant_id: int | None = None, default: bool = False
    ) -> int:
        """Store a tariff (immutable: a price change is a new tariff); optionally the merchant's default."""
        if merchant_id is not None:
            m = self.merchant(merchant_id)
            if m.currency != tariff.currency:
                raise CatalogError(
                    f"tariff currency {tariff.currency} differs from merchant {m.id}'s {m.currency}"
                )
        with self.engine.begin() as conn:
            tid = conn.execute(
                insert(tariffs)
                .values(merchant_id=merchant_id, name=name, body=tariff.to_json(), created_at=self.clock())
                .returning(tariffs.c.id)
            ).scalar_one()
            if default:
                if merchant_id is None:
                    raise CatalogError("a default tariff needs a merchant")
                conn.execute(
                    update(merchants).where(merchants.c.id == merchant_id).values(default_tariff_id=tid)
                )
        return tid

    def tariff(self, tariff_id: int) -> Tariff:
        with self.engine.connect() as conn:
            body = conn.execute(select(tariffs.c.body).where(tariffs.c.id == tariff_id)).scalar_one_or_none()
        if body is None:
            raise CatalogNotFound(f"no tariff {tariff_id}")
        return Tariff.from_json(body)

    def create_venue(self, merchant_id: int, name: str, address: str | None = None) -> int:
        self.merchant(merchant_id)
        with self.engine.begin() as conn:
            return conn.execute(
                insert(venues)
                .values(merchant_id=merchant_id, name=name, address=address, created_at=self.clock())
                .returning(venues.c.id)
            ).scalar_one()

    def add_cabinet(
        self,
        cabinet_id: str,
        venue_id: int | None = None,
        tariff_id: int | None = None,
        name: str | None = None,
    ) -> None:
        """Register a cabinet (its identity and keys come from provisioning, not from here).

        The id must pass the protocol's one rule (``sync.topics``): an id the topics or the
        broker's ACL would refuse could never be provisioned or reached.
        """
        try:
            validate_cabinet_id(cabinet_id)
        except InvalidTopic as e:
            raise CatalogError(e.reason) from None
        try:
            with self.engine.begin() as conn:
                conn.execute(
                    insert(cabinets).values(
                        id=cabinet_id,
                        venue_id=venue_id,
                        tariff_id=tariff_id,
                        name=name,
                        created_at=self.clock(),
                    )
                )
        except IntegrityError as e:
            raise CatalogError(
                f"cabinet {cabinet_id} already exists, or venue {venue_id}/tariff {tariff_id} does not"
            ) from e

    def pricing(self, cabinet_id: str) -> Pricing:
        """The tariff and revenue share that apply to a rental starting at this cabinet."""
        with self.engine.connect() as conn:
            row = conn.execute(
                select(
                    cabinets.c.tariff_id,
                    merchants.c.id.label("merchant_id"),
                    merchants.c.revenue_share_bp,
                    merchants.c.default_tariff_id,
                )
                .select_from(cabinets.outerjoin(venues).outerjoin(merchants))
                .where(cabinets.c.id == cabinet_id)
            ).first()
        if row is None:
            raise CatalogNotFound(f"unknown cabinet {cabinet_id}")
        tariff_id = row.tariff_id or row.default_tariff_id
        if tariff_id is None:
            raise CatalogError(f"cabinet {cabinet_id} has no tariff and its merchant no default tariff")
        return Pricing(
            cabinet_id, self.tariff(tariff_id), tariff_id, row.merchant_id, row.revenue_share_bp or 0
        )
