"""The simulated slot boards as Modbus slaves (pymodbus 3.16 server), over a pty pair and over TCP.

One pymodbus ``SimDevice`` per slot board (unit ids 1..); every request is answered from
:class:`~hardware_sim.cabinet.SimCabinet` through the device's ``action`` hook, so the
registers are always computed from the live state (``drivers.register_map`` layout).

Bus faults are played below the register layer, in the reply path: a silent board's
replies are dropped, a garbled board's replies get a bad CRC (RTU) or a broken MBAP header
(TCP), a slow board's replies are sent late.

:class:`PtyBridge` makes a null-modem cable out of two pseudo-terminals and a relay, so the
server and the client each open a real tty path with real RTU framing (the baud rate is
ignored by a pty: wire time must be computed, see bench/bench_bus_scan.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tty
from functools import partial
from pathlib import Path

from pymodbus.constants import ExcCodes
from pymodbus.framer import FramerType
from pymodbus.server import ModbusSerialServer, ModbusTcpServer
from pymodbus.server.requesthandler import ServerRequestHandler
from pymodbus.simulator import DataType, SimData, SimDevice

from drivers import register_map as rm
from hardware_sim.cabinet import SimCabinet

_FC_READ_HOLDING, _FC_READ_INPUT = 3, 4
_FC_WRITES = (6, 16)


class PtyBridge:
    """Two pseudo-terminals joined by a relay: the server opens ``server_path``, a client ``client_path``.

    ``link`` (optional) is a symlink created to the client side, e.g. /tmp/x/ttySIM.
    """

    def __init__(self, link: str | Path | None = None) -> None:
        self.link = Path(link) if link else None
        self._fds: list[int] = []
        self.server_path = ""
        self.client_path = ""
        self._loop: asyncio.AbstractEventLoop | None = None

    async def start(self) -> PtyBridge:
        """Create both ptys and start relaying bytes between them on the running loop."""
        m1, s1 = os.openpty()
        m2, s2 = os.openpty()
        self._fds = [m1, s1, m2, s2]
        for fd in (s1, s2):
            tty.setraw(fd)  # no echo, no line discipline, before anyone opens it
        for fd in (m1, m2):
            os.set_blocking(fd, False)
        self.server_path, self.client_path = os.ttyname(s1), os.ttyname(s2)
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(m1, self._relay, m1, m2)
        self._loop.add_reader(m2, self._relay, m2, m1)
        if self.link:
            self.link.parent.mkdir(parents=True, exist_ok=True)
            with contextlib.suppress(FileNotFoundError):
                self.link.unlink()
            self.link.symlink_to(self.client_path)
            self.client_path = str(self.link)
        return self

    @staticmethod
    def _relay(src: int, dst: int) -> None:
        try:
            data = os.read(src, 4096)
        except (BlockingIOError, OSError):
            return
        view = memoryview(data)
        while view:
            try:
                n = os.write(dst, view)
            except BlockingIOError:
                return  # nobody drains the other end: the bytes are lost, as on a real line
            view = view[n:]

    def close(self) -> None:
        """Stop relaying, close every fd and remove the symlink."""
        if self._loop and self._fds:
            for fd in (self._fds[0], self._fds[2]):
                self._loop.remove_reader(fd)
        for fd in self._fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        self._fds = []
        if self.link:
            with contextlib.suppress(FileNotFoundError):
                self.link.unlink()


def board_devices(cabinet: SimCabinet) -> list[SimDevice]:
    """One pymodbus SimDevice per slot board, each answering from the cabinet's live state."""
    devices = []
    for unit_id, board in cabinet.boards.items():
        bits = [SimData(0, count=16, values=False, datatype=DataType.BITS)]  # no coils/inputs on a slot board
        holding = [SimData(0, count=rm.HOLDING_SIZE, values=0, datatype=DataType.REGISTERS)]
        inputs = [
            SimData(0, count=rm.board_read_count(len(board.slots)), values=0, datatype=DataType.REGISTERS)
        ]
        devices.append(
            SimDevice(
                id=unit_id,
                simdata=(bits, list(bits), holding, inputs),
                action=partial(_board_action, cabinet, unit_id),
            )
        )
    # Unit id 0 catches requests to boards that do not exist (pymodbus falls back to it);
    # on RTU nobody answers those (see _FaultyReplies), on TCP the gateway says so.
    devices.append(
        SimDevice(
            id=0,
            simdata=(
                [SimData(0, count=16, values=False, datatype=DataType.BITS)],
                [SimData(0, count=16, values=False, datatype=DataType.BITS)],
                [SimData(0, count=256, values=0, datatype=DataType.REGISTERS)],
                [SimData(0, count=256, values=0, datatype=DataType.REGISTERS)],
            ),
            action=_absent_board,
        )
    )
    return devices


async def _absent_board(*_args: object) -> ExcCodes:
    return ExcCodes.GATEWAY_NO_RESPONSE


async def _board_action(
    cabinet: SimCabinet,
    unit_id: int,
    function_code: int,
    start_address: int,
    address: int,
    count: int,
    registers: list[int],
    set_values: list[int] | list[bool] | None,
) -> ExcCodes | None:
    """pymodbus calls this before serving a request: refresh or apply the registers."""
    lo = address - start_address
    if function_code == _FC_READ_INPUT:
        registers[lo : lo + count] = cabinet.input_registers(unit_id)[address : address + count]
    elif function_code == _FC_READ_HOLDING:
        registers[lo : lo + count] = cabinet.holding_registers(unit_id)[address : address + count]
    elif function_code in _FC_WRITES and set_values is not None:
        values = [int(v) for v in set_values]
        if any(not 0 <= v <= 0xFFFF for v in values):
            return ExcCodes.ILLEGAL_VALUE
        cabinet.write_holding(unit_id, address, values)
    return None


class _FaultyReplies(ServerRequestHandler):
    """Request handler that plays the board's bus faults on the way out."""

    def server_send(self, pdu, addr) -> None:  # type: ignore[no-untyped-def]
        cabinet: SimCabinet = self.server.sim_cabinet
        board = cabinet.boards.get(pdu.dev_id) if pdu else None
        if board is None:
            if self.server.sim_framer != FramerType.RTU:
                super().server_send(pdu, addr)
            return  # on a serial line an absent unit id is simply not answered
        if board.silent:
            return
        board.reply_counter += 1
        if board.garble_probability and board.rng.random() < board.garble_probability:
            packet = bytearray(self.framer.buildFrame(pdu))
            if self.server.sim_framer == FramerType.RTU:
                packet[-1] ^= 0x5A  # CRC no longer matches
            else:
                packet[2:4] = b"\xde\xad"  # MBAP protocol id must be 0
            send = partial(self.low_level_send, bytes(packet), addr=addr)
        else:
            send = partial(ServerRequestHandler.server_send, self, pdu, addr)
        if board.reply_delay_s > 0:
            self.loop.call_later(board.reply_delay_s, send)
        else:
            send()


class _SimServerMixin:
    sim_cabinet: SimCabinet
    sim_framer: FramerType

    def callback_new_connection(self) -> ServerRequestHandler:
        return _FaultyReplies(self, self.trace_packet, self.trace_pdu, self.trace_connect)  # type: ignore[attr-defined]


class SimSerialServer(_SimServerMixin, ModbusSerialServer):
    """All slot boards of a cabinet on one RTU line (a tty path)."""

    def __init__(self, cabinet: SimCabinet, port: str, baudrate: int = 115200) -> None:
        self.sim_cabinet, self.sim_framer = cabinet, FramerType.RTU
        super().__init__(
            board_devices(cabinet), framer=FramerType.RTU, port=port, baudrate=baudrate, reconnect_delay=0.5
        )


class SimTcpServer(_SimServerMixin, ModbusTcpServer):
    """All slot boards of a cabinet behind one Modbus TCP port (unit id = board)."""

    def __init__(
        self,
        cabinet: SimCabinet,
        host: str = "127.0.0.1",
        port: int = 0,
        framer: FramerType = FramerType.SOCKET,
    ) -> None:
        self.sim_cabinet, self.sim_framer = cabinet, framer
        super().__init__(board_devices(cabinet), framer=framer, address=(host, port))

    @property
    def bound_port(self) -> int:
        """The TCP port actually listened on (useful with port 0)."""
        return self.transport.sockets[0].getsockname()[1]  # type: ignore[union-attr,attr-defined]
