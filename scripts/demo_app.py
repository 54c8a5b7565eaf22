"""The demo's renter-app side (issue 15): venues with places and opening hours, the app's link and
QR code, and the demo renter's phone sign-in with the SMS code the cloud's ``log`` backend wrote.

Used by ``scripts/demo.py``; talks to the cloud only through its HTTP API (``app.call``).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

#: two venues of the demo merchant, about 800 m apart, in the merchant's city
PLACES = {
    "Asia/Shanghai": [
        ("Aurora Station Hall", "People's Square, Shanghai", 31.2304, 121.4737),
        ("Aurora Riverside", "Nanjing Road East, Shanghai", 31.2366, 121.4795),
    ],
    "Europe/Berlin": [
        ("Aurora Station Hall", "Alexanderplatz, Berlin", 52.5219, 13.4132),
        ("Aurora Riverside", "Hackescher Markt, Berlin", 52.5225, 13.4020),
    ],
}
HOURS = ("24/7", "Mo-Fr 07:00-22:00; Sa-Su 09:00-20:00")
DEMO_PHONE = "+8613800138000"


def place_venues(
    call: Callable[..., Any], base: str, op: str, session: dict[str, Any], timezone: str
) -> list[int]:
    """The demo's venues with coordinates and opening hours (the first is ``session['venue_id']``);
    their ids, one per place. Run on every start: an older demo's venue gets its place too."""
    places = PLACES.get(timezone, PLACES["Europe/Berlin"])
    ids = [session["venue_id"], *session.get("more_venue_ids", [])]
    for n, (name, address, lat, lon) in enumerate(places):
        body = {
            "name": name,
            "address": address,
            "lat": lat,
            "lon": lon,
            "opening_hours": HOURS[n % len(HOURS)],
        }
        if n < len(ids):
            call(base, "PATCH", f"/api/venues/{ids[n]}", op, body)
        else:
            ids.append(call(base, "POST", f"/api/merchants/{session['merchant_id']}/venues", op, body)["id"])
    session["more_venue_ids"] = ids[1:]
    return ids


def qr_text(url: str) -> str:
    """The URL as a QR code for a terminal (segno, as the kiosk and ``app.py pass`` draw theirs)."""
    import io

    import segno

    out = io.StringIO()
    segno.make(url, error="m").terminal(out=out, compact=True)
    return out.getvalue()


def sms_code_from_log(log: Path, phone: str, since: int, timeout: float = 15.0) -> str | None:
    """The code the cloud's ``log`` SMS backend wrote for ``phone`` after byte ``since`` of its log."""
    masked = re.escape(phone[:-4] + "****")
    pattern = re.compile(rf"SMS to {masked}: your code is (\d{{6}})")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with log.open("rb") as f:
                f.seek(since)
                found = pattern.findall(f.read().decode(errors="replace"))
        except OSError:
            found = []
        if found:
            return str(found[-1])
        time.sleep(0.2)
    return None


def sms_sign_in(call: Callable[..., Any], base: str, session: dict[str, Any], cloud_log: Path) -> str:
    """Sign the demo renter in with a code sent to the demo phone (added to the renter's account);
    prints the code, as the cloud's log shows it. Returns the new token."""
    since = cloud_log.stat().st_size if cloud_log.exists() else 0
    call(base, "POST", "/api/auth/sms/start", body={"phone": DEMO_PHONE})
    code = sms_code_from_log(cloud_log, DEMO_PHONE, since)
    if code is None:
        raise RuntimeError(f"no SMS code for {DEMO_PHONE} in {cloud_log}")
    print(f"renter: SMS code for {DEMO_PHONE}: {code} (sms_backend = log: read from {cloud_log.name})")
    got = call(base, "POST", "/api/auth/sms/verify", session["token"], {"phone": DEMO_PHONE, "code": code})
    print(f"renter: signed in by phone {got['user']['phone']} (the demo account, {got['user']['email']})")
    return str(got["token"])
