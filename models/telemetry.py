"""The telemetry CSV contract: parse, validate and write per-battery sample windows.

Header (order free, extra columns ignored): ``battery_sn,t_s,voltage_v,current_a,temp_c,soc_pct,cycle``.
One row per sample, several batteries per file, each battery's rows in time order. Errors name
the file row (the header is row 1) and the column, so whoever produced the file can fix it.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import numpy as np

TELEMETRY_COLUMNS: tuple[str, ...] = (
    "battery_sn",
    "t_s",
    "voltage_v",
    "current_a",
    "temp_c",
    "soc_pct",
    "cycle",
)
_NUMERIC_COLUMNS = TELEMETRY_COLUMNS[1:]


class TelemetryError(ValueError):
    """Malformed telemetry: says which row and column, and what is wrong with it."""

    def __init__(self, message: str, *, row: int | None = None, column: str | None = None, source: str = ""):
        self.row = row
        self.column = column
        self.source = source
        where = [
            p for p in (source, f"row {row}" if row is not None else "", column and f"column {column}") if p
        ]
        super().__init__(f"{' '.join(where)}: {message}" if where else message)


@dataclass(frozen=True)
class TelemetrySample:
    """One reading of one battery in a slot (what the cabinet's rolling store keeps)."""

    t_s: float
    voltage_v: float
    current_a: float
    temp_c: float
    soc_pct: float
    cycle: float


@dataclass(frozen=True, eq=False)
class BatteryTelemetry:
    """A battery's recent window of samples, as parallel float arrays in time order."""

    battery_sn: str
    t_s: np.ndarray
    voltage_v: np.ndarray
    current_a: np.ndarray
    temp_c: np.ndarray
    soc_pct: np.ndarray
    cycle: np.ndarray

    def __len__(self) -> int:
        return int(self.t_s.shape[0])

    @classmethod
    def from_samples(cls, battery_sn: str, samples: Sequence[TelemetrySample]) -> BatteryTelemetry:
        """Build a window from sample objects (e.g. the cabinet's rolling store); validates them."""
        cols = {name: np.array([getattr(s, name) for s in samples], dtype=float) for name in _NUMERIC_COLUMNS}
        tel = cls(battery_sn=battery_sn, **cols)
        validate(tel)
        return tel


def validate(tel: BatteryTelemetry, source: str = "") -> None:
    """Check one window's values (finite, SoC 0-100, time never going backwards)."""
    n = len(tel)
    for name in _NUMERIC_COLUMNS:
        arr = getattr(tel, name)
        if arr.shape != (n,):
            raise TelemetryError(
                f"battery {tel.battery_sn}: {name} has {arr.shape} values, expected {n}", source=source
            )
        bad = np.flatnonzero(~np.isfinite(arr))
        if bad.size:
            raise TelemetryError(
                f"battery {tel.battery_sn}: sample {bad[0]} is not a finite number",
                column=name,
                source=source,
            )
    bad = np.flatnonzero((tel.soc_pct < 0) | (tel.soc_pct > 100))
    if bad.size:
        raise TelemetryError(
            f"battery {tel.battery_sn}: sample {bad[0]} soc {tel.soc_pct[bad[0]]} outside 0-100",
            column="soc_pct",
            source=source,
        )
    back = np.flatnonzero(np.diff(tel.t_s) < 0)
    if back.size:
        raise TelemetryError(
            f"battery {tel.battery_sn}: sample {back[0] + 1} goes back in time", column="t_s", source=source
        )


def _checked(reader: Any, source: str) -> Iterator[list[str]]:
    """The csv reader's records, with its own errors (e.g. an oversized field) as TelemetryError."""
    while True:
        try:
            record = next(reader)
        except StopIteration:
            return
        except csv.Error as e:
            raise TelemetryError(f"not valid CSV: {e}", row=reader.line_num, source=source) from None
        yield record


def parse_telemetry(stream: TextIO, source: str = "") -> dict[str, BatteryTelemetry]:
    """Parse a telemetry CSV stream into windows keyed by battery SN (in order of first appearance)."""
    reader = _checked(csv.reader(stream), source)
    try:
        header = next(reader)
    except StopIteration:
        raise TelemetryError("empty file, expected a header", row=1, source=source) from None
    header = [h.strip() for h in header]
    if header and header[0].startswith("\ufeff"):
        header[0] = header[0][1:]
    missing = [c for c in TELEMETRY_COLUMNS if c not in header]
    if missing:
        raise TelemetryError(
            f"missing column(s) {', '.join(missing)}; header must be {','.join(TELEMETRY_COLUMNS)}",
            row=1,
            column=missing[0],
            source=source,
        )
    index = {c: header.index(c) for c in TELEMETRY_COLUMNS}
    rows: dict[str, list[list[float]]] = {}
    last_t: dict[str, tuple[float, int]] = {}
    for row_no, record in enumerate(reader, start=2):
        if not record or all(not f.strip() for f in record):
            continue
        if len(record) < len(header):
            raise TelemetryError(f"{len(record)} fields, header has {len(header)}", row=row_no, source=source)
        sn = record[index["battery_sn"]].strip()
        if not sn:
            raise TelemetryError(
                "empty battery serial number", row=row_no, column="battery_sn", source=source
            )
        values = [_number(record[index[c]], row_no, c, source) for c in _NUMERIC_COLUMNS]
        t, soc, cycle = values[0], values[4], values[5]
        if not 0.0 <= soc <= 100.0:
            raise TelemetryError(f"soc {soc:g} outside 0-100", row=row_no, column="soc_pct", source=source)
        if cycle < 0:
            raise TelemetryError(f"negative cycle count {cycle:g}", row=row_no, column="cycle", source=source)
        if sn in last_t and t < last_t[sn][0]:
            prev_t, prev_row = last_t[sn]
            raise TelemetryError(
                f"time goes backwards for battery {sn}: {t:g} s after {prev_t:g} s at row {prev_row}",
                row=row_no,
                column="t_s",
                source=source,
            )
        last_t[sn] = (t, row_no)
        rows.setdefault(sn, []).append(values)
    out: dict[str, BatteryTelemetry] = {}
    for sn, vals in rows.items():
        arr = np.asarray(vals, dtype=float)
        out[sn] = BatteryTelemetry(sn, *(arr[:, i].copy() for i in range(arr.shape[1])))
    return out


def read_telemetry_csv(path: str | Path) -> dict[str, BatteryTelemetry]:
    """Read and validate a telemetry CSV file (see the module docstring for the contract)."""
    p = Path(path)
    try:
        with p.open(newline="", encoding="utf-8") as f:
            return parse_telemetry(f, source=str(p))
    except UnicodeDecodeError as e:
        raise TelemetryError(f"not UTF-8 text ({e.reason})", source=str(p)) from e


def write_telemetry_csv(target: str | Path | TextIO, batteries: Iterable[BatteryTelemetry]) -> None:
    """Write windows in the contract's format (one battery after the other)."""
    if isinstance(target, str | Path):
        with Path(target).open("w", newline="", encoding="utf-8") as f:
            write_telemetry_csv(f, batteries)
        return
    w = csv.writer(target, lineterminator="\n")
    w.writerow(TELEMETRY_COLUMNS)
    for tel in batteries:
        for i in range(len(tel)):
            w.writerow(
                (
                    tel.battery_sn,
                    _fmt(tel.t_s[i], 0),
                    _fmt(tel.voltage_v[i], 3),
                    _fmt(tel.current_a[i], 3),
                    _fmt(tel.temp_c[i], 1),
                    _fmt(tel.soc_pct[i], 0),
                    _fmt(tel.cycle[i], 0),
                )
            )


def telemetry_to_csv_text(batteries: Iterable[BatteryTelemetry] | Mapping[str, BatteryTelemetry]) -> str:
    """The CSV text of some windows (handy for tests and small tools)."""
    buf = io.StringIO()
    write_telemetry_csv(buf, batteries.values() if isinstance(batteries, Mapping) else batteries)
    return buf.getvalue()


def _fmt(value: float, decimals: int) -> str:
    """Fixed decimals without a '-0' for values that round to zero."""
    return f"{round(float(value), decimals) + 0.0:.{decimals}f}"


def _number(text: str, row: int, column: str, source: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise TelemetryError(
            f"{text.strip()!r} is not a number", row=row, column=column, source=source
        ) from None
    if not math.isfinite(value):
        raise TelemetryError(
            f"{text.strip()!r} is not a finite number", row=row, column=column, source=source
        )
    return value
