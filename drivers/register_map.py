"""The slot board's register map: the one definition both the drivers and the simulator use.

A slot board is a Modbus RTU slave (one unit id per board) that serves up to
``MAX_SLOTS_PER_BOARD`` slots. Readings are input registers (FC4), read in one
transaction per board: the board header followed by one fixed-size block per slot.
Controls are holding registers (FC3 to read, FC6/FC16 to write).

``docs/register-map.md`` documents this table; ``tests`` check that the two agree.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntFlag

#: FC3/FC4 read at most 125 registers per request; the layout below keeps a whole
#: board (header + 8 slots) inside one read.
MAX_REGISTERS_PER_READ = 125

HEADER_BASE = 0
HEADER_SIZE = 8
SLOT_BASE = HEADER_BASE + HEADER_SIZE
SLOT_BLOCK_SIZE = 12
MAX_SLOTS_PER_BOARD = 8
SERIAL_REGISTERS = 4  # 8 bytes, big-endian, ASCII padded with NUL


@dataclass(frozen=True)
class Register:
    """One register (or a run of registers) of the map."""

    name: str
    offset: int
    count: int
    kind: str  # "uint16" | "int16" | "uint32" (two registers, high word first) | "ascii" | "bits"
    scale: float
    unit: str
    meaning: str
    table: str = "input"  # "input" (FC4, read-only) or "holding" (FC3/FC6/FC16)


# --- board header: input registers HEADER_BASE .. HEADER_BASE + HEADER_SIZE - 1 ---
HEADER: tuple[Register, ...] = (
    Register("firmware_version", 0, 1, "uint16", 1, "", "board firmware, major << 8 | minor"),
    Register("slot_count", 1, 1, "uint16", 1, "slots", "slots this board serves (1..8)"),
    Register("board_faults", 2, 1, "bits", 1, "", "BoardFault bits"),
    Register("uptime_s", 3, 2, "uint32", 1, "s", "seconds since board power-up, high word first"),
    Register("reply_counter", 5, 1, "uint16", 1, "", "replies sent, wraps at 65536"),
    Register("reserved_6", 6, 2, "uint16", 1, "", "reserved, reads 0"),
)

# --- per slot: input registers SLOT_BASE + i * SLOT_BLOCK_SIZE + offset ---
SLOT_BLOCK: tuple[Register, ...] = (
    Register("status", 0, 1, "bits", 1, "", "SlotStatus bits"),
    Register(
        "serial",
        1,
        SERIAL_REGISTERS,
        "ascii",
        1,
        "",
        "battery serial number, 8 ASCII bytes, NUL padded; all zero when empty",
    ),
    Register("soc", 5, 1, "uint16", 1, "%", "pack fuel gauge state of charge, 0..100"),
    Register("voltage", 6, 1, "uint16", 0.001, "V", "pack voltage measured at the slot contacts, mV"),
    Register("current", 7, 1, "int16", 0.001, "A", "pack current, mA, positive when charging"),
    Register("temperature", 8, 1, "int16", 0.1, "C", "pack temperature as the slot reads it, 0.1 C"),
    Register("cycles", 9, 1, "uint16", 1, "cycles", "pack cycle counter"),
    Register("slot_faults", 10, 1, "bits", 1, "", "SlotFault bits"),
    Register("pack_firmware", 11, 1, "uint16", 1, "", "pack firmware, major << 8 | minor; 0 when empty"),
)

# --- holding registers (writable) ---
HOLDING_CHARGE_ENABLE = 0  # bit i enables charging of the board's slot i
HOLDING_CHARGE_CURRENT_BASE = 1  # per slot charge current limit, mA (slot i at base + i)
HOLDING_FAULT_CLEAR = 9  # write 0xA5A5 to clear latched board/slot faults
FAULT_CLEAR_MAGIC = 0xA5A5
HOLDING_SIZE = 10

HOLDING: tuple[Register, ...] = (
    Register("charge_enable", HOLDING_CHARGE_ENABLE, 1, "bits", 1, "", "bit i: charge slot i", "holding"),
    Register(
        "charge_current_limit",
        HOLDING_CHARGE_CURRENT_BASE,
        MAX_SLOTS_PER_BOARD,
        "uint16",
        0.001,
        "A",
        "per slot CC charge current, mA (default 2000)",
        "holding",
    ),
    Register(
        "fault_clear",
        HOLDING_FAULT_CLEAR,
        1,
        "uint16",
        1,
        "",
        "write 0xA5A5 to clear latched faults",
        "holding",
    ),
)

DEFAULT_CHARGE_CURRENT_MA = 2000


class SlotStatus(IntFlag):
    """Bits of a slot's ``status`` register."""

    PRESENT = 0x0001  # a pack is in the slot (contacts see it)
    SEATED = 0x0002  # the pack is fully seated (mirrors the seat switch)
    CHARGING = 0x0004  # charger is delivering current
    CHARGE_ENABLED = 0x0008  # charging enabled by the controller
    FULL = 0x0010  # CV phase finished
    PACK_COMM_OK = 0x0020  # pack answered the board (serial valid)


class SlotFault(IntFlag):
    """Bits of a slot's ``slot_faults`` register (latched until cleared)."""

    OVER_TEMP = 0x0001  # pack above 60 C
    CHARGE_FAIL = 0x0002  # charger enabled but pack takes no current
    CONTACT = 0x0004  # high contact resistance detected
    PACK_COMM = 0x0008  # pack present but serial unreadable
    OVER_VOLTAGE = 0x0010


class BoardFault(IntFlag):
    """Bits of the board ``board_faults`` register."""

    SUPPLY = 0x0001  # charger supply out of range
    OVER_TEMP = 0x0002  # board itself too hot
    EEPROM = 0x0004


def board_read_count(slots_on_board: int) -> int:
    """Registers to read to get a board's header and all its slot blocks in one request."""
    if not 1 <= slots_on_board <= MAX_SLOTS_PER_BOARD:
        raise ValueError(f"a board serves 1..{MAX_SLOTS_PER_BOARD} slots, not {slots_on_board}")
    return SLOT_BASE + slots_on_board * SLOT_BLOCK_SIZE


def slot_offset(slot_index: int) -> int:
    """Address of the first register of slot ``slot_index`` (0-based on its board)."""
    return SLOT_BASE + slot_index * SLOT_BLOCK_SIZE


def encode_serial(sn: str) -> list[int]:
    """Pack a serial number (at most 8 ASCII chars) into SERIAL_REGISTERS registers."""
    raw = sn.encode("ascii")
    if len(raw) > 2 * SERIAL_REGISTERS:
        raise ValueError(f"serial number {sn!r} longer than {2 * SERIAL_REGISTERS} bytes")
    raw = raw.ljust(2 * SERIAL_REGISTERS, b"\0")
    return [int.from_bytes(raw[i : i + 2], "big") for i in range(0, len(raw), 2)]


def decode_serial(regs: list[int]) -> str:
    """Inverse of :func:`encode_serial`; empty string when all registers are zero."""
    raw = b"".join(r.to_bytes(2, "big") for r in regs)
    return raw.rstrip(b"\0").decode("ascii", errors="replace")


def to_int16(v: int) -> int:
    """Interpret a 16-bit register value as signed."""
    return v - 0x10000 if v & 0x8000 else v


def from_int16(v: int) -> int:
    """Store a signed value (-32768..32767) in a 16-bit register."""
    if not -0x8000 <= v <= 0x7FFF:
        raise ValueError(f"{v} does not fit a signed 16-bit register")
    return v & 0xFFFF


assert board_read_count(MAX_SLOTS_PER_BOARD) <= MAX_REGISTERS_PER_READ
