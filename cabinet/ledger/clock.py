"""Where and when an event happened: wall time, boot id and time since boot.

The cloud uses the boot id and CLOCK_BOOTTIME to price rentals correctly even when
the cabinet's wall clock was wrong (no RTC, no NTP yet after a power cut).
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

BOOT_ID_FILE = Path("/proc/sys/kernel/random/boot_id")


@lru_cache(maxsize=1)
def boot_id() -> str:
    """This boot's id from the kernel; a random one (stable for this process) if unavailable."""
    try:
        return BOOT_ID_FILE.read_text().strip()
    except OSError:
        return f"nokernel-{uuid.uuid4()}"


@dataclass(frozen=True)
class Stamp:
    """The three clocks an event carries."""

    at_wall: float
    at_mono: float
    boot_id: str


def now() -> Stamp:
    """Read the clocks: wall (may be wrong), CLOCK_BOOTTIME (counts suspend) and boot id."""
    return Stamp(at_wall=time.time(), at_mono=time.clock_gettime(time.CLOCK_BOOTTIME), boot_id=boot_id())
