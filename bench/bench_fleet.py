"""Fleet scale: N simulated cabinets (bench/loadgen.py) against the cloud on PostgreSQL.

For each worker count (default 1 and 2): a fresh PostgreSQL database, Mosquitto, that many
``cabinet-cloud serve`` processes sharing the fleet through ``$share/cloud/...``, and the
load generator's cabinets, all on this machine. Two phases:

1. steady: every cabinet connected, background events (one a minute per cabinet), telemetry
   every 30-60 s, 5 % of links dropped and redialled per minute, and app rentals at a fixed
   rate. Rent latency = ``POST /api/rentals`` -> signed eject over MQTT -> the simulated
   cabinet answers ``rental_started`` -> the cloud applies it (rental active) -> its ack
   reaches the cabinet. CPU and memory of every cloud process and the broker are sampled.
2. backlog: every cabinet records ``--backlog`` events at once (as after an outage); events
   per second until all are acked = the ingest throughput.

Baseline: the one-worker run; ratios are given against it.

Run: ``.venv/bin/python -m bench.bench_fleet [--quick] [--cabinets 1000] [--workers 1,2]``
(PostgreSQL at 127.0.0.1:5432, user postgres, trust auth; a database is made and dropped).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from bench.loadgen import LoadGen, process_usage
from bench.report import write_section

BIN = Path(sys.executable).parent
PG = {"host": "127.0.0.1", "port": 5432, "user": "postgres"}
TICK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def proc_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def proc_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


@dataclass
class Result:
    workers: int
    cabinets: int = 0
    connected: int = 0
    ramp_s: float = 0.0
    steady_s: float = 0.0
    steady_events_per_s: float = 0.0
    telemetry_per_s: float = 0.0
    rents: int = 0
    rent_refused: int = 0
    rent_lost: int = 0
    rent_p50_ms: float = 0.0
    rent_p99_ms: float = 0.0
    http_p50_ms: float = 0.0
    backlog_events: int = 0
    backlog_s: float = 0.0
    backlog_events_per_s: float = 0.0
    cloud_cpu_pct: list[float] = field(default_factory=list)
    cloud_rss_mb: list[float] = field(default_factory=list)
    broker_cpu_pct: float = 0.0
    loadgen_cpu_pct: float = 0.0
    money_check_exit: int | None = None
    error: str = ""


class Stack:
    """PostgreSQL database, Mosquitto and ``workers`` cloud processes in ``work``."""

    def __init__(self, work: Path, workers: int) -> None:
        self.work, self.workers = work, workers
        self.db = f"bench_fleet_{os.getpid()}_{workers}"
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{self.db}"
        self.broker_port = free_port()
        self.ports = [free_port() for _ in range(workers)]
        self.procs: list[subprocess.Popen[bytes]] = []
        self.broker: subprocess.Popen[bytes] | None = None
        self.key = ""

    def _admin(self, sql: str) -> None:
        import psycopg

        with psycopg.connect(dbname="postgres", connect_timeout=5, autocommit=True, **PG) as conn:  # type: ignore[arg-type]
            conn.execute(sql)

    def up(self) -> None:
        self._admin(f'CREATE DATABASE "{self.db}"')
        conf = self.work / "mosquitto.conf"
        conf.write_text(
            f"listener {self.broker_port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
            "max_queued_messages 100000\n"
        )
        mosquitto = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        self.broker = subprocess.Popen([mosquitto, "-c", str(conf)], stdout=subprocess.DEVNULL,
                                       stderr=open(self.work / "mosquitto.log", "ab"))  # fmt: skip
        data = self.work / "cloud"
        data.mkdir()
        out = subprocess.run([str(BIN / "cabinet-cloud"), "keys", "--data-dir", str(data)], capture_output=True,
                             text=True, timeout=60, check=True).stdout  # fmt: skip
        self.key = next(ln.strip() for ln in out.splitlines() if ":" in ln and " " not in ln.strip())
        for i, port in enumerate(self.ports):
            cfg = self.work / f"cloud{i}.toml"
            cfg.write_text(
                f'[cloud]\ndatabase = "{self.url}"\nport = {port}\ndata_dir = "{data}"\n'
                f'broker_host = "127.0.0.1"\nbroker_port = {self.broker_port}\nmqtt_tls = false\n'
                f'mqtt_client_id = "bench-cloud-{i}"\nscrypt_n = 1024\nlogin_max_failures_ip = 100000\n'
                f'mode = "sandbox"\nsignup_max_per_ip = 100000\n'
            )
        subprocess.run([str(BIN / "cabinet-cloud"), "create-user", "--config", str(self.work / "cloud0.toml"),
                        "ops@bench.invalid", "--operator", "--password-stdin"], input=b"operator password\n",
                       capture_output=True, timeout=120, check=True)  # fmt: skip
        for i in range(self.workers):
            log = open(self.work / f"cloud{i}.log", "ab")
            self.procs.append(subprocess.Popen(
                [str(BIN / "cabinet-cloud"), "serve", "--config", str(self.work / f"cloud{i}.toml")],
                stdout=log, stderr=log, start_new_session=True))  # fmt: skip

    async def wait_healthy(self, http: aiohttp.ClientSession) -> None:
        for i, port in enumerate(self.ports):
            deadline = time.monotonic() + 90
            while True:
                if self.procs[i].poll() is not None:
                    raise RuntimeError(
                        f"cloud worker {i} exited: {(self.work / f'cloud{i}.log').read_text()[-2000:]}"
                    )
                with contextlib.suppress(aiohttp.ClientError, OSError):
                    async with http.get(f"http://127.0.0.1:{port}/api/health") as r:
                        if r.status == 200:
                            break
                if time.monotonic() > deadline:
                    raise TimeoutError(f"cloud worker {i} not healthy after 90 s")
                await asyncio.sleep(0.2)

    def down(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
        if self.broker is not None:
            self.broker.terminate()
            self.broker.wait(10)
        with contextlib.suppress(Exception):
            self._admin(f'DROP DATABASE IF EXISTS "{self.db}" WITH (FORCE)')


class Api:
    def __init__(self, http: aiohttp.ClientSession, ports: list[int]) -> None:
        self.http, self.ports = http, ports

    async def call(
        self, method: str, path: str, token: str | None = None, body: Any = None, worker: int = 0
    ) -> Any:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        url = f"http://127.0.0.1:{self.ports[worker % len(self.ports)]}{path}"
        async with self.http.request(method, url, json=body, headers=headers) as r:
            data = await r.json(content_type=None)
            if r.status >= 400:
                raise RuntimeError(f"{method} {path}: {r.status} {data}")
            return data


async def bootstrap(api: Api, cabinet_ids: list[str], renters: int) -> tuple[str, list[str]]:
    """Merchant, venue, tariff, every cabinet registered, renters with cards; returns (operator, renters)."""
    op = (
        await api.call(
            "POST", "/api/login", body={"email": "ops@bench.invalid", "password": "operator password"}
        )
    )["token"]
    m = await api.call(
        "POST", "/api/merchants", op, {"name": "Bench", "revenue_share_bp": 3000, "currency": "EUR"}
    )
    v = await api.call("POST", f"/api/merchants/{m['id']}/venues", op, {"name": "Hall"})
    t = await api.call("POST", "/api/tariffs", op, {"name": "bench", "merchant_id": m["id"], "default": True, "tariff": {
        "currency": "EUR", "price_per_period": 200, "period_minutes": 60, "free_minutes": 0, "daily_cap": 1000,
        "total_cap": 3500, "timezone": "UTC"}})  # fmt: skip
    sem = asyncio.Semaphore(16)

    async def add(cid: str) -> None:
        async with sem:
            await api.call(
                "POST", "/api/cabinets", op, {"id": cid, "venue_id": v["id"], "tariff_id": t["id"]}
            )

    await asyncio.gather(*(add(c) for c in cabinet_ids))
    tokens = []
    for i in range(renters):
        email, pw = f"r{i}@bench.invalid", "renter password"
        await api.call("POST", "/api/users", body={"email": email, "password": pw})
        tok = (await api.call("POST", "/api/login", body={"email": email, "password": pw}))["token"]
        await api.call("PUT", "/api/me/card", tok, {"card_token": "tok_ok"})
        tokens.append(tok)
    return op, tokens


async def rent_driver(api: Api, gen: LoadGen, tokens: list[str], rate: float, stop: asyncio.Event,
                      res: Result, samples: list[float], http_ms: list[float]) -> None:  # fmt: skip
    """App rentals at ``rate`` per second by renters who are not renting now."""
    free = list(tokens)
    ids = gen.ids()
    rng = random.Random(5)
    pending: dict[str, tuple[float, str]] = {}
    tasks: set[asyncio.Task[None]] = set()

    async def one(tok: str, n: int) -> None:
        t0 = time.monotonic()
        try:
            r = await api.call("POST", "/api/rentals", tok, {"cabinet_id": rng.choice(ids)}, worker=n)
            http_ms.append((time.monotonic() - t0) * 1000)
            pending[r["rental_id"]] = (t0, tok)
            res.rents += 1
        except (RuntimeError, aiohttp.ClientError, TimeoutError):
            res.rent_refused += 1
            free.append(tok)

    n = 0
    while not stop.is_set():
        for rid, (t0, tok) in list(pending.items()):
            done = gen.stats.started_acked.get(rid)
            if done is not None:
                samples.append((done - t0) * 1000)
                del pending[rid]
                asyncio.get_running_loop().call_later(gen.return_after_s + 3, free.append, tok)
            elif time.monotonic() - t0 > 60:
                res.rent_lost += 1
                del pending[rid]
        if free:
            task = asyncio.create_task(one(free.pop(rng.randrange(len(free))), n))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            n += 1
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 1.0 / rate)
    await asyncio.gather(*tasks, return_exceptions=True)
    deadline = time.monotonic() + 10  # rentals asked for just before the end may still complete
    while pending and time.monotonic() < deadline:
        for rid, (t0, _) in list(pending.items()):
            if (done := gen.stats.started_acked.get(rid)) is not None:
                samples.append((done - t0) * 1000)
                del pending[rid]
        await asyncio.sleep(0.05)
    res.rent_lost += len(pending)


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, round(p / 100 * (len(s) - 1)))]


async def run_one(
    workers: int, n: int, steady_s: float, backlog: int, rate: float, renters: int, telemetry: bool = True
) -> Result:
    res = Result(workers, n)
    work = Path(tempfile.mkdtemp(prefix=f"bench-fleet-{workers}-"))
    stack = Stack(work, workers)
    gen: LoadGen | None = None
    try:
        await asyncio.to_thread(stack.up)
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
            await stack.wait_healthy(http)
            api = Api(http, stack.ports)
            gen = LoadGen("127.0.0.1", stack.broker_port, n, cloud_key=stack.key, return_after_s=5.0,
                          telemetry_s=(30.0, 60.0) if telemetry else None)  # fmt: skip
            _, tokens = await bootstrap(api, gen.ids(), renters)
            t0 = time.monotonic()
            await gen.start()
            await gen.wait_connected(180)
            res.ramp_s = round(time.monotonic() - t0, 1)
            await asyncio.sleep(5)  # the first states and telemetry settle
            pids = [p.pid for p in stack.procs] + [stack.broker.pid if stack.broker else 0]
            cpu0, me0, ev0, tm0, w0 = [proc_cpu_s(p) for p in pids], process_usage()["cpu_s"], \
                gen.stats.events_acked, gen.stats.telemetry, time.monotonic()  # fmt: skip
            samples: list[float] = []
            http_ms: list[float] = []
            stop = asyncio.Event()
            driver = asyncio.create_task(rent_driver(api, gen, tokens, rate, stop, res, samples, http_ms))
            rss: list[list[float]] = [[] for _ in stack.procs]
            while time.monotonic() - w0 < steady_s:
                await asyncio.sleep(2)
                for i, p in enumerate(stack.procs):
                    rss[i].append(proc_rss_mb(p.pid))
            stop.set()
            await driver
            wall = time.monotonic() - w0
            cpu1 = [proc_cpu_s(p) for p in pids]
            res.steady_s = round(wall, 1)
            res.steady_events_per_s = round((gen.stats.events_acked - ev0) / wall, 1)
            res.telemetry_per_s = round((gen.stats.telemetry - tm0) / wall, 1)
            res.cloud_cpu_pct = [
                round(100 * (b - a) / wall, 1) for a, b in zip(cpu0[:-1], cpu1[:-1], strict=True)
            ]
            res.broker_cpu_pct = round(100 * (cpu1[-1] - cpu0[-1]) / wall, 1)
            res.loadgen_cpu_pct = round(100 * (process_usage()["cpu_s"] - me0) / wall, 1)
            res.cloud_rss_mb = [round(max(r), 1) for r in rss]
            res.rent_p50_ms, res.rent_p99_ms = round(pct(samples, 50), 1), round(pct(samples, 99), 1)
            res.http_p50_ms = round(pct(http_ms, 50), 1)
            # backlog: every cabinet comes back with events to drain
            await asyncio.sleep(gen.return_after_s + 2)
            gen.background = False
            before = gen.stats.events_acked
            t1 = time.monotonic()
            res.backlog_events = gen.backlog(backlog)
            while gen.unacked() and time.monotonic() - t1 < 600:  # noqa: ASYNC110 - polls a counter
                await asyncio.sleep(0.2)
            res.backlog_s = round(time.monotonic() - t1, 1)
            res.backlog_events_per_s = round((gen.stats.events_acked - before) / res.backlog_s, 1)
            if gen.unacked():
                res.error = f"{gen.unacked()} events still unacked after 600 s"
            # held: with the deliberate link drops paused, every cabinet is (back) online
            with contextlib.suppress(TimeoutError):
                await gen.wait_connected(60)
            res.connected = gen.stats.connected_now(gen.fleet)
            money = await asyncio.to_thread(subprocess.run, [str(BIN / "cabinet-cloud"), "money-check", "--database",
                                            stack.url], capture_output=True, timeout=300)  # fmt: skip
            res.money_check_exit = money.returncode
    except Exception as e:  # a failed configuration is reported, the next one still runs
        res.error = f"{type(e).__name__}: {e}"
    finally:
        if gen is not None:
            await gen.close()
        await asyncio.to_thread(stack.down)
        if not res.error:
            shutil.rmtree(work, ignore_errors=True)
        else:
            res.error += f" (logs in {work})"
    return res


def table(results: list[Result], goal_n: int) -> str:
    base = results[0]
    rows = [
        "| workers | cabinets held | steady events/s | telemetry msg/s | rents | rent p50 / p99 ms (goal p99 < 250) "
        "| backlog drain events/s | vs 1 worker | cloud CPU % per process | cloud RSS MB per process "
        "| broker CPU % | loadgen CPU % | money-check |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        ratio = (
            r.backlog_events_per_s / base.backlog_events_per_s if base.backlog_events_per_s else float("nan")
        )
        rows.append(
            f"| {r.workers} | {r.connected}/{r.cabinets} | {r.steady_events_per_s} | {r.telemetry_per_s} "
            f"| {r.rents} ({r.rent_refused} refused, {r.rent_lost} unanswered) | {r.rent_p50_ms} / **{r.rent_p99_ms}** "
            f"| **{r.backlog_events_per_s}** ({r.backlog_events} in {r.backlog_s} s) | {ratio:.2f} "
            f"| {', '.join(map(str, r.cloud_cpu_pct))} | {', '.join(map(str, r.cloud_rss_mb))} "
            f"| {r.broker_cpu_pct} | {r.loadgen_cpu_pct} | exit {r.money_check_exit} |"
        )
    lines = [*rows, ""]
    for r in results:
        if r.error:
            lines.append(f"- {r.workers} worker(s): **error**: {r.error}")
    held = all(r.connected >= goal_n for r in results)
    p99 = all(r.rent_p99_ms < 250 for r in results)
    grows = all(b.backlog_events_per_s > a.backlog_events_per_s for a, b in itertools.pairwise(results))
    lines.append(
        f"Goals: {goal_n} cabinets held: **{'meets' if held else 'misses'}**; rent p99 < 250 ms: "
        f"**{'meets' if p99 else 'misses'}**; ingest throughput grows with workers: "
        f"**{'yes' if grows else 'no'}** (2 CPU cores shared by the broker, every cloud worker, PostgreSQL "
        "and the load generator: more workers than cores cannot add CPU, only overlap database waits)."
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="bench_fleet", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    ap.add_argument("--quick", action="store_true", help="200 cabinets, 20 s steady, 20-event backlog")
    ap.add_argument("--cabinets", type=int)
    ap.add_argument("--workers", default="1,2", help="comma-separated worker counts (default 1,2)")
    ap.add_argument("--seconds", type=float, help="steady phase length (default 60, quick 20)")
    ap.add_argument(
        "--backlog", type=int, help="events per cabinet in the backlog phase (default 30, quick 20)"
    )
    ap.add_argument("--rent-rate", type=float, default=2.0, help="app rentals per second (default 2)")
    ap.add_argument("--renters", type=int, default=40)
    ap.add_argument("--no-telemetry", action="store_true", help="cabinets send no telemetry (diagnosis)")
    ap.add_argument("--no-report", action="store_true", help="do not write BENCHMARKS.md")
    args = ap.parse_args(argv)
    n = args.cabinets or (200 if args.quick else 1000)
    steady = args.seconds or (20.0 if args.quick else 60.0)
    backlog = args.backlog or (20 if args.quick else 30)
    workers = [int(w) for w in args.workers.split(",")]
    results = []
    for w in workers:
        print(f"fleet: {n} cabinets, {w} cloud worker(s) ...", flush=True)
        r = asyncio.run(run_one(w, n, steady, backlog, args.rent_rate, args.renters, not args.no_telemetry))
        print(f"  {r}", flush=True)
        results.append(r)
    body = table(results, n)
    print(body)
    if not args.no_report:
        cmd = f"`.venv/bin/python -m bench.bench_fleet{' --quick' if args.quick else ''}`"
        write_section(
            "Fleet scale (cloud on PostgreSQL)",
            f"{cmd} ({n} simulated cabinets over real MQTT from one asyncio process (bench/loadgen.py), "
            f"{steady:g} s steady load with {args.rent_rate:g} app rentals/s, then a backlog of {backlog} events "
            "per cabinet; baseline: 1 worker)\n\n" + body,
        )
    return 1 if any(r.error for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
