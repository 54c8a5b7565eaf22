"""Replay protection for signed messages: a high-water mark plus a sliding window.

Each signer/channel (the key) numbers its messages with a counter. A counter is fresh
when it is above the highest seen, or within the last ``size`` counters and not yet
seen (messages may arrive out of order after a reconnect). Anything older than the
window, or seen before, is a replay. The same scheme as IPsec's anti-replay window.
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_WINDOW = 64


@dataclass(frozen=True)
class ReplayWindow:
    """Counters seen for one key: ``high`` and a bitmap of ``high - i`` for i < size."""

    high: int
    bits: int
    size: int = DEFAULT_WINDOW

    @classmethod
    def first(cls, counter: int, size: int = DEFAULT_WINDOW) -> ReplayWindow:
        """The window after the very first counter of a key."""
        return cls(high=counter, bits=1, size=size)

    def seen(self, counter: int) -> bool:
        """True if the counter must be refused (already seen, or too old to tell)."""
        if counter > self.high:
            return False
        age = self.high - counter
        return age >= self.size or bool(self.bits >> age & 1)

    def accept(self, counter: int) -> ReplayWindow | None:
        """The window with ``counter`` marked seen, or None when it is a replay."""
        if self.seen(counter):
            return None
        mask = (1 << self.size) - 1
        if counter > self.high:
            shift = counter - self.high
            bits = ((self.bits << shift) | 1) & mask if shift < self.size else 1
            return ReplayWindow(high=counter, bits=bits, size=self.size)
        return ReplayWindow(high=self.high, bits=self.bits | 1 << (self.high - counter), size=self.size)

    def to_blob(self) -> bytes:
        """The bitmap as bytes (SQLite integers are signed 64-bit, a 64-bit bitmap is not)."""
        return self.bits.to_bytes((self.size + 7) // 8, "big")

    @classmethod
    def from_row(cls, high: int, blob: bytes) -> ReplayWindow:
        """Rebuild from a stored row; the window size is the blob's size in bits."""
        return cls(high=high, bits=int.from_bytes(blob, "big"), size=len(blob) * 8)
