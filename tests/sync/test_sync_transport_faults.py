"""MqttTransport against a scripted fake broker: faults a real Mosquitto will not produce on demand."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest

from sync.transport import ConnectionLost, MqttOptions, MqttTransport, PublishTimeout

pytestmark = pytest.mark.timeout(30)


async def _read_packet(r: asyncio.StreamReader) -> tuple[int, bytes]:
    header = (await r.readexactly(1))[0]
    length, mult = 0, 1
    while True:
        b = (await r.readexactly(1))[0]
        length += (b & 0x7F) * mult
        mult *= 128
        if not b & 0x80:
            break
    return header, await r.readexactly(length)


class FakeBroker:
    """Accepts MQTT connections and answers as ``script`` says; records protocol levels seen."""

    def __init__(self, on_connect: Callable[[int], bytes | None], on_publish: str) -> None:
        self.on_connect = on_connect
        self.on_publish = on_publish  # "drop" (close the link) or "ignore" (never PUBACK)
        self.levels: list[int] = []
        self.server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        assert self.server is not None
        return self.server.sockets[0].getsockname()[1]

    async def handle(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        try:
            while True:
                header, body = await _read_packet(r)
                kind = header >> 4
                if kind == 1:  # CONNECT: body = len(2) "MQTT" level ...
                    level = body[6]
                    self.levels.append(level)
                    reply = self.on_connect(level)
                    if reply is None:
                        break
                    w.write(reply)
                elif kind == 3 and self.on_publish == "drop":
                    break
                elif kind == 8:  # SUBSCRIBE: grant QoS 1
                    mid = body[:2]
                    w.write(
                        bytes([0x90, 3]) + mid + b"\x01"
                        if self.levels[-1] == 4
                        else bytes([0x90, 4]) + mid + b"\x00\x01"
                    )
                elif kind == 12:  # PINGREQ
                    w.write(b"\xd0\x00")
                await w.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            w.close()


@pytest.fixture
async def fake_broker() -> AsyncIterator[Callable[..., FakeBroker]]:
    made: list[FakeBroker] = []

    async def make(on_connect, on_publish="ignore") -> FakeBroker:
        fb = FakeBroker(on_connect, on_publish)
        fb.server = await asyncio.start_server(fb.handle, "127.0.0.1", 0)
        made.append(fb)
        return fb

    yield make
    for fb in made:
        assert fb.server is not None
        fb.server.close()


def accept_any(level: int) -> bytes:
    return b"\x20\x03\x00\x00\x00" if level == 5 else b"\x20\x02\x00\x00"


async def test_publish_in_flight_when_the_link_drops_raises_connection_lost(fake_broker, transports) -> None:
    fb = await fake_broker(accept_any, on_publish="drop")
    cab = transports("127.0.0.1", fb.port, "CAB-1")
    await cab.start()
    await cab.wait_connected(5)
    with pytest.raises(ConnectionLost, match="cab/v1/CAB-1/ev"):
        await cab.publish("cab/v1/CAB-1/ev", b"batch", qos=1, timeout=5)
    await cab.wait_connected(5)  # and it reconnects by itself
    assert cab.connects >= 2


async def test_broker_that_never_acks_times_out(fake_broker, transports) -> None:
    fb = await fake_broker(accept_any, on_publish="ignore")
    cab = transports("127.0.0.1", fb.port, "CAB-1")
    await cab.start()
    await cab.wait_connected(5)
    with pytest.raises(PublishTimeout):
        await cab.publish("cab/v1/CAB-1/ev", b"batch", qos=1, timeout=0.3)


async def test_falls_back_to_mqtt_311_when_the_broker_refuses_v5(fake_broker, transports) -> None:
    fb = await fake_broker(lambda level: b"\x20\x02\x00\x01" if level == 5 else b"\x20\x02\x00\x00")
    cab = transports("127.0.0.1", fb.port, "CAB-1", [("cab/v1/CAB-1/cmd", 1)])
    await cab.start()
    await cab.wait_connected(5)
    assert cab.protocol == "3.1.1"
    assert fb.levels[0] == 5 and fb.levels[-1] == 4


async def test_messages_iterator_ends_when_closed(fake_broker) -> None:
    fb = await fake_broker(accept_any)
    cab = MqttTransport(MqttOptions("127.0.0.1", "CAB-1", port=fb.port))
    await cab.start()
    await cab.wait_connected(5)
    reader = asyncio.create_task(anext(cab.messages(), "ended"))
    await cab.close()
    assert await asyncio.wait_for(reader, 5) == "ended"
    assert not cab.connected
