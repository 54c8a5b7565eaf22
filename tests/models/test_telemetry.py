"""The telemetry CSV contract: good files parse, bad ones name the row and column."""

from __future__ import annotations

import io

import numpy as np
import pytest

from models.telemetry import (
    BatteryTelemetry,
    TelemetryError,
    TelemetrySample,
    parse_telemetry,
    read_telemetry_csv,
    telemetry_to_csv_text,
)

HEADER = "battery_sn,t_s,voltage_v,current_a,temp_c,soc_pct,cycle\n"


def parse(text: str) -> dict[str, BatteryTelemetry]:
    return parse_telemetry(io.StringIO(text), source="t.csv")


def test_interleaved_batteries_are_grouped_in_time_order():
    text = HEADER + "A,0,3.7,0,25,40,10\nB,0,3.8,1.5,26,50,3\nA,30,3.9,1.5,26,41,10\nB,30,3.9,1.5,27,51,3\n"
    windows = parse(text)
    assert list(windows) == ["A", "B"]
    assert windows["A"].t_s.tolist() == [0.0, 30.0]
    assert windows["B"].voltage_v.tolist() == [3.8, 3.9]
    assert windows["A"].soc_pct.tolist() == [40.0, 41.0]


def test_column_order_may_differ_and_extra_columns_are_ignored():
    text = "cycle,soc_pct,temp_c,current_a,voltage_v,t_s,battery_sn,slot\n7,50,25,0,3.8,0,A,3\n"
    assert parse(text)["A"].cycle.tolist() == [7.0]


def test_missing_column_is_named_on_the_header_row():
    with pytest.raises(TelemetryError) as err:
        parse("battery_sn,t_s,voltage_v,current_a,soc_pct,cycle\nA,0,3.7,0,40,1\n")
    assert err.value.row == 1 and err.value.column == "temp_c"
    assert "t.csv row 1" in str(err.value) and "temp_c" in str(err.value)


def test_non_numeric_value_names_row_and_column():
    with pytest.raises(TelemetryError) as err:
        parse(HEADER + "A,0,3.7,0,25,40,1\nA,30,3.7,0,hot,40,1\n")
    assert (err.value.row, err.value.column) == (3, "temp_c")
    assert "'hot'" in str(err.value)


def test_nan_is_rejected_like_text():
    with pytest.raises(TelemetryError) as err:
        parse(HEADER + "A,0,nan,0,25,40,1\n")
    assert (err.value.row, err.value.column) == (2, "voltage_v")


def test_time_going_backwards_within_a_battery_names_both_rows():
    text = HEADER + "A,0,3.7,0,25,40,1\nB,50,3.7,0,25,40,1\nA,60,3.7,0,25,40,1\nA,30,3.7,0,25,40,1\n"
    with pytest.raises(TelemetryError) as err:
        parse(text)
    assert (err.value.row, err.value.column) == (5, "t_s")
    assert "row 4" in str(err.value)


def test_other_batteries_may_restart_their_clock():
    text = HEADER + "A,100,3.7,0,25,40,1\nB,0,3.7,0,25,40,1\n"
    assert set(parse(text)) == {"A", "B"}


@pytest.mark.parametrize("soc", ["-1", "101"])
def test_soc_outside_0_100_names_the_row(soc: str):
    with pytest.raises(TelemetryError) as err:
        parse(HEADER + f"A,0,3.7,0,25,{soc},1\n")
    assert (err.value.row, err.value.column) == (2, "soc_pct")


def test_short_row_and_empty_serial_are_errors():
    with pytest.raises(TelemetryError, match="row 2"):
        parse(HEADER + "A,0,3.7\n")
    with pytest.raises(TelemetryError) as err:
        parse(HEADER + " ,0,3.7,0,25,40,1\n")
    assert err.value.column == "battery_sn"


def test_empty_file_is_an_error(tmp_path):
    p = tmp_path / "empty.csv"
    p.write_text("")
    with pytest.raises(TelemetryError, match="empty"):
        read_telemetry_csv(p)


def test_written_csv_reads_back_the_same(tmp_path):
    tel = BatteryTelemetry(
        "X1",
        np.array([0.0, 30.0]),
        np.array([3.712, 3.9]),
        np.array([-0.0001, 1.5]),
        np.array([25.04, 27.5]),
        np.array([40.0, 41.0]),
        np.array([12.0, 12.0]),
    )
    text = telemetry_to_csv_text([tel])
    assert text.startswith(HEADER) and "-0.000" not in text
    back = parse(text)["X1"]
    assert back.voltage_v.tolist() == [3.712, 3.9]
    assert back.temp_c.tolist() == [25.0, 27.5]


def test_from_samples_validates_time_order():
    good = [TelemetrySample(0, 3.7, 0, 25, 40, 1), TelemetrySample(30, 3.8, 1.5, 26, 41, 1)]
    assert len(BatteryTelemetry.from_samples("S", good)) == 2
    with pytest.raises(TelemetryError, match="back in time"):
        BatteryTelemetry.from_samples("S", list(reversed(good)))
