"""Tariffs and fees: what a rental costs, in integer minor units.

Rules (see docs/money.md for worked examples):
- a rental no longer than ``free_minutes`` is free; otherwise every started period since the
  start costs ``price_per_period`` (the free minutes are a grace, not a discount);
- ``daily_cap`` limits what one calendar day costs in the merchant's time zone (a period
  belongs to the day it starts in); without a start instant, days are 24 h from the start;
- ``total_cap`` (the battery's price) limits the whole rental; reaching it, or renting longer
  than ``purchase_after_days``, makes the rental a purchase: the renter keeps the battery.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cloud.errors import CloudError

DAY_S = 86_400


class TariffError(CloudError, ValueError):
    """A tariff's fields are inconsistent; the message names the field."""

    status = 400
    code = "bad_request"


@dataclass(frozen=True)
class Tariff:
    """A price list: all amounts in minor units of ``currency``."""

    currency: str
    price_per_period: int
    period_minutes: int = 60
    free_minutes: int = 0
    daily_cap: int | None = None
    total_cap: int = 3500
    hold_amount: int | None = None  # pre-authorisation; defaults to total_cap
    timezone: str = "UTC"
    purchase_after_days: int | None = None

    def __post_init__(self) -> None:
        if len(self.currency) != 3 or not self.currency.isalpha() or not self.currency.isupper():
            raise TariffError(f"tariff.currency must be an ISO 4217 code like 'EUR', got {self.currency!r}")
        for name in ("price_per_period", "period_minutes", "free_minutes", "total_cap"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise TariffError(f"tariff.{name} must be a non-negative integer, got {value!r}")
        if self.period_minutes == 0:
            raise TariffError("tariff.period_minutes must be at least 1")
        if self.total_cap == 0:
            raise TariffError("tariff.total_cap (the battery price) must be positive")
        for name in ("daily_cap", "hold_amount", "purchase_after_days"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value <= 0):
                raise TariffError(f"tariff.{name} must be a positive integer or absent, got {value!r}")
        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError) as e:
            raise TariffError(f"tariff.timezone {self.timezone!r} is not a known IANA time zone") from e

    @property
    def hold(self) -> int:
        """The amount to pre-authorise before a battery leaves."""
        return self.hold_amount if self.hold_amount is not None else self.total_cap

    def to_json(self) -> str:
        """Stable JSON, used to snapshot the tariff into each rental."""
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Tariff:
        return cls.from_dict(json.loads(text))

    @classmethod
    def from_dict(cls, data: dict) -> Tariff:
        """Build from a mapping (API body or stored JSON); unknown fields are an error."""
        known = set(cls.__dataclass_fields__)
        unknown = set(data) - known
        if unknown:
            raise TariffError(f"unknown tariff field(s): {', '.join(sorted(unknown))}")
        try:
            return cls(**data)
        except TypeError as e:
            raise TariffError(f"tariff: {e}") from e


@dataclass(frozen=True)
class Quote:
    """The price of a rental of a given duration, and how it was reached."""

    amount: int
    periods: int
    purchased: bool
    capped_days: int


def quote(tariff: Tariff, duration_s: float, start_at: float | None = None) -> Quote:
    """Price a rental lasting ``duration_s`` seconds that began at unix time ``start_at``."""
    if duration_s < 0 or math.isnan(duration_s):
        raise ValueError(f"rental duration must be >= 0 s, got {duration_s}")
    duration_ms = int(duration_s * 1000)
    if tariff.purchase_after_days is not None and duration_ms >= tariff.purchase_after_days * DAY_S * 1000:
        return Quote(tariff.total_cap, 0, True, 0)
    if duration_ms <= tariff.free_minutes * 60_000:
        return Quote(0, 0, False, 0)
    period_ms = tariff.period_minutes * 60_000
    periods = -(-duration_ms // period_ms)
    total = 0
    capped = 0
    for count in _periods_per_day(tariff, periods, start_at):
        day = count * tariff.price_per_period
        if tariff.daily_cap is not None and day > tariff.daily_cap:
            day = tariff.daily_cap
            capped += 1
        total += day
        if total >= tariff.total_cap:
            return Quote(tariff.total_cap, periods, True, capped)
    return Quote(total, periods, False, capped)


def fee(tariff: Tariff, duration_s: float, start_at: float | None = None) -> int:
    """The fee in minor units for a rental of ``duration_s`` seconds (see module doc)."""
    return quote(tariff, duration_s, start_at).amount


def _periods_per_day(tariff: Tariff, periods: int, start_at: float | None) -> Iterator[int]:
    """Count the periods 0..periods-1 that start in each successive day (lazily: callers stop at the cap)."""
    period_s = tariff.period_minutes * 60
    if start_at is None:
        # days are 24 h windows from the start
        bounds = lambda k: k * DAY_S  # noqa: E731 - offset of day k's start from the rental start
    else:
        zone = ZoneInfo(tariff.timezone)
        start = datetime.fromtimestamp(start_at, UTC).astimezone(zone)
        midnight = start.replace(hour=0, minute=0, second=0, microsecond=0)

        def bounds(k: int) -> float:
            # the wall-clock midnight k days later, in the zone (handles DST days of 23/25 h)
            day = (midnight + timedelta(days=k)).replace(tzinfo=None)
            return day.replace(tzinfo=zone).timestamp() - start_at if k else 0.0

    k = 0
    first = 0
    while first < periods:
        end_offset = bounds(k + 1)
        # periods whose start offset (i * period_s) is before the end of day k
        upto = min(periods, math.ceil(end_offset / period_s))
        if upto > first:
            yield upto - first
            first = upto
        k += 1


# --- durations from cabinet clocks -------------------------------------------------------


@dataclass(frozen=True)
class CabinetTime:
    """When something happened, as the cabinet recorded it: wall clock, monotonic clock, boot."""

    cabinet: str
    at_wall: float
    at_mono: float
    boot_id: str


@dataclass(frozen=True)
class ClockAnchor:
    """A moment where a cabinet boot's monotonic clock is tied to true time.

    The cloud takes one when an event or state message of that boot arrives live: its
    receipt time is (nearly) the true time of the cabinet's monotonic reading.
    """

    cabinet: str
    boot_id: str
    at_mono: float
    true_wall: float


@dataclass(frozen=True)
class Duration:
    """A rental's duration and how much to trust it."""

    seconds: float
    method: str  # "monotonic" | "anchored" | "wall"
    suspect: bool  # True when the clocks disagree and a person should look


def true_time(t: CabinetTime, anchors: dict[tuple[str, str], ClockAnchor]) -> tuple[float, bool]:
    """Best estimate of the true unix time of ``t``, and whether it rests on an anchor."""
    anchor = anchors.get((t.cabinet, t.boot_id))
    if anchor is None:
        return t.at_wall, False
    return anchor.true_wall + (t.at_mono - anchor.at_mono), True


def rental_duration(
    start: CabinetTime,
    end: CabinetTime,
    anchors: dict[tuple[str, str], ClockAnchor] | None = None,
) -> Duration:
    """Pick the trustworthy duration between a rental's start and end events.

    Same cabinet and boot: the monotonic difference, immune to wall-clock jumps. Otherwise
    each end is placed on true time through its boot's clock anchor when there is one, and
    on its wall clock when not; a negative result (a clock was wrong and nothing corrects it)
    is clamped to zero and flagged suspect.
    """
    anchors = anchors or {}
    if start.cabinet == end.cabinet and start.boot_id == end.boot_id:
        seconds = end.at_mono - start.at_mono
        return Duration(max(seconds, 0.0), "monotonic", seconds < 0)
    t0, a0 = true_time(start, anchors)
    t1, a1 = true_time(end, anchors)
    seconds = t1 - t0
    method = "anchored" if (a0 and a1) else "wall"
    return Duration(max(seconds, 0.0), method, seconds < 0)
