"""The sync agent against a fake transport in memory (its ``Transport`` interface), no broker.

The rest of the suite runs the agent through a real Mosquitto; these pin down its outbox and
ack rules one message at a time.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from cabinet.commands import CommandHandler
from cabinet.ledger import AsyncLedger
from cabinet.sync_agent import SyncAgent, SyncSettings, Transport
from cabinet.trust import Trust
from sync.messages import Ack, EventBatch, State
from sync.topics import Channel, topic
from sync.transport import Message, NotConnected, Will

CAB = "CAB-F1"


class FakeTransport:
    """Records what is published; a test pushes messages down with ``deliver``."""

    def __init__(self) -> None:
        self.connects = 0
        self._connected = asyncio.Event()
        self.published: list[tuple[str, bytes, int, bool]] = []
        self.subscribed: list[str] = []
        self.will: Will | None = None
        self.closed = False
        self._inbox: asyncio.Queue[Message] = asyncio.Queue()

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def set_will(self, will: Will | None) -> None:
        self.will = will

    async def subscribe(self, topic_filter: str, qos: int = 1, timeout: float | None = 10.0) -> None:
        self.subscribed.append(topic_filter)

    async def start(self) -> None:
        self.reconnect()

    def reconnect(self) -> None:
        self.connects += 1
        self._connected.set()

    def drop(self) -> None:
        self._connected.clear()

    async def close(self, *, publish_will: bool = True, timeout: float = 5.0) -> None:
        self.closed = True
        self._connected.clear()

    async def wait_connected(self, timeout: float | None = None) -> None:
        await asyncio.wait_for(self._connected.wait(), timeout)

    async def publish(
        self, topic: str, payload: bytes, qos: int = 1, retain: bool = False, timeout: float | None = 30.0
    ) -> None:
        if not self.connected:
            raise NotConnected(f"publish to {topic}: not connected")
        self.published.append((topic, payload, qos, retain))

    async def messages(self) -> AsyncIterator[Message]:
        while True:
            yield await self._inbox.get()

    def deliver(self, channel: Channel, payload: bytes, cabinet: str = CAB) -> None:
        self._inbox.put_nowait(Message(topic(cabinet, channel), payload, 1, False))

    def batches(self) -> list[EventBatch]:
        return [EventBatch.decode(p) for t, p, _, _ in self.published if t == topic(CAB, Channel.EV)]


async def until(pred, what: str, timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not pred():
        assert loop.time() < end, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


@pytest.fixture
async def agent(tmp_path: Path) -> AsyncIterator[tuple[SyncAgent, FakeTransport, AsyncLedger]]:
    ledger = await AsyncLedger.open(tmp_path / "ledger.db", CAB)
    for slot in (1, 2, 3):
        await ledger.record("battery_seen", slot=slot, sn=f"PB00000{slot}", soc=90)
    trust = Trust(CAB, [], tmp_path, 600.0)
    fake = FakeTransport()
    transport: Transport = fake  # the fake satisfies the agent's interface (mypy checks this line)
    a = SyncAgent(
        CAB,
        ledger,
        transport,
        CommandHandler(ledger, None, trust),  # type: ignore[arg-type]  # no commands in these tests
        trust,
        SyncSettings(batch_max_events=2, window=1, ack_timeout_s=60.0),
    )
    await a.start()
    try:
        yield a, fake, ledger
    finally:
        await a.stop()
        await ledger.close()


async def test_the_outbox_goes_up_in_seq_order_one_window_at_a_time(agent) -> None:
    a, fake, ledger = agent
    last = await ledger.run(lambda led: led.last_seq)
    await until(lambda: fake.batches(), "the first batch")
    first = fake.batches()[0]
    assert [e.seq for e in first.events] == [1, 2]  # batch_max_events=2
    assert len(fake.batches()) == 1  # window=1: nothing more until the ack
    state = [
        State.decode(p) for t, p, _, retain in fake.published if t == topic(CAB, Channel.STATE) and retain
    ]
    assert state and state[0].online
    assert fake.will is not None and not State.decode(fake.will.payload).online

    fake.deliver(Channel.ACK, Ack(CAB, 2).encode())
    await until(lambda: len(fake.batches()) == 2, "the second batch after the ack")
    assert [e.seq for e in fake.batches()[1].events] == list(range(3, min(last, 4) + 1))
    assert a.acked_seq == 2 and await ledger.acked_seq() == 2


async def test_a_new_link_resends_everything_unacked(agent) -> None:
    a, fake, _ = agent
    await until(lambda: fake.batches(), "the first batch")
    fake.drop()
    fake.reconnect()
    await until(lambda: len(fake.batches()) == 2, "the resend on the new link")
    assert [e.seq for e in fake.batches()[1].events] == [1, 2]
    assert a.acked_seq == 0


async def test_acks_beyond_the_ledger_or_for_another_cabinet_move_nothing(agent) -> None:
    a, fake, ledger = agent
    await until(lambda: fake.batches(), "the first batch")
    fake.deliver(Channel.ACK, Ack(CAB, 10_000).encode())  # beyond the last seq: unsigned, ignored
    await until(lambda: a.ignored_acks == 1, "the ack to be ignored")
    fake.deliver(Channel.ACK, Ack("CAB-OTHER", 2).encode())  # on our topic, for another cabinet
    fake.deliver(Channel.ACK, Ack(CAB, 1).encode())
    await until(lambda: a.acked_seq == 1, "the good ack")
    assert await ledger.acked_seq() == 1
