"""Condition alerts of the fleet: raised once while a condition lasts, cleared when it ends.

A condition alert has a key ``cabinet:kind:subject`` (e.g. ``CAB-1:board_down:board 2``). While
an alert with that key is open (``cleared_at`` is null), raising it again only moves its
``last_seen``; a partial unique index keeps one open alert per key even when two cloud workers
raise it at the same moment. Clearing sets ``cleared_at``; the next raise makes a new alert.

Sources (docs/fleet.md, "Alerts"):

- cabinet ledger events, applied in seq order by the ingest (``on_event``): ``board_down`` /
  ``board_up``, ``stock_changed`` (empty: no rentable pack; full: no free slot, returns refused),
  ``cert_expiring`` / ``cert_renewed`` (the cabinet's own client and CA certificates);
- the cabinet's state (``on_state``): the last will (``online=false``) raises
  ``cabinet_offline``, any state or telemetry from it clears it;
- a periodic check in the cloud (``AlertWatch``): a cabinet heard of before but silent for
  ``alert_offline_after_s`` raises ``cabinet_offline``; the certificates and the CRL the cloud
  uses (``mqtt_ca_file``, ``mqtt_cert_file``, the provisioning CA and its CRL) close to expiry
  raise ``cert_expiring`` / ``crl_expiring`` under the cabinet id ``*`` (the fleet).

Point alerts (one event: a security event, a quarantine, a failed command; ``cloud.alerts.add_alert``)
have no key; they end when an operator acknowledges them.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, select, update

from cloud.alerts import insert_ignore
from cloud.db import fleet_alerts, fleet_cabinets
from sync.events import EventType

log = logging.getLogger(__name__)

#: Cabinet id of alerts about the cloud's own certificates (the whole fleet depends on them).
FLEET = "*"


def alert_key(cabinet: str, kind: str, subject: str = "") -> str:
    return f"{cabinet}:{kind}:{subject}"[:200]


def raise_alert(
    conn: Connection,
    cabinet: str,
    kind: str,
    severity: str,
    detail: str,
    *,
    at: float,
    subject: str = "",
    seq: int | None = None,
    event_id: str | None = None,
) -> bool:
    """Raise a condition alert; True if it is new, False if it was open already (last_seen moved)."""
    key = alert_key(cabinet, kind, subject)
    moved = conn.execute(
        update(fleet_alerts)
        .where(fleet_alerts.c.alert_key == key, fleet_alerts.c.cleared_at.is_(None))
        .values(last_seen=at)
    ).rowcount
    if moved:
        return False
    insert_ignore(  # a second worker's insert at the same moment hits the one-open-per-key index
        conn,
        fleet_alerts,
        {
            "cabinet_id": cabinet,
            "kind": kind[:64],
            "severity": severity,
            "detail": detail[:2000],
            "seq": seq,
            "event_id": event_id,
            "dedupe_key": f"{key}@{event_id or uuid.uuid4().hex}"[:200],
            "at": at,
            "alert_key": key,
            "subject": subject[:64],
            "last_seen": at,
        },
    )
    log.warning("alert %s raised: %s", key, detail)
    return True


def clear_alert(conn: Connection, cabinet: str, kind: str, *, at: float, subject: str = "") -> bool:
    """End the open alert of this key, if any; True if one was open."""
    key = alert_key(cabinet, kind, subject)
    done = conn.execute(
        update(fleet_alerts)
        .where(fleet_alerts.c.alert_key == key, fleet_alerts.c.cleared_at.is_(None))
        .values(cleared_at=at, last_seen=at)
    ).rowcount
    if done:
        log.info("alert %s cleared", key)
    return bool(done)


# --- from the cabinet's events ------------------------------------------------------------

#: Ledger event types that raise or clear condition alerts (the ingest dispatches these here).
EVENT_TYPES = (
    EventType.BOARD_DOWN,
    EventType.BOARD_UP,
    EventType.STOCK_CHANGED,
    EventType.CERT_EXPIRING,
    EventType.CERT_RENEWED,
)


def on_event(
    conn: Connection,
    cabinet: str,
    type_: str,
    body: Mapping[str, Any],
    *,
    at: float,
    seq: int | None = None,
    event_id: str | None = None,
) -> None:
    """One applied cabinet event (in seq order, inside the ingest's transaction)."""
    if type_ not in EVENT_TYPES:
        return
    if type_ in (EventType.BOARD_DOWN, EventType.BOARD_UP):
        subject = f"board {body.get('board')}"
        if type_ == EventType.BOARD_UP:
            clear_alert(conn, cabinet, "board_down", at=at, subject=subject)
            return
        detail = f"slot board {body.get('board')} (slots {body.get('first_slot')}-{body.get('last_slot')}) isolated"
        if body.get("detail"):
            detail += f": {body['detail']}"
        raise_alert(
            conn, cabinet, "board_down", "warning", detail, at=at, subject=subject, seq=seq, event_id=event_id
        )
    elif type_ == EventType.STOCK_CHANGED:
        counts = f"{body.get('rentable')} rentable, {body.get('free')} free slots"
        for kind, on, what in (
            ("cabinet_empty", body.get("empty"), "no rentable battery"),
            ("cabinet_full", body.get("full"), "no free slot: returns are refused"),
        ):
            if on:
                raise_alert(
                    conn, cabinet, kind, "warning", f"{what} ({counts})", at=at, seq=seq, event_id=event_id
                )
            else:
                clear_alert(conn, cabinet, kind, at=at)
    else:
        subject = f"{body.get('cert')} certificate"
        if type_ == EventType.CERT_RENEWED:
            clear_alert(conn, cabinet, "cert_expiring", at=at, subject=subject)
            return
        days = float(body.get("days_left") or 0)
        severity = "critical" if days <= 0 else "warning"
        detail = f"{subject} expires {_utc(body.get('not_after'))} ({days:.1f} days left)"
        raise_alert(
            conn,
            cabinet,
            "cert_expiring",
            severity,
            detail,
            at=at,
            subject=subject,
            seq=seq,
            event_id=event_id,
        )


# --- from state, telemetry and silence ----------------------------------------------------


def on_state(conn: Connection, cabinet: str, online: bool, at: float) -> None:
    """A state message: the last will raises cabinet_offline, a live state clears it."""
    if online:
        clear_alert(conn, cabinet, "cabinet_offline", at=at)
    else:
        raise_alert(conn, cabinet, "cabinet_offline", "critical",
                    "the broker published the cabinet's last will: its link died", at=at)  # fmt: skip


def on_heard(conn: Connection, cabinet: str, at: float) -> None:
    """Anything from the cabinet itself (telemetry): it is not silent."""
    clear_alert(conn, cabinet, "cabinet_offline", at=at)


def check_silent(engine: Engine, now: float, offline_after_s: float) -> list[str]:
    """Raise cabinet_offline for every cabinet heard of before but silent for ``offline_after_s``."""
    with engine.begin() as conn:
        silent = conn.execute(
            select(fleet_cabinets.c.cabinet_id, fleet_cabinets.c.last_seen).where(
                fleet_cabinets.c.last_seen.is_not(None), fleet_cabinets.c.last_seen < now - offline_after_s
            )
        ).all()
        for cab, last in silent:
            raise_alert(conn, cab, "cabinet_offline", "critical",
                        f"nothing heard from the cabinet since {_utc(last)} ({(now - last) / 60:.0f} min)",
                        at=now)  # fmt: skip
    return [c for c, _ in silent]


# --- the cloud's own certificates and CRL -------------------------------------------------


def pki_files(config: Any) -> list[tuple[str, Path]]:
    """(subject, file) of every certificate and CRL this cloud uses that exists."""
    pki = Path(config.data_dir) / "pki"
    named = [
        ("mqtt_ca_file", config.mqtt_ca_file),
        ("mqtt_cert_file", config.mqtt_cert_file),
        ("provisioning CA", str(pki / "ca.pem")),
        ("CRL", config.alert_crl_file or str(pki / "crl.pem")),
    ]
    return [(name, Path(p)) for name, p in named if p and Path(p).is_file()]


def expiry_of(path: Path) -> tuple[str, float]:
    """("cert" or "crl", the Unix time it stops being valid) of a PEM file."""
    from cryptography import x509

    data = path.read_bytes()
    if b"X509 CRL" in data:
        crl = x509.load_pem_x509_crl(data)
        nxt = crl.next_update_utc
        if nxt is None:
            raise ValueError(f"{path}: the CRL has no nextUpdate")
        return "crl", nxt.timestamp()
    return "cert", x509.load_pem_x509_certificate(data).not_valid_after_utc.timestamp()


def check_pki(engine: Engine, files: list[tuple[str, Path]], now: float, warn_days: float) -> list[str]:
    """Raise or clear cert_expiring / crl_expiring (cabinet ``*``) for each file; the subjects raised."""
    raised = []
    with engine.begin() as conn:
        for subject, path in files:
            try:
                what, until = expiry_of(path)
            except (OSError, ValueError) as e:
                log.error("alerts: cannot read %s (%s): %s", subject, path, e)
                continue
            kind = f"{what}_expiring"
            days = (until - now) / 86400
            if days <= warn_days:
                severity = "critical" if days <= 0 else "warning"
                detail = f"{subject} ({path}) {'expires' if what == 'cert' else 'must be re-signed by'} {_utc(until)} ({days:.1f} days left)"
                raise_alert(conn, FLEET, kind, severity, detail, at=now, subject=subject)
                raised.append(subject)
            else:
                clear_alert(conn, FLEET, kind, at=now, subject=subject)
    return raised


@dataclass
class AlertWatch:
    """The periodic checks of the cloud side: silent cabinets, certificate and CRL expiry."""

    engine: Engine
    config: Any  # CloudConfig
    clock: Callable[[], float] = time.time

    def run_once(self) -> None:
        now = self.clock()
        check_silent(self.engine, now, self.config.alert_offline_after_s)
        check_pki(self.engine, pki_files(self.config), now, self.config.alert_cert_warn_days)

    async def loop(self) -> None:
        while True:
            try:
                await asyncio.to_thread(self.run_once)
            except Exception:  # a database hiccup must not stop the next check
                log.exception("alerts: periodic check failed")
            await asyncio.sleep(self.config.alert_check_interval_s)


def _utc(t: Any) -> str:
    if not isinstance(t, int | float):
        return "?"
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(t))
