"""The ``predict`` command's contract: CSV in, ``battery_sn,risk`` out, errors that name the row."""

from __future__ import annotations

import argparse
import csv
import subprocess
import sys
from pathlib import Path

import pytest

from models.cli import main, register_cli
from models.telemetry import write_telemetry_csv

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def telemetry_csv(tmp_path: Path, known_window) -> Path:
    p = tmp_path / "telemetry.csv"
    write_telemetry_csv(
        p, [known_window("GOOD1"), known_window("LEAKY", self_discharge_pct_h=4.0, rest_h=5.0)]
    )
    return p


def test_predict_end_to_end_writes_battery_sn_risk(tmp_path: Path, telemetry_csv: Path):
    out = tmp_path / "risk.csv"
    proc = subprocess.run(
        [sys.executable, "-m", "models", "predict", "--telemetry", str(telemetry_csv), "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    rows = list(csv.reader(out.open()))
    assert rows[0] == ["battery_sn", "risk"]
    assert [r[0] for r in rows[1:]] == ["GOOD1", "LEAKY"]
    assert all(0.0 <= float(r[1]) <= 1.0 for r in rows[1:])
    assert "LEAKY: fast_self_discharge" in proc.stderr


def test_predict_to_stdout_with_flag_column(telemetry_csv: Path, capsys):
    assert main(["predict", "--telemetry", str(telemetry_csv), "--with-flags"]) == 0
    rows = list(csv.reader(capsys.readouterr().out.splitlines()))
    assert rows[0] == ["battery_sn", "risk", "flags"]
    assert rows[2][0] == "LEAKY" and "fast_self_discharge" in rows[2][2]


def test_malformed_csv_exits_2_and_names_the_row(tmp_path: Path, capsys):
    bad = tmp_path / "bad.csv"
    bad.write_text(
        "battery_sn,t_s,voltage_v,current_a,temp_c,soc_pct,cycle\nA,0,3.7,0,25,40,1\nA,30,x,0,25,40,1\n"
    )
    assert main(["predict", "--telemetry", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "row 3" in err and "voltage_v" in err


def test_missing_file_and_bad_model_exit_2(tmp_path: Path, telemetry_csv: Path, capsys):
    assert main(["predict", "--telemetry", str(tmp_path / "nope.csv")]) == 2
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a model")
    assert main(["predict", "--telemetry", str(telemetry_csv), "--model", str(junk)]) == 2
    assert "does not load" in capsys.readouterr().err


def test_register_cli_plugs_into_another_programs_parser(telemetry_csv: Path, tmp_path: Path):
    parser = argparse.ArgumentParser(prog="cabinet")
    sub = parser.add_subparsers(dest="command")
    register_cli(sub)
    out = tmp_path / "o.csv"
    args = parser.parse_args(["predict", "--telemetry", str(telemetry_csv), "--out", str(out)])
    assert args.func(args) == 0
    assert out.read_text().splitlines()[0] == "battery_sn,risk"
