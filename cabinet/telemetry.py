"""Battery telemetry kept on the cabinet: downsampled samples per battery, for the fault model and charts.

A separate SQLite file from the ledger: telemetry is high-volume and may be thinned or lost
without harm, the ledger may not. Samples carry wall time (for charts and the model's ``t_s``)
and are pruned by age and by count per battery.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from cabinet.observations import Observation

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS samples (
    sn TEXT NOT NULL, at_wall REAL NOT NULL, slot INTEGER NOT NULL,
    voltage_v REAL NOT NULL, current_a REAL NOT NULL, temp_c REAL NOT NULL,
    soc INTEGER NOT NULL, cycle INTEGER NOT NULL
) STRICT;
CREATE INDEX IF NOT EXISTS samples_sn_at ON samples (sn, at_wall);
"""


@dataclass(frozen=True)
class Sample:
    sn: str
    at_wall: float
    slot: int
    voltage_v: float
    current_a: float
    temp_c: float
    soc: int
    cycle: int


class TelemetryStore:
    """Append observations at most every ``interval_s`` per battery; read a battery's window."""

    def __init__(
        self,
        path: str | Path,
        interval_s: float = 30.0,
        keep_per_battery: int = 20000,
        keep_days: float = 30.0,
    ) -> None:
        self.conn = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self.conn.execute("PRAGMA journal_mode = WAL")
        self.conn.execute("PRAGMA synchronous = NORMAL")  # telemetry may lose its last seconds
        self.conn.executescript(SCHEMA)
        self.interval_s = interval_s
        self.keep_per_battery = keep_per_battery
        self.keep_days = keep_days
        self._last: dict[str, float] = {}
        self.dropped = 0  # samples lost because the card refused the write (full, read-only)
        self.problem: str | None = None  # why the last write failed; None once writes work again

    def add(self, observations: list[Observation], now: float | None = None) -> int:
        """Store those observations that are due; returns how many were stored."""
        now = time.time() if now is None else now
        rows = []
        for ob in observations:
            if not ob.has_battery:
                continue
            last = self._last.get(ob.sn)
            if last is not None and 0 <= now - last < self.interval_s:
                continue
            self._last[ob.sn] = now
            rows.append((ob.sn, now, ob.slot, ob.voltage_v, ob.current_a, ob.temp_c, ob.soc, ob.cycles))
        if rows:
            try:
                self.conn.executemany("INSERT INTO samples VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)
            except sqlite3.OperationalError as e:
                # telemetry may be thinned: a full or read-only card must never stop the bus poller
                if self.problem is None:
                    log.warning("telemetry samples dropped until the card takes writes again: %s", e)
                self.problem = str(e)
                self.dropped += len(rows)
                return 0
            if self.problem is not None:
                log.info("telemetry writes work again (%d samples were dropped)", self.dropped)
                self.problem = None
        return len(rows)

    def window(self, sn: str, limit: int = 5000) -> list[Sample]:
        """A battery's newest ``limit`` samples, oldest first."""
        rows = self.conn.execute(
            "SELECT * FROM (SELECT * FROM samples WHERE sn = ? ORDER BY at_wall DESC LIMIT ?) ORDER BY at_wall",
            (sn, limit),
        ).fetchall()
        return [Sample(*r) for r in rows]

    def batteries(self) -> list[str]:
        return [r[0] for r in self.conn.execute("SELECT DISTINCT sn FROM samples ORDER BY sn")]

    def prune(self, now: float | None = None) -> int:
        """Drop samples older than ``keep_days`` and beyond ``keep_per_battery``; returns rows dropped."""
        now = time.time() if now is None else now
        before = self.conn.total_changes
        self.conn.execute("DELETE FROM samples WHERE at_wall < ?", (now - self.keep_days * 86400,))
        for sn in self.batteries():
            self.conn.execute(
                "DELETE FROM samples WHERE sn = ? AND at_wall < (SELECT at_wall FROM samples WHERE sn = ?"
                " ORDER BY at_wall DESC LIMIT 1 OFFSET ?)",
                (sn, sn, self.keep_per_battery - 1),
            )
        return self.conn.total_changes - before

    def close(self) -> None:
        self.conn.close()
