"""MqttTransport against a real Mosquitto: delivery, outages, resubscription, will, persistent session."""

from __future__ import annotations

import asyncio
import random
import socket

import pytest

from sync.transport import Backoff, Message, MqttTransport, NotConnected, Will

pytestmark = pytest.mark.timeout(60)


async def next_message(t: MqttTransport, timeout: float = 5.0) -> Message:
    async with asyncio.timeout(timeout):
        async for m in t.messages():
            return m
    raise AssertionError("transport closed without a message")


async def test_qos1_publish_resolves_and_subscriber_receives(broker, transports) -> None:
    cloud = transports(broker.host, broker.port, "cloud-1", [("cab/v1/+/ev", 1)])
    cab = transports(broker.host, broker.port, "CAB-1")
    await cloud.start()
    await cab.start()
    await cloud.wait_connected(5)
    await cab.wait_connected(5)
    await cab.publish("cab/v1/CAB-1/ev", b"\xa1\x61v\x01", qos=1)
    m = await next_message(cloud)
    assert (m.topic, m.payload, m.qos) == ("cab/v1/CAB-1/ev", b"\xa1\x61v\x01", 1)
    assert cab.protocol == "5"


async def test_broker_down_at_start_then_back(broker, transports) -> None:
    broker.stop()
    cab = transports(broker.host, broker.port, "CAB-1")
    await cab.start()
    with pytest.raises(TimeoutError):
        await cab.wait_connected(0.5)
    with pytest.raises(NotConnected):
        await cab.publish("cab/v1/CAB-1/ev", b"x")
    assert cab.last_error and "cannot reach" in cab.last_error
    assert cab.backoff.attempt >= 2  # it kept trying, spaced by the backoff
    broker.start()
    await cab.wait_connected(10)
    await cab.publish("cab/v1/CAB-1/ev", b"x")


async def test_subscriptions_are_remade_after_the_broker_restarts(broker, transports) -> None:
    cab = transports(broker.host, broker.port, "CAB-1", [("cab/v1/CAB-1/cmd", 1)])
    cloud = transports(broker.host, broker.port, "cloud-1")
    await cab.start()
    await cloud.start()
    await cab.wait_connected(5)
    broker.stop()  # the broker forgets every session (no persistence)
    await cab.wait_disconnected(5)
    with pytest.raises(NotConnected):
        await cab.publish("cab/v1/CAB-1/ev", b"x")
    broker.start()
    await cab.wait_connected(10)
    await cloud.wait_connected(10)
    assert cab.connects == 2
    await cloud.publish("cab/v1/CAB-1/cmd", b"eject", qos=1)
    assert (await next_message(cab)).payload == b"eject"


async def test_subscribe_while_connected_waits_for_suback_and_survives_reconnect(broker, transports) -> None:
    cab = transports(broker.host, broker.port, "CAB-1")
    cloud = transports(broker.host, broker.port, "cloud-1")
    await cab.start()
    await cloud.start()
    await cab.wait_connected(5)
    await cloud.wait_connected(5)
    await cab.subscribe("cab/v1/CAB-1/ack", 1)
    await cloud.publish("cab/v1/CAB-1/ack", b"a1")
    assert (await next_message(cab)).payload == b"a1"


def _kill_link(t: MqttTransport) -> None:
    """Cut the TCP connection without an MQTT goodbye, as a lost 4G link or a crash would."""
    sock = t._client.socket()  # type: ignore[union-attr]
    sock.shutdown(socket.SHUT_RDWR)


async def test_last_will_is_published_retained_when_the_link_dies(broker, transports) -> None:
    will = Will("cab/v1/CAB-1/state", b"offline", qos=1, retain=True)
    cab = transports(broker.host, broker.port, "CAB-1", will=will)
    await cab.start()
    await cab.wait_connected(5)
    await cab.publish("cab/v1/CAB-1/state", b"online", qos=1, retain=True)
    _kill_link(cab)
    await cab.wait_disconnected(5)
    late = transports(broker.host, broker.port, "cloud-late", [("cab/v1/+/state", 1)])
    await late.start()
    m = await next_message(late)
    assert (m.payload, m.retain) == (b"offline", True)
    await cab.wait_connected(10)  # and the cabinet came back by itself


async def test_clean_close_still_publishes_the_will(broker, transports) -> None:
    obs = transports(broker.host, broker.port, "cloud-1", [("cab/v1/+/state", 1)])
    await obs.start()
    await obs.wait_connected(5)
    cab = transports(broker.host, broker.port, "CAB-1", will=Will("cab/v1/CAB-1/state", b"offline"))
    await cab.start()
    await cab.wait_connected(5)
    await cab.close(publish_will=True)
    assert (await next_message(obs)).payload == b"offline"


async def test_persistent_session_keeps_commands_sent_while_the_cabinet_was_away(broker, transports) -> None:
    cab = transports(broker.host, broker.port, "CAB-1", [("cab/v1/CAB-1/cmd", 1)])
    await cab.start()
    await cab.wait_connected(5)
    await cab.close(publish_will=False)
    cloud = transports(broker.host, broker.port, "cloud-1")
    await cloud.start()
    await cloud.wait_connected(5)
    await cloud.publish("cab/v1/CAB-1/cmd", b"while-away", qos=1)
    back = transports(broker.host, broker.port, "CAB-1", [("cab/v1/CAB-1/cmd", 1)])
    await back.start()
    await back.wait_connected(5)
    assert back.session_present
    assert (await next_message(back)).payload == b"while-away"


async def test_clean_start_option_drops_the_session(broker, transports) -> None:
    cab = transports(broker.host, broker.port, "CAB-1", [("cab/v1/CAB-1/cmd", 1)], clean_start=True)
    await cab.start()
    await cab.wait_connected(5)
    await cab.close(publish_will=False)
    again = transports(broker.host, broker.port, "CAB-1", clean_start=True)
    await again.start()
    await again.wait_connected(5)
    assert not again.session_present


async def test_mqtt_311_persistent_session_works_too(broker, transports) -> None:
    cab = transports(broker.host, broker.port, "CAB-1", [("cab/v1/CAB-1/cmd", 1)], protocol="3.1.1")
    await cab.start()
    await cab.wait_connected(5)
    assert cab.protocol == "3.1.1"
    await cab.close(publish_will=False)
    cloud = transports(broker.host, broker.port, "cloud-1")
    await cloud.start()
    await cloud.wait_connected(5)
    await cloud.publish("cab/v1/CAB-1/cmd", b"queued", qos=1)
    back = transports(broker.host, broker.port, "CAB-1", [("cab/v1/CAB-1/cmd", 1)], protocol="3.1.1")
    await back.start()
    await back.wait_connected(5)
    assert back.session_present
    assert (await next_message(back)).payload == b"queued"


def test_backoff_doubles_with_jitter_up_to_the_cap_and_resets() -> None:
    b = Backoff(initial_s=1.0, max_s=30.0, rng=random.Random(7))
    delays = [b.next() for _ in range(10)]
    caps = [min(30.0, 2.0**n) for n in range(10)]
    assert all(c / 2 <= d <= c for d, c in zip(delays, caps, strict=True))
    assert delays[-1] <= 30.0 and delays[5] > delays[0]
    b.reset()
    assert b.next() <= 1.0
    # two cabinets that lost the broker together do not retry together
    fleet = [Backoff(1.0, 30.0, random.Random(seed)) for seed in range(50)]
    third = [round(x.next() + x.next() + x.next(), 3) for x in fleet]
    assert len(set(third)) > 45
