"""Pure parts of the web UI: event filters and export, charts, money, tariff words, log masking."""

from __future__ import annotations

import csv
import io
import json
import re

import pytest

from cabinet.ledger import Ledger
from cabinet.web import charts, eventlog
from cabinet.web.diagnostics import LogRing, mask_secrets
from cabinet.web.kiosk import money, tariff_lines
from sync.config import Tariff


@pytest.fixture
def ledger_file(tmp_path):
    path = tmp_path / "ledger.db"
    with Ledger.open(path, "CAB-U") as lg:
        lg.record("battery_seen", slot=1, sn="PB000001", soc=90)
        lg.record("battery_seen", slot=2, sn="PB000002", soc=50)
        lg.record("slot_quarantined", slot=2, reason="bent", by="ana")
        lg.record("tech_action", technician="ana", action="quarantine_slot", detail="slot 2: bent")
    return path


def test_event_filter_by_type_slot_battery_and_time(ledger_file) -> None:
    q = lambda **kw: [e.type for e in eventlog.query(ledger_file, eventlog.EventFilter.from_query(kw))]  # noqa: E731
    assert q(type="battery_seen") == ["battery_seen", "battery_seen"]
    assert q(slot="2") == ["tech_action", "slot_quarantined", "battery_seen"]
    assert q(sn="PB000001") == ["battery_seen"]
    assert q(since="2000-01-01T00:00", type="slot_quarantined,tech_action") == [
        "tech_action",
        "slot_quarantined",
    ]
    assert q(until="2000-01-01") == []
    with pytest.raises(eventlog.FilterError, match="slot"):
        eventlog.EventFilter.from_query({"slot": "two"})


def test_export_csv_and_jsonl_round_trip(ledger_file) -> None:
    events = eventlog.query(ledger_file, eventlog.EventFilter(limit=100), newest_first=False)
    rows = list(csv.DictReader(io.StringIO(eventlog.export(events, "csv"))))
    assert [r["type"] for r in rows][-3:] == ["battery_seen", "slot_quarantined", "tech_action"]
    assert json.loads(rows[-1]["body"])["technician"] == "ana"
    lines = [json.loads(line) for line in eventlog.export(events, "jsonl").splitlines()]
    assert [x["seq"] for x in lines] == sorted(x["seq"] for x in lines)
    assert re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", lines[0]["time_utc"])


def test_chart_draws_every_sample_and_says_it_in_words() -> None:
    svg = charts.line_chart("Voltage", "V", [0.0, 60.0, 120.0], [3.7, 3.9, 4.1])
    points = re.search(r'points="([^"]+)"', svg).group(1).split()
    assert len(points) == 3
    ys = [float(p.split(",")[1]) for p in points]
    assert ys[0] > ys[1] > ys[2]  # rising voltage is drawn upwards
    assert 'role="img"' in svg and "from 3.70 to 4.10 V" in svg
    assert "<circle" in charts.line_chart("SoC", "%", [5.0], [50.0])
    # samples stored out of wall-clock order (the clock was set back) stay inside the plot
    jumped = charts.line_chart("SoC", "%", [100.0, 0.0, 50.0], [60.0, 40.0, 50.0])
    xs = [float(p.split(",")[0]) for p in re.search(r'points="([^"]+)"', jumped).group(1).split()]
    assert xs == sorted(xs) and min(xs) >= charts.PAD_L and max(xs) <= charts.W - charts.PAD_R
    assert "No samples yet" in charts.line_chart("SoC", "%", [], [])


def test_money_and_tariff_in_plain_words() -> None:
    assert (money(150, "CNY"), money(3000, "EUR"), money(500, "JPY"), money(7, "CZK")) == (
        "¥1.50",
        "€30.00",
        "¥500",
        "CZK 0.07",
    )
    t = Tariff(
        currency="CNY",
        unit_minutes=30,
        unit_price_minor=150,
        free_minutes=3,
        daily_cap_minor=3000,
        rental_cap_minor=9900,
        text={"en": "Bought after 7 days."},
    )
    words = tariff_lines(t)
    assert words["en"] == [
        "¥1.50 per 30 min",
        "First 3 min free",
        "At most ¥30.00 per day",
        "At most ¥99.00 per rental",
        "Bought after 7 days.",
    ]
    assert words["zh"][0] == "每30分钟 ¥1.50" and len(words["zh"]) == 4
    assert tariff_lines(None) == {"en": [], "zh": []}


def test_setup_codes_never_reach_the_diagnostics_log() -> None:
    import logging

    ring = LogRing()
    log = logging.getLogger("test.web.ring")
    log.addHandler(ring)
    try:
        log.warning("technician setup code: ABCD-EFGH-JKLM (one-time)")
    finally:
        log.removeHandler(ring)
    assert "ABCD" not in "".join(ring.lines) and "<redacted>" in ring.lines[-1]
    assert mask_secrets("no secret here") == "no secret here"


def test_kiosk_says_every_refusal_reason_in_both_languages() -> None:
    from pathlib import Path

    from cabinet.passes import REASONS

    js = (Path(__file__).parents[2] / "cabinet" / "web" / "static" / "kiosk.js").read_text(encoding="utf-8")
    zh = js[js.index("zh: {") :]
    en = js[: js.index("zh: {")]
    missing = [k for k in REASONS if f"{k}:" not in en or f"{k}:" not in zh]
    assert missing == [], f"kiosk.js lacks words for these refusal reasons: {missing}"
