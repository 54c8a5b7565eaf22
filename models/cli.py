"""``predict`` sub-command: telemetry CSV in, ``battery_sn,risk`` CSV out (the issue's contract).

The cabinet's CLI calls ``register_cli(subparsers)``; ``python -m models predict ...`` runs it alone.
Flags go to stderr (one line per flagged battery) unless ``--with-flags`` adds a ``flags`` column.
Exit codes: 0 ok, 2 bad input or bad model.
"""

from __future__ import annotations

import argparse
import csv
import sys
from collections.abc import Sequence
from typing import TextIO

from models.predictor import DEFAULT_MODEL_PATH, FaultPredictor, ModelError
from models.telemetry import TelemetryError, read_telemetry_csv


def register_cli(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``predict`` sub-command to an argparse subparsers object; returns its parser."""
    p = subparsers.add_parser(
        "predict",
        help="battery fault risk from a telemetry CSV",
        description="Write battery_sn,risk (probability of withdrawal within 20 charge cycles) per battery.",
    )
    p.add_argument(
        "--telemetry", required=True, metavar="FILE.csv", help="telemetry CSV (see docs/model-card.md)"
    )
    p.add_argument(
        "--model", metavar="FILE.onnx", default=None, help=f"model file (default {DEFAULT_MODEL_PATH.name})"
    )
    p.add_argument("--out", metavar="FILE.csv", default=None, help="output CSV (default: stdout)")
    p.add_argument("--with-flags", action="store_true", help="add a flags column (';'-separated)")
    p.set_defaults(func=run_predict)
    return p


def run_predict(args: argparse.Namespace) -> int:
    """Run the sub-command; errors are reported on stderr with the file, row and column."""
    try:
        windows = read_telemetry_csv(args.telemetry)
        predictor = FaultPredictor(args.model)
    except (TelemetryError, ModelError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"error: cannot read {args.telemetry}: {e.strerror or e}", file=sys.stderr)
        return 2
    predictions = predictor.predict(windows)
    for p in predictions:
        if p.flags and not args.with_flags:
            print(f"{p.battery_sn}: {', '.join(p.flags)}", file=sys.stderr)
    if args.out:
        with open(args.out, "w", newline="", encoding="utf-8") as f:
            _write(f, predictions, args.with_flags)
    else:
        _write(sys.stdout, predictions, args.with_flags)
    return 0


def _write(f: TextIO, predictions: list, with_flags: bool) -> None:
    w = csv.writer(f, lineterminator="\n")
    w.writerow(("battery_sn", "risk", "flags") if with_flags else ("battery_sn", "risk"))
    for p in predictions:
        row = [p.battery_sn, f"{p.risk:.4f}"]
        if with_flags:
            row.append(";".join(p.flags))
        w.writerow(row)


def main(argv: Sequence[str] | None = None) -> int:
    """Stand-alone entry point: ``python -m models predict --telemetry FILE.csv``."""
    parser = argparse.ArgumentParser(prog="python -m models")
    sub = parser.add_subparsers(dest="command", required=True)
    register_cli(sub)
    args = parser.parse_args(argv)
    return args.func(args)
