"""Numbers in paths and query strings: ASCII decimal digits only, small enough for a BIGINT.

``str.isdigit`` also takes digits such as "²" or "٣" that ``int()`` then refuses, and ``int()``
refuses more than 4,300 digits: either was a 500 for a hostile request. One parser for all.
"""

from __future__ import annotations

MAX_ID = 2**62


def decimal(raw: str | None, lo: int = 0, hi: int = MAX_ID) -> int | None:
    """``raw`` as an int in ``lo..hi``, or None when it is anything else (absent, signed, not ASCII)."""
    if raw is None or not (0 < len(raw) <= 19 and raw.isascii() and raw.isdigit()):
        return None
    value = int(raw)
    return value if lo <= value <= hi else None
