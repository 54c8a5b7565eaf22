"""``cabinet-cloud``: run and operate the cloud service from the command line."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict
from datetime import date
from pathlib import Path

from cloud.config import CloudConfig, ConfigError

EPILOG = """\
examples:
  cabinet-cloud migrate --config cloud.toml
  cabinet-cloud create-user --config cloud.toml ops@example.com --operator
  cabinet-cloud create-merchant --config cloud.toml "Cafe Aurora" --share-bp 3000 --currency EUR --timezone Europe/Berlin
  cabinet-cloud serve --config cloud.toml
  cabinet-cloud money-check --config cloud.toml
  cabinet-cloud settlement --config cloud.toml 1 --from 2026-09-01 --to 2026-10-01 --format csv

Without --config the defaults apply (SQLite file ./cloud.db); --database overrides the file's.
"""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="cabinet-cloud",
        description="The power-bank rental cloud: renters, rentals, payments, merchants.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", type=Path, help="TOML file with a [cloud] table (see docs/cloud.md)")
    common.add_argument("--database", help="SQLAlchemy URL or SQLite path (overrides the config file)")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser("serve", parents=[common], help="run the HTTP API (migrates first)")
    s.add_argument("--host", help="listen address (default from config)")
    s.add_argument("--port", type=int, help="listen port (default from config)")

    sub.add_parser("migrate", parents=[common], help="create or upgrade the database schema")

    s = sub.add_parser(
        "money-check", parents=[common], help="prove every account and rental adds up (exit 1 if not)"
    )
    s.add_argument("--json", action="store_true", help="machine-readable output")

    s = sub.add_parser("settlement", parents=[common], help="a merchant's settlement report for a period")
    s.add_argument("merchant_id", type=int)
    s.add_argument(
        "--from", dest="period_from", type=date.fromisoformat, required=True, help="first day, YYYY-MM-DD"
    )
    s.add_argument(
        "--to",
        dest="period_to",
        type=date.fromisoformat,
        required=True,
        help="day after the last, YYYY-MM-DD",
    )
    s.add_argument("--format", choices=("json", "csv"), default="json")

    s = sub.add_parser(
        "create-merchant", parents=[common], help="add a merchant (venue owner with a revenue share)"
    )
    s.add_argument("name")
    s.add_argument(
        "--share-bp", type=int, required=True, help="merchant's revenue share in basis points (3000 = 30 %%)"
    )
    s.add_argument("--currency", required=True, help="ISO 4217 code, e.g. EUR")
    s.add_argument("--timezone", default="UTC", help="IANA zone for daily caps and reports")

    s = sub.add_parser(
        "create-user", parents=[common], help="add an account (asks for the password on stdin)"
    )
    s.add_argument("email")
    s.add_argument(
        "--operator", action="store_true", help="an operator account (merchants, refunds, reports)"
    )
    s.add_argument(
        "--password-stdin", action="store_true", help="read the password from stdin without prompting"
    )

    s = sub.add_parser(
        "sweep", parents=[common], help="run one sweep now (timeouts, early captures, purchases)"
    )
    return p


def _config(args: argparse.Namespace) -> CloudConfig:
    cfg = CloudConfig.load(args.config) if args.config else CloudConfig()
    if args.database:
        cfg = CloudConfig.from_mapping({**_as_dict(cfg), "database": args.database})
    return cfg


def _as_dict(cfg: CloudConfig) -> dict:
    return asdict(cfg)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``cabinet-cloud`` console script; returns the exit code."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        cfg = _config(args)
        return COMMANDS[args.command](cfg, args)
    except ConfigError as e:
        print(f"config error: {e}", file=sys.stderr)
        return 2
    except (ValueError, LookupError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def _engine(cfg: CloudConfig):  # type: ignore[no-untyped-def]
    from cloud.db import make_engine, migrate

    engine = make_engine(cfg.database_url)
    migrate(engine)
    return engine


def cmd_serve(cfg: CloudConfig, args: argparse.Namespace) -> int:
    from aiohttp import web

    from cloud.app import create_app

    app = create_app(cfg)
    web.run_app(
        app, host=args.host or cfg.host, port=args.port or cfg.port, print=lambda s: print(s, flush=True)
    )
    return 0


def cmd_migrate(cfg: CloudConfig, args: argparse.Namespace) -> int:
    from cloud.db import schema_revision

    engine = _engine(cfg)
    print(
        f"database {engine.url.render_as_string(hide_password=True)} at schema revision {schema_revision(engine)}"
    )
    return 0


def cmd_money_check(cfg: CloudConfig, args: argparse.Namespace) -> int:
    from cloud import money

    problems = money.check(_engine(cfg))
    if args.json:
        print(json.dumps({"ok": not problems, "problems": [str(p) for p in problems]}))
    elif problems:
        print(f"money-check FAILED: {len(problems)} problem(s)", file=sys.stderr)
        for p in problems:
            print(f"  {p}", file=sys.stderr)
    else:
        print("money-check OK: every entry and account balances, every rental's money adds up")
    return 1 if problems else 0


def cmd_settlement(cfg: CloudConfig, args: argparse.Namespace) -> int:
    from cloud.settlement import settlement

    report = settlement(_engine(cfg), args.merchant_id, args.period_from, args.period_to)
    print(report.to_csv() if args.format == "csv" else json.dumps(report.to_json_dict(), indent=2), end="")
    if args.format == "json":
        print()
    return 0


def cmd_create_merchant(cfg: CloudConfig, args: argparse.Namespace) -> int:
    from cloud.merchants import Catalog

    m = Catalog(_engine(cfg), time.time).create_merchant(
        args.name, args.share_bp, args.currency, args.timezone
    )
    print(
        json.dumps(
            {"id": m.id, "name": m.name, "revenue_share_bp": m.revenue_share_bp, "currency": m.currency}
        )
    )
    return 0


def cmd_create_user(cfg: CloudConfig, args: argparse.Namespace) -> int:
    import getpass

    from cloud.users import Accounts

    password = sys.stdin.readline().rstrip("\n") if args.password_stdin else getpass.getpass("password: ")
    accounts = Accounts(_engine(cfg), time.time, scrypt_n=cfg.scrypt_n)
    user = accounts.register(args.email, password, role="operator" if args.operator else "renter")
    print(json.dumps({"id": user.id, "email": user.email, "role": user.role}))
    return 0


def cmd_sweep(cfg: CloudConfig, args: argparse.Namespace) -> int:
    from cloud.app import CloudContext
    from cloud.db import migrate

    ctx = CloudContext(cfg)
    migrate(ctx.engine)
    print(json.dumps(ctx.housekeeping()))
    return 0


COMMANDS = {
    "serve": cmd_serve,
    "migrate": cmd_migrate,
    "money-check": cmd_money_check,
    "settlement": cmd_settlement,
    "create-merchant": cmd_create_merchant,
    "create-user": cmd_create_user,
    "sweep": cmd_sweep,
}

if __name__ == "__main__":
    raise SystemExit(main())
