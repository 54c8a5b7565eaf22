"""``cabinet tech set-password``: set a technician's password at provisioning (no default exists)."""

from __future__ import annotations

import argparse
import getpass
import sys

from cabinet import config as cfg

from .auth import CredentialError, Credentials


def register_cli(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    tech = subparsers.add_parser("tech", help="technician credentials of the local web UI")
    sub = tech.add_subparsers(dest="tech_command", required=True, metavar="COMMAND")
    p = sub.add_parser("set-password", help="create a technician or change their password")
    p.add_argument("--config", default="/etc/cabinet/cabinet.toml", help="config file (for cabinet.data_dir)")
    p.add_argument("--user", required=True, help="technician user name")
    p.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    p.set_defaults(func=_set_password)
    p = sub.add_parser("list", help="list the technicians who have a password")
    p.add_argument("--config", default="/etc/cabinet/cabinet.toml")
    p.set_defaults(func=_list)
    return tech


def _credentials(path: str) -> Credentials:
    return Credentials(cfg.load(path).data_dir)


def _set_password(args: argparse.Namespace) -> int:
    try:
        creds = _credentials(args.config)
    except cfg.ConfigError as e:
        print(f"config error: {e}", file=sys.stderr)
        return 2
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = getpass.getpass(f"New password for {args.user}: ")
        if password != getpass.getpass("Again: "):
            print("the two passwords differ", file=sys.stderr)
            return 1
    try:
        creds.set_password(args.user, password)
    except CredentialError as e:
        print(f"not set: {e}", file=sys.stderr)
        return 1
    print(
        f"password set for technician {args.user} in {creds.path} (restart the cabinet to drop a pending setup code)"
    )
    return 0


def _list(args: argparse.Namespace) -> int:
    try:
        creds = _credentials(args.config)
    except cfg.ConfigError as e:
        print(f"config error: {e}", file=sys.stderr)
        return 2
    for u in creds.users():
        print(u)
    return 0
