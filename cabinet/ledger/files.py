"""The ledger file on disk: connect, lock against a second writer, create atomically,
recognise corruption and keep a corrupt file aside (never replace it)."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import shutil
import sqlite3
import time
from pathlib import Path

from .errors import LedgerCorrupt, LedgerError, LedgerUnwritable
from .schema import configure

SQLITE_HEADER = b"SQLite format 3\x00"
SIDE_FILES = ("-wal", "-journal")  # -shm is only an index of the WAL, rebuilt on open

#: SQLite error names that mean the file (or the card under it) cannot be trusted.
CORRUPTION_ERRORS = {"SQLITE_CORRUPT", "SQLITE_NOTADB", "SQLITE_CANTOPEN", "SQLITE_FORMAT"}


#: SQLite error names that mean the storage refuses to be written (full, read-only card), while
#: what is on it is still sound: a temporary state, not a reason to distrust the file.
WRITE_REFUSED_ERRORS = {
    "SQLITE_FULL",
    "SQLITE_IOERR_WRITE",
    "SQLITE_IOERR_FSYNC",
    "SQLITE_IOERR_DIR_FSYNC",
    "SQLITE_IOERR_TRUNCATE",
    "SQLITE_IOERR_SHMSIZE",  # cannot grow the WAL index (-shm) file: no space
}


def is_write_refused(exc: BaseException) -> bool:
    """True for SQLite errors of a full or read-only card (ENOSPC, EROFS): nothing was written."""
    name = getattr(exc, "sqlite_errorname", "") or ""
    return name in WRITE_REFUSED_ERRORS or name.startswith("SQLITE_READONLY")


def is_corruption(exc: BaseException) -> bool:
    """True for SQLite errors that mean a damaged or unreadable file (not 'busy' or a bug)."""
    name = getattr(exc, "sqlite_errorname", "") or ""
    return name in CORRUPTION_ERRORS or name.startswith("SQLITE_IOERR") or name.startswith("SQLITE_CORRUPT")


def free_bytes(path: Path) -> int:
    """Bytes an unprivileged writer may still use on the file system holding ``path``."""
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def connect(path: Path, *, readonly: bool = False) -> sqlite3.Connection:
    """A connection with the ledger's per-connection settings (synchronous=FULL)."""
    if readonly:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    else:
        conn = sqlite3.connect(str(path))
    configure(conn)
    return conn


def fsync_path(path: Path) -> None:
    """fsync a file or a directory, so a rename or a copy survives a power cut."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def check_header(path: Path) -> None:
    """Refuse a file that is empty or not SQLite: SQLite would treat an empty file as a new,
    empty database, which is exactly the silent replacement we must never do."""
    try:
        with path.open("rb") as f:
            head = f.read(len(SQLITE_HEADER))
    except OSError as exc:
        raise LedgerCorrupt(path, f"cannot read the file ({exc})", keep_aside(path)) from exc
    if not head:
        raise LedgerCorrupt(path, "the file is empty (0 bytes)", keep_aside(path))
    if head != SQLITE_HEADER:
        raise LedgerCorrupt(path, "the file is not an SQLite database (bad header)", keep_aside(path))


def keep_aside(path: Path) -> Path | None:
    """Copy the file (and its WAL) to ``<name>.corrupt-<UTC time>`` next to it; the original
    stays in place so every later start refuses too, until a technician restores it."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    target = path.with_name(f"{path.name}.corrupt-{stamp}")
    n = 1
    while target.exists():
        n += 1
        target = path.with_name(f"{path.name}.corrupt-{stamp}-{n}")
    try:
        shutil.copy2(path, target)
        fsync_path(target)
        for suffix in SIDE_FILES:
            side = Path(f"{path}{suffix}")
            if side.exists():
                shutil.copy2(side, f"{target}{suffix}")
        fsync_path(path.parent)
    except OSError:
        return None
    return target


class WriterLock:
    """An exclusive advisory lock: one writer process per ledger file (freed by the kernel
    when the process dies, even by SIGKILL)."""

    def __init__(self, path: Path) -> None:
        self.path = path.with_name(path.name + ".lock")
        self._fd: int | None = None

    def acquire(self) -> WriterLock:
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            if exc.errno in (errno.EROFS, errno.ENOSPC, errno.EACCES, errno.EPERM):
                raise LedgerUnwritable(
                    self.path.with_suffix(""), f"cannot create its lock file ({exc})"
                ) from exc
            raise
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            os.close(fd)
            raise LedgerError(
                f"ledger {self.path.with_suffix('')} is already open by another process"
            ) from exc
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
