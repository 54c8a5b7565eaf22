"""The demo's renter-app helpers (scripts/demo_app.py) and what scripts/app.py prints for people.

The demo itself runs in tests/test_demo.py; these check the pieces it is made of without it.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Any

import pytest

SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"


@pytest.fixture(scope="module")
def scripts() -> Any:
    sys.path.insert(0, str(SCRIPTS))
    try:
        yield importlib.import_module("demo_app"), importlib.import_module("app")
    finally:
        sys.path.remove(str(SCRIPTS))


def test_the_venues_get_two_nearby_places_once_and_are_updated_after(scripts) -> None:
    demo_app, _ = scripts
    calls: list[tuple[str, str, dict]] = []

    def call(base: str, method: str, path: str, token: str | None = None, body: Any = None) -> Any:
        calls.append((method, path, body))
        return {"id": 7}

    session: dict[str, Any] = {"venue_id": 3, "merchant_id": 1}
    assert demo_app.place_venues(call, "http://c", "op", session, "Asia/Shanghai") == [3, 7]
    assert [(m, p) for m, p, _ in calls] == [("PATCH", "/api/venues/3"), ("POST", "/api/merchants/1/venues")]
    (lat1, lon1), (lat2, lon2) = [(b["lat"], b["lon"]) for _, _, b in calls]
    assert abs(lat1 - 31.23) < 0.1 and abs(lon1 - 121.47) < 0.1  # Shanghai, for a CNY merchant
    from cloud.places import check_opening_hours, distance_m

    assert 300 < distance_m(lat1, lon1, lat2, lon2) < 2000  # two nearby points
    assert all(check_opening_hours(b["opening_hours"]) for _, _, b in calls)
    calls.clear()
    assert demo_app.place_venues(call, "http://c", "op", session, "Europe/Berlin") == [3, 7]
    assert [m for m, _, _ in calls] == ["PATCH", "PATCH"]  # the next start: no new venue


def test_the_sms_code_is_read_from_the_cloud_log_after_the_request(scripts, tmp_path: Path) -> None:
    demo_app, _ = scripts
    log = tmp_path / "cloud.log"
    log.write_text("x WARNING cloud.sms: SMS to +861380013****: your code is 111111 (valid 5 min)\n")
    since = log.stat().st_size
    with log.open("a") as f:
        f.write("x WARNING cloud.sms: SMS to +491511234****: your code is 222222\n")
        f.write("x WARNING cloud.sms: SMS to +861380013****: your code is 333333 (valid 5 min)\n")
    assert demo_app.sms_code_from_log(log, "+8613800138000", since) == "333333"
    assert demo_app.sms_code_from_log(log, "+8613800138000", log.stat().st_size, timeout=0.3) is None


def test_the_app_link_is_drawn_as_a_qr_code(scripts) -> None:
    demo_app, _ = scripts
    art = demo_app.qr_text("http://127.0.0.1:8000/app/")
    assert len(art.splitlines()) > 10 and "█" in art


def test_app_py_prints_money_in_major_units_and_durations_in_words(scripts) -> None:
    _, app = scripts
    out = app.readable(
        [{"id": "R1", "currency": "EUR", "fee": 400, "captured": 400, "duration_s": 3900.2, "battery_sn": "PB1"},
         {"rental_id": "R2", "hold_amount": 9900, "currency": "CNY", "tariff": {"total_cap": 9900}}]
    )  # fmt: skip
    assert out[0]["fee"] == 400 and out[0]["fee_text"] == "4.00 EUR" and out[0]["captured_text"] == "4.00 EUR"
    assert out[0]["duration"] == "1 h 05 min" and "battery_sn_text" not in out[0]
    assert out[1]["hold_amount_text"] == "99.00 CNY" and out[1]["tariff"]["total_cap_text"] == "99.00 CNY"
    assert app.readable({"fee": 400}) == {"fee": 400}  # no currency, no guess
