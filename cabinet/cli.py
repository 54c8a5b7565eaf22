"""``cabinet``: the cabinet controller's command line.

Sub-commands:
  run       run the cabinet (bus poller, locks, rent/return, sync, web UI) until stopped
  ledger    check, export and back up the local ledger (verify, export, backup, restore-help)
  predict   run the fault model on a telemetry CSV file
  config    check a config file, or print the configuration reference
  status    print the slot table and health from the running cabinet's local API
  tech      set technician passwords for the local web UI (no default password exists)
"""

from __future__ import annotations

import argparse
import importlib
import sys

from cabinet import config as cfg

#: Exit status of a config error (EX_CONFIG): systemd does not restart on it (RestartPreventExitStatus).
EX_CONFIG = 78


def _config_cmd(args: argparse.Namespace) -> int:
    if args.action == "docs":
        sys.stdout.write(cfg.docs_markdown())
        return 0
    try:
        c = cfg.load_checked(args.file)  # the same checks as `cabinet run`
    except cfg.ConfigError as e:
        print(f"config error: {e}", file=sys.stderr)
        return EX_CONFIG
    print(f"{args.file}: OK (cabinet {c['cabinet.id']}, {c['cabinet.slots']} slots)")
    if c["web.enabled"] and c["web.tech_tls"] and cfg.tech_tls_files(c) is None:
        print(
            "note: no certificate for the technician HTTPS listener (sync.cert_file or web.tls_cert_file): "
            f"the technician UI is served on {c['web.host']}:{c['web.port']} (loopback) only"
        )
    return 0


def _run_cmd(args: argparse.Namespace) -> int:
    from cabinet.service import run_from_args

    return run_from_args(args)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="cabinet", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = ap.add_subparsers(dest="command", metavar="COMMAND", required=True)

    run = sub.add_parser("run", help="run the cabinet until stopped (systemd: Type=notify)")
    run.add_argument(
        "--config", default="/etc/cabinet/cabinet.toml", help="TOML config file (default: %(default)s)"
    )
    run.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING (default: %(default)s)")
    run.set_defaults(func=_run_cmd)

    c = sub.add_parser("config", help="check a config file or print the configuration reference")
    c.add_argument("action", choices=("check", "docs"), help="check FILE, or docs (Markdown reference)")
    c.add_argument("file", nargs="?", default="/etc/cabinet/cabinet.toml")
    c.set_defaults(func=_config_cmd)

    # Parts that bring their own sub-commands register them here.
    for module in ("cabinet.ledger.cli", "models.cli", "cabinet.status_cli", "cabinet.web.cli"):
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as e:
            if e.name and module.startswith(e.name):
                continue
            raise
        if module == "cabinet.ledger.cli":
            mod.register_cli(sub, default_db="/var/lib/cabinet/ledger.db")
        else:
            mod.register_cli(sub)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
