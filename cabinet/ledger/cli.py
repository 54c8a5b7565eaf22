"""``cabinet ledger verify|export|backup|restore-help``.

The lead's ``cabinet/cli.py`` calls ``register_cli(subparsers)``; every sub-command sets
``func`` (args -> exit code) on the parsed namespace. ``main(argv)`` runs them alone.
Exit codes: 0 all good, 1 verify found problems, 2 the ledger could not be read/used.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from .backup import Backups
from .errors import LedgerError
from .export import FORMATS, export_events
from .files import connect
from .verify import verify

DEFAULT_LEDGER = "/var/lib/cabinet/ledger.sqlite"
DEFAULT_BACKUP_DIR = "/var/lib/cabinet/backups"

RESTORE_HELP = """\
Restoring the cabinet's ledger (see docs/ledger.md, "Restore"):

 1. Stop the service:            systemctl stop cabinet
 2. Keep the damaged file:       it stays where it is; the cabinet already copied it to
                                 <ledger>.corrupt-<time>. Do not delete either.
 3. Pick the newest good backup: cabinet ledger verify --db <backup dir>/<newest>.sqlite
                                 (exit 0 = good; else try the next older one)
 4. Put it in place:             mv <ledger> <ledger>.replaced-<date>
                                 cp <backup> <ledger>; rm -f <ledger>-wal <ledger>-shm
 5. Check:                       cabinet ledger verify --db <ledger>
 6. Start the service:           systemctl start cabinet
 7. Tell operations: events after the backup's seq (in its name, -seq<N>) are gone
    from this cabinet; the cloud holds every event it acknowledged, so compare the
    cloud's last seq for this cabinet with <N> and reconcile rentals by hand.
"""


def _db_args(p: argparse.ArgumentParser, default_db: str) -> None:
    p.add_argument("--db", default=default_db, help=f"ledger file (default {default_db})")


def register_cli(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser], default_db: str | None = None
) -> argparse.ArgumentParser:
    """Add ``ledger`` and its sub-commands to an argparse subparsers object."""
    db = default_db or os.environ.get("CABINET_LEDGER", DEFAULT_LEDGER)
    ledger = subparsers.add_parser("ledger", help="verify, export and back up the cabinet's ledger")
    sub = ledger.add_subparsers(dest="ledger_command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "verify", help="check integrity, invariants and projections = replay (exit 0 only if all hold)"
    )
    _db_args(p, db)
    p.set_defaults(func=_verify)

    p = sub.add_parser("export", help="write events as JSON lines or CSV")
    _db_args(p, db)
    p.add_argument("--format", choices=FORMATS, default="jsonl")
    p.add_argument("--after", type=int, default=0, metavar="SEQ", help="only events with seq > SEQ")
    p.add_argument("--out", type=Path, help="output file (default: stdout)")
    p.set_defaults(func=_export)

    p = sub.add_parser("backup", help="take one online backup now and rotate old ones")
    _db_args(p, db)
    p.add_argument("--dir", type=Path, default=Path(DEFAULT_BACKUP_DIR))
    p.add_argument("--keep", type=int, default=7)
    p.set_defaults(func=_backup)

    p = sub.add_parser("restore-help", help="how to restore the ledger from a backup")
    p.set_defaults(func=_restore_help)
    return ledger


def _verify(args: argparse.Namespace) -> int:
    try:
        report = verify(args.db)
    except LedgerError as exc:
        print(f"ledger verify: {exc}", file=sys.stderr)
        return 2
    print(f"{args.db}: {report.summary()}")
    return 0 if report.ok else 1


def _export(args: argparse.Namespace) -> int:
    if not Path(args.db).exists():
        print(f"ledger export: no ledger at {args.db}", file=sys.stderr)
        return 2
    conn = connect(Path(args.db), readonly=True)
    try:
        with contextlib.ExitStack() as stack:
            out = stack.enter_context(args.out.open("w", newline="")) if args.out else sys.stdout
            n = export_events(conn, out, args.format, args.after)
    finally:
        conn.close()
    print(f"exported {n} events", file=sys.stderr)
    return 0


def _backup(args: argparse.Namespace) -> int:
    try:
        made = Backups(args.db, args.dir, args.keep).run_once()
    except (LedgerError, OSError, ValueError) as exc:
        print(f"ledger backup: {exc}", file=sys.stderr)
        return 2
    print(made)
    return 0


def _restore_help(args: argparse.Namespace) -> int:
    print(RESTORE_HELP, end="")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``ledger ...`` alone (tests, or ``python -m cabinet.ledger.cli ledger verify``)."""
    parser = argparse.ArgumentParser(prog="cabinet")
    register_cli(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
