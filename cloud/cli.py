"""``cabinet-cloud``: run and operate the cloud service from the command line."""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict
from datetime import date
from pathlib import Path

from cloud.config import CloudConfig, ConfigError

#: What the ``cloud`` extra installs (a cabinet's install has none of it).
CLOUD_MODULES = ("sqlalchemy", "alembic")

EPILOG = """\
examples:
  cabinet-cloud migrate --config cloud.toml
  cabinet-cloud create-user --config cloud.toml ops@example.com --operator
  cabinet-cloud create-merchant --config cloud.toml "Cafe Aurora" --share-bp 3000 --currency EUR --timezone Europe/Berlin
  cabinet-cloud serve --config cloud.toml
  cabinet-cloud money-check --config cloud.toml
  cabinet-cloud money reconcile --config cloud.toml --provider stripe --date 2026-12-02
  cabinet-cloud money payout --config cloud.toml --merchant 1 --amount 12000 --currency EUR --reference 2026-11
  cabinet-cloud settlement --config cloud.toml 1 --from 2026-09-01 --to 2026-10-01 --format csv
  cabinet-cloud keys --config cloud.toml
  cabinet-cloud keys rotate --config cloud.toml --overlap 7d
  cabinet-cloud provision --config cloud.toml CAB-0001 --out ./CAB-0001 --ca /mnt/fleet-ca --broker-host mqtt.example.com --register

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

    s = sub.add_parser(
        "money",
        parents=[common],
        help="money with the providers: reconcile a day's statement, pay a merchant",
    )
    msub = s.add_subparsers(dest="money_command", required=True, metavar="ACTION")
    r = msub.add_parser(
        "reconcile",
        parents=[common],
        help="match a provider's statement for a day with the journal (exit 1 and alerts on any mismatch)",
    )
    r.add_argument("--provider", required=True, help="sandbox, stripe, wechat or alipay (as configured)")
    r.add_argument(
        "--date", dest="day", type=date.fromisoformat, required=True, help="the day, YYYY-MM-DD (UTC)"
    )
    r.add_argument("--json", action="store_true", help="machine-readable output")
    r = msub.add_parser(
        "payout", parents=[common], help="pay a merchant's share through a provider, once per --reference"
    )
    r.add_argument("--merchant", type=int, required=True, help="merchant id")
    r.add_argument("--amount", type=int, required=True, help="minor units (e.g. cents, fen)")
    r.add_argument("--currency", required=True, help="ISO 4217 code")
    r.add_argument("--reference", required=True, help="your reference (makes the payout idempotent)")
    r.add_argument("--provider", help="the provider to pay through (default: the merchant's first)")

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

    s = sub.add_parser(
        "keys",
        parents=[common],
        help="show (made once), rotate or retire the cloud's signing keys ('keyid:base64' lines cabinets trust)",
    )
    s.add_argument(
        "action",
        nargs="?",
        choices=("show", "rotate", "retire"),
        default="show",
        help="show (default): print the lines a new cabinet trusts; rotate: make a new key, the"
        " old one signs configs until the overlap ends; retire: end the overlap now",
    )
    s.add_argument("--data-dir", type=Path, help="the cloud's data directory (overrides cloud.data_dir)")
    s.add_argument(
        "--overlap", default="7d", help="rotate: how long the old key stays valid (e.g. 7d, 36h; default 7d)"
    )

    s = sub.add_parser(
        "provision",
        parents=[common],
        help="create a cabinet's identity: client certificate, config file, secrets bundle",
    )
    s.add_argument("cabinet_id", help="the cabinet's id (its MQTT client id and certificate CN)")
    s.add_argument("--out", type=Path, required=True, help="directory to write the cabinet's files into")
    s.add_argument("--data-dir", type=Path, help="the cloud's data directory (overrides cloud.data_dir)")
    s.add_argument("--ca", type=Path, help="fleet CA directory of deploy/pki.py (default DATA_DIR/pki)")
    s.add_argument(
        "--create-ca",
        action="store_true",
        help="create the fleet CA if there is none (its key then lives on this host: demos and tests only)",
    )
    s.add_argument("--broker-host", default="mqtt.example.com", help="broker name the cabinet connects to")
    s.add_argument("--broker-port", type=int, default=8883)
    s.add_argument("--tls-dir", default="/etc/cabinet/tls", help="where the TLS files go on the cabinet")
    s.add_argument("--register", action="store_true", help="also register the cabinet in the database")
    s.add_argument("--venue", type=int, help="venue id when registering")
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
    missing = [m for m in CLOUD_MODULES if importlib.util.find_spec(m) is None]
    if missing:  # a cabinet's install: the cloud's stack is an extra (setup.cfg, docs/deploy.md)
        print(
            f"cabinet-cloud needs the cloud's packages ({', '.join(missing)} missing): "
            "pip install 'charge-cabinet[cloud]'",
            file=sys.stderr,
        )
        return 2
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

    cfg.check_startable()  # a ConfigError: one line on stderr, exit 2 like every config error
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


def cmd_money(cfg: CloudConfig, args: argparse.Namespace) -> int:
    from cloud.payments.registry import build_providers
    from cloud.payouts import pay_merchant
    from cloud.reconcile import reconcile

    engine = _engine(cfg)
    providers = build_providers(cfg, engine, time.time)
    if args.money_command == "payout":
        out = pay_merchant(
            engine,
            providers,
            args.merchant,
            args.amount,
            args.currency,
            args.reference,
            time.time,
            args.provider,
        )
        print(json.dumps(out, indent=2))
        return 0
    provider = providers.get(args.provider)
    if provider is None:
        raise LookupError(f"provider {args.provider!r} is not configured ({', '.join(providers)})")
    statement = getattr(provider, "statement", None)
    if statement is None:
        raise LookupError(
            f"provider {args.provider!r} has no statement to reconcile (the sandbox keeps none)"
        )
    result = reconcile(engine, args.provider, statement(args.day), args.day, time.time)
    if args.json:
        print(json.dumps(result.to_json_dict(), indent=2))
    else:
        print(f"{args.provider} {args.day}: {result.matched} line(s) matched, fees {result.fees or 0}")
        for m in result.mismatches:
            print(f"  MISMATCH {m}", file=sys.stderr)
    return 0 if result.ok else 1


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


def cmd_keys(cfg: CloudConfig, args: argparse.Namespace) -> int:
    from cloud.fleet import keys

    data_dir = args.data_dir or cfg.data_dir
    if args.action == "rotate":
        overlap = keys.parse_duration(args.overlap)
        old, new = keys.rotate(data_dir, overlap)
        print(
            f"new signing key {new}; {old} signs configs (announcing both) for {args.overlap}, then"
            " is retired; running clouds re-sign every config now",
            file=sys.stderr,
        )
    elif args.action == "retire":
        gone = keys.retire(data_dir)
        print(
            f"retired {gone}" if gone else "no previous key in its overlap: nothing to retire",
            file=sys.stderr,
        )
    key = keys.load_or_create_key(data_dir)
    print(json.dumps(keys.describe(data_dir)), file=sys.stderr)
    print(f"signing key {key.key_id} in {key.path}; a new cabinet trusts (sync.cloud_keys):", file=sys.stderr)
    for line in key.config_lines:
        print(line)
    return 0


def cmd_provision(cfg: CloudConfig, args: argparse.Namespace) -> int:
    from cloud.fleet.provision import provision

    done = provision(
        args.cabinet_id,
        args.out,
        args.data_dir or Path(cfg.data_dir),
        ca_dir=args.ca,
        create_ca=args.create_ca,
        broker_host=args.broker_host,
        broker_port=args.broker_port,
        tls_dir=args.tls_dir,
    )
    if args.register:
        from cloud.merchants import Catalog

        Catalog(_engine(cfg), time.time).add_cabinet(args.cabinet_id, args.venue)
    print(
        json.dumps(
            {
                "cabinet": done.cabinet_id,
                "config": str(done.config_file),
                "certificate": str(done.cert),
                "key": str(done.key),
                "ca": str(done.ca),
                "bundle": str(done.bundle),
                "cloud_key": done.cloud_key_line,
                "cloud_keys": list(done.cloud_key_lines),
                "registered": bool(args.register),
            },
            indent=2,
        )
    )
    return 0


COMMANDS = {
    "serve": cmd_serve,
    "migrate": cmd_migrate,
    "money-check": cmd_money_check,
    "money": cmd_money,
    "settlement": cmd_settlement,
    "create-merchant": cmd_create_merchant,
    "create-user": cmd_create_user,
    "sweep": cmd_sweep,
    "keys": cmd_keys,
    "provision": cmd_provision,
}

if __name__ == "__main__":
    raise SystemExit(main())
