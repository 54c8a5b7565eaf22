"""The cabinet's ledger: one SQLite file, append-only events plus projections.

See docs/ledger.md. Names handed on here are the public API.
"""

from .aio import AsyncLedger
from .backup import Backups
from .errors import (
    EventBodyError,
    LedgerCorrupt,
    LedgerError,
    LedgerMismatch,
    LedgerRuleError,
    LedgerUnwritable,
)
from .events import EVENT_TYPES, Event
from .ledger import Ledger
from .schema import SCHEMA_VERSION
from .verify import Problem, VerifyReport, verify, verify_db
from .views import BatteryState, CommandSeen, RentalState, SlotState

__all__ = [
    "EVENT_TYPES",
    "SCHEMA_VERSION",
    "AsyncLedger",
    "Backups",
    "BatteryState",
    "CommandSeen",
    "Event",
    "EventBodyError",
    "Ledger",
    "LedgerCorrupt",
    "LedgerError",
    "LedgerMismatch",
    "LedgerRuleError",
    "LedgerUnwritable",
    "Problem",
    "RentalState",
    "SlotState",
    "VerifyReport",
    "verify",
    "verify_db",
]
