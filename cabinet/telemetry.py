"""Battery telemetry kept on the cabinet: downsampled samples per battery, for the fault model and charts.

A separate SQLite file from the ledger: telemetry is high-volume and may be thinned or lost
without harm, the ledger may not. Samples carry wall time (for charts) and hardware time
``t_hw``: the slot boards' own uptime counter, stitched across board restarts into one
monotonic timeline (:class:`HardwareClock`). The fault model's ``t_s`` comes from ``t_hw``, so a
wrong or jumping wall clock never distorts its rates, and a simulator running faster than real
time feeds the model time at the batteries' own pace. Pruned by age and by count per battery.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from cabinet.observations import Observation

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS samples (
    sn TEXT NOT NULL, at_wall REAL NOT NULL, slot INTEGER NOT NULL,
    voltage_v REAL NOT NULL, current_a REAL NOT NULL, temp_c REAL NOT NULL,
    soc INTEGER NOT NULL, cycle INTEGER NOT NULL, t_hw REAL, charge_enabled INTEGER
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
    t_hw: float | None = None  # hardware time, seconds (None in files from before it existed)
    charge_enabled: bool | None = None  # the cabinet let this slot charge when the sample was taken


class HardwareClock:
    """One monotonic timeline from the slot boards' uptime counters.

    Follows the first board that answers; when a board's counter goes backwards (it restarted)
    or another board takes over, the offset is adjusted so the timeline never goes back. With no
    board answering it advances with the process's monotonic clock.
    """

    def __init__(self, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.monotonic = monotonic
        self.now = 0.0
        self._source: tuple[int, float] | None = None  # (board unit id, its last uptime)
        self._last_mono = monotonic()

    def update(self, uptimes: Iterable[tuple[int, int | None]]) -> float:
        """Feed (unit id, uptime seconds) of every board from one scan; returns hardware time."""
        mono = self.monotonic()
        fallback = max(0.0, mono - self._last_mono)
        self._last_mono = mono
        known = [(unit, up) for unit, up in uptimes if up is not None]
        if not known:
            self._source = None
            self.now += fallback
            return self.now
        if self._source is not None and any(u == self._source[0] for u, _ in known):
            unit = self._source[0]
            up = next(v for u, v in known if u == unit)
            step = up - self._source[1]
            self.now += step if step >= 0 else fallback  # a restarted board: bridge with real time
        else:
            unit, up = known[0]
            self.now += fallback
        self._source = (unit, float(up))
        return self.now


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
        columns = {r[1] for r in self.conn.execute("PRAGMA table_info(samples)")}
        for column in ("t_hw REAL", "charge_enabled INTEGER"):  # files from before these existed
            if column.split()[0] not in columns:
                self.conn.execute(f"ALTER TABLE samples ADD COLUMN {column}")
        self.interval_s = interval_s
        self.keep_per_battery = keep_per_battery
        self.keep_days = keep_days
        self._last: dict[str, float] = {}
        self.dropped = 0  # samples lost because the card refused the write (full, read-only)
        self.problem: str | None = None  # why the last write failed; None once writes work again

    def add(
        self,
        observations: list[Observation],
        now: float | None = None,
        t_hw: float | None = None,
        charge_enabled: set[int] | None = None,
    ) -> int:
        """Store those observations that are due (``interval_s`` apart in hardware time, or in wall
        time when none is given); returns how many were stored."""
        now = time.time() if now is None else now
        clock = now if t_hw is None else t_hw
        rows = []
        for ob in observations:
            if not ob.has_battery:
                continue
            last = self._last.get(ob.sn)
            if last is not None and 0 <= clock - last < self.interval_s:
                continue
            self._last[ob.sn] = clock
            enabled = None if charge_enabled is None else int(ob.slot in charge_enabled)
            rows.append(
                (ob.sn, now, ob.slot, ob.voltage_v, ob.current_a, ob.temp_c, ob.soc, ob.cycles, t_hw, enabled)
            )
        if rows:
            try:
                self.conn.executemany("INSERT INTO samples VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
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
        """A battery's newest ``limit`` samples, in the order they were taken (the wall clock may jump)."""
        rows = self.conn.execute(
            "SELECT sn, at_wall, slot, voltage_v, current_a, temp_c, soc, cycle, t_hw, charge_enabled FROM"
            " (SELECT rowid, * FROM samples WHERE sn = ? ORDER BY rowid DESC LIMIT ?) ORDER BY rowid",
            (sn, limit),
        ).fetchall()
        return [
            Sample(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8], None if r[9] is None else bool(r[9]))
            for r in rows
        ]

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
