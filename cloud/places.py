"""Where the renter finds a cabinet: venue coordinates and opening hours, nearby cabinets, a
cabinet's public page data, and the tariff in plain words (issue 15).

- A venue has WGS 84 coordinates (``lat``/``lon``, both or neither) and optional opening hours in
  OpenStreetMap ``opening_hours`` syntax, parsed and evaluated by ``opening-hours-py`` in the
  merchant's time zone (public holidays ``PH``/``SH`` and sun events use the venue's coordinates).
- ``nearby``: bounded work whatever the fleet's size: a bounding box of the radius, answered by a
  range scan on ``ix_venues_lat_lon``, ordered in SQL by an equirectangular distance (plain
  arithmetic, the same on SQLite and PostgreSQL) and cut to a few times ``limit`` candidates;
  then the exact great-circle distance, the radius, and ``limit`` (at most ``MAX_LIMIT``).
- Packs ready and free slots come from the fleet view (``fleet_slots``: telemetry and events;
  ``fleet_cabinets.counts['slots']``: the cabinet's size) with the cabinet's rentable rules as the
  cloud last set them (``cabinet_settings``: minimum charge, deny list).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import opening_hours
from sqlalchemy import Connection, Engine, Float, and_, bindparam, case, insert, or_, select, update

from cloud.db import cabinet_settings, cabinets, fleet_cabinets, fleet_slots, merchants, tariffs, venues
from cloud.errors import CloudError
from cloud.pricing import Tariff
from sync.amounts import format_money
from sync.errors import InvalidTopic
from sync.topics import validate_cabinet_id

EARTH_RADIUS_M = 6_371_008.8  # mean radius (IUGG)
M_PER_DEG_LAT = math.pi * EARTH_RADIUS_M / 180
DEFAULT_LIMIT, MAX_LIMIT = 20, 100
DEFAULT_RADIUS_M, MAX_RADIUS_M = 5_000, 50_000
CANDIDATES_PER_RESULT = 3  # rows the SQL ordering hands to the exact one, per result asked for
ONLINE_GRACE_S = 180.0  # as the operator's fleet view: a cabinet not heard from for longer is offline
DEFAULT_MIN_SOC = 80  # the cabinet's own default rent.min_soc when the cloud set none
MAX_OPENING_HOURS = 255
OPENING_HOURS_EXAMPLE = '"Mo-Fr 07:00-22:00; Sa-Su 09:00-20:00" or "24/7"'
# expressions whose meaning depends on the place (holidays of its country, its sunrise): only these
# are evaluated with the coordinates, since finding the country from them costs milliseconds
_PLACE_DEPENDENT = re.compile(r"\b(PH|SH|sunrise|sunset|dawn|dusk)\b")


class PlaceError(CloudError, ValueError):
    """A venue's coordinates, opening hours or a nearby query is wrong; the message says how."""

    status = 400
    code = "bad_request"


class PlaceNotFound(PlaceError):
    """No such venue or cabinet."""

    status = 404
    code = "not_found"


# --- validation ------------------------------------------------------------------------------


def check_coordinates(lat: Any, lon: Any) -> tuple[float, float] | None:
    """``(lat, lon)`` as floats, or None for neither; a PlaceError unless both are finite and in range."""
    if lat is None and lon is None:
        return None
    if lat is None or lon is None:
        raise PlaceError("lat and lon go together: give both, or null for both")
    out = []
    for name, value, bound in (("lat", lat, 90.0), ("lon", lon, 180.0)):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise PlaceError(f"{name} must be a number of degrees, got {value!r}")
        f = float(value)
        if not math.isfinite(f) or not -bound <= f <= bound:
            raise PlaceError(
                f"{name} must be a finite number of degrees in -{bound:g}..{bound:g}, got {value!r}"
            )
        out.append(f)
    return out[0], out[1]


def check_opening_hours(text: Any) -> str | None:
    """The opening hours as stored (stripped), or None; a PlaceError with the parser's reason."""
    if text is None:
        return None
    if not isinstance(text, str):
        raise PlaceError(f"opening_hours must be a string like {OPENING_HOURS_EXAMPLE}, or null")
    value = text.strip()
    if not value:
        raise PlaceError(f"opening_hours is empty: give e.g. {OPENING_HOURS_EXAMPLE}, or null for unknown")
    if len(value) > MAX_OPENING_HOURS:
        raise PlaceError(f"opening_hours has {len(value)} characters, at most {MAX_OPENING_HOURS}")
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise PlaceError("opening_hours must not contain control characters")
    try:
        opening_hours.OpeningHours(value)
    except Exception as e:  # the parser's ParserError (a SyntaxError); its text has a caret drawing
        raise PlaceError(f"opening_hours {value!r} is not OpenStreetMap opening_hours syntax"
                         f"{_parser_reason(str(e))}; e.g. {OPENING_HOURS_EXAMPLE}") from None  # fmt: skip
    return value


def _parser_reason(message: str) -> str:
    where = re.search(r"--> *\d+:(\d+)", message)
    what = re.search(r"= *(.+?)\s*$", message)
    parts = []
    if where:
        parts.append(f"at character {where.group(1)}")
    if what:
        parts.append(f"({what.group(1)[:160]})")
    return (" " + " ".join(parts)) if parts else ""


@lru_cache(maxsize=4096)
def _parsed(text: str, timezone: str, lat: float | None, lon: float | None) -> Any:
    tz = _zone(timezone)
    if lat is not None and lon is not None and _PLACE_DEPENDENT.search(text):
        return opening_hours.OpeningHours(text, timezone=tz, coords=(lat, lon), auto_timezone=False)
    return opening_hours.OpeningHours(text, timezone=tz, auto_country=False, auto_timezone=False)


@lru_cache(maxsize=256)
def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def open_now(text: str | None, timezone: str, now: float, lat: float | None = None,
             lon: float | None = None) -> bool | None:  # fmt: skip
    """Whether the venue is open at unix time ``now`` (None: no hours given, or they say unknown)."""
    if not text:
        return None
    try:
        # a place to 0.1 degree (11 km) is precise enough for its country and its sunrise (about 30 s),
        # and lets the venues of one town share one parsed expression
        place = (round(lat, 1), round(lon, 1)) if lat is not None and lon is not None else (None, None)
        oh = _parsed(text, timezone, *place)
        state = oh.state(datetime.fromtimestamp(now, _zone(timezone)))[0]
    except Exception:  # stored before validation existed, or a place the library cannot place
        return None
    if state == opening_hours.State.OPEN:
        return True
    if state == opening_hours.State.CLOSED:
        return False
    return None


# --- the tariff and the hold in plain words ---------------------------------------------------


def tariff_words(t: Tariff) -> dict[str, str]:
    """The tariff as one sentence per language, money in major units with the currency."""

    def m(v: int) -> str:
        return format_money(v, t.currency)

    en = [f"{m(t.price_per_period)} per {t.period_minutes} min"]
    zh = [f"每{t.period_minutes}分钟 {m(t.price_per_period)}"]
    if t.free_minutes:
        en.append(f"first {t.free_minutes} min free")
        zh.append(f"前{t.free_minutes}分钟免费")
    if t.daily_cap is not None:
        en.append(f"at most {m(t.daily_cap)} a day")
        zh.append(f"每日封顶 {m(t.daily_cap)}")
    en.append(f"{m(t.total_cap)} in total")
    zh.append(f"总计封顶 {m(t.total_cap)}")
    text_en, text_zh = ", ".join(en), "，".join(zh)
    if t.purchase_after_days is not None:
        text_en += f"; kept longer than {t.purchase_after_days} days, the pack is yours for {m(t.total_cap)}"
        text_zh += f"；超过{t.purchase_after_days}天未归还视为购买（{m(t.total_cap)}）"
    return {"en": text_en, "zh": text_zh}


def hold_words(amount: int, currency: str) -> dict[str, str]:
    """What a rental holds on the renter's payment method, and why."""
    money = format_money(amount, currency)
    return {"en": f"{money} held, released when you return", "zh": f"预授权 {money}，归还后释放"}


# --- the fleet view of a cabinet, as a renter needs it ---------------------------------------


@dataclass(frozen=True)
class Stock:
    online: bool
    packs_ready: int
    free_slots: int | None  # None: the cabinet never told its number of slots


def stock(conn: Connection, cabinet_ids: Iterable[str], now: float) -> dict[str, Stock]:
    """Online state, rentable packs and free slots of each cabinet, from the fleet view."""
    ids = sorted(set(cabinet_ids))
    if not ids:
        return {}
    heard = {
        r.cabinet_id: r
        for r in conn.execute(
            select(fleet_cabinets.c.cabinet_id, fleet_cabinets.c.online, fleet_cabinets.c.last_seen,
                   fleet_cabinets.c.counts).where(fleet_cabinets.c.cabinet_id.in_(ids))
        )
    }  # fmt: skip
    rules = _rentable_rules(conn, ids)
    ready: dict[str, int] = dict.fromkeys(ids, 0)
    taken: dict[str, int] = dict.fromkeys(ids, 0)
    readings = conn.execute(
        select(fleet_slots.c.cabinet_id, fleet_slots.c.battery_sn, fleet_slots.c.soc, fleet_slots.c.faults,
               fleet_slots.c.quarantined, fleet_slots.c.fault_kind).where(fleet_slots.c.cabinet_id.in_(ids))
    ).tuples()  # fmt: skip
    for cab, sn, soc, faults, quarantined, fault_kind in readings:
        blocked = bool(quarantined) or fault_kind is not None
        if sn is not None or blocked:
            taken[cab] += 1
        min_soc, denied = rules[cab]
        if (
            sn is not None
            and not blocked
            and not faults
            and soc is not None
            and soc >= min_soc
            and sn not in denied
        ):
            ready[cab] += 1
    out = {}
    for cab in ids:
        row = heard.get(cab)
        online = bool(row is not None and row.online and row.last_seen is not None
                      and now - row.last_seen <= ONLINE_GRACE_S)  # fmt: skip
        slots = _slot_count(row.counts if row is not None else None)
        free = None if slots is None else max(0, slots - taken[cab])
        out[cab] = Stock(online, ready[cab], free)
    return out


def _slot_count(counts: str | None) -> int | None:
    try:
        value = json.loads(counts).get("slots") if counts else None
    except (ValueError, AttributeError):
        return None
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def _rentable_rules(conn: Connection, ids: list[str]) -> dict[str, tuple[int, frozenset[str]]]:
    """Each cabinet's (minimum charge, deny list): the fleet's ``*`` overridden by its own."""
    rows = {
        r.cabinet_id: r
        for r in conn.execute(
            select(cabinet_settings.c.cabinet_id, cabinet_settings.c.rentable_min_soc,
                   cabinet_settings.c.battery_deny_list).where(cabinet_settings.c.cabinet_id.in_([*ids, "*"]))
        )
    }  # fmt: skip

    def deny(row: Any) -> set[str]:
        try:
            return (
                {str(x) for x in json.loads(row.battery_deny_list)}
                if row and row.battery_deny_list
                else set()
            )
        except ValueError:
            return set()

    fleet = rows.get("*")
    out = {}
    for cab in ids:
        own = rows.get(cab)
        min_soc = DEFAULT_MIN_SOC
        for row in (fleet, own):
            if row is not None and row.rentable_min_soc is not None:
                min_soc = row.rentable_min_soc
        out[cab] = (min_soc, frozenset(deny(fleet) | deny(own)))
    return out


# --- the service ------------------------------------------------------------------------------


def venue_json(row: Any, now: float) -> dict[str, Any]:
    return {
        "id": row["venue_id"],
        "name": row["venue_name"],
        "address": row["address"],
        "lat": row["lat"],
        "lon": row["lon"],
        "opening_hours": row["opening_hours"],
        "open_now": open_now(row["opening_hours"], row["timezone"] or "UTC", now, row["lat"], row["lon"]),
    }


CABINET_COLUMNS = (
    cabinets.c.id.label("cabinet_id"),
    cabinets.c.name.label("cabinet_name"),
    cabinets.c.tariff_id,
    venues.c.id.label("venue_id"),
    venues.c.name.label("venue_name"),
    venues.c.address,
    venues.c.lat,
    venues.c.lon,
    venues.c.opening_hours,
    merchants.c.timezone,
    merchants.c.default_tariff_id,
)


class Places:
    """Venues' places and hours, nearby cabinets, a cabinet's public page data."""

    def __init__(self, engine: Engine, clock: Callable[[], float]) -> None:
        self.engine = engine
        self.clock = clock

    # --- venues (operator) ---------------------------------------------------------------

    def create_venue(
        self,
        merchant_id: int,
        name: str,
        address: str | None = None,
        lat: Any = None,
        lon: Any = None,
        opening_hours_text: Any = None,
    ) -> dict[str, Any]:
        if not name.strip():
            raise PlaceError("venue name must not be empty")
        coords = check_coordinates(lat, lon)
        hours = check_opening_hours(opening_hours_text)
        with self.engine.begin() as conn:
            if conn.execute(select(merchants.c.id).where(merchants.c.id == merchant_id)).first() is None:
                raise PlaceNotFound(f"no merchant {merchant_id}")
            vid = conn.execute(
                insert(venues)
                .values(merchant_id=merchant_id, name=name, address=address, created_at=self.clock(),
                        lat=coords[0] if coords else None, lon=coords[1] if coords else None,
                        opening_hours=hours)
                .returning(venues.c.id)
            ).scalar_one()  # fmt: skip
        return self.venue(vid)

    def update_venue(self, venue_id: int, changes: Mapping[str, Any]) -> dict[str, Any]:
        """Set some of name, address, lat/lon (together), opening_hours; null clears (not name)."""
        values: dict[str, Any] = {}
        if "name" in changes:
            if not isinstance(changes["name"], str) or not changes["name"].strip():
                raise PlaceError("venue name must not be empty")
            values["name"] = changes["name"]
        if "address" in changes:
            values["address"] = changes["address"]
        if "lat" in changes or "lon" in changes:
            if "lat" not in changes or "lon" not in changes:
                raise PlaceError("lat and lon go together: set both (or both null)")
            coords = check_coordinates(changes["lat"], changes["lon"])
            values["lat"], values["lon"] = coords if coords else (None, None)
        if "opening_hours" in changes:
            values["opening_hours"] = check_opening_hours(changes["opening_hours"])
        if not values:
            raise PlaceError("nothing to change: give name, address, lat and lon, or opening_hours")
        with self.engine.begin() as conn:
            if not conn.execute(update(venues).where(venues.c.id == venue_id).values(**values)).rowcount:
                raise PlaceNotFound(f"no venue {venue_id}")
        return self.venue(venue_id)

    def venue(self, venue_id: int) -> dict[str, Any]:
        with self.engine.connect() as conn:
            row = conn.execute(
                select(venues.c.id.label("venue_id"), venues.c.merchant_id, venues.c.name.label("venue_name"),
                       venues.c.address, venues.c.lat, venues.c.lon, venues.c.opening_hours, merchants.c.timezone)
                .select_from(venues.join(merchants))
                .where(venues.c.id == venue_id)
            ).mappings().first()  # fmt: skip
        if row is None:
            raise PlaceNotFound(f"no venue {venue_id}")
        return {**venue_json(row, self.clock()), "merchant_id": row["merchant_id"]}

    # --- the renter's queries (public) ---------------------------------------------------

    def nearby(
        self, lat: float, lon: float, limit: int = DEFAULT_LIMIT, radius_m: int = DEFAULT_RADIUS_M
    ) -> list[dict[str, Any]]:
        """Registered cabinets at venues within ``radius_m`` of (lat, lon), nearest first."""
        if check_coordinates(lat, lon) is None:  # pragma: no cover - both given
            raise PlaceError("lat and lon are required")
        if not 1 <= limit <= MAX_LIMIT:
            raise PlaceError(f"limit must be 1..{MAX_LIMIT}, got {limit}")
        if not 1 <= radius_m <= MAX_RADIUS_M:
            raise PlaceError(f"radius_m must be 1..{MAX_RADIUS_M}, got {radius_m}")
        now = self.clock()
        statement, values = nearby_statement(lat, lon, radius_m, limit * CANDIDATES_PER_RESULT)
        with self.engine.connect() as conn:
            rows = conn.execute(statement, values).mappings().all()
            found = []
            for r in rows:
                d = distance_m(lat, lon, r["lat"], r["lon"])
                if d <= radius_m:
                    found.append((d, r))
            found.sort(key=lambda x: (x[0], x[1]["cabinet_id"]))
            found = found[:limit]
            stocks = stock(conn, [r["cabinet_id"] for _, r in found], now)
            words = TariffWords(conn)
            return [
                {
                    "id": r["cabinet_id"],
                    "name": r["cabinet_name"],
                    "venue": venue_json(r, now),
                    "distance_m": round(d),
                    **asdict(stocks[r["cabinet_id"]]),
                    "tariff_text": words.text(r["tariff_id"] or r["default_tariff_id"]),
                }
                for d, r in found
            ]

    def public_cabinet(self, cabinet_id: str) -> dict[str, Any]:
        """A cabinet's page (what its kiosk QR code opens): venue, stock, tariff, the hold."""
        try:
            validate_cabinet_id(cabinet_id)
        except InvalidTopic:
            raise PlaceNotFound(f"no cabinet {cabinet_id[:64]!r}") from None
        now = self.clock()
        with self.engine.connect() as conn:
            row = conn.execute(
                select(*CABINET_COLUMNS)
                .select_from(cabinets.outerjoin(venues).outerjoin(merchants))
                .where(cabinets.c.id == cabinet_id)
            ).mappings().first()  # fmt: skip
            if row is None:
                raise PlaceNotFound(f"no cabinet {cabinet_id}")
            s = stock(conn, [cabinet_id], now)[cabinet_id]
            tariff = TariffWords(conn).tariff(row["tariff_id"] or row["default_tariff_id"])
        out: dict[str, Any] = {
            "id": cabinet_id,
            "name": row["cabinet_name"],
            "venue": venue_json(row, now) if row["venue_id"] is not None else None,
            **asdict(s),
            "rentable": bool(s.online and s.packs_ready and tariff is not None),
            "tariff": None,
            "tariff_text": None,
            "hold_amount": None,
            "hold_text": None,
            "currency": None,
        }
        if tariff is not None:
            out |= {
                "tariff": {k: getattr(tariff, k) for k in ("currency", "price_per_period", "period_minutes",
                                                            "free_minutes", "daily_cap", "total_cap",
                                                            "purchase_after_days")},
                "tariff_text": tariff_words(tariff),
                "hold_amount": tariff.hold,
                "hold_text": hold_words(tariff.hold, tariff.currency),
                "currency": tariff.currency,
            }  # fmt: skip
        return out


class TariffWords:
    """Tariffs of one request, each read and put into words once."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.tariffs: dict[int, Tariff | None] = {}
        self.words: dict[int, dict[str, str] | None] = {}

    def tariff(self, tariff_id: int | None) -> Tariff | None:
        if tariff_id is None:
            return None
        if tariff_id not in self.tariffs:
            body = self.conn.execute(
                select(tariffs.c.body).where(tariffs.c.id == tariff_id)
            ).scalar_one_or_none()
            self.tariffs[tariff_id] = Tariff.from_json(body) if body else None
        return self.tariffs[tariff_id]

    def text(self, tariff_id: int | None) -> dict[str, str] | None:
        if tariff_id is None:
            return None
        if tariff_id not in self.words:
            t = self.tariff(tariff_id)
            self.words[tariff_id] = tariff_words(t) if t is not None else None
        words = self.words[tariff_id]
        return dict(words) if words is not None else None


# --- geometry -----------------------------------------------------------------------------------


def distance_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance (haversine) in metres."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    h = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(h)))


@dataclass(frozen=True)
class Box:
    """The degrees a circle of ``radius_m`` around a point can reach (lon ranges: one, or two
    across the antimeridian; None: every longitude, the circle covers a pole)."""

    lat_min: float
    lat_max: float
    lon_ranges: tuple[tuple[float, float], ...] | None


def bounding_box(lat: float, lon: float, radius_m: float) -> Box:
    angular = radius_m / EARTH_RADIUS_M
    dlat = math.degrees(angular)
    lat_min, lat_max = max(-90.0, lat - dlat), min(90.0, lat + dlat)
    reach = math.sin(angular) / max(math.cos(math.radians(lat)), 1e-12)
    if lat_min <= -90.0 or lat_max >= 90.0 or reach >= 1.0:
        return Box(lat_min, lat_max, None)
    dlon = math.degrees(math.asin(reach))
    lo, hi = lon - dlon, lon + dlon
    if lo < -180.0:
        return Box(lat_min, lat_max, ((lo + 360.0, 180.0), (-180.0, hi)))
    if hi > 180.0:
        return Box(lat_min, lat_max, ((lo, 180.0), (-180.0, hi - 360.0)))
    return Box(lat_min, lat_max, ((lo, hi),))


def nearby_query(lat: float, lon: float, radius_m: float, candidates: int) -> Any:
    """Cabinets at venues in the bounding box, nearest first by an equirectangular distance
    (plain arithmetic: the same on SQLite and PostgreSQL), at most ``candidates`` rows."""
    statement, values = nearby_statement(lat, lon, radius_m, candidates)
    return statement.params(values)


def nearby_statement(
    lat: float, lon: float, radius_m: float, candidates: int
) -> tuple[Any, dict[str, float]]:
    """:func:`nearby_query` as a statement built once per shape and its parameters (what
    ``Places.nearby`` runs: binding the values into a copy would cost more than the query)."""
    box = bounding_box(lat, lon, radius_m)
    ranges = box.lon_ranges or ()
    values: dict[str, float] = {"lat_min": box.lat_min, "lat_max": box.lat_max, "lat0": lat, "lon0": lon,
                                "k": math.cos(math.radians(lat))}  # fmt: skip
    for i, (lo, hi) in enumerate(ranges):
        values |= {f"lo{i}": lo, f"hi{i}": hi}
    return _nearby_statement(box.lon_ranges is None, len(ranges), candidates), values


@lru_cache(maxsize=64)
def _nearby_statement(every_lon: bool, lon_ranges: int, candidates: int) -> Any:
    """The query's shape, built once (building a SQLAlchemy expression costs more than running it)."""
    where: list[Any] = [
        venues.c.lat.between(bindparam("lat_min"), bindparam("lat_max")),
        venues.c.lon.is_not(None),
    ]
    if not every_lon:
        where.append(
            or_(*(venues.c.lon.between(bindparam(f"lo{i}"), bindparam(f"hi{i}")) for i in range(lon_ranges)))
        )
    dlon = venues.c.lon - bindparam("lon0", type_=Float)
    wrapped = case((dlon > 180, dlon - 360), (dlon < -180, dlon + 360), else_=dlon)
    dlat = venues.c.lat - bindparam("lat0", type_=Float)
    k = bindparam("k", type_=Float)
    approx = dlat * dlat + (wrapped * k) * (wrapped * k)
    return (
        select(*CABINET_COLUMNS)
        .select_from(venues.join(cabinets, cabinets.c.venue_id == venues.c.id).join(merchants))
        .where(and_(*where))
        .order_by(approx, cabinets.c.id)
        .limit(candidates)
    )
