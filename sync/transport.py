"""MQTT transport on paho-mqtt 2.x, joined to asyncio; used by the cabinet and the cloud alike.

paho's own network thread (``loop_start``) does the socket work; its callbacks hop onto the
event loop with ``call_soon_threadsafe``. Reconnecting is paho's loop, but every wait is ours:
on each disconnect or failed attempt we set the next delay (exponential, with jitter) through
``reconnect_delay_set``, so a fleet that lost the broker at the same moment comes back spread
out. Subscriptions are made again on every connect, from the network thread, before anything
else is sent.

The transport carries bytes; it keeps no outbox. A publish while disconnected raises
``NotConnected`` at once (the caller's durable outbox is the queue), and a publish in flight
when the link drops raises ``ConnectionLost`` (paho may still deliver it after reconnecting:
a duplicate on the wire, which the protocol tolerates by design).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import ssl
import threading
import time
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

log = logging.getLogger(__name__)

_UNSUPPORTED_PROTOCOL = 0x84
_DISCONNECT_WITH_WILL = 0x04


class TransportError(Exception):
    """The MQTT link could not do what was asked; says what and on which topic."""


class NotConnected(TransportError):
    """Not connected to the broker right now: keep the message in your outbox and retry later."""


class ConnectionLost(TransportError):
    """The link dropped before the broker acknowledged."""


class PublishTimeout(TransportError):
    """No acknowledgement from the broker in time."""


class Refused(TransportError):
    """The broker answered with a failure reason code (e.g. not authorized)."""


@dataclass(frozen=True)
class TlsOptions:
    """TLS to the broker; with ``cert_file``/``key_file`` also mutual TLS (the cabinet's identity)."""

    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    check_hostname: bool = True


@dataclass(frozen=True)
class Will:
    """The last will: published by the broker if the link dies without a clean goodbye."""

    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = True


@dataclass(frozen=True)
class MqttOptions:
    """Everything needed to reach the broker; defaults suit a cabinet on a flaky 4G link."""

    host: str
    client_id: str
    port: int = 1883
    username: str | None = None
    password: str | None = None
    tls: TlsOptions | None = None
    keepalive_s: int = 30
    protocol: Literal["auto", "5", "3.1.1"] = "auto"
    session_expiry_s: int = 7 * 86400
    clean_start: bool = False
    will: Will | None = None
    backoff_initial_s: float = 1.0
    backoff_max_s: float = 120.0
    stable_after_s: float = 30.0
    """A connection that lived this long resets the backoff; shorter ones keep growing it."""
    max_inflight: int = 20
    max_queued: int = 1000
    inbox_size: int = 10_000
    connect_timeout_s: float = 10.0


@dataclass(frozen=True)
class Message:
    """A message received on a subscription."""

    topic: str
    payload: bytes
    qos: int
    retain: bool


@dataclass
class Backoff:
    """Exponential backoff with "equal jitter": wait in [cap/2, cap], cap = initial * 2**n, at most max.

    The jitter spreads a fleet's reconnects; the floor at cap/2 keeps the wait growing so a
    broker that just came back is not hammered by near-zero retries.
    """

    initial_s: float = 1.0
    max_s: float = 120.0
    rng: random.Random = field(default_factory=random.Random)
    attempt: int = 0

    def next(self) -> float:
        cap: float = min(self.max_s, self.initial_s * 2 ** min(self.attempt, 32))
        self.attempt += 1
        return cap / 2 + self.rng.uniform(0, cap / 2)

    def reset(self) -> None:
        self.attempt = 0


class MqttTransport:
    """One MQTT connection with persistent session, last will, resubscription and jittered reconnects."""

    def __init__(
        self,
        options: MqttOptions,
        subscriptions: Iterable[tuple[str, int]] = (),
        *,
        rng: random.Random | None = None,
    ) -> None:
        self.options = options
        self.protocol: Literal["5", "3.1.1"] = "3.1.1" if options.protocol == "3.1.1" else "5"
        self.backoff = Backoff(options.backoff_initial_s, options.backoff_max_s, rng or random.Random())
        self.connects = 0
        """How many times the link came up; compare to notice a reconnect."""
        self.session_present = False
        self.last_error: str | None = None
        self.dropped = 0
        """Messages dropped because the inbox was full (nobody reading)."""
        self._subs: dict[str, int] = dict(subscriptions)
        self._lock = threading.Lock()  # guards _subs and _connected_since across threads
        self._connected_since: float | None = None
        self._closing = False
        self._will = options.will
        self._client: paho.Client | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._inbox: asyncio.Queue[Message | None] | None = None
        self._up: asyncio.Event | None = None
        self._down: asyncio.Event | None = None
        self._pending: dict[int, tuple[asyncio.Future[None], str]] = {}
        self._sub_pending: dict[int, tuple[asyncio.Future[None], str]] = {}
        self._connect_subs: dict[int, str] = {}  # mid -> filter of the subscriptions sent on connect
        self.refused_subscriptions: dict[str, str] = {}
        """Filters the broker refused in its SUBACK (0x80, 0x87, ...) -> its reason; each refusal is
        also logged as an error. A refused subscription delivers nothing, so it must not pass
        silently (issue 11.5); ``subscribe()`` raises ``Refused`` for one it waits for."""

    # -- life cycle ---------------------------------------------------------------------

    async def start(self) -> None:
        """Start connecting in the background; returns at once, even if the broker is down."""
        if self._client is not None:
            raise TransportError("transport already started")
        self._loop = asyncio.get_running_loop()
        self._inbox = asyncio.Queue(self.options.inbox_size)
        self._up, self._down = asyncio.Event(), asyncio.Event()
        self._down.set()
        self._closing = False
        self._client = self._make_client()
        self._client.loop_start()

    async def close(self, *, publish_will: bool = True, timeout: float = 5.0) -> None:
        """Say goodbye and stop; with ``publish_will`` the broker still publishes the will (offline state)."""
        client = self._client
        if client is None:
            return
        if publish_will and self._will is not None and self.connected and self.protocol == "3.1.1":
            with contextlib.suppress(TransportError):
                await self.publish(
                    self._will.topic, self._will.payload, self._will.qos, self._will.retain, timeout
                )
        self._closing = True
        if publish_will and self._will is not None and self.protocol == "5":
            client.disconnect(reasoncode=ReasonCode(PacketTypes.DISCONNECT, identifier=_DISCONNECT_WITH_WILL))
        else:
            client.disconnect()
        if self.connected:
            with contextlib.suppress(TimeoutError):
                await self.wait_disconnected(timeout)
        await asyncio.to_thread(client.loop_stop)
        self._client = None
        self._mark_down("closed")
        assert self._inbox is not None
        with contextlib.suppress(asyncio.QueueFull):
            self._inbox.put_nowait(None)

    async def __aenter__(self) -> MqttTransport:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- state ----------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._up is not None and self._up.is_set()

    async def wait_connected(self, timeout: float | None = None) -> None:
        """Return once connected (CONNACK accepted and subscriptions sent); ``TimeoutError`` otherwise."""
        if self._up is None:
            raise TransportError("transport not started")
        async with asyncio.timeout(timeout):
            await self._up.wait()

    async def wait_disconnected(self, timeout: float | None = None) -> None:
        if self._down is None:
            raise TransportError("transport not started")
        async with asyncio.timeout(timeout):
            await self._down.wait()

    def set_will(self, will: Will | None) -> None:
        """Change the last will; takes effect at the next (re)connect."""
        self._will = will
        if self._client is not None:
            self._apply_will(self._client)

    # -- traffic --------------------------------------------------------------------------

    async def publish(
        self, topic: str, payload: bytes, qos: int = 1, retain: bool = False, timeout: float | None = 30.0
    ) -> None:
        """Publish and return when the broker has it (PUBACK for QoS 1, PUBCOMP for 2, sent for 0)."""
        client = self._client
        if client is None or not self.connected:
            raise NotConnected(f"publish to {topic}: not connected to {self._where()}")
        assert self._loop is not None
        fut: asyncio.Future[None] = self._loop.create_future()
        info = client.publish(topic, payload, qos, retain)
        if info.rc == MQTTErrorCode.MQTT_ERR_NO_CONN:
            raise NotConnected(f"publish to {topic}: link to {self._where()} just dropped")
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            raise TransportError(f"publish to {topic}: {paho.error_string(info.rc)}")
        self._pending[info.mid] = (fut, topic)
        try:
            async with asyncio.timeout(timeout):
                await fut
        except TimeoutError:
            raise PublishTimeout(f"publish to {topic}: no acknowledgement within {timeout} s") from None
        finally:
            self._pending.pop(info.mid, None)

    async def subscribe(self, topic_filter: str, qos: int = 1, timeout: float | None = 10.0) -> None:
        """Subscribe now (if connected, waiting for SUBACK) and again after every reconnect."""
        with self._lock:
            self._subs[topic_filter] = qos
        client = self._client
        if client is None or not self.connected:
            return
        assert self._loop is not None
        fut: asyncio.Future[None] = self._loop.create_future()
        rc, mid = client.subscribe(topic_filter, qos)
        if rc != MQTTErrorCode.MQTT_ERR_SUCCESS or mid is None:
            return  # not connected any more: the next connect subscribes
        self._sub_pending[mid] = (fut, topic_filter)
        try:
            async with asyncio.timeout(timeout):
                await fut
        finally:
            self._sub_pending.pop(mid, None)

    async def unsubscribe(self, topic_filter: str) -> None:
        with self._lock:
            self._subs.pop(topic_filter, None)
        if self._client is not None and self.connected:
            self._client.unsubscribe(topic_filter)

    async def messages(self) -> AsyncIterator[Message]:
        """Received messages, in arrival order, until the transport is closed (one reader)."""
        if self._inbox is None:
            raise TransportError("transport not started")
        while True:
            msg = await self._inbox.get()
            if msg is None:
                return
            yield msg

    # -- paho side (network thread) ------------------------------------------------------

    def _make_client(self) -> paho.Client:
        o = self.options
        v5 = self.protocol == "5"
        client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=o.client_id,
            clean_session=None if v5 else o.clean_start,
            protocol=MQTTProtocolVersion.MQTTv5 if v5 else MQTTProtocolVersion.MQTTv311,
            reconnect_on_failure=True,
        )
        client.enable_logger(logging.getLogger(f"{__name__}.paho"))
        client.connect_timeout = o.connect_timeout_s
        client.max_inflight_messages_set(o.max_inflight)
        client.max_queued_messages_set(o.max_queued)
        client.reconnect_delay_set(0, 0)  # the first attempt is immediate; later ones set by _next_delay
        if o.username is not None:
            client.username_pw_set(o.username, o.password)
        if o.tls is not None:
            client.tls_set(
                ca_certs=o.tls.ca_file,
                certfile=o.tls.cert_file,
                keyfile=o.tls.key_file,
                cert_reqs=ssl.CERT_REQUIRED,
                tls_version=ssl.PROTOCOL_TLS_CLIENT,
            )
            client.tls_insecure_set(not o.tls.check_hostname)
        self._apply_will(client)
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        props = None
        if v5:
            props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            props.SessionExpiryInterval = 0 if o.clean_start else o.session_expiry_s
        client.connect_async(
            o.host,
            o.port,
            o.keepalive_s,
            clean_start=o.clean_start if v5 else paho.MQTT_CLEAN_START_FIRST_ONLY,
            properties=props,
        )
        return client

    def _apply_will(self, client: paho.Client) -> None:
        if self._will is None:
            client.will_clear()
        else:
            client.will_set(self._will.topic, self._will.payload, self._will.qos, self._will.retain)

    def _post(self, fn: Any, *args: Any) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # loop closing under us at shutdown
                loop.call_soon_threadsafe(fn, *args)

    def _next_delay(self, client: paho.Client) -> None:
        with self._lock:
            since, self._connected_since = self._connected_since, None
        if since is not None and time.monotonic() - since >= self.options.stable_after_s:
            self.backoff.reset()
        delay = self.backoff.next()
        client.reconnect_delay_set(delay, delay)  # type: ignore[arg-type]  # floats work; hints say int
        log.info("mqtt %s: next connection attempt in %.2f s", self._where(), delay)

    def _on_connect(self, client: paho.Client, _u: Any, flags: Any, reason: ReasonCode, _p: Any) -> None:
        if reason.is_failure:
            if (
                reason.value == _UNSUPPORTED_PROTOCOL
                and self.options.protocol == "auto"
                and self.protocol == "5"
            ):
                self._post(self._fall_back_to_311)
            self._post(self._note_error, f"broker refused the connection: {reason}")
            return
        with self._lock:
            self._connected_since = time.monotonic()
            subs = list(self._subs.items())
        sent: dict[int, str] = {}
        for topic_filter, qos in subs:  # before anything else goes out on the new connection
            rc, mid = client.subscribe(topic_filter, qos)
            if rc == MQTTErrorCode.MQTT_ERR_SUCCESS and mid is not None:
                sent[mid] = topic_filter
        # posted before any SUBACK callback can be (the SUBACKs are read by this thread, later)
        self._post(self._connect_subs.update, sent)
        self._post(self._mark_up, bool(flags.session_present))

    def _on_connect_fail(self, client: paho.Client, _u: Any) -> None:
        if not self._closing:
            self._next_delay(client)
            self._post(self._note_error, f"cannot reach {self._where()}")

    def _on_disconnect(self, client: paho.Client, _u: Any, _f: Any, reason: ReasonCode, _p: Any) -> None:
        if not self._closing:
            self._next_delay(client)
        self._post(self._mark_down, str(reason))

    def _on_publish(self, _c: paho.Client, _u: Any, mid: int, reason: ReasonCode, _p: Any) -> None:
        self._post(self._published, mid, reason.is_failure, str(reason))

    def _on_subscribe(self, _c: paho.Client, _u: Any, mid: int, reasons: list[ReasonCode], _p: Any) -> None:
        self._post(self._subscribed, mid, [f"{r} (0x{r.value:02x})" for r in reasons if r.is_failure])

    def _on_message(self, _c: paho.Client, _u: Any, m: paho.MQTTMessage) -> None:
        self._post(self._received, Message(m.topic, bytes(m.payload), m.qos, bool(m.retain)))

    # -- event-loop side -----------------------------------------------------------------

    def _where(self) -> str:
        return f"{self.options.host}:{self.options.port} as {self.options.client_id}"

    def _note_error(self, text: str) -> None:
        self.last_error = text
        log.warning("mqtt %s: %s", self._where(), text)

    def _mark_up(self, session_present: bool) -> None:
        assert self._up is not None and self._down is not None
        self.connects += 1
        self.session_present = session_present
        self.last_error = None
        self._down.clear()
        self._up.set()
        log.info(
            "mqtt %s: connected (MQTT %s, session present: %s)", self._where(), self.protocol, session_present
        )

    def _mark_down(self, reason: str) -> None:
        if self._up is None or self._down is None:
            return
        was_up = self._up.is_set()
        self._up.clear()
        self._down.set()
        self._connect_subs.clear()  # no SUBACK of the lost connection can come any more
        for fut, topic in list(self._pending.values()):
            if not fut.done():
                fut.set_exception(ConnectionLost(f"publish to {topic}: link lost before PUBACK ({reason})"))
        for fut, topic in list(self._sub_pending.values()):
            if not fut.done():
                fut.set_exception(ConnectionLost(f"subscribe to {topic}: link lost before SUBACK ({reason})"))
        if was_up:
            log.warning("mqtt %s: disconnected (%s)", self._where(), reason)

    def _published(self, mid: int, failed: bool, reason: str) -> None:
        entry = self._pending.get(mid)
        if entry is None or entry[0].done():
            return
        fut, topic = entry
        if failed:
            fut.set_exception(Refused(f"publish to {topic}: broker said {reason}"))
        else:
            fut.set_result(None)

    def _subscribed(self, mid: int, failures: list[str]) -> None:
        entry = self._sub_pending.get(mid)
        topic_filter = self._connect_subs.pop(mid, None) or (entry[1] if entry else None)
        if failures:
            reason = ", ".join(failures)
            name = topic_filter or f"message id {mid}"
            self.last_error = f"subscription to {name} refused: {reason}"
            log.error("mqtt %s: subscription to %s refused by the broker: %s", self._where(), name, reason)
            if topic_filter is not None:
                self.refused_subscriptions[topic_filter] = reason
        elif topic_filter is not None:
            self.refused_subscriptions.pop(topic_filter, None)
        if entry is None or entry[0].done():
            return
        fut, topic = entry
        if failures:
            fut.set_exception(Refused(f"subscribe to {topic}: broker said {', '.join(failures)}"))
        else:
            fut.set_result(None)

    def _received(self, msg: Message) -> None:
        assert self._inbox is not None
        try:
            self._inbox.put_nowait(msg)
        except asyncio.QueueFull:
            self.dropped += 1
            log.warning("mqtt %s: inbox full, dropped a message on %s", self._where(), msg.topic)

    def _fall_back_to_311(self) -> None:
        """The broker speaks only MQTT 3.1.1: rebuild the client for it (persistent session via clean_session=False)."""
        old = self._client
        if old is None or self._closing:
            return
        log.warning("mqtt %s: broker does not support MQTT 5, falling back to 3.1.1", self._where())
        self.protocol = "3.1.1"
        self._client = self._make_client()

        def swap() -> None:
            old.disconnect()
            old.loop_stop()
            assert self._client is not None
            self._client.loop_start()

        threading.Thread(target=swap, name="mqtt-fallback", daemon=True).start()
