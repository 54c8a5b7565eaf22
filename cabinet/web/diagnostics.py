"""Technician self-test and the diagnostics bundle (logs, ledger verify, bus statistics, config).

The bundle never holds secrets: config secrets are redacted (``Config.redacted``), the
technician credential file is not included, and log lines that carry a setup code are masked.
"""

from __future__ import annotations

import asyncio
import collections
import io
import json
import logging
import re
import shutil
import subprocess
import tarfile
import time
from dataclasses import asdict, dataclass

from cabinet.ledger import LedgerError, verify

from . import eventlog
from .port import CabinetPort
from .state import health_view, slots_view

_SECRET_LINE = re.compile(r"(setup code\W+)(\S+)", re.IGNORECASE)


def mask_secrets(line: str) -> str:
    """A log line with any setup code masked."""
    return _SECRET_LINE.sub(r"\1<redacted>", line)


class LogRing(logging.Handler):
    """Keeps the last ``capacity`` formatted log lines of the process for the diagnostics bundle."""

    def __init__(self, capacity: int = 3000) -> None:
        super().__init__(logging.INFO)
        self.lines: collections.deque[str] = collections.deque(maxlen=capacity)
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.lines.append(mask_secrets(self.format(record)))
        except Exception:  # a log handler must never raise
            self.handleError(record)


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str


def verify_text(cab: CabinetPort) -> tuple[bool, str]:
    """``cabinet ledger verify`` on the live file (read-only; blocking)."""
    path = cab.ledger_path
    try:
        report = verify(path)
    except LedgerError as e:
        return False, f"{path}: {e}"
    return report.ok, f"{path}: {report.summary()}"


async def self_test(cab: CabinetPort, scans: int = 2, timeout_s: float = 5.0) -> list[Check]:
    """Wait for fresh bus scans, then check boards, seat switches against the boards, and the ledger.

    Nothing is pulsed or written: a self-test must never open a slot with a battery in it.
    """
    checks: list[Check] = []
    first = cab.bus_stats()
    start_scans = first["scans"] if first is not None else 0
    deadline = time.monotonic() + timeout_s
    # the cabinet exposes no per-scan event to await, so poll its scan counter
    while (now := cab.bus_stats()) is not None and now["scans"] < start_scans + scans:
        if time.monotonic() >= deadline:
            break
        await asyncio.sleep(0.05)
    st = cab.bus_stats()
    if st is None:
        checks.append(Check("bus", False, "the battery bus is not running"))
    else:
        fresh = st["scans"] >= start_scans + scans
        bad = [b for b in st["boards"] if not b["online"] or b["isolated"]]
        detail = (
            f"{st['boards_online']}/{len(st['boards'])} boards answer; last scan {st['last_scan_s'] * 1000:.0f} ms; "
            f"{st['timeouts']} timeouts, {st['crc_errors']} CRC errors in total"
        )
        if bad:
            detail += "; not answering: " + ", ".join(
                f"board {b['unit_id']} (slots {b['slots'][0]}-{b['slots'][-1]}: {b['last_error'] or 'no reply'})"
                for b in bad
            )
        if not fresh:
            detail += f"; no new scan within {timeout_s:g} s"
        checks.append(Check("bus", fresh and not bad, detail))
    mismatches = []
    observed = cab.observed()
    for slot, ob in sorted(observed.items()):
        if not ob.known:
            continue
        seated = cab.is_seated(slot)
        if seated is None:  # no lock bank: no seat switches to compare
            continue
        if seated != ob.present:
            mismatches.append(
                f"slot {slot}: seat switch {'closed' if seated else 'open'}, board says "
                f"{'battery present' if ob.present else 'empty'}"
            )
    checks.append(
        Check(
            "locks",
            not mismatches,
            "; ".join(mismatches) or f"seat switches agree with the boards on {len(observed)} slots",
        )
    )
    ok, text = await asyncio.to_thread(verify_text, cab)
    if cab.ledger_problem:
        ok, text = False, f"ledger unusable: {cab.ledger_problem}"
    checks.append(Check("ledger", ok, text))
    return checks


def _journal(unit: str = "cabinet") -> str | None:
    if shutil.which("journalctl") is None:
        return None
    try:
        r = subprocess.run(
            ["journalctl", "-u", unit, "--since", "-2d", "--no-pager", "-n", "20000"],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if r.returncode != 0 or not r.stdout.strip() or "No entries" in r.stdout[:200]:
        return None
    return "\n".join(mask_secrets(line) for line in r.stdout.splitlines()) + "\n"


async def bundle(cab: CabinetPort, ring: LogRing | None, technician: str) -> tuple[str, bytes]:
    """A tar.gz for support: (file name, bytes)."""
    made = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    name = f"diagnostics-{cab.settings.cabinet_id}-{made}"
    files: dict[str, str] = {}
    files["README.txt"] = (
        f"Diagnostics of cabinet {cab.settings.cabinet_id}, made {made} by technician {technician}.\n"
        "config.json has secrets redacted; logs have setup codes masked; no credentials are included.\n"
    )
    _, files["ledger-verify.txt"] = await asyncio.to_thread(verify_text, cab)
    if cab.ledger_problem:
        files["ledger-verify.txt"] = f"LEDGER UNUSABLE: {cab.ledger_problem}\n" + files["ledger-verify.txt"]
    files["health.json"] = json.dumps(await health_view(cab), indent=1, default=str)
    files["bus-stats.json"] = json.dumps(cab.bus_stats(), indent=1, default=str)
    files["slots.json"] = json.dumps(await slots_view(cab) if cab.has_ledger else [], indent=1, default=str)
    files["config.json"] = json.dumps(cab.redacted_config(), indent=1, default=str)
    files["logs.txt"] = "\n".join(ring.lines) + "\n" if ring is not None else "(no in-process log kept)\n"
    journal = await asyncio.to_thread(_journal)
    if journal:
        files["journal.txt"] = journal
    if cab.has_ledger:
        try:
            recent = await asyncio.to_thread(
                eventlog.query, cab.ledger_path, eventlog.EventFilter(limit=2000)
            )
            files["events-recent.jsonl"] = eventlog.export(list(reversed(recent)), "jsonl")
        except Exception as e:  # a damaged file must not stop the bundle
            files["events-recent.jsonl"] = f"cannot read events: {e}\n"
    st = await self_test(cab, scans=1, timeout_s=2.0)
    files["self-test.json"] = json.dumps([asdict(c) for c in st], indent=1)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for fname, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(f"{name}/{fname}")
            info.size, info.mtime, info.mode = len(data), int(time.time()), 0o644
            tar.addfile(info, io.BytesIO(data))
    return f"{name}.tar.gz", buf.getvalue()
