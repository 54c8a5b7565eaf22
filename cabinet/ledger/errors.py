"""Exceptions of the ledger: each says what failed and where (file, seq, slot, sn)."""

from __future__ import annotations

from pathlib import Path


class LedgerError(Exception):
    """Base class of every ledger failure."""


class EventBodyError(LedgerError, ValueError):
    """An event body is malformed (unknown type, missing or bad field); nothing was written."""


class LedgerRuleError(LedgerError):
    """An event would break a domain rule (e.g. renting a battery that is not in a slot).

    Raised before anything is written: the transaction is rolled back whole.
    """


class LedgerCorrupt(LedgerError):
    """The ledger file cannot be trusted; the cabinet must refuse to rent and say so.

    The file is left where it was (never replaced by an empty one); ``kept_copy`` is
    the copy taken aside for a technician, when one could be made.
    """

    def __init__(self, path: Path, reason: str, kept_copy: Path | None = None) -> None:
        self.path = path
        self.reason = reason
        self.kept_copy = kept_copy
        where = f"; a copy was kept at {kept_copy}" if kept_copy else ""
        super().__init__(
            f"ledger {path} is corrupt or unreadable: {reason}{where}. "
            "Renting must stop until it is restored (see docs/ledger.md, 'Restore')."
        )


class LedgerMismatch(LedgerError):
    """The file is a sound ledger but not for this cabinet or this software version."""


class LedgerUnwritable(LedgerError):
    """The storage refuses writes for now (card full, or read-only after I/O errors); nothing
    was written and the file is still sound. Refuse to start new work (rentals) and retry later:
    writes succeed again by themselves once space is freed or the card is writable."""

    def __init__(self, path: Path | None, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"ledger {path or ':memory:'} cannot be written now: {reason}")
