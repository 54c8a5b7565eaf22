"""``cabinet status``: the slot table and the cabinet's health, read from the local JSON API.

Runs on the cabinet (the API answers loopback callers without a log-in). Exit code 0 when the
cabinet is healthy and renting, 1 when it reports a problem, 2 when the API cannot be reached.
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.request
from typing import Any, TextIO

DEFAULT_URL = "http://127.0.0.1:8080"
STATE_TEXT = {
    "unknown": "NO BOARD",
    "fault": "FAULT",
    "quarantined": "QUARANTINE",
    "checking": "checking",
    "charging": "charging",
    "ready": "ready",
    "low": "low",
    "empty": "empty",
}


def fetch(url: str, path: str, timeout: float = 5.0) -> Any:
    with urllib.request.urlopen(url.rstrip("/") + path, timeout=timeout) as r:
        return json.load(r)


def _ago(seconds: float | None) -> str:
    if seconds is None:
        return "never"
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min"


def render(slots: list[dict[str, Any]], health: dict[str, Any], out: TextIO) -> None:
    """Print the slot table and the health summary as plain text."""
    out.write(
        f"Cabinet {health['cabinet']}  uptime {_ago(health['uptime_s'])}  "
        f"software {health['versions'].get('software')}  model {health.get('model_version') or 'none'}\n"
    )
    if health.get("ledger_problem"):
        out.write(f"LEDGER UNUSABLE (refusing to rent): {health['ledger_problem']}\n")
    out.write(f"{'slot':>4}  {'state':<10}  {'battery':<10}  {'soc':>4}  {'temp':>6}  {'risk':>5}  note\n")
    for s in slots:
        risk = f"{s['risk']['risk'] * 100:.0f}%" if s.get("risk") else "-"
        soc = f"{s['soc']}%" if s.get("soc") is not None else "-"
        temp = f"{s['temp_c']:.1f}C" if s.get("temp_c") is not None else "-"
        note = ", ".join(
            x
            for x in (
                f"fault {s['fault']}" if s.get("fault") else "",
                f"quarantine: {s['quarantine_reason']}" if s.get("quarantined") else "",
                "charging" if s.get("charging") and s["state"] != "charging" else "",
            )
            if x
        )
        out.write(
            f"{s['slot']:>4}  {STATE_TEXT.get(s['state'], s['state']):<10}  {s.get('sn') or '-':<10}  "
            f"{soc:>4}  {temp:>6}  {risk:>5}  {note}\n"
        )
    bus = health.get("bus") or {}
    out.write(
        f"bus: {bus.get('boards_online', '?')}/{len(bus.get('boards', []))} boards online, "
        f"{bus.get('boards_isolated', 0)} isolated, {bus.get('timeouts', 0)} timeouts, "
        f"{bus.get('crc_errors', 0)} CRC errors, last scan {_ago(health.get('last_scan_age_s'))} ago\n"
    )
    for b in bus.get("boards", []):
        if not b.get("online") or b.get("isolated"):
            out.write(
                f"  board {b['unit_id']} (slots {b['slots'][0]}-{b['slots'][-1]}): "
                f"{'isolated' if b.get('isolated') else 'not answering'} {b.get('last_error') or ''}\n"
            )
    sync = health.get("sync") or {}
    if not sync.get("enabled"):
        out.write("sync: disabled\n")
    else:
        out.write(
            f"sync: {'connected' if sync.get('connected') else 'OFFLINE'}, backlog {sync.get('backlog', '?')} "
            f"events, acked seq {sync.get('acked_seq', '?')}\n"
        )
    disk = health.get("disk") or {}
    if "free_bytes" in disk:
        out.write(
            f"disk: {disk['free_bytes'] / 1e9:.2f} GB free of {disk['total_bytes'] / 1e9:.1f} GB ({disk['path']})\n"
        )
    out.write(f"open rentals: {health.get('open_rentals', 0)}\n")


def _status(args: argparse.Namespace) -> int:
    try:
        slots = fetch(args.url, "/api/slots")["slots"]
        health = fetch(args.url, "/api/health")
    except (urllib.error.URLError, OSError, ValueError) as e:
        print(f"cabinet status: cannot read the cabinet's API at {args.url}: {e}", file=sys.stderr)
        return 2
    if args.json:
        json.dump({"slots": slots, "health": health}, sys.stdout, indent=1)
        sys.stdout.write("\n")
    else:
        render(slots, health, sys.stdout)
    return 0 if health.get("ok") and health.get("renting") else 1


def register_cli(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = subparsers.add_parser(
        "status", help="print the slot table and the cabinet's health (from the local API)"
    )
    p.add_argument("--url", default=DEFAULT_URL, help="the cabinet's web address (default: %(default)s)")
    p.add_argument("--json", action="store_true", help="print the raw JSON instead of a table")
    p.set_defaults(func=_status)
    return p
