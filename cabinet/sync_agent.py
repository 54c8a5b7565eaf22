"""The cabinet's sync agent: pushes the ledger's outbox, takes acks, commands and signed config.

Outbox: the events after the acked seq, in seq order, in batches bounded by count and bytes,
with up to ``window`` batches in flight. The acked seq moves only on the cloud's ``ack``, and
never beyond the ledger's last event (acks are unsigned: such an ack is ignored and logged); after
a reconnect or an ack timeout everything unacked is sent again (duplicates only on the wire,
the cloud applies by (cabinet, seq)). Nothing lives only in memory: a restart resumes from the
ledger's acked seq.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from cabinet.commands import CommandHandler
from cabinet.ledger import Ledger
from cabinet.tasks import cancel_and_wait
from cabinet.trust import Trust
from sync.config import Config as SignedConfig
from sync.errors import Duplicate, ProtocolError, SecurityRejection
from sync.events import EventType
from sync.messages import Ack, EventBatch, SlotSample, State, Telemetry, WireEvent
from sync.model_transfer import ModelChunk
from sync.topics import Channel, parse_topic, topic
from sync.transport import Message, TransportError, Will

log = logging.getLogger(__name__)


class Transport(Protocol):
    """What the agent needs of the link to the broker (``sync.transport.MqttTransport``; the
    unit tests use a fake in memory, the rest of the suite a real Mosquitto)."""

    connects: int  # connections made so far: a change means a new link (resend what is unacked)

    @property
    def connected(self) -> bool: ...

    def set_will(self, will: Will | None) -> None: ...

    async def subscribe(self, topic_filter: str, qos: int = 1, timeout: float | None = 10.0) -> None: ...

    async def start(self) -> None: ...

    async def close(self, *, publish_will: bool = True, timeout: float = 5.0) -> None: ...

    async def wait_connected(self, timeout: float | None = None) -> None: ...

    async def publish(
        self, topic: str, payload: bytes, qos: int = 1, retain: bool = False, timeout: float | None = 30.0
    ) -> None: ...

    def messages(self) -> AsyncIterator[Message]: ...


@dataclass(frozen=True)
class SyncSettings:
    batch_max_events: int = 200
    batch_max_bytes: int = 64 * 1024
    window: int = 4
    ack_timeout_s: float = 20.0
    telemetry_interval_s: float = 30.0
    state_interval_s: float = 60.0
    slow_backlog: int = 500  # above this many unacked events the link counts as slow: thin telemetry


def to_wire_event(e: Any) -> WireEvent:
    return WireEvent(
        seq=e.seq, id=e.id, type=e.type, at_wall=e.at_wall, at_mono=e.at_mono, boot_id=e.boot_id, body=e.body
    )


class SyncAgent:
    """One cabinet's side of the wire."""

    def __init__(
        self,
        cabinet_id: str,
        ledger: Any,  # AsyncLedger
        transport: Transport,
        commands: CommandHandler,
        trust: Trust,
        settings: SyncSettings,
        *,
        on_config: Callable[[SignedConfig], Any] = lambda c: None,
        status: Callable[[], dict[str, Any]] = dict,
        samples: Callable[[], list[SlotSample]] = list,
        on_model_chunk: Callable[[ModelChunk], None] = lambda c: None,
    ) -> None:
        self.cabinet_id = cabinet_id
        self.ledger = ledger
        self.transport = transport
        self.commands = commands
        self.trust = trust
        self.settings = settings
        self.on_config = on_config
        self.status = status
        self.samples = samples
        self.on_model_chunk = on_model_chunk
        self.acked_seq = 0
        self.last_ack_at: float | None = None  # wall time, for the UI
        self.sent_batches = 0
        self.resends = 0
        self.ignored_acks = 0  # acks beyond the ledger's last seq (never applied)
        self._inflight: deque[int] = deque()  # last seq of each batch sent and not yet acked
        self._sent_upto = 0
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._command_tasks: set[asyncio.Task[Any]] = set()
        transport.set_will(
            Will(topic(cabinet_id, Channel.STATE), self._state(online=False).encode(), 1, True)
        )

    # ---- life cycle -----------------------------------------------------------------

    async def start(self) -> None:
        self.acked_seq = await self.ledger.acked_seq()
        self._sent_upto = self.acked_seq
        for ch in (Channel.ACK, Channel.CMD, Channel.CFG, Channel.MODEL):
            await self.transport.subscribe(topic(self.cabinet_id, ch), 1)
        await self.transport.start()
        self._tasks = [
            asyncio.create_task(self._pump(), name="sync-pump"),
            asyncio.create_task(self._inbox(), name="sync-inbox"),
            asyncio.create_task(self._periodic(), name="sync-telemetry-state"),
        ]

    async def stop(self) -> None:
        await cancel_and_wait(self._tasks)
        for t in list(self._command_tasks):
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.wait_for(t, 5)
        try:
            await self.transport.close()
        except Exception:
            log.exception("sync: closing the link failed")

    def wake(self) -> None:
        """Something new is in the ledger: send it soon."""
        self._wake.set()

    @property
    def backlog(self) -> int:
        return max(0, getattr(self, "_last_seq", 0) - self.acked_seq)

    # ---- the outbox -----------------------------------------------------------------

    async def _pump(self) -> None:
        connects = -1
        while True:
            await self.transport.wait_connected()
            if self.transport.connects != connects:  # a new link: resend everything unacked
                connects = self.transport.connects
                self._restart_from_ack()
                await self._publish_state()
            try:
                sent = await self._send_next()
            except TransportError as e:
                log.info("sync: send interrupted (%s); will resend after reconnect", e)
                await asyncio.sleep(0.5)
                continue
            if sent:
                continue
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), 0.5)
            if self._inflight and self._ack_overdue():
                log.warning(
                    "sync: no ack for %.0f s; resending from seq %d",
                    self.settings.ack_timeout_s,
                    self.acked_seq + 1,
                )
                self.resends += 1
                self._restart_from_ack()

    def _restart_from_ack(self) -> None:
        self._inflight.clear()
        self._sent_upto = self.acked_seq
        self._sent_at = time.monotonic()

    def _ack_overdue(self) -> bool:
        return time.monotonic() - getattr(self, "_sent_at", 0.0) > self.settings.ack_timeout_s

    async def _send_next(self) -> bool:
        """Send one batch if the window allows and there is something to send."""
        self._last_seq = await self.ledger.run(lambda led: led.last_seq)
        if len(self._inflight) >= self.settings.window or self._sent_upto >= self._last_seq:
            return False
        events = await self.ledger.events_after(
            self._sent_upto, self.settings.batch_max_events, self.settings.batch_max_bytes
        )
        if not events:
            return False
        batch = EventBatch(self.cabinet_id, tuple(to_wire_event(e) for e in events))
        await self.transport.publish(topic(self.cabinet_id, Channel.EV), batch.encode(), qos=1)
        self._inflight.append(batch.last_seq)
        self._sent_upto = batch.last_seq
        self._sent_at = time.monotonic()
        self.sent_batches += 1
        return True

    async def _on_ack(self, ack: Ack) -> None:
        """Move the acked seq forward; an ack beyond the ledger's last event is ignored.

        Acks are not signed: anyone who can publish on the cabinet's ``ack`` topic could
        otherwise mark events as delivered that the cloud never received.
        """
        if ack.acked_seq <= self.acked_seq:
            return

        def take(led: Ledger) -> tuple[int, int | None]:
            last = led.last_seq
            if ack.acked_seq > last:
                return last, None
            return last, led.set_acked(ack.acked_seq)

        last, acked = await self.ledger.run(take)
        if acked is None:
            self.ignored_acks += 1
            log.warning(
                "sync: ignored an ack for seq %d: the ledger ends at seq %d (acked %d)",
                ack.acked_seq,
                last,
                self.acked_seq,
            )
            return
        self.acked_seq = acked
        self.last_ack_at = time.time()
        while self._inflight and self._inflight[0] <= self.acked_seq:
            self._inflight.popleft()
        self._sent_at = time.monotonic()
        self._wake.set()

    # ---- what comes down ------------------------------------------------------------

    async def _inbox(self) -> None:
        async for msg in self.transport.messages():
            try:
                await self._dispatch(msg)
            except ProtocolError as e:
                log.warning("sync: refused message on %s: %s", msg.topic, e.reason)
            except Exception:
                log.exception("sync: failed to handle a message on %s", msg.topic)

    async def _dispatch(self, msg: Message) -> None:
        addr = parse_topic(msg.topic)
        if addr.cabinet != self.cabinet_id:
            raise ProtocolError(f"{msg.topic}: not this cabinet's topic")
        if addr.channel is Channel.ACK:
            ack = Ack.decode(msg.payload)
            if ack.cabinet != self.cabinet_id:
                raise ProtocolError(f"ack for cabinet {ack.cabinet!r} on {msg.topic}")
            await self._on_ack(ack)
        elif addr.channel is Channel.CMD:
            task = asyncio.create_task(self._command(msg.payload))
            self._command_tasks.add(task)
            task.add_done_callback(self._command_tasks.discard)
        elif addr.channel is Channel.CFG:
            await self.apply_config(msg.payload)
        elif addr.channel is Channel.MODEL:
            chunk = ModelChunk.decode(msg.payload)
            if chunk.cabinet != self.cabinet_id:
                raise ProtocolError(f"model chunk for cabinet {chunk.cabinet!r} on {msg.topic}")
            self.on_model_chunk(chunk)

    async def _command(self, payload: bytes) -> None:
        await self.commands.handle(payload)
        self._wake.set()

    async def apply_config(self, payload: bytes) -> SignedConfig | None:
        """Verify a signed config; when newer than ours, take it into force and record it."""

        def accept(led: Ledger) -> SignedConfig:
            with led.atomic():  # the key set is kept before the counter commits (cabinet/trust.py)
                config, keys = self.trust.accept(led, payload)
                led.record(EventType.CONFIG_APPLIED, version=config.counter)
            self.trust.adopt(config, keys)  # on the ledger thread: the next command sees the new keys
            return config

        try:
            config: SignedConfig = await self.ledger.run(accept)
        except Duplicate:
            return None  # the retained copy again, after a reconnect
        except SecurityRejection as e:
            await self.ledger.record(
                EventType.SECURITY_EVENT, kind=f"config_{type(e).__name__.lower()}", detail=e.reason[:2000]
            )
            log.warning("sync: config refused: %s", e.reason)
            return None
        self.on_config(config)
        log.info("sync: config version %d applied", config.counter)
        self._wake.set()
        return config

    # ---- telemetry and state ----------------------------------------------------------

    def _state(self, online: bool) -> State:
        s = self.status() if online else {}
        return State(
            self.cabinet_id,
            online,
            time.time(),
            versions=s.get("versions", {}),
            counts=s.get("counts", {}),
            backlog=self.backlog if online else 0,
        )

    async def _publish_state(self) -> None:
        with contextlib.suppress(TransportError):
            await self.transport.publish(
                topic(self.cabinet_id, Channel.STATE),
                self._state(True).encode(),
                qos=1,
                retain=True,
                timeout=10,
            )

    async def _periodic(self) -> None:
        last_tm = last_state = 0.0
        while True:
            await asyncio.sleep(1.0)
            if not self.transport.connected:
                continue
            now = time.monotonic()
            interval = self.settings.telemetry_interval_s
            if self.backlog > self.settings.slow_backlog:
                interval *= 10  # catching up on a slow link: events first, telemetry thinned
            if now - last_tm >= interval:
                last_tm = now
                samples = self.samples()
                if samples:
                    tm = Telemetry(self.cabinet_id, time.time(), tuple(samples))
                    with contextlib.suppress(TransportError):
                        await self.transport.publish(
                            topic(self.cabinet_id, Channel.TM), tm.encode(), qos=0, timeout=5
                        )
            if now - last_state >= self.settings.state_interval_s:
                last_state = now
                await self._publish_state()
