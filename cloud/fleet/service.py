"""The cloud's MQTT side: event ingest with acks, state and telemetry, signed commands and config.

One ``FleetLink`` per cloud worker (a component with ``start()``/``stop()``). Subscriptions:

- ``$share/cloud/cab/v1/+/ev`` (QoS 1): the broker gives each batch to one worker of the group;
  each worker applies it through ``EventApplier`` (exactly once in effect, see ingest.py) and
  answers ``Ack(applied_seq)`` on ``cab/v1/{id}/ack``.
- ``$share/cloud/cab/v1/+/tm`` (QoS 0): telemetry, one worker each.
- ``cab/v1/+/state`` (QoS 1, plain: retained messages are not given to shared subscriptions):
  online/offline (last will), versions, counts, backlog.

Batches of one cabinet are handled one after another (a queue and a task per cabinet);
different cabinets in parallel, at most ``parallel`` at a time (each takes a worker thread).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine

from cloud.fleet import alerting, claims
from cloud.fleet.commands import CommandRefused, Signatures, SignedCommand, SignedConfig
from cloud.fleet.ingest import BatchOutcome, EventApplier
from cloud.fleet.view import apply_state, apply_telemetry
from cloud.rentals import EjectCommand, RentalService
from sync.errors import ProtocolError
from sync.messages import Ack, EventBatch, State, Telemetry, decode_for_topic
from sync.topics import CLOUD_SHARED_EV, Channel, shared_subscription, subscription, topic
from sync.transport import MqttOptions, MqttTransport, TlsOptions, TransportError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FleetSettings:
    command_ttl_s: float = 120.0
    config_ttl_s: float = 30 * 86400.0
    config_resign_margin_s: float = 7 * 86400.0
    housekeeping_interval_s: float = 30.0
    parallel: int = 4
    publish_timeout_s: float = 10.0


def mqtt_options_from(config: Any) -> MqttOptions:
    """Transport options from a ``CloudConfig`` (broker_host, broker_port, mqtt_*)."""
    tls = None
    if config.mqtt_tls:
        tls = TlsOptions(
            ca_file=config.mqtt_ca_file or None,
            cert_file=config.mqtt_cert_file or None,
            key_file=config.mqtt_key_file or None,
        )
    client_id = config.mqtt_client_id or f"cloud-{socket.gethostname()[:30]}-{os.getpid()}"
    return MqttOptions(
        host=config.broker_host,
        port=config.broker_port,
        client_id=client_id,
        tls=tls,
        session_expiry_s=3600,
        max_inflight=100,
        backoff_max_s=30.0,
    )


class FleetLink:
    """One cloud worker's connection to the fleet (see module doc)."""

    def __init__(
        self,
        engine: Engine,
        rentals: RentalService,
        signatures: Signatures,
        options: MqttOptions,
        settings: FleetSettings = FleetSettings(),
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.engine = engine
        self.rentals = rentals
        self.signatures = signatures
        self.settings = settings
        self.clock = clock
        self.applier = EventApplier(engine, rentals, clock)
        self.transport = MqttTransport(
            options,
            [(CLOUD_SHARED_EV, 1), (shared_subscription(Channel.TM), 0), (subscription(Channel.STATE), 1)],
        )
        self.batches = 0
        self.refused = 0
        self.last_outcome: dict[str, BatchOutcome] = {}
        self._queues: dict[str, asyncio.Queue[tuple[EventBatch, float]]] = {}
        self._status: dict[tuple[str, str], tuple[State | Telemetry, float]] = {}
        self._status_ready = asyncio.Event()
        self._workers: dict[str, asyncio.Task[None]] = {}
        self._slots = asyncio.Semaphore(settings.parallel)
        self._tasks: list[asyncio.Task[None]] = []

    # --- life cycle ------------------------------------------------------------------------

    async def start(self) -> None:
        await self.transport.start()
        self._tasks = [
            asyncio.create_task(self._reader(), name="fleet-reader"),
            asyncio.create_task(self._status_worker(), name="fleet-status"),
            asyncio.create_task(self._housekeeping(), name="fleet-housekeeping"),
        ]

    async def stop(self) -> None:
        for t in [*self._tasks, *self._workers.values()]:
            t.cancel()
        await asyncio.gather(*self._tasks, *self._workers.values(), return_exceptions=True)
        self._workers.clear()
        with contextlib.suppress(Exception):
            await self.transport.close(publish_will=False)

    async def wait_connected(self, timeout: float = 10.0) -> None:
        await self.transport.wait_connected(timeout)

    # --- what comes up ---------------------------------------------------------------------

    async def _reader(self) -> None:
        async for msg in self.transport.messages():
            now = self.clock()
            try:
                decoded = decode_for_topic(msg.topic, msg.payload)
            except ProtocolError as e:
                self.refused += 1
                log.warning("fleet: refused message on %s: %s", msg.topic, e.reason)
                continue
            try:
                if isinstance(decoded, EventBatch):
                    self._enqueue(decoded, now)
                elif isinstance(decoded, State | Telemetry):
                    # never let state and telemetry hold up event batches (and the rentals in them):
                    # a side task applies them, keeping only the newest of each per cabinet
                    self._status[(type(decoded).__name__, decoded.cabinet)] = (decoded, now)
                    self._status_ready.set()
            except Exception:  # one bad message or a database hiccup must not stop the reader
                log.exception("fleet: failed to handle a message on %s", msg.topic)

    async def _status_worker(self) -> None:
        while True:
            await self._status_ready.wait()
            self._status_ready.clear()
            pending, self._status = self._status, {}
            for decoded, now in pending.values():
                try:
                    if isinstance(decoded, State):
                        await asyncio.to_thread(apply_state, self.engine, decoded, now)
                    else:
                        await asyncio.to_thread(apply_telemetry, self.engine, decoded, now)
                        await asyncio.to_thread(claims.verify_from_telemetry, self.engine, decoded, now)
                except Exception:  # a database hiccup must not stop the fleet view for good
                    log.exception("fleet: failed to apply %s of %s", type(decoded).__name__, decoded.cabinet)

    def _enqueue(self, batch: EventBatch, now: float) -> None:
        q = self._queues.get(batch.cabinet)
        if q is None:
            q = self._queues[batch.cabinet] = asyncio.Queue()
        q.put_nowait((batch, now))
        worker = self._workers.get(batch.cabinet)
        if worker is None or worker.done():
            self._workers[batch.cabinet] = asyncio.create_task(
                self._cabinet_worker(batch.cabinet, q), name=f"fleet-ingest-{batch.cabinet}"
            )

    async def _cabinet_worker(self, cabinet: str, q: asyncio.Queue[tuple[EventBatch, float]]) -> None:
        while True:
            batch, received = await q.get()
            try:
                async with self._slots:
                    out = await asyncio.to_thread(self.applier.apply_batch, batch, received)
            except Exception:
                log.exception(
                    "fleet: batch %d..%d of %s not applied; the cabinet will send it again",
                    batch.first_seq,
                    batch.last_seq,
                    cabinet,
                )
                continue
            self.batches += 1
            self.last_outcome[cabinet] = out
            if q.empty() or out.acked_seq >= batch.last_seq:
                await self._ack(cabinet, out.acked_seq)

    async def _ack(self, cabinet: str, acked_seq: int) -> None:
        payload = Ack(cabinet, acked_seq).encode()
        try:
            await self.transport.publish(topic(cabinet, Channel.ACK), payload, qos=1,
                                         timeout=self.settings.publish_timeout_s)  # fmt: skip
        except TransportError as e:
            log.info(
                "fleet: ack %d to %s not sent (%s); the next batch or resend brings it", acked_seq, cabinet, e
            )

    # --- what goes down --------------------------------------------------------------------

    async def publish_command(self, cmd: SignedCommand) -> bool:
        """Publish a signed command (QoS 1); False if the broker is out of reach (it stays queued)."""
        try:
            await self.transport.publish(topic(cmd.cabinet, Channel.CMD), cmd.payload, qos=1,
                                         timeout=self.settings.publish_timeout_s)  # fmt: skip
        except TransportError as e:
            log.warning("fleet: command %s to %s not sent yet: %s", cmd.cmd_id, cmd.cabinet, e)
            return False
        await asyncio.to_thread(self.signatures.mark_sent, cmd.cmd_id)
        return True

    async def send_command(
        self, cabinet: str, kind: str, args: dict[str, Any], ttl_s: float | None = None
    ) -> SignedCommand:
        """Sign, store and publish an operator command; raises ``CommandRefused`` for a bad one."""
        cmd = await asyncio.to_thread(
            self.signatures.new_command, cabinet, kind, args, ttl_s or self.settings.command_ttl_s
        )
        await self.publish_command(cmd)
        return cmd

    async def send_eject(self, ej: EjectCommand) -> None:
        """The app rental's ``command_sink``: sign the stored eject and publish it."""
        cmd = await asyncio.to_thread(self.signatures.sign_eject, ej)
        await self.publish_command(cmd)

    async def publish_config(self, cabinet: str) -> SignedConfig:
        """Sign a fresh config snapshot for ``cabinet`` and publish it retained."""
        cfg = await asyncio.to_thread(self.signatures.new_config, cabinet, self.settings.config_ttl_s)
        try:
            await self.transport.publish(topic(cabinet, Channel.CFG), cfg.payload, qos=1, retain=True,
                                         timeout=self.settings.publish_timeout_s)  # fmt: skip
        except TransportError as e:
            log.warning("fleet: config %d for %s not published yet: %s", cfg.counter, cabinet, e)
            return cfg
        await asyncio.to_thread(self.signatures.mark_config_published, cfg.counter)
        return cfg

    async def publish_configs(self, cabinets: Iterable[str]) -> tuple[list[SignedConfig], dict[str, str]]:
        """Publish a fresh config to each of ``cabinets``; one cabinet's failure never stops the rest.

        A cabinet whose config cannot be signed or sent (an id the topics refuse, a database
        error for its row, ...) is logged and raises a ``config_publish_failed`` alert naming it,
        cleared by its next success; the loop goes on with the next cabinet (issue 11.6). Returns
        the configs made and ``{cabinet: error}`` of the failures.
        """
        done: list[SignedConfig] = []
        failed: dict[str, str] = {}
        for cabinet in cabinets:
            try:
                cfg = await self.publish_config(cabinet)
            except asyncio.CancelledError:
                raise
            except Exception as e:
                failed[cabinet] = f"{type(e).__name__}: {e}"[:500]
                log.exception("fleet: config for cabinet %r not published; going on with the others", cabinet)
                await self._config_alert(cabinet, failed[cabinet])
            else:
                done.append(cfg)
                await self._config_alert(cabinet, None)
        return done, failed

    async def _config_alert(self, cabinet: str, error: str | None) -> None:
        """Raise (``error``) or clear the cabinet's ``config_publish_failed`` alert; never raises."""

        def write() -> None:
            with self.engine.begin() as conn:
                if error is None:
                    alerting.clear_alert(conn, cabinet[:64], "config_publish_failed", at=self.clock())
                else:
                    detail = f"signed config for cabinet {cabinet[:80]!r} not published: {error}"
                    alerting.raise_alert(conn, cabinet[:64], "config_publish_failed", "critical", detail,
                                         at=self.clock())  # fmt: skip

        try:
            await asyncio.to_thread(write)
        except Exception:  # the alert table unreachable must not stop the other cabinets either
            log.exception("fleet: config_publish_failed alert for %r not written", cabinet)

    async def publish_revocations(self) -> list[SignedConfig]:
        """Republish the config of every cabinet whose config predates a pass revocation.

        Called right after a revocation (card changed, account deleted) and by housekeeping,
        which catches one a crash or a broker outage left unpublished. One cabinet whose
        config cannot be made or sent never stops the others.
        """
        out = []
        for cabinet in await asyncio.to_thread(self.signatures.configs_behind_revocations):
            try:
                out.append(await self.publish_config(cabinet))
            except Exception:
                log.exception("fleet: config with new pass revocations for %s not published", cabinet)
        return out

    async def _housekeeping(self) -> None:
        """Queued commands sent after a reconnect; configs (re-)signed before they expire.

        A broker that lost its state (restarted without persistence: no session on reconnect)
        also lost the retained configs: they are published again, byte for byte.
        """
        seen_connects = 0
        while True:
            try:
                await self.transport.wait_connected()
                if self.transport.connects != seen_connects:
                    seen_connects = self.transport.connects
                    if not self.transport.session_present:
                        for cabinet, payload in await asyncio.to_thread(self.signatures.latest_configs):
                            try:
                                await self.transport.publish(topic(cabinet, Channel.CFG), payload, qos=1,
                                                             retain=True, timeout=self.settings.publish_timeout_s)  # fmt: skip
                            except ProtocolError as e:  # one bad id must not stop the others' configs
                                log.error("fleet: retained config of %r not republished: %s", cabinet, e)
                for cmd in await asyncio.to_thread(self.signatures.unsent):
                    await self.publish_command(cmd)
                due = await asyncio.to_thread(
                    self.signatures.configs_due, self.settings.config_resign_margin_s
                )
                await self.publish_configs(due)
                await self.publish_revocations()
                await asyncio.to_thread(claims.expire_pending, self.engine, self.clock())  # issue 11.2
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("fleet: housekeeping failed; trying again later")
            await asyncio.sleep(self.settings.housekeeping_interval_s)


__all__ = ["CommandRefused", "FleetLink", "FleetSettings", "mqtt_options_from"]
