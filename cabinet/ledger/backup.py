"""Online backups through the SQLite backup API, rotated.

A backup is a consistent snapshot taken while the cabinet keeps writing (WAL readers
do not block the writer). It is written as ``.part``, checked, fsynced and renamed, so
a backup file that exists is always complete. The lead's scheduler calls ``run_once``
off the event loop (e.g. ``await asyncio.to_thread(backups.run_once)``); it opens its
own read-only connection, so it is safe from any thread.
"""

from __future__ import annotations

import os
import re
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from .errors import LedgerError
from .files import connect, fsync_path


@dataclass(frozen=True)
class BackupInfo:
    """One backup file: where it is and the last seq it holds."""

    path: Path
    last_seq: int


class Backups:
    """Backups of ``path`` into ``dir``, keeping the newest ``keep`` of them."""

    def __init__(self, path: str | Path, dir: str | Path, keep: int = 7) -> None:
        if keep < 1:
            raise ValueError(f"keep must be at least 1 (got {keep})")
        self.path = Path(path)
        self.dir = Path(dir)
        self.keep = keep
        stem = re.escape(self.path.stem)
        self._pattern = re.compile(rf"^{stem}-\d{{8}}T\d{{6}}\.\d{{3}}Z-seq(\d+)\.sqlite$")

    def run_once(self) -> Path:
        """Take one backup now, check it, rotate old ones; returns the new file."""
        if not self.path.exists():
            raise LedgerError(f"cannot back up {self.path}: no such file")
        self.dir.mkdir(parents=True, exist_ok=True)
        now = time.time()
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(now)) + f".{int(now * 1000) % 1000:03d}Z"
        part = self.dir / f"{self.path.stem}-{stamp}.part"
        src = connect(self.path, readonly=True)
        try:
            dest = sqlite3.connect(str(part))
            try:
                src.backup(dest)
                # A backup is one self-contained file: no WAL beside it.
                dest.execute("PRAGMA journal_mode = DELETE")
                check = dest.execute("PRAGMA quick_check").fetchone()[0]
                if check != "ok":
                    raise LedgerError(f"backup {part} failed its check: {check}")
                last_seq = dest.execute("SELECT coalesce(max(seq), 0) FROM events").fetchone()[0]
            finally:
                dest.close()
        except BaseException:
            part.unlink(missing_ok=True)
            raise
        finally:
            src.close()
        fsync_path(part)
        final = self.dir / f"{self.path.stem}-{stamp}-seq{last_seq}.sqlite"
        os.replace(part, final)
        fsync_path(self.dir)
        self.rotate()
        return final

    def existing(self) -> list[BackupInfo]:
        """Backups of this ledger in ``dir``, oldest first."""
        if not self.dir.exists():
            return []
        found = []
        for p in sorted(self.dir.iterdir()):
            m = self._pattern.match(p.name)
            if m:
                found.append(BackupInfo(p, int(m.group(1))))
        return found

    def rotate(self) -> list[Path]:
        """Delete all but the newest ``keep`` backups; returns what was deleted."""
        old = [b.path for b in self.existing()[: -self.keep]]
        for p in old:
            p.unlink(missing_ok=True)
        return old
