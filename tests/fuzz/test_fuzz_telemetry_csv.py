"""Random telemetry CSV: parsed into valid windows, or a TelemetryError that names the row.

``models.telemetry.parse_telemetry`` reads files that come from cabinets and from training data
exports; whoever made a broken file needs the row (and column) to fix it, and the caller must
never see a csv or numpy exception instead.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from models.telemetry import TELEMETRY_COLUMNS, TelemetryError, parse_telemetry, read_telemetry_csv, validate

FUZZ = settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

numbers = st.sampled_from(["0", "1", "3.7", "-0.5", "100", "101", "-1", "nan", "inf", "-inf", "1e999", "1_0",
                           " 4.1 ", "", "x", "0x10", "1e-400", "٣", "1,5"])  # fmt: skip
fields = numbers | st.text(max_size=12) | st.sampled_from(["PB000001", "PB000002", ""])


@st.composite
def csv_texts(draw: st.DrawFn) -> str:
    cols = list(TELEMETRY_COLUMNS)
    if draw(st.integers(0, 4)) == 0:
        cols = draw(st.permutations([*cols, "extra"]))
    if draw(st.integers(0, 9)) == 0:
        cols.remove(draw(st.sampled_from(TELEMETRY_COLUMNS)))
    rows = [cols]
    t: dict[str, float] = {}
    for _ in range(draw(st.integers(0, 8))):
        sn = draw(st.sampled_from(["PB000001", "PB000002"]))
        t[sn] = t.get(sn, 0.0) + draw(st.sampled_from([30.0, 30.0, 0.0, -5.0]))
        good = {"battery_sn": sn, "t_s": str(t[sn]), "voltage_v": "4.0", "current_a": "1.0", "temp_c": "25",
                "soc_pct": "50", "cycle": "3", "extra": "z"}  # fmt: skip
        row = [good[c] for c in cols]
        if draw(st.integers(0, 2)) == 0:  # one damaged field
            row[draw(st.integers(0, len(row) - 1))] = draw(fields)
        if draw(st.integers(0, 9)) == 0:
            row = row[: draw(st.integers(0, len(row)))]
        rows.append(row)
    sep = draw(st.sampled_from(["\n", "\r\n", "\r"]))
    text = sep.join(",".join(r) for r in rows)
    if draw(st.integers(0, 9)) == 0:
        i = draw(st.integers(0, len(text)))
        text = (
            text[:i]
            + draw(st.text(max_size=5) | st.sampled_from(['"', "\x00", "\ufeff", '"a\nb"']))
            + text[i:]
        )
    return text


def check_parse(text: str) -> None:
    try:
        windows = parse_telemetry(io.StringIO(text, newline=""), source="fuzz.csv")
    except TelemetryError as e:
        assert e.row is not None, f"no row named: {e}"
        assert f"row {e.row}" in str(e) and "fuzz.csv" in str(e)
        event("TelemetryError")
        return
    event(f"{len(windows)} window(s)")
    for sn, w in windows.items():
        assert sn.strip() == sn and sn
        validate(w)  # finite, soc 0-100, time never backwards
        assert np.all(w.cycle >= 0)


@FUZZ
@given(csv_texts())
def test_damaged_telemetry_csv_parses_to_valid_windows_or_names_the_row(text: str) -> None:
    check_parse(text)


@FUZZ
@given(st.text(max_size=400))
def test_any_text_as_telemetry_csv_parses_or_names_the_row(text: str) -> None:
    check_parse(text)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=200))
def test_any_bytes_as_a_telemetry_file_are_refused_with_a_telemetry_error(tmp_path: Path, raw: bytes) -> None:
    path = tmp_path / "t.csv"
    path.write_bytes(",".join(TELEMETRY_COLUMNS).encode() + b"\n" + raw)
    try:
        read_telemetry_csv(path)
    except TelemetryError as e:
        assert str(path) in str(e)


def test_oversized_field_is_a_telemetry_error_naming_the_row() -> None:
    text = ",".join(TELEMETRY_COLUMNS) + '\nPB000001,0,4,1,25,50,3\n"' + "9" * 140_000 + '",1,1,1,1,1,1\n'
    with pytest.raises(TelemetryError) as err:
        parse_telemetry(io.StringIO(text, newline=""), source="big.csv")
    assert err.value.row == 3
