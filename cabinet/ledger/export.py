"""Export events as JSON lines or CSV (for support, audits and the cloud's repair tools)."""

from __future__ import annotations

import csv
import json
import sqlite3
from typing import Any, TextIO

from .replay import iter_events

FORMATS = ("jsonl", "csv")
CSV_COLUMNS = ("seq", "id", "type", "at_wall", "at_mono", "boot_id", "body")


def _json_default(value: Any) -> Any:
    if isinstance(value, bytes | bytearray):
        return value.hex()
    raise TypeError(f"cannot export a {type(value).__name__}")


def export_events(conn: sqlite3.Connection, out: TextIO, fmt: str = "jsonl", after: int = 0) -> int:
    """Write every event with seq > ``after`` to ``out``; returns how many were written.

    jsonl: one object per line (seq, id, type, at_wall, at_mono, boot_id, body).
    csv: the same columns with a header, ``body`` as a JSON string.
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; use one of {', '.join(FORMATS)}")
    writer = csv.writer(out) if fmt == "csv" else None
    if writer:
        writer.writerow(CSV_COLUMNS)
    n = 0
    for event in iter_events(conn, after=after):
        record = event.to_dict()
        if writer:
            body = json.dumps(record["body"], sort_keys=True, default=_json_default, ensure_ascii=False)
            writer.writerow([*(record[c] for c in CSV_COLUMNS[:-1]), body])
        else:
            out.write(json.dumps(record, sort_keys=True, default=_json_default, ensure_ascii=False) + "\n")
        n += 1
    return n
