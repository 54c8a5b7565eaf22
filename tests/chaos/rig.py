"""The chaos rig: Mosquitto, the cloud, a hardware simulator and a cabinet, each its own process.

Everything is started the way ``scripts/demo.py`` starts it (``cabinet-cloud serve``,
``cabinet-sim run``, ``cabinet run``), on free loopback ports under one work directory, and
each part but the simulator (the physical world) can be SIGKILLed and started again on
the same ports and files. The cabinet reaches the broker through a :class:`FaultyLink`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from tests.chaos.linkfault import FaultyLink

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
CABINET_ID = "CAB-CHAOS"
SLOTS = 8
PACKS = 6
OPERATOR = ("ops@chaos.invalid", "operator password")
RENTER_PASSWORD = "renter password 1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


async def poll(check: Any, timeout: float, what: str, interval: float = 0.1) -> Any:
    """Await an (async) check until it returns something truthy; TimeoutError names ``what``."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while True:
        try:
            r = check()
            if asyncio.iscoroutine(r):
                r = await r
            if r:
                return r
        except (TimeoutError, OSError, aiohttp.ClientError, ValueError, KeyError) as e:
            last = e
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what} (last error: {last})")
        await asyncio.sleep(interval)


@dataclass
class Proc:
    """One restartable child process; its output is appended to ``work/<name>.log``."""

    name: str
    argv: list[str]
    work: Path
    env: dict[str, str] = field(default_factory=dict)
    proc: asyncio.subprocess.Process | None = None
    starts: int = 0
    kills: int = 0

    async def start(self, stdout: int | None = None) -> None:
        with open(self.work / f"{self.name}.log", "ab") as log:  # noqa: ASYNC230 - opened once per start
            self.proc = await asyncio.create_subprocess_exec(
                *self.argv,
                stdout=stdout if stdout is not None else log,
                stderr=log,
                env={**os.environ, "PYTHONPATH": str(ROOT), **self.env},
                cwd=str(ROOT),
                start_new_session=True,
            )
        self.starts += 1

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    async def kill(self) -> None:
        """SIGKILL, as a power cut or the OOM killer would."""
        if self.alive:
            assert self.proc is not None
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            await self.proc.wait()
            self.kills += 1

    async def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout``; returns the exit status."""
        if not self.alive:
            return self.proc.returncode if self.proc else None
        assert self.proc is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(self.proc.wait(), timeout)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            await self.proc.wait()
        return self.proc.returncode

    def died(self) -> str | None:
        """Why the process is gone when nobody killed it (for error messages)."""
        if self.proc is None or self.proc.returncode is None:
            return None
        tail = (self.work / f"{self.name}.log").read_text(errors="replace")[-3000:]
        return f"{self.name} exited with {self.proc.returncode}; log tail:\n{tail}"


@dataclass
class Rig:
    """The whole system under test; ``await rig.start()`` then kill/restart parts at will."""

    work: Path
    seed: int = 1
    database: str = ""  # SQLAlchemy URL; empty: a SQLite file in work/cloud
    provider: str = "sandbox"  # sandbox | stripe-fake (Stripe's real SDK against the local fake)
    stripe: Any = None  # the fake, running in this process, when provider is stripe-fake
    http: aiohttp.ClientSession | None = None
    ports: dict[str, int] = field(default_factory=dict)
    sim_info: dict[str, Any] = field(default_factory=dict)
    broker: Proc | None = None
    cloud: Proc | None = None
    sim: Proc | None = None
    cabinet: Proc | None = None
    link: FaultyLink | None = None
    operator_token: str = ""

    # --- paths and urls -------------------------------------------------------------------

    @property
    def cloud_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['cloud']}"

    @property
    def cabinet_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['web']}"

    @property
    def sim_url(self) -> str:
        return str(self.sim_info["control"])

    @property
    def ledger_path(self) -> Path:
        return self.work / "cabinet" / "ledger.db"

    @property
    def cloud_config(self) -> Path:
        return self.work / "cloud" / "cloud.toml"

    # --- start-up -------------------------------------------------------------------------

    async def start(self) -> Rig:
        self.work.mkdir(parents=True, exist_ok=True)
        self.http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        self.ports = {"broker": free_port(), "cloud": free_port(), "web": free_port()}
        await self._start_broker()
        self.link = await FaultyLink("127.0.0.1", self.ports["broker"], random.Random(self.seed)).start()
        keys = self._write_cloud_config()
        await self._create_operator()
        await self.start_cloud()
        await self._bootstrap_cloud()
        await self._start_sim()
        self._write_cabinet_config(keys)
        await self.start_cabinet()
        return self

    async def close(self) -> None:
        for p in (self.cabinet, self.cloud, self.sim, self.broker):
            if p is not None:
                await p.stop(10)
        if self.link is not None:
            await self.link.stop()
        if self.http is not None:
            await self.http.close()
        if self.stripe is not None:
            self.stripe.stop()

    async def _start_broker(self) -> None:
        mosquitto = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        conf = self.work / "mosquitto.conf"
        conf.write_text(
            f"listener {self.ports['broker']} 127.0.0.1\nallow_anonymous true\npersistence false\n"
            "max_queued_messages 100000\n"
        )
        self.broker = Proc("mosquitto", [mosquitto, "-c", str(conf)], self.work)
        await self.start_broker()

    async def start_broker(self) -> None:
        assert self.broker is not None
        await self.broker.start()
        await poll(lambda: port_open(self.ports["broker"]) or self._check(self.broker), 10, "the broker")

    def _write_cloud_config(self) -> list[str]:
        d = self.work / "cloud"
        d.mkdir(exist_ok=True)
        db = self.database or f"sqlite:///{d / 'cloud.db'}"
        self.cloud_config.write_text(
            "[cloud]\n"
            f'database = "{db}"\n'
            f"port = {self.ports['cloud']}\n"
            f'data_dir = "{d}"\n'
            f'broker_host = "127.0.0.1"\nbroker_port = {self.ports["broker"]}\nmqtt_tls = false\n'
            'mqtt_client_id = "cloud-chaos-1"\n'
            "scrypt_n = 1024\nsweep_interval_s = 2\neject_timeout_s = 20\ncommand_ttl_s = 20\n"
            "login_max_failures_ip = 1000\n"
            'mode = "sandbox"\nsignup_max_per_ip = 100000\n' + self._payments_config()
        )
        out = subprocess.run(
            [str(BIN / "cabinet-cloud"), "keys", "--data-dir", str(d)],
            capture_output=True, text=True, timeout=60, check=True,
        ).stdout  # fmt: skip
        return [ln.strip() for ln in out.splitlines() if ":" in ln and " " not in ln.strip()]

    def _payments_config(self) -> str:
        if self.provider == "sandbox":
            return ""
        from tests.fakes.stripe_fake import StripeFake

        self.stripe = StripeFake().start()
        self.stripe.auto_deliver = True  # webhooks go out by themselves, to whatever cloud is up
        self.stripe.webhook_url = f"{self.cloud_url}/api/payments/stripe/notify"
        return (
            f'provider = "stripe"\n[cloud.provider_settings.stripe]\nstripe_api_base = "{self.stripe.url}"\n'
        )

    def _stripe_env(self) -> dict[str, str]:
        if self.stripe is None:
            return {}
        return {"STRIPE_SECRET_KEY": self.stripe.api_key, "STRIPE_WEBHOOK_SECRET": self.stripe.webhook_secret}

    async def _create_operator(self) -> None:
        proc = await asyncio.create_subprocess_exec(
            str(BIN / "cabinet-cloud"), "create-user", "--config", str(self.cloud_config), OPERATOR[0],
            "--operator", "--password-stdin",
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            env={**os.environ, **self._stripe_env()},
        )  # fmt: skip
        _, err = await asyncio.wait_for(proc.communicate((OPERATOR[1] + "\n").encode()), 120)
        if proc.returncode:
            raise RuntimeError(f"cabinet-cloud create-user failed: {err.decode()[-2000:]}")

    async def start_cloud(self) -> None:
        if self.cloud is None:
            argv = [
                sys.executable,
                "-m",
                "tests.chaos.cloud_main",
                "serve",
                "--config",
                str(self.cloud_config),
            ]
            self.cloud = Proc("cloud", argv, self.work, self._stripe_env())
        await self.cloud.start()
        await poll(self._cloud_healthy, 60, "the cloud")

    async def _cloud_healthy(self) -> bool:
        self._check(self.cloud)
        assert self.http is not None
        async with self.http.get(self.cloud_url + "/api/health") as r:
            return r.status == 200

    async def _bootstrap_cloud(self) -> None:
        """A merchant, a venue, a tariff and the cabinet, through the operator API."""
        login = {"email": OPERATOR[0], "password": OPERATOR[1]}
        self.operator_token = (await self.call("POST", "/api/login", body=login))["token"]
        m = await self.call("POST", "/api/merchants", self.operator_token,
                            {"name": "Chaos Cafe", "revenue_share_bp": 3000, "currency": "EUR",
                             "timezone": "Europe/Berlin"})  # fmt: skip
        v = await self.call("POST", f"/api/merchants/{m['id']}/venues", self.operator_token, {"name": "Hall"})
        t = await self.call("POST", "/api/tariffs", self.operator_token, {
            "name": "chaos", "merchant_id": m["id"], "default": True,
            "tariff": {"currency": "EUR", "price_per_period": 200, "period_minutes": 60, "free_minutes": 0,
                       "daily_cap": 1000, "total_cap": 3500, "timezone": "Europe/Berlin"}})  # fmt: skip
        await self.call("POST", "/api/cabinets", self.operator_token,
                        {"id": CABINET_ID, "venue_id": v["id"], "tariff_id": t["id"]})  # fmt: skip

    async def renter(self, email: str) -> str:
        """A renter account with a sandbox card; returns its bearer token."""
        await self.call("POST", "/api/users", body={"email": email, "password": RENTER_PASSWORD})
        token = (await self.call("POST", "/api/login", body={"email": email, "password": RENTER_PASSWORD}))[
            "token"
        ]
        if self.stripe is None:
            await self.call("PUT", "/api/me/card", token, {"card_token": "tok_ok"})
        else:  # a card saved with a SetupIntent, as the phone does with Stripe.js
            card = await asyncio.to_thread(self._stripe_card, email)
            await self.call("POST", "/api/me/payment-methods", token, {"provider": "stripe", "token": card})
        return str(token)

    def _stripe_card(self, email: str) -> str:
        from cloud.payments.stripe_provider import StripeProvider

        stripe = StripeProvider.from_config({"stripe_api_base": self.stripe.url}, environ=self._stripe_env())
        setup = stripe.save_card(None, f"chaos:{email}:setup")
        self.stripe.confirm_setup(setup["setup_intent"], "4242424242424242")
        return stripe.confirmed_card_token(setup["setup_intent"])

    async def call(self, method: str, path: str, token: str | None = None, body: Any = None) -> Any:
        """One cloud API call; raises ``ApiFailure`` with the status and text on an error."""
        assert self.http is not None
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with self.http.request(method, self.cloud_url + path, json=body, headers=headers) as r:
            text = await r.text()
            if r.status >= 400:
                raise ApiFailure(r.status, f"{method} {path}: {r.status} {text[:500]}")
            return json.loads(text) if text else None

    async def _start_sim(self) -> None:
        argv = [
            str(BIN / "cabinet-sim"), "run", "--slots", str(SLOTS), "--slots-per-board", "4",
            "--seed", str(self.seed), "--fill", "0", "--speed", "30", "--reseat", "2",
            "--pty", str(self.work / "ttySIM"), "--control", "0", "--gpio", "0",
        ]  # fmt: skip
        self.sim = Proc("sim", argv, self.work)
        await self.sim.start(stdout=asyncio.subprocess.PIPE)
        assert self.sim.proc is not None and self.sim.proc.stdout is not None
        line = await asyncio.wait_for(self.sim.proc.stdout.readline(), 30)
        if not line:
            raise RuntimeError(self.sim.died() or "the simulator printed nothing")
        self.sim_info = json.loads(line)
        for n in range(1, PACKS + 1):
            await self.sim_post("/insert", {"slot": n, "sn": f"PBC{n:05d}", "soc": 0.95})

    async def sim_post(self, path: str, body: dict[str, Any]) -> tuple[int, Any]:
        assert self.http is not None
        async with self.http.post(self.sim_url + path, json=body) as r:
            return r.status, await r.json()

    async def sim_state(self) -> dict[str, Any]:
        assert self.http is not None
        async with self.http.get(self.sim_url + "/state") as r:
            return dict(await r.json())

    def _write_cabinet_config(self, cloud_keys: list[str]) -> None:
        assert self.link is not None
        d = self.work / "cabinet"
        d.mkdir(exist_ok=True)
        keys = ", ".join(json.dumps(k) for k in cloud_keys)
        (self.work / "cabinet.toml").write_text(
            f'[cabinet]\nid = "{CABINET_ID}"\ndata_dir = "{d}"\nslots = {SLOTS}\nbackup_interval_s = 3600\n\n'
            f'[bus]\nurl = "serial://{self.work / "ttySIM"}"\nslots_per_board = 4\ntimeout_s = 0.2\n'
            "poll_interval_s = 0.25\n\n"
            f'[locks]\npin_factory = "cabinetsim"\nsim_address = "{self.sim_info["gpio"]}"\npulse_s = 0.05\n'
            "jam_timeout_s = 0.8\n\n"
            "[rent]\nmin_soc = 10\neject_timeout_s = 4\npass_clock_skew_s = 5\n\n"
            "[health]\ninterval_s = 3600\n\n"
            f'[sync]\nbroker_host = "127.0.0.1"\nbroker_port = {self.link.port}\ntls = false\n'
            f"telemetry_interval_s = 5\nbatch_max_events = 20\nwindow = 2\ncloud_keys = [{keys}]\n\n"
            f'[web]\nhost = "127.0.0.1"\nport = {self.ports["web"]}\n'
        )

    async def start_cabinet(self) -> None:
        if self.cabinet is None:
            argv = [sys.executable, "-m", "tests.chaos.cabinet_main", "run", "--config",
                    str(self.work / "cabinet.toml")]  # fmt: skip
            self.cabinet = Proc("cabinet", argv, self.work, {})
        await self.cabinet.start()
        await poll(self._cabinet_up, 60, "the cabinet's local API")

    async def _cabinet_up(self) -> bool:
        self._check(self.cabinet)
        assert self.http is not None
        async with self.http.get(self.cabinet_url + "/api/slots") as r:
            return r.status == 200

    @staticmethod
    def _check(p: Proc | None) -> bool:
        if p is not None and (why := p.died()):
            raise RuntimeError(why)
        return False

    # --- reading the two sides ----------------------------------------------------------

    def cabinet_seqs(self) -> tuple[int, int]:
        """(last seq, acked seq) read straight from the ledger file (read-only, WAL)."""
        import sqlite3

        conn = sqlite3.connect(f"file:{self.ledger_path}?mode=ro", uri=True, timeout=5)
        try:
            last = conn.execute("SELECT COALESCE(MAX(seq), 0) FROM events").fetchone()[0]
            acked = conn.execute("SELECT acked_seq FROM sync_state WHERE id = 1").fetchone()[0]
        finally:
            conn.close()
        return int(last), int(acked)

    async def cloud_applied_seq(self) -> int:
        c = await self.call("GET", f"/api/fleet/cabinets/{CABINET_ID}", self.operator_token)
        return int(c["applied_seq"] or 0)

    async def cloud_events(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        while True:
            after = out[-1]["seq"] if out else 0
            page = await self.call(
                "GET",
                f"/api/fleet/cabinets/{CABINET_ID}/events?after={after}&limit=5000",
                self.operator_token,
            )
            out += page
            if len(page) < 5000:
                return out


class ApiFailure(RuntimeError):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
