"""BatteryBus: the slot boards on one Modbus line (RTU over a serial port, or Modbus TCP).

One ``scan()`` reads every board with ONE request (header + all slot blocks, see
``drivers.register_map``) and returns a :class:`SlotReading` per cabinet slot. Each board
keeps its own health: timeouts, CRC/framing errors and exception responses are counted,
and a board that fails ``fail_threshold`` scans in a row is isolated: it is skipped (its
slots read as *unknown*, never as empty) and retried after an exponential backoff, so a
dead board costs at most one short timeout per backoff period and never stalls the bus.

Usage::

    bus = BatteryBus("/dev/ttyAMA0", [(1, 8), (2, 8), (3, 8)])   # or "tcp://10.0.0.5:502"
    async with bus:
        readings = await bus.scan()
        await bus.set_charge(5, True)
        print(bus.stats())
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any
from urllib.parse import urlsplit

from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusException
from pymodbus.framer import FramerType

from drivers import register_map as rm


class BusError(Exception):
    """A write or read the caller asked for failed (which slot/board, and why)."""


@dataclass(frozen=True)
class SlotReading:
    """One slot as its board reported it in a scan; every field but slot/board is None when unknown."""

    slot: int  # cabinet-wide 1..N
    board: int  # unit id
    known: bool  # False: the board did not answer (isolated, timed out, link down)
    present: bool | None = None
    seated: bool | None = None
    sn: str | None = None  # None when unknown, "" when no pack/unreadable
    soc: int | None = None  # %
    voltage_v: float | None = None
    current_a: float | None = None  # positive when charging
    temp_c: float | None = None
    cycles: int | None = None
    charging: bool | None = None
    charge_enabled: bool | None = None
    full: bool | None = None
    pack_comm_ok: bool | None = None
    slot_faults: rm.SlotFault | None = None
    pack_firmware: int | None = None
    read_at: float | None = None  # monotonic seconds


@dataclass
class BoardHealth:
    """Counters and state of one slot board (the bus keeps one per board)."""

    unit_id: int
    slots: tuple[int, ...]
    online: bool = False
    isolated: bool = False
    requests: int = 0
    ok: int = 0
    timeouts: int = 0
    crc_errors: int = 0  # bytes came back but no valid frame (bad CRC, broken header)
    exceptions: int = 0  # Modbus exception responses
    consecutive_failures: int = 0
    backoff_s: float = 0.0
    retry_at: float = 0.0  # monotonic; isolated boards are skipped until then
    firmware: int | None = None
    board_faults: rm.BoardFault | None = None
    uptime_s: int | None = None
    reported_slots: int | None = None
    last_ok_at: float | None = None
    last_error: str = ""

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly copy (flags as ints)."""
        d = asdict(self)
        d["board_faults"] = None if self.board_faults is None else int(self.board_faults)
        d["slots"] = list(self.slots)
        return d


@dataclass
class _Counters:
    scans: int = 0
    last_scan_s: float = 0.0
    max_scan_s: float = 0.0
    link_errors: int = 0
    last_rx: bytes = b""  # receive buffer as last seen during the current transaction
    timings: list[float] = field(default_factory=list)


class BatteryBus:
    """Async client for a cabinet's slot boards; boards are ``(unit_id, slot_count)`` in slot order."""

    def __init__(
        self,
        port: str,
        boards: Sequence[tuple[int, int]],
        *,
        baudrate: int = 115200,
        timeout_s: float = 0.2,
        retries: int = 0,
        fail_threshold: int = 3,
        backoff_initial_s: float = 2.0,
        backoff_max_s: float = 60.0,
        jitter: float = 0.1,
        quiet_library_log: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not boards:
            raise ValueError("a battery bus needs at least one board (unit_id, slot_count)")
        seen: set[int] = set()
        self._boards: list[BoardHealth] = []
        self._slot_map: dict[int, tuple[BoardHealth, int]] = {}
        n = 1
        for unit_id, count in boards:
            if not 1 <= unit_id <= 247 or unit_id in seen:
                raise ValueError(f"board unit id {unit_id} is invalid or repeated (1..247, unique)")
            rm.board_read_count(count)  # validates 1..8
            seen.add(unit_id)
            h = BoardHealth(unit_id, tuple(range(n, n + count)))
            for i, slot in enumerate(h.slots):
                self._slot_map[slot] = (h, i)
            self._boards.append(h)
            n += count
        self.port = port
        self.timeout_s = timeout_s
        self.fail_threshold = fail_threshold
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        self.jitter = jitter
        self._clock = clock
        self._rng = random.Random()
        self._c = _Counters()
        if quiet_library_log:
            # The bus counts and reports every failure itself; pymodbus would log each one
            # (with frame dumps) at ERROR, once per scan per dead board.
            logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
        self._client = self._make_client(port, baudrate, timeout_s, retries)
        self._client.set_max_no_responses(1_000_000)  # never drop the link because one board is dead

    def _make_client(self, port: str, baudrate: int, timeout_s: float, retries: int) -> Any:
        self._tcp = port.startswith("tcp://")
        if self._tcp:
            u = urlsplit(port)
            if not u.hostname or not u.port:
                raise ValueError(f"bus port {port!r}: expected tcp://host:port")
            return AsyncModbusTcpClient(
                u.hostname, port=u.port, framer=FramerType.SOCKET, timeout=timeout_s, retries=retries,
                reconnect_delay=0.2, reconnect_delay_max=5, trace_packet=self._trace,
            )  # fmt: skip
        return AsyncModbusSerialClient(
            port, framer=FramerType.RTU, baudrate=baudrate, timeout=timeout_s, retries=retries,
            reconnect_delay=0.2, reconnect_delay_max=5, trace_packet=self._trace,
        )  # fmt: skip

    def _trace(self, sending: bool, data: bytes) -> bytes:
        if not sending and data:
            self._c.last_rx = bytes(data)
        return data

    def _is_whole_frame(self, buf: bytes) -> bool:
        """True if ``buf`` is a well-formed frame (so a failed request got a late or foreign reply, not garbage)."""
        if self._tcp:
            return len(buf) >= 8 and buf[2:4] == b"\0\0" and int.from_bytes(buf[4:6], "big") + 6 == len(buf)
        return len(buf) >= 5 and _crc16(buf[:-2]) == int.from_bytes(buf[-2:], "little")

    # --- life cycle -------------------------------------------------------------------
    async def start(self) -> None:
        """Open the port. A port that is not there yet is retried by later scans (slots read unknown)."""
        await self._client.connect()

    async def close(self) -> None:
        """Close the port."""
        self._client.close()

    async def __aenter__(self) -> BatteryBus:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # --- layout -------------------------------------------------------------------------
    @property
    def slot_count(self) -> int:
        """Slots on this bus (1..slot_count)."""
        return len(self._slot_map)

    def board_of(self, slot: int) -> int:
        """Unit id of the board that serves ``slot``."""
        return self._locate(slot)[0].unit_id

    def _locate(self, slot: int) -> tuple[BoardHealth, int]:
        try:
            return self._slot_map[slot]
        except KeyError:
            raise BusError(f"slot {slot} is not on this bus (1..{self.slot_count})") from None

    # --- scanning -----------------------------------------------------------------------
    async def scan(self) -> list[SlotReading]:
        """Read every board that is not isolated (one request each); one reading per slot, in slot order."""
        started = time.perf_counter()
        out: list[SlotReading] = []
        for h in self._boards:
            now = self._clock()
            if h.isolated and now < h.retry_at:
                out.extend(self._unknown(h))
                continue
            regs = await self._read_board(h)
            out.extend(self._decode(h, regs) if regs is not None else self._unknown(h))
        elapsed = time.perf_counter() - started
        self._c.scans += 1
        self._c.last_scan_s = elapsed
        self._c.max_scan_s = max(self._c.max_scan_s, elapsed)
        return out

    async def _read_board(self, h: BoardHealth) -> list[int] | None:
        count = rm.board_read_count(len(h.slots))
        try:
            resp = await self._request(
                h, "read", self._client.read_input_registers, rm.HEADER_BASE, count=count
            )
        except _Failed:
            return None
        if len(resp.registers) < count:
            self._fail(h, "short reply", "crc_errors")
            return None
        return list(resp.registers[:count])

    async def _request(
        self, h: BoardHealth, what: str, call: Callable[..., Any], *args: Any, **kw: Any
    ) -> Any:
        """One Modbus transaction with board ``h``, counted; raises _Failed (already counted)."""
        h.requests += 1
        self._c.last_rx = b""
        try:
            resp = await call(*args, device_id=h.unit_id, **kw)
        except ConnectionException as e:
            self._c.link_errors += 1
            h.online = False
            h.last_error = f"{what}: link down ({e})"
            raise _Failed from e
        except ModbusException as e:
            rx = self._c.last_rx
            if rx and not self._is_whole_frame(rx):
                self._fail(h, f"{what}: reply garbled (bad CRC or frame)", "crc_errors")
            elif rx:
                self._fail(h, f"{what}: only a late or foreign reply within {self.timeout_s:g} s", "timeouts")
            else:
                self._fail(h, f"{what}: no reply within {self.timeout_s:g} s", "timeouts")
            raise _Failed from e
        if resp.isError():
            self._fail(
                h, f"{what}: exception response code {getattr(resp, 'exception_code', '?')}", "exceptions"
            )
            raise _Failed
        self._ok(h)
        return resp

    def _ok(self, h: BoardHealth) -> None:
        h.ok += 1
        h.online, h.isolated = True, False
        h.consecutive_failures, h.backoff_s, h.retry_at = 0, 0.0, 0.0
        h.last_ok_at = self._clock()

    def _fail(self, h: BoardHealth, error: str, counter: str) -> None:
        setattr(h, counter, getattr(h, counter) + 1)
        h.consecutive_failures += 1
        h.online = False
        h.last_error = error
        if h.isolated or h.consecutive_failures >= self.fail_threshold:
            h.isolated = True
            h.backoff_s = (
                self.backoff_initial_s if not h.backoff_s else min(self.backoff_max_s, h.backoff_s * 2)
            )
            spread = 1.0 + self.jitter * (2 * self._rng.random() - 1)
            h.retry_at = self._clock() + h.backoff_s * spread

    @staticmethod
    def _unknown(h: BoardHealth) -> list[SlotReading]:
        return [SlotReading(slot=s, board=h.unit_id, known=False) for s in h.slots]

    def _decode(self, h: BoardHealth, regs: list[int]) -> list[SlotReading]:
        h.firmware = regs[0]
        h.reported_slots = regs[1]
        h.board_faults = rm.BoardFault(regs[2])
        h.uptime_s = regs[3] << 16 | regs[4]
        now = self._clock()
        out = []
        for i, slot in enumerate(h.slots):
            b = regs[rm.slot_offset(i) : rm.slot_offset(i) + rm.SLOT_BLOCK_SIZE]
            st = rm.SlotStatus(b[0])
            comm = bool(st & rm.SlotStatus.PACK_COMM_OK)
            out.append(
                SlotReading(
                    slot=slot,
                    board=h.unit_id,
                    known=True,
                    present=bool(st & rm.SlotStatus.PRESENT),
                    seated=bool(st & rm.SlotStatus.SEATED),
                    sn=rm.decode_serial(b[1:5]) if comm else "",
                    soc=b[5] if comm else None,
                    voltage_v=b[6] / 1000 if comm else None,
                    current_a=rm.to_int16(b[7]) / 1000 if comm else None,
                    temp_c=rm.to_int16(b[8]) / 10,
                    cycles=b[9] if comm else None,
                    charging=bool(st & rm.SlotStatus.CHARGING),
                    charge_enabled=bool(st & rm.SlotStatus.CHARGE_ENABLED),
                    full=bool(st & rm.SlotStatus.FULL),
                    pack_comm_ok=comm,
                    slot_faults=rm.SlotFault(b[10]),
                    pack_firmware=b[11] if comm else None,
                    read_at=now,
                )
            )
        return out

    # --- writes ---------------------------------------------------------------------------
    async def set_charge(self, slot: int, enabled: bool) -> None:
        """Enable or disable charging of one slot (read-modify-write of its board's enable bits)."""
        await self.set_charge_many({slot: enabled})

    async def set_charge_many(self, wanted: dict[int, bool]) -> None:
        """Set charge enable for several slots: one read and one write per board touched."""
        by_board: dict[int, list[tuple[int, bool]]] = {}
        for slot, on in wanted.items():
            h, i = self._locate(slot)
            by_board.setdefault(h.unit_id, []).append((i, on))
        for h in self._boards:
            if h.unit_id not in by_board:
                continue
            try:
                cur = await self._request(
                    h,
                    "read charge enable",
                    self._client.read_holding_registers,
                    rm.HOLDING_CHARGE_ENABLE,
                    count=1,
                )
                mask = cur.registers[0]
                for i, on in by_board[h.unit_id]:
                    mask = mask | (1 << i) if on else mask & ~(1 << i)
                await self._request(
                    h, "write charge enable", self._client.write_register, rm.HOLDING_CHARGE_ENABLE, mask
                )
            except _Failed:
                raise BusError(f"board {h.unit_id}: could not set charge enable: {h.last_error}") from None

    async def set_charge_current(self, slot: int, amps: float) -> None:
        """Set the CC charge current limit of one slot (0.1..3 A)."""
        if not 0.1 <= amps <= 3.0:
            raise BusError(f"slot {slot}: charge current {amps} A is outside 0.1..3 A")
        h, i = self._locate(slot)
        try:
            await self._request(
                h,
                "write charge current",
                self._client.write_register,
                rm.HOLDING_CHARGE_CURRENT_BASE + i,
                round(amps * 1000),
            )
        except _Failed:
            raise BusError(
                f"slot {slot} (board {h.unit_id}): could not set charge current: {h.last_error}"
            ) from None

    async def clear_faults(self, unit_ids: Iterable[int] | None = None) -> None:
        """Clear latched slot/board faults on the given boards (all by default)."""
        for h in self._boards:
            if unit_ids is not None and h.unit_id not in set(unit_ids):
                continue
            try:
                await self._request(
                    h,
                    "clear faults",
                    self._client.write_register,
                    rm.HOLDING_FAULT_CLEAR,
                    rm.FAULT_CLEAR_MAGIC,
                )
            except _Failed:
                raise BusError(f"board {h.unit_id}: could not clear faults: {h.last_error}") from None

    # --- reporting --------------------------------------------------------------------------
    def health(self) -> list[BoardHealth]:
        """A copy of every board's health, in bus order."""
        return [replace(h) for h in self._boards]

    def stats(self) -> dict[str, Any]:
        """Counters for the UI and /metrics: per board and totals, plus scan timing."""
        boards = [h.as_dict() for h in self._boards]
        totals = {
            k: sum(b[k] for b in boards) for k in ("requests", "ok", "timeouts", "crc_errors", "exceptions")
        }
        return {
            "port": self.port,
            "scans": self._c.scans,
            "last_scan_s": self._c.last_scan_s,
            "max_scan_s": self._c.max_scan_s,
            "link_errors": self._c.link_errors,
            "boards_online": sum(1 for h in self._boards if h.online),
            "boards_isolated": sum(1 for h in self._boards if h.isolated),
            **totals,
            "boards": boards,
        }


class _Failed(Exception):
    """Internal: a transaction failed and was already counted."""


def _crc16(data: bytes) -> int:
    """Modbus RTU CRC-16 (poly 0xA001, init 0xFFFF), as sent little-endian on the wire."""
    crc = 0xFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc
