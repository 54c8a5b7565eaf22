"""A paho-mqtt client over mutual TLS for the broker security tests: connects, records what
arrives, and tells apart "connected" from "refused" without sleeping."""

from __future__ import annotations

import queue
import ssl
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

TIMEOUT = 10.0


@dataclass
class Peer:
    """One MQTT connection and everything the broker sent it."""

    client: mqtt.Client
    name: str
    connected: threading.Event = field(default_factory=threading.Event)
    refused: threading.Event = field(default_factory=threading.Event)
    subacks: queue.Queue[list[int]] = field(default_factory=queue.Queue)
    messages: queue.Queue[tuple[str, bytes]] = field(default_factory=queue.Queue)
    failure: str = ""

    def subscribe(self, *topics: str) -> list[int]:
        """Subscribe (QoS 1) and return the SUBACK reason codes, one per topic."""
        self.client.subscribe([(t, 1) for t in topics])
        return self.subacks.get(timeout=TIMEOUT)

    def publish(self, topic: str, payload: bytes, retain: bool = False) -> None:
        """Publish at QoS 1 and wait for the broker's PUBACK (whatever its reason code)."""
        info = self.client.publish(topic, payload, qos=1, retain=retain)
        info.wait_for_publish(TIMEOUT)

    def expect(self, topic: str, payload: bytes) -> list[tuple[str, bytes]]:
        """Wait for ``(topic, payload)``; return everything received before it (in order)."""
        before: list[tuple[str, bytes]] = []
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            try:
                got = self.messages.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                break
            if got == (topic, payload):
                return before
            before.append(got)
        raise AssertionError(f"{self.name}: {topic} {payload!r} never arrived (got {before})")

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def tls_context(ca: Path, cert: Path | None = None, key: Path | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(ca))
    if cert is not None and key is not None:
        ctx.load_cert_chain(str(cert), str(key))
    return ctx


def open_peer(host: str, port: int, client_id: str, ctx: ssl.SSLContext | None, wait: bool = True) -> Peer:
    """Connect (MQTT 5, clean start) and wait until the broker accepted or refused us."""
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    peer = Peer(c, client_id)
    if ctx is not None:
        c.tls_set_context(ctx)

    def on_connect(_c, _u, _f, rc: ReasonCode, _p: Properties | None) -> None:
        if rc.is_failure:
            peer.failure = str(rc)
            peer.refused.set()
        else:
            peer.connected.set()

    def on_connect_fail(_c, _u) -> None:
        peer.failure = peer.failure or "connection failed (TLS handshake or socket)"
        peer.refused.set()

    def on_disconnect(_c, _u, _f, rc: ReasonCode, _p: Properties | None) -> None:
        peer.failure = peer.failure or f"disconnected: {rc}"
        peer.refused.set()

    c.on_connect = on_connect
    c.on_connect_fail = on_connect_fail
    c.on_disconnect = on_disconnect
    c.on_subscribe = lambda _c, _u, _m, rcs, _p: peer.subacks.put([r.value for r in rcs])
    c.on_message = lambda _c, _u, m: peer.messages.put((m.topic, m.payload))
    c.reconnect_delay_set(1, 1)
    c.connect_async(host, port, keepalive=30)
    c.loop_start()
    if wait:
        settle(peer)
    return peer


def settle(peer: Peer) -> None:
    """Block until the peer is either connected or refused (or fail after TIMEOUT)."""
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        if peer.connected.is_set() or peer.refused.is_set():
            return
        peer.refused.wait(0.02)
    raise AssertionError(f"{peer.name}: neither connected nor refused within {TIMEOUT} s")
