"""gpiozero pin factories whose pins are the simulated cabinet's lock outputs and seat switches.

A Pi has GPIO0..27 only; a 48-slot cabinet needs 96 lines, which real cabinets get from
I/O expanders. The simulated board therefore adds a virtual header ``EXP`` next to the
Pi's J8 header (which keeps working as on a real Pi): slot *k* has its lock output on pin
``LOCK<k>`` (also ``EXP:<2k-1>``) and its seat switch on ``SEAT<k>`` (also ``EXP:<2k>``),
for k = 1..48. Levels: lock output high = lock energised (latch opens); seat switch high
= pack seated.

* :class:`SimMockFactory` + :func:`wire_to_cabinet`: in-process, for tests; pins are
  gpiozero mock pins wired straight to a :class:`~hardware_sim.cabinet.SimCabinet`.
* :class:`SimLinkFactory`: cross-process. Registered as the ``cabinetsim`` entry point of
  ``gpiozero_pin_factories``, so ``GPIOZERO_PIN_FACTORY=cabinetsim`` plus
  ``CABINET_SIM_GPIO=host:port`` makes a cabinet process's gpiozero devices drive a
  simulator running elsewhere (its GPIO link, :mod:`hardware_sim.gpio_link`). The cabinet
  never imports hardware_sim: gpiozero loads the factory by name.
"""

from __future__ import annotations

import json
import os
import socket
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from gpiozero.exc import BadPinFactory
from gpiozero.pins import HeaderInfo, PinInfo
from gpiozero.pins.mock import MockFactory, MockPin

if TYPE_CHECKING:
    from hardware_sim.cabinet import SimCabinet

EXPANDER_SLOTS = 48
ENV_ADDRESS = "CABINET_SIM_GPIO"


def lock_pin(slot: int) -> str:
    """Name of slot ``slot``'s lock output pin on the simulated board."""
    return f"LOCK{slot}"


def seat_pin(slot: int) -> str:
    """Name of slot ``slot``'s seat switch input pin on the simulated board."""
    return f"SEAT{slot}"


def parse_pin(name: str) -> tuple[str, int] | None:
    """('lock'|'seat', slot) for an expander pin name, None for any other pin."""
    for prefix, kind in (("LOCK", "lock"), ("SEAT", "seat")):
        if name.startswith(prefix) and name[len(prefix) :].isdigit():
            return kind, int(name[len(prefix) :])
    return None


def _expander_header() -> HeaderInfo:
    pins = {}
    for k in range(1, EXPANDER_SLOTS + 1):
        for col, name in ((1, lock_pin(k)), (2, seat_pin(k))):
            number = 2 * k - 2 + col
            pins[number] = PinInfo(
                number=number,
                name=name,  # gpiozero's PiPin parses name[4:] as a number: LOCKk / SEATk fit
                names=frozenset({name, f"EXP:{number}"}),
                pull="",
                row=k,
                col=col,
                interfaces=frozenset({"gpio"}),
            )
    return HeaderInfo(name="EXP", rows=EXPANDER_SLOTS, columns=2, pins=pins)


class SimPin(MockPin):
    """A mock pin that reports output changes to its factory and keeps an externally driven input level."""

    def _change_state(self, value: bool) -> bool:
        changed = super()._change_state(value)
        if changed and self._function == "output":
            self.factory._output_changed(self.info.name, bool(value))
        return changed

    def _set_pull(self, value: str) -> None:
        super()._set_pull(value)  # a mock pin jumps to its pull level...
        self.factory._restore_input(self)  # ...but a switch that drives the line wins


class SimMockFactory(MockFactory):
    """MockFactory with the Pi's J8 header plus the 96-line ``EXP`` expander header (see module doc)."""

    def __init__(self, revision: str | None = None) -> None:
        super().__init__(revision=revision, pin_class=SimPin)
        self._inputs: dict[str, bool] = {}
        self._inputs_lock = threading.RLock()
        self._board: Any = None
        #: called with (pin name, level) when an output pin changes (any thread)
        self.on_output: Callable[[str, bool], None] | None = None

    def _get_board_info(self) -> Any:
        if self._board is None:
            base = super()._get_board_info()
            self._board = base._replace(headers={**base.headers, "EXP": _expander_header()})
        return self._board

    def set_input(self, name: str, level: bool) -> None:
        """Drive input pin ``name`` to ``level`` (remembered for pins created later)."""
        with self._inputs_lock:
            self._inputs[name] = level
            for info, pin in list(self.pins.items()):
                if info.name == name:
                    self._drive(pin, level)

    def _restore_input(self, pin: MockPin) -> None:
        with self._inputs_lock:
            level = self._inputs.get(pin.info.name)
        if level is not None:
            self._drive(pin, level)

    @staticmethod
    def _drive(pin: MockPin, level: bool) -> None:
        if pin.function == "input":
            pin.drive_high() if level else pin.drive_low()

    def _output_changed(self, name: str, level: bool) -> None:
        if self.on_output is not None:
            self.on_output(name, level)


def wire_to_cabinet(factory: SimMockFactory, cabinet: SimCabinet) -> Callable[[], None]:
    """Connect ``factory``'s LOCK/SEAT pins to ``cabinet``'s lock mechanics; returns an unwire function."""

    def on_output(name: str, level: bool) -> None:
        parsed = parse_pin(name)
        if parsed and parsed[0] == "lock" and 1 <= parsed[1] <= len(cabinet.slots):
            cabinet.set_lock(parsed[1], level)

    def on_seat(slot: int, seated: bool) -> None:
        factory.set_input(seat_pin(slot), seated)

    for s in cabinet.slots:
        factory.set_input(seat_pin(s.number), cabinet.seat_switch(s.number))
    factory.on_output = on_output
    cabinet.add_seat_listener(on_seat)

    def unwire() -> None:
        factory.on_output = None
        cabinet.remove_seat_listener(on_seat)

    return unwire


class SimLinkFactory(SimMockFactory):
    """Pin factory for a cabinet process: pins live in a simulator reached at ``$CABINET_SIM_GPIO`` (host:port).

    Constructed with no arguments (gpiozero does that for ``GPIOZERO_PIN_FACTORY=cabinetsim``).
    Lock output changes are sent to the simulator; seat switch changes come back on a reader
    thread and fire gpiozero callbacks there (as real GPIO edge callbacks do).
    """

    def __init__(self, address: str | None = None, connect_timeout: float = 5.0) -> None:
        super().__init__()
        address = address or os.environ.get(ENV_ADDRESS, "")
        host, _, port = address.rpartition(":")
        if not host or not port.isdigit():
            raise BadPinFactory(
                f"{ENV_ADDRESS} must be host:port of the simulator's GPIO link, not {address!r}"
            )
        self.address = (host, int(port))
        self._send_lock = threading.Lock()
        self._closing = threading.Event()
        self._synced = threading.Event()
        try:
            self._sock = socket.create_connection(self.address, timeout=connect_timeout)
        except OSError as e:
            raise BadPinFactory(f"cannot reach the simulator's GPIO link at {address}: {e}") from e
        self._sock.settimeout(None)
        self.on_output = self._send_output
        self._reader = threading.Thread(target=self._read_loop, name="cabinetsim-gpio-link", daemon=True)
        self._reader.start()
        if not self._synced.wait(connect_timeout):
            self._sock.close()
            raise BadPinFactory(f"the simulator at {address} sent no pin snapshot within {connect_timeout} s")

    def _send_output(self, name: str, level: bool) -> None:
        line = json.dumps({"pin": name, "level": int(level)}) + "\n"
        with self._send_lock:
            try:
                self._sock.sendall(line.encode())
            except OSError:
                pass  # link down: the simulator de-energises our locks on disconnect

    def _read_loop(self) -> None:
        buf = b""
        while not self._closing.is_set():
            try:
                chunk = self._sock.recv(4096)
            except OSError:
                chunk = b""
            if not chunk:
                break
            buf += chunk
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                self._handle(line)

    def _handle(self, line: bytes) -> None:
        try:
            msg = json.loads(line)
        except ValueError:
            return
        if "snapshot" in msg:
            for name, level in msg["snapshot"].items():
                self.set_input(name, bool(level))
            self._synced.set()
        elif "pin" in msg:
            self.set_input(str(msg["pin"]), bool(msg["level"]))

    def close(self) -> None:
        """Close the pins and the link."""
        self._closing.set()
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._sock.close()
        if self._reader is not threading.current_thread():
            self._reader.join(2)
        super().close()
