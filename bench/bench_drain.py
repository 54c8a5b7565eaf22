"""Drain of a 7-day offline backlog through a real broker into the cloud, next to a naive baseline.

Batched (the product): the cabinet's real ``SyncAgent`` pushes a real ledger of N events
(rentals and returns with an offline pass, technician records, command records) as CBOR
``EventBatch`` es with its default batch size and window; the cloud's real ``FleetLink``
applies them exactly once (SQLite) and acks the highest contiguous seq.

Baseline (naive): one JSON message per event on QoS 1, the sender waiting for the cloud's
JSON ack of that event before sending the next; the cloud applies each event through the same
``EventApplier`` (one-event batches), so the difference is the protocol, not the database.

Bytes on the wire: everything the cabinet's TCP connection carries, both directions (MQTT
framing, PUBACKs, acks), counted by a proxy between the cabinet and Mosquitto.
Goals: batched rate >= 10x the baseline's, bytes per event <= 1/4 of the baseline's.

Run: ``./dev bench drain`` (or ``.venv/bin/python -m bench.bench_drain [--quick]``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bench.report import write_section
from cabinet.commands import CommandHandler
from cabinet.ledger import AsyncLedger, Ledger
from cabinet.sync_agent import SyncAgent, SyncSettings
from cabinet.trust import Trust
from cloud.db import make_engine, migrate
from cloud.fleet import FleetLink, Signatures
from cloud.fleet.ingest import EventApplier
from cloud.merchants import Catalog
from cloud.payments import SandboxProvider
from cloud.pricing import Tariff
from cloud.rentals import RentalService
from cloud.users import Accounts
from sync.messages import EventBatch, WireEvent
from sync.signing import Signer, generate_private_key, public_key_b64
from sync.transport import MqttOptions, MqttTransport

CAB = "CAB-BENCH"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_broker(tmp: Path) -> tuple[subprocess.Popen, int]:
    port = free_port()
    conf = tmp / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
    exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    proc = subprocess.Popen([exe, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return proc, port
        time.sleep(0.02)
    proc.kill()
    raise RuntimeError("mosquitto did not start")


class CountingProxy:
    """A TCP relay to the broker that counts the bytes of its connections, both directions."""

    def __init__(self, broker_port: int) -> None:
        self.broker_port = broker_port
        self.bytes = 0
        self.port = 0
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server:
            self._server.close()

    async def _relay(self, cr: asyncio.StreamReader, cw: asyncio.StreamWriter) -> None:
        br, bw = await asyncio.open_connection("127.0.0.1", self.broker_port)

        async def pump(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            try:
                while data := await r.read(65536):
                    self.bytes += len(data)
                    w.write(data)
                    await w.drain()
            except (ConnectionError, asyncio.CancelledError):
                pass
            finally:
                w.close()

        await asyncio.gather(pump(cr, bw), pump(br, cw))


@dataclass
class Cloud:
    engine: object
    rentals: RentalService
    signer: Signer


def make_cloud(path: Path, signer: Signer) -> Cloud:
    engine = make_engine(f"sqlite:///{path}")
    migrate(engine)
    clock = time.time
    provider = SandboxProvider(engine, clock, "bench-secret")
    rentals = RentalService(engine, provider, clock)
    cat = Catalog(engine, clock)
    m = cat.create_merchant("Bench Cafe", 3000, "EUR", "UTC")
    cat.create_tariff("t", Tariff(currency="EUR", price_per_period=250, total_cap=3500), m.id, default=True)
    cat.add_cabinet(CAB, cat.create_venue(m.id, "Bench venue"))
    accounts = Accounts(engine, clock, scrypt_n=1024)
    user = accounts.register("bench@example.com", "bench password")
    accounts.set_card(user.id, "tok_ok")
    rentals.issue_pass(user.id, "P-BENCH", time.time() + 30 * 86400, 100)
    return Cloud(engine, rentals, signer)


def fill_ledger(path: Path, n: int) -> int:
    """A week offline: pass rentals and returns (10 %), technician and command records; returns last seq."""
    led = Ledger.open(path, CAB)
    with led.db.atomic():
        for slot in range(1, 9):
            led.record("battery_seen", slot=slot, sn=f"PB{slot:06d}", soc=90)
    k = 0
    while led.last_seq < n:
        with led.db.atomic():
            for _ in range(200):
                k += 1
                slot = k % 8 + 1
                if k % 20 == 0:
                    rid = f"R-{k:06d}"
                    led.record("rental_started", rental_id=rid, sn=f"PB{slot:06d}", slot=slot, source="pass",
                               user="u-bench", pass_id="P-BENCH")  # fmt: skip
                    led.record("pass_used", pass_id="P-BENCH", rental_id=rid)
                    led.record(
                        "battery_returned", slot=slot, sn=f"PB{slot:06d}", rental_id=rid, soc=60, temp_c=27.5
                    )
                elif k % 3 == 0:
                    led.record("command_received", cmd_id=f"c-{k:07d}", kind="ping", args={"nonce": f"n{k}"})
                    led.record("command_result", cmd_id=f"c-{k:07d}", ok=True, detail=f"pong n{k}")
                else:
                    led.record(
                        "tech_action", technician="tech-0042", action="inspect", detail=f"slot {slot} ok"
                    )
    last = led.last_seq
    led.close()
    return last


async def batched(tmp: Path, broker_port: int, n: int) -> tuple[int, float, float]:
    """The product: SyncAgent -> broker -> FleetLink; returns (events, seconds, wire bytes)."""
    signer = Signer(generate_private_key(), "bench")
    cloud = await asyncio.to_thread(make_cloud, tmp / "cloud-batched.db", signer)
    last = await asyncio.to_thread(fill_ledger, tmp / "ledger.db", n)
    fleet = FleetLink(
        cloud.engine,
        cloud.rentals,
        Signatures(cloud.engine, cloud.rentals, lambda: signer, time.time),
        MqttOptions("127.0.0.1", "cloud-bench", port=broker_port, clean_start=True),
    )
    await fleet.start()
    await fleet.wait_connected(10)
    proxy = CountingProxy(broker_port)
    await proxy.start()
    ledger = await AsyncLedger.open(tmp / "ledger.db", CAB)
    last = await ledger.run(lambda led: led.last_seq)  # opening recorded ledger_opened
    trust = Trust(CAB, [f"bench:{public_key_b64(signer.public_key)}"], tmp, 300)
    agent = SyncAgent(
        CAB,
        ledger,
        MqttTransport(MqttOptions("127.0.0.1", CAB, port=proxy.port, clean_start=True)),
        CommandHandler(ledger, None, trust),  # type: ignore[arg-type]  # no commands in this run
        trust,
        SyncSettings(),
    )
    t0 = time.perf_counter()
    await agent.start()
    while agent.acked_seq < last:  # noqa: ASYNC110 - the agent exposes no event for acks
        await asyncio.sleep(0.01)
    dt = time.perf_counter() - t0
    applied = await asyncio.to_thread(fleet.applier.applied_seq, CAB)
    assert applied >= last, (applied, last)
    wire = proxy.bytes
    await agent.stop()
    await ledger.close()
    await fleet.stop()
    await proxy.stop()
    cloud.engine.dispose()  # type: ignore[attr-defined]
    return last, dt, wire


async def naive(tmp: Path, broker_port: int, n: int) -> tuple[int, float, float]:
    """One JSON message per event, each waiting for its ack; same ledger rows, same applier."""
    signer = Signer(generate_private_key(), "bench")
    cloud = await asyncio.to_thread(make_cloud, tmp / "cloud-naive.db", signer)

    def read() -> list:
        led = Ledger.open(tmp / "ledger.db", CAB)
        try:
            return led.events_after(0, n, 1 << 40)
        finally:
            led.close()

    events = await asyncio.to_thread(read)
    applier = EventApplier(cloud.engine, cloud.rentals, time.time)  # type: ignore[arg-type]
    server = MqttTransport(MqttOptions("127.0.0.1", "cloud-naive", port=broker_port, clean_start=True),
                           [("naive/+/ev", 1)])  # fmt: skip
    await server.start()
    await server.wait_connected(10)

    async def serve() -> None:
        async for msg in server.messages():
            e = json.loads(msg.payload)
            batch = EventBatch(e["cabinet"], (WireEvent(**{k: v for k, v in e.items() if k != "cabinet"}),))
            out = await asyncio.to_thread(applier.apply_batch, batch)
            ack = json.dumps({"cabinet": e["cabinet"], "acked_seq": out.acked_seq}).encode()
            await server.publish(f"naive/{e['cabinet']}/ack", ack, qos=1)

    task = asyncio.create_task(serve())
    proxy = CountingProxy(broker_port)
    await proxy.start()
    client = MqttTransport(MqttOptions("127.0.0.1", "naive-cab", port=proxy.port, clean_start=True),
                           [(f"naive/{CAB}/ack", 1)])  # fmt: skip
    t0 = time.perf_counter()
    await client.start()
    await client.wait_connected(10)
    acks = client.messages()
    for e in events:
        body = {"cabinet": CAB, "seq": e.seq, "id": e.id, "type": e.type, "at_wall": e.at_wall,
                "at_mono": e.at_mono, "boot_id": e.boot_id, "body": e.body}  # fmt: skip
        await client.publish(f"naive/{CAB}/ev", json.dumps(body).encode(), qos=1)
        while True:
            msg = await asyncio.wait_for(acks.__anext__(), 30)
            if json.loads(msg.payload)["acked_seq"] >= e.seq:
                break
    dt = time.perf_counter() - t0
    wire = proxy.bytes
    await client.close()
    task.cancel()
    await server.close()
    await proxy.stop()
    cloud.engine.dispose()  # type: ignore[attr-defined]
    return len(events), dt, wire


async def run(n: int, n_naive: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="bench-drain-") as d:
        tmp = Path(d)
        proc, port = start_broker(tmp)
        try:
            bn, bdt, bbytes = await batched(tmp, port, n)
            nn, ndt, nbytes = await naive(tmp, port, n_naive)
        finally:
            proc.terminate()
            proc.wait(5)
    return {
        "batched_events": bn,
        "batched_s": bdt,
        "batched_rate": bn / bdt,
        "batched_bytes": bbytes / bn,
        "naive_events": nn,
        "naive_s": ndt,
        "naive_rate": nn / ndt,
        "naive_bytes": nbytes / nn,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="bench_drain", description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="2,000 events (baseline 300): a smoke check")
    args = ap.parse_args(argv)
    n, n_naive = (2000, 300) if args.quick else (20_000, 1000)
    r = asyncio.run(run(n, n_naive))
    speed = r["batched_rate"] / r["naive_rate"]
    size = r["batched_bytes"] / r["naive_bytes"]
    ok = speed >= 10 and size <= 0.25
    body = (
        f"Command: `./dev bench drain{' --quick' if args.quick else ''}`. A cabinet's offline backlog "
        "(10 % pass rentals and returns, command and technician records) through Mosquitto into the "
        "cloud on SQLite, exactly once; bytes are the cabinet connection's, both directions.\n\n"
        "| | events | seconds | events/s | bytes/event on the wire |\n|---|---|---|---|---|\n"
        f"| batched (EventBatch, CBOR+DEFLATE, window 4 x 200) | {r['batched_events']:,} | "
        f"{r['batched_s']:.1f} | {r['batched_rate']:,.0f} | {r['batched_bytes']:.0f} |\n"
        f"| naive (one JSON message per event, wait for each ack) | {r['naive_events']:,} | "
        f"{r['naive_s']:.1f} | {r['naive_rate']:,.0f} | {r['naive_bytes']:.0f} |\n\n"
        f"Ratios: **{speed:.1f}x** the baseline's rate (goal >= 10x), **{size:.2f}** of its bytes per "
        f"event (goal <= 0.25): {'both goals met' if ok else 'GOAL MISSED'}. The baseline is measured on "
        f"{r['naive_events']:,} events of the same ledger (its rate does not depend on the backlog size).\n"
    )
    print(body)
    write_section("Drain of an offline backlog (sync)", body)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
