"""Money and durations as people read them: the one formatter of the cabinet, the cloud and the scripts.

Money is integer minor units everywhere (house rule); shown to people it is major units with the
currency: ``format_money(3500, "EUR") == "35.00 EUR"``, or with the currency's sign for a screen
(``format_money(3500, "CNY", symbol=True) == "¥35.00"``). Never through floats: the digits come
from ``divmod`` on the integer. Durations: ``format_duration(3900) == "1 h 05 min"``.
"""

from __future__ import annotations

import math

#: ISO 4217 currencies whose minor unit is not 1/100 of the major one (all others have 2 digits)
_ZERO = "BIF CLP DJF GNF ISK JPY KMF KRW PYG RWF UGX UYI VND VUV XAF XOF XPF"
_THREE = "BHD IQD JOD KWD LYD OMR TND"
MINOR_DIGITS: dict[str, int] = {**dict.fromkeys(_ZERO.split(), 0), **dict.fromkeys(_THREE.split(), 3)}
#: signs a screen may show before the amount (``symbol=True``); other currencies keep their code
SYMBOLS: dict[str, str] = {"CNY": "¥", "USD": "$", "EUR": "€", "GBP": "£", "JPY": "¥", "HKD": "HK$"}


def minor_digits(currency: str) -> int:
    """How many digits the currency's minor unit has (2 unless ISO 4217 says otherwise)."""
    return MINOR_DIGITS.get(currency.upper(), 2)


def major_text(minor: int, currency: str) -> str:
    """The amount in major units without the currency: ``major_text(3500, "EUR") == "35.00"``."""
    if isinstance(minor, bool) or not isinstance(minor, int):
        raise TypeError(f"money is integer minor units, got {minor!r}")
    digits = minor_digits(currency)
    sign, value = ("-" if minor < 0 else ""), abs(minor)
    if digits == 0:
        return f"{sign}{value}"
    major, rest = divmod(value, 10**digits)
    return f"{sign}{major}.{rest:0{digits}d}"


def format_money(minor: int, currency: str, *, symbol: bool = False) -> str:
    """Integer minor units as people read them: ``35.00 EUR``; ``symbol=True``: ``€35.00``, ``¥35.00``
    (a currency without a sign here: ``CZK 0.07``)."""
    amount = major_text(minor, currency)
    if not symbol:
        return f"{amount} {currency}"
    sign = SYMBOLS.get(currency)
    if sign is None:
        return f"{currency} {amount}"
    if amount.startswith("-"):
        return f"-{sign}{amount[1:]}"
    return f"{sign}{amount}"


def format_duration(seconds: float) -> str:
    """A duration as people read it: ``42 s``, ``5 min 07 s``, ``1 h 05 min``, ``2 d 3 h 05 min``."""
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"a duration is a finite number of seconds >= 0, got {seconds!r}")
    s = int(seconds)
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    minutes = s // 60
    days, minutes = divmod(minutes, 24 * 60)
    hours, minutes = divmod(minutes, 60)
    if days:
        return f"{days} d {hours} h {minutes:02d} min"
    return f"{hours} h {minutes:02d} min"
