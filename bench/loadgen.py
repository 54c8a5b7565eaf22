"""Load generator: N simulated cabinets over real MQTT connections, in one asyncio process.

Each cabinet speaks the wire protocol as ``cabinet/sync_agent.py`` does: a gapless event
outbox (batches of up to 200 events, 4 batches in flight, everything unacked resent after a
reconnect or 20 s without an ack), telemetry every 30-60 s (QoS 0), a retained state with
a last will, signed commands verified with the cloud's key. An eject is answered at once
(the renter's hand is instant here) with ``command_received``, ``rental_requested``,
``rental_started`` and ``command_result``; the pack comes back a few seconds later as
``battery_returned``, so the cloud runs its whole rental and billing life cycle.

Transport: ``sync.transport.MqttTransport`` gives every connection its own paho network
thread; for a thousand cabinets this generator instead drives plain paho clients from the
event loop (paho's external-loop API: the socket callbacks register the socket with asyncio,
``loop_misc`` runs once a second for all clients), so 1,000 connections cost one thread.
``--transport full`` uses ``MqttTransport`` per cabinet for comparison.

    python -m bench.loadgen --broker 127.0.0.1:1883 --cabinets 1000 --seconds 60 \
        --cloud-key KEYID:BASE64
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import resource
import socket
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from sync.errors import ProtocolError
from sync.messages import Ack, EventBatch, SlotSample, State, Telemetry, WireEvent
from sync.signing import MemoryReplayStore, Verifier, keyring_from_b64
from sync.topics import Channel, topic
from sync.transport import MqttOptions, MqttTransport, Will

SLOTS = 12
BATCH_MAX = 200
WINDOW = 4
ACK_TIMEOUT_S = 20.0


@dataclass
class FleetStats:
    """Counters over the whole simulated fleet."""

    connects: int = 0
    disconnects: int = 0
    events_made: int = 0
    events_acked: int = 0
    batches: int = 0
    resends: int = 0
    acks: int = 0
    telemetry: int = 0
    commands: int = 0
    refused_commands: int = 0
    ejects: int = 0
    returns: int = 0
    started_acked: dict[str, float] = field(default_factory=dict)  # rental id -> when its start was acked

    def connected_now(self, fleet: list[SimCabinet]) -> int:
        return sum(1 for c in fleet if c.link.connected)


# --- the light MQTT link: paho driven by the asyncio loop --------------------------------


class LightLink:
    """One paho client whose socket is served by the running event loop (no thread)."""

    def __init__(self, client_id: str, host: str, port: int, will: Will, on_message: Callable[[str, bytes], None],
                 on_up: Callable[[], None], rng: random.Random) -> None:  # fmt: skip
        self.host, self.port, self.rng = host, port, rng
        self.on_message, self.on_up = on_message, on_up
        self.loop = asyncio.get_running_loop()
        self.connected = False
        self.attempt = 0
        self.closing = False
        self.dialled = False
        self.retry_pending = False
        c = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=MQTTProtocolVersion.MQTTv5)
        c.will_set(will.topic, will.payload, will.qos, will.retain)
        c.on_socket_open = lambda _c, _u, s: self.loop.add_reader(s, self._read)
        c.on_socket_close = lambda _c, _u, s: self.loop.remove_reader(s)
        c.on_socket_register_write = lambda _c, _u, s: self.loop.add_writer(s, self._write)
        c.on_socket_unregister_write = lambda _c, _u, s: self.loop.remove_writer(s)
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_message = lambda _c, _u, m: self.on_message(m.topic, bytes(m.payload))
        self.client = c
        self.subs: list[tuple[str, int]] = []

    def start(self) -> None:
        self._attempt()

    def _props(self) -> Properties:
        p = Properties(PacketTypes.CONNECT)
        p.SessionExpiryInterval = 7 * 86400
        return p

    def _attempt(self) -> None:
        self.retry_pending = False
        if self.closing:
            return
        try:
            if not self.dialled:
                self.dialled = True
                self.client.connect(self.host, self.port, 60, clean_start=False, properties=self._props())
            else:
                self.client.reconnect()
        except OSError:
            self._retry()

    def _retry(self) -> None:
        """Next attempt after a jittered, doubling wait (1 s to 30 s), scheduled once."""
        if self.retry_pending or self.closing:
            return
        self.retry_pending = True
        cap = min(30.0, 1.0 * 2 ** min(self.attempt, 10))
        self.attempt += 1
        self.loop.call_later(cap / 2 + self.rng.uniform(0, cap / 2), self._attempt)

    def _read(self) -> None:
        rc = self.client.loop_read()
        if rc not in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_AGAIN):
            self._lost()

    def _write(self) -> None:
        rc = self.client.loop_write()
        if rc not in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_AGAIN):
            self._lost()

    def misc(self) -> None:
        if self.client.socket() is not None and self.client.loop_misc() != MQTTErrorCode.MQTT_ERR_SUCCESS:
            self._lost()

    def _lost(self) -> None:
        if self.connected:
            self.connected = False
        if not self.closing and self.client.socket() is None:
            self._retry()

    def _on_connect(self, client: paho.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        if reason.is_failure:
            return
        self.connected, self.attempt = True, 0
        for t, q in self.subs:
            client.subscribe(t, q)
        self.on_up()

    def _on_disconnect(self, *_: Any) -> None:
        self.connected = False
        if not self.closing:
            self.loop.call_soon(self._lost)

    def publish(self, t: str, payload: bytes, qos: int = 1, retain: bool = False) -> bool:
        if not self.connected:
            return False
        return self.client.publish(t, payload, qos, retain).rc == MQTTErrorCode.MQTT_ERR_SUCCESS

    def drop(self) -> None:
        """The 4G link dies: the socket goes away without a DISCONNECT (the broker sends the will)."""
        s = self.client.socket()
        if s is not None:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self.closing = True
        with contextlib.suppress(Exception):
            self.client.disconnect()


class FullLink:
    """The same interface over ``sync.transport.MqttTransport`` (one paho thread per cabinet)."""

    def __init__(self, client_id: str, host: str, port: int, will: Will, on_message: Callable[[str, bytes], None],
                 on_up: Callable[[], None], rng: random.Random) -> None:  # fmt: skip
        self.options = MqttOptions(host=host, port=port, client_id=client_id, will=will)
        self.rng = rng
        self.t: MqttTransport | None = None
        self.on_message, self.on_up = on_message, on_up
        self.subs: list[tuple[str, int]] = []
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def connected(self) -> bool:
        return self.t is not None and self.t.connected

    def start(self) -> None:
        self.t = MqttTransport(self.options, self.subs, rng=self.rng)
        self._tasks = [asyncio.create_task(self._run())]

    async def _run(self) -> None:
        assert self.t is not None
        await self.t.start()
        reader = asyncio.create_task(self._read())
        seen = 0
        try:
            while True:
                await self.t.wait_connected()
                if self.t.connects != seen:
                    seen = self.t.connects
                    self.on_up()
                await self.t.wait_disconnected()
        finally:
            reader.cancel()

    async def _read(self) -> None:
        assert self.t is not None
        async for m in self.t.messages():
            self.on_message(m.topic, m.payload)

    def misc(self) -> None:
        pass

    def publish(self, t: str, payload: bytes, qos: int = 1, retain: bool = False) -> bool:
        if self.t is None or not self.t.connected:
            return False
        task = asyncio.create_task(self.t.publish(t, payload, qos, retain, timeout=30))
        task.add_done_callback(lambda f: f.exception())
        return True

    def drop(self) -> None:
        c = self.t._client if self.t is not None else None
        s = c.socket() if c is not None else None
        if s is not None:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        if self.t is not None:
            self._closing = asyncio.ensure_future(self.t.close(publish_will=False))


# --- one simulated cabinet ---------------------------------------------------------------


class SimCabinet:
    """A cabinet's sync side with a toy slot inventory (see module doc)."""

    def __init__(self, cab_id: str, gen: LoadGen, rng: random.Random) -> None:
        self.id, self.gen, self.rng = cab_id, gen, rng
        self.boot_id = uuid.uuid4().hex
        self.t0 = time.monotonic() - rng.uniform(0, 86400)
        self.seq = 0
        self.acked = 0
        self.outbox: deque[WireEvent] = deque()  # unacked, in seq order
        self.sent_upto = 0
        self.inflight: deque[int] = deque()
        self.sent_at = 0.0
        self.slots: dict[int, str | None] = {
            n: f"PB{int(cab_id[-5:]) % 100000:05d}{n:02d}" for n in range(1, SLOTS + 1)
        }
        for n in rng.sample(range(1, SLOTS + 1), 3):
            self.slots[n] = None
        self.next_tm = time.monotonic() + rng.uniform(0, 45)
        self.returns: list[tuple[float, str, str]] = []  # (due, rental id, sn)
        self.seen_cmds: set[str] = set()
        self.verifier = (
            Verifier(gen.keyring, cab_id, MemoryReplayStore(), skew_s=600) if gen.keyring else None
        )
        will = Will(topic(cab_id, Channel.STATE), State(cab_id, False, time.time()).encode(), 1, True)
        link_cls = FullLink if gen.transport == "full" else LightLink
        self.link: LightLink | FullLink = link_cls(
            cab_id, gen.host, gen.port, will, self.on_message, self.on_up, rng
        )
        self.link.subs = [
            (topic(cab_id, Channel.ACK), 1),
            (topic(cab_id, Channel.CMD), 1),
            (topic(cab_id, Channel.CFG), 1),
        ]

    # events ----------------------------------------------------------------------------------

    def record(self, type_: str, **body: Any) -> WireEvent:
        self.seq += 1
        e = WireEvent(
            self.seq, uuid.uuid4().hex, type_, time.time(), time.monotonic() - self.t0, self.boot_id, body
        )
        self.outbox.append(e)
        self.gen.stats.events_made += 1
        return e

    def background_event(self) -> None:
        """Something ordinary happened at the cabinet: a slot reading changed, a technician looked."""
        full = [n for n, sn in self.slots.items() if sn]
        if full and self.rng.random() < 0.8:
            n = self.rng.choice(full)
            self.record("battery_seen", slot=n, sn=self.slots[n], soc=self.rng.randint(20, 100))
        else:
            self.record("tech_action", technician="t-1", action="inspect", detail="loadgen")

    # the outbox ------------------------------------------------------------------------------

    def on_up(self) -> None:
        self.gen.stats.connects += 1
        self.link.publish(topic(self.id, Channel.STATE),
                          State(self.id, True, time.time(), {"software": "loadgen"}, {"slots": SLOTS},
                                len(self.outbox)).encode(), 1, True)  # fmt: skip
        self.restart_from_ack()
        self.pump()

    def restart_from_ack(self) -> None:
        self.inflight.clear()
        self.sent_upto = self.acked
        self.sent_at = time.monotonic()

    def pump(self) -> None:
        """Send batches while the window allows."""
        while self.link.connected and len(self.inflight) < WINDOW and self.sent_upto < self.seq:
            first = self.sent_upto - self.acked  # index into the outbox
            events = list(self.outbox)[first : first + BATCH_MAX]
            if not events:
                return
            batch = EventBatch(self.id, tuple(events))
            if not self.link.publish(topic(self.id, Channel.EV), batch.encode(), 1):
                return
            self.inflight.append(batch.last_seq)
            self.sent_upto, self.sent_at = batch.last_seq, time.monotonic()
            self.gen.stats.batches += 1

    def tick(self, now: float) -> None:
        """Once a second: telemetry when due, returns when due, ack timeout."""
        if self.inflight and now - self.sent_at > ACK_TIMEOUT_S:
            self.gen.stats.resends += 1
            self.restart_from_ack()
        if self.returns and self.returns[0][0] <= now:
            _, rental, sn = self.returns.pop(0)
            empty = [n for n, s in self.slots.items() if s is None]
            slot = self.rng.choice(empty)
            self.slots[slot] = sn
            self.record("battery_returned", rental_id=rental, slot=slot, sn=sn, soc=60, temp_c=27.5)
            self.gen.stats.returns += 1
        if self.gen.telemetry_s and now >= self.next_tm and self.link.connected:
            self.next_tm = now + self.rng.uniform(*self.gen.telemetry_s)
            samples = tuple(
                SlotSample(n, time.time(), sn, 90, 4100, 500, 255) for n, sn in self.slots.items() if sn
            )
            self.link.publish(
                topic(self.id, Channel.TM), Telemetry(self.id, time.time(), samples).encode(), 0
            )
            self.gen.stats.telemetry += 1
        self.pump()

    # what comes down ---------------------------------------------------------------------------

    def on_message(self, t: str, payload: bytes) -> None:
        try:
            if t.endswith("/ack"):
                self.on_ack(Ack.decode(payload))
            elif t.endswith("/cmd"):
                self.on_command(payload)
        except ProtocolError:
            self.gen.stats.refused_commands += 1

    def on_ack(self, ack: Ack) -> None:
        self.gen.stats.acks += 1
        if ack.acked_seq <= self.acked:
            return
        now = time.monotonic()
        while self.outbox and self.outbox[0].seq <= ack.acked_seq:
            e = self.outbox.popleft()
            if e.type == "rental_started":
                self.gen.stats.started_acked[str(e.body["rental_id"])] = now
        self.gen.stats.events_acked += ack.acked_seq - self.acked
        self.acked = ack.acked_seq
        while self.inflight and self.inflight[0] <= self.acked:
            self.inflight.popleft()
        self.sent_at = now
        self.pump()

    def on_command(self, payload: bytes) -> None:
        self.gen.stats.commands += 1
        if self.verifier is None:
            return
        cmd = self.verifier.verify_command(payload)
        if cmd.cmd_id in self.seen_cmds:
            return
        self.seen_cmds.add(cmd.cmd_id)
        self.record("command_received", cmd_id=cmd.cmd_id, kind=str(cmd.kind), args=dict(cmd.args))
        if cmd.kind != "eject":
            self.record("command_result", cmd_id=cmd.cmd_id, ok=True, detail="loadgen: done")
        else:
            rental = str(cmd.args["rental_id"])
            user = cmd.args.get("user")
            self.record(
                "rental_requested",
                rental_id=rental,
                source="cloud",
                cmd_id=cmd.cmd_id,
                user=user,
                pass_id=None,
            )
            full = [n for n, sn in self.slots.items() if sn]
            if not full:
                self.record("rental_aborted", rental_id=rental, reason="no_rentable_battery")
                self.record(
                    "command_result", cmd_id=cmd.cmd_id, ok=False, detail="aborted: no_rentable_battery"
                )
            else:
                slot = self.rng.choice(full)
                sn, self.slots[slot] = self.slots[slot], None
                self.record("rental_started", rental_id=rental, slot=slot, sn=sn, source="cloud",
                            cmd_id=cmd.cmd_id, user=user, pass_id=None)  # fmt: skip
                self.record(
                    "command_result", cmd_id=cmd.cmd_id, ok=True, detail=f"started: slot {slot} battery {sn}"
                )
                self.returns.append((time.monotonic() + self.gen.return_after_s, rental, str(sn)))
                self.gen.stats.ejects += 1
        self.pump()


# --- the fleet -----------------------------------------------------------------------------


class LoadGen:
    """``n`` simulated cabinets against one broker; ``await start()``, ``await run(s)``, ``close()``."""

    def __init__(self, host: str, port: int, n: int, *, cloud_key: str = "", prefix: str = "LG",
                 event_interval_s: float = 60.0, reconnect_share_per_min: float = 0.05,
                 return_after_s: float = 10.0, transport: str = "light", seed: int = 1,
                 telemetry_s: tuple[float, float] | None = (30.0, 60.0)) -> None:  # fmt: skip
        self.host, self.port, self.n, self.prefix = host, port, n, prefix
        self.keyring = keyring_from_b64(dict([cloud_key.split(":", 1)])) if cloud_key else {}
        self.event_interval_s = event_interval_s
        self.reconnect_share_per_min = reconnect_share_per_min
        self.return_after_s = return_after_s
        self.transport = transport
        self.telemetry_s = telemetry_s  # None: no telemetry
        self.rng = random.Random(seed)
        self.stats = FleetStats()
        self.fleet: list[SimCabinet] = []
        self._tasks: list[asyncio.Task[None]] = []
        self.background = True

    def ids(self) -> list[str]:
        return [f"{self.prefix}-{i:05d}" for i in range(1, self.n + 1)]

    async def start(self, ramp_per_s: float = 250.0) -> None:
        """Connect every cabinet, ``ramp_per_s`` per second (a fleet does not all dial at once)."""
        for i, cid in enumerate(self.ids()):
            cab = SimCabinet(cid, self, random.Random(self.rng.random()))
            self.fleet.append(cab)
            cab.link.start()
            if i % 25 == 24:
                await asyncio.sleep(25 / ramp_per_s)
        self._tasks = [asyncio.create_task(self._ticker())]

    async def wait_connected(self, timeout: float = 120.0) -> float:
        t0 = time.monotonic()
        while self.stats.connected_now(self.fleet) < self.n:
            if time.monotonic() - t0 > timeout:
                raise TimeoutError(f"{self.stats.connected_now(self.fleet)} of {self.n} cabinets connected")
            await asyncio.sleep(0.1)
        return time.monotonic() - t0

    async def _ticker(self) -> None:
        """Once a second for the whole fleet: keepalives, background events, telemetry, reconnects."""
        p_event = 1.0 / self.event_interval_s
        p_drop = self.reconnect_share_per_min / 60.0
        while True:
            now = time.monotonic()
            for cab in self.fleet:
                cab.link.misc()
                if self.background and cab.rng.random() < p_event:
                    cab.background_event()
                if self.background and cab.link.connected and cab.rng.random() < p_drop:
                    cab.link.drop()
                cab.tick(now)
            await asyncio.sleep(max(0.05, 1.0 - (time.monotonic() - now)))

    def backlog(self, per_cabinet: int) -> int:
        """Every cabinet records ``per_cabinet`` events at once (as after an outage); returns the total."""
        for cab in self.fleet:
            for _ in range(per_cabinet):
                cab.background_event()
            cab.pump()
        return per_cabinet * len(self.fleet)

    def unacked(self) -> int:
        return sum(len(c.outbox) for c in self.fleet)

    async def close(self) -> None:
        for t in self._tasks:
            t.cancel()
        for cab in self.fleet:
            cab.link.close()
        await asyncio.sleep(0.2)


def process_usage() -> dict[str, float]:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return {"cpu_s": r.ru_utime + r.ru_stime, "max_rss_mb": r.ru_maxrss / 1024}


async def _main(args: argparse.Namespace) -> dict[str, Any]:
    host, port = args.broker.rsplit(":", 1)
    gen = LoadGen(host, int(port), args.cabinets, cloud_key=args.cloud_key, prefix=args.prefix,
                  transport=args.transport, seed=args.seed)  # fmt: skip
    t0, u0 = time.monotonic(), process_usage()
    await gen.start()
    ramp = await gen.wait_connected()
    await asyncio.sleep(args.seconds)
    u1 = process_usage()
    out = {
        "cabinets": args.cabinets,
        "transport": args.transport,
        "connected": gen.stats.connected_now(gen.fleet),
        "ramp_s": round(ramp, 1),
        "seconds": round(time.monotonic() - t0, 1),
        "cpu_s": round(u1["cpu_s"] - u0["cpu_s"], 1),
        "max_rss_mb": round(u1["max_rss_mb"], 1),
        **{k: v for k, v in vars(gen.stats).items() if isinstance(v, int)},
    }
    await gen.close()
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="bench.loadgen", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    ap.add_argument("--broker", default="127.0.0.1:1883", help="HOST:PORT of the broker (loopback only)")
    ap.add_argument("--cabinets", type=int, default=100)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument(
        "--cloud-key", default="", help="KEYID:BASE64 of the cloud's signing key (to verify commands)"
    )
    ap.add_argument("--prefix", default="LG", help="cabinet ids are PREFIX-00001 ...")
    ap.add_argument("--transport", choices=("light", "full"), default="light")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args(argv)
    if not args.broker.startswith(("127.", "localhost", "[::1]")):
        ap.error("the load generator only targets a broker on this machine (127.0.0.0/8, localhost)")
    print(json.dumps(asyncio.run(_main(args)), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
