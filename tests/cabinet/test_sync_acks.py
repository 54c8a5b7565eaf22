"""Acks are unsigned: one beyond the ledger's last seq never marks events as sent (real broker, real cabinet)."""

from __future__ import annotations

import pytest

from sync.messages import Ack
from sync.topics import Channel, topic
from sync.transport import MqttOptions, MqttTransport


@pytest.fixture
async def publisher(broker):
    """Anyone able to publish on the cabinet's ack topic (the cloud, or whoever holds its rights)."""
    t = MqttTransport(MqttOptions(host=broker.host, port=broker.port, client_id="ack-forger"))
    await t.start()
    await t.wait_connected(10)
    yield t
    await t.close()


async def test_an_ack_beyond_the_last_seq_is_ignored_and_a_real_one_is_taken(
    make_rig, broker, publisher
) -> None:
    rig = await make_rig(broker=broker)
    sync = rig.cab.sync
    await sync.transport.wait_connected(10)
    last = await rig.ledger.run(lambda led: led.last_seq)
    assert last > 0 and await rig.ledger.acked_seq() == 0  # nobody acked yet (no cloud here)

    await publisher.publish(topic("CAB-T1", Channel.ACK), Ack("CAB-T1", last + 1000).encode(), qos=1)
    await rig.until(lambda: sync.ignored_acks == 1, what="the forged ack to be refused")
    assert await rig.ledger.acked_seq() == 0  # before the fix: every event marked sent (min(ack, last))
    assert sync.acked_seq == 0

    await publisher.publish(topic("CAB-T1", Channel.ACK), Ack("CAB-T1", last).encode(), qos=1)
    await rig.until(lambda: sync.acked_seq == last, what="the real ack")
    assert await rig.ledger.acked_seq() == last and sync.ignored_acks == 1
