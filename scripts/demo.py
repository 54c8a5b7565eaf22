"""The demo: a broker, the cloud and simulated cabinets that sync, with the URLs to open.

Run through ``./dev demo`` (which sets everything up first). Everything runs as separate
processes, as on real machines: Mosquitto, ``cabinet-cloud serve``, and per cabinet a
``cabinet-sim run`` (the hardware) and a ``cabinet run`` (the controller, talking to the
simulator over a pseudo-terminal (Modbus RTU) and the GPIO link). State lives in ``var/demo/``.

Options: ``--cabinets N`` (default 2), ``--slots N`` (default 12), ``--check`` (start, wait until
every part is healthy, print the URLs and stop: used by the test suite), ``--fresh`` (forget the
previous run's state), ``--provider sandbox|stripe-fake|wechat-fake|alipay-fake`` (the payment
provider: the built-in sandbox, or Stripe, WeChat Pay Score or Alipay through their real SDKs
against the local fakes of the tests, which then run in this process and post their signed
notifications to the cloud; keys are made at start and given to the cloud by its environment).

WeChat Pay Score and Alipay take CNY (the demo's merchant is then in Asia/Shanghai) and need the
renter's confirmation in their apps before a battery is ejected: the demo plays it through the
fake (``scripts/demo_providers.py``), in the ``--check`` journey and for ``app.py rent``, which
hands the demo what the phone would open.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from demo_app import place_venues, qr_text, sms_sign_in
from demo_providers import CHOICES, Rail, Refused, rail

from sync.amounts import format_duration, format_money

ROOT = Path(__file__).resolve().parent.parent
SIM_SPEED = 60  # sim seconds per real second: charging and ageing you can watch
#: The first cabinet's slot 2 pack gets a growing soft short a minute (sim time) after start; the
#: cabinet quarantines it a few real minutes later, before it reaches 3 %/h self-discharge.
SCENARIO = """\
[[fault]]
at = 60
kind = "internal_short"
slot = 2
leak_ma = 90
growth_ma_per_h = 10
"""
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(check, timeout: float, what: str, procs: list[subprocess.Popen] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for p in procs or []:
            if p.poll() is not None:
                raise SystemExit(f"demo: {what}: a process exited with {p.returncode} (see var/demo/*.log)")
        try:
            if check():
                return
        except (OSError, urllib.error.URLError, ValueError):
            pass
        time.sleep(0.2)
    raise SystemExit(f"demo: timed out after {timeout:.0f} s waiting for {what} (see var/demo/*.log)")


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def get_json(url: str) -> object:
    with urllib.request.urlopen(url, timeout=2) as r:
        return json.loads(r.read())


@dataclass
class Demo:
    var: Path
    cabinets: int
    slots: int
    provider: str = "sandbox"  # sandbox | stripe-fake | wechat-fake | alipay-fake
    rail: Rail = field(default_factory=Rail)  # the provider, and its fake running in this process
    procs: list[subprocess.Popen] = field(default_factory=list)
    urls: list[tuple[str, str]] = field(default_factory=list)
    cabs: list[dict] = field(default_factory=list)

    def spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> subprocess.Popen:
        log = open(self.var / f"{name}.log", "ab")
        p = subprocess.Popen(
            argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            cwd=self.var,
            start_new_session=True,
        )
        self.procs.append(p)
        return p

    def stop(self) -> None:
        self.rail.stop()
        for p in reversed(self.procs):
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        for p in reversed(self.procs):
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)

    def start_broker(self) -> int:
        mosquitto = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        port = free_port()
        conf = self.var / "mosquitto.conf"
        conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
        p = self.spawn("mosquitto", [mosquitto, "-c", str(conf)])
        wait_until(lambda: port_open(port), 10, "the MQTT broker", [p])
        self.urls.append(("MQTT broker (demo only: anonymous, loopback)", f"mqtt://127.0.0.1:{port}"))
        return port

    def start_cloud(self, broker_port: int) -> tuple[int, list[str]]:
        """Provision the cloud's signing key and start the cloud; returns its port and trusted key lines."""
        port = free_port()
        cloud_dir = self.var / "cloud"
        cloud_dir.mkdir(exist_ok=True)
        conf = cloud_dir / "cloud.toml"
        # the fake (if any) starts here; its keys reach the cloud by its environment, never the file
        payments = self.rail.start(port)
        env = self.rail.env
        self.urls += self.rail.urls
        conf.write_text(
            "[cloud]\n"
            f'database = "{cloud_dir / "cloud.db"}"\n'
            f"port = {port}\n"
            'mode = "demo"\n' + cloud_mqtt_settings(broker_port, cloud_dir) + payments
        )
        p = self.spawn("cloud", [str(BIN / "cabinet-cloud"), "serve", "--config", str(conf)], env)
        wait_until(lambda: get_json(f"http://127.0.0.1:{port}/api/health"), 60, "the cloud", [p])
        self.urls.append(("Cloud API (OpenAPI document)", f"http://127.0.0.1:{port}/api/openapi.json"))
        self.urls.append(("Renter app (phone; kiosk QR codes open it)", f"http://127.0.0.1:{port}/app/"))
        self.cloud_url, self.cloud_conf = f"http://127.0.0.1:{port}", conf
        return port, cloud_key_lines(cloud_dir)

    def bootstrap_cloud(self) -> None:
        """An operator, a merchant with a venue and a tariff, the cabinets, and a renter with a sandbox
        card or the provider's saved payment method.

        Passwords are generated here and kept only in var/demo/app-session.json (mode 0600).
        """
        sys.path.insert(0, str(ROOT / "scripts"))
        from app import ApiError, call, load_session, save_session

        path = self.var / "app-session.json"
        session = load_session(path)
        base = self.cloud_url
        session["cloud"] = base
        ops = session.get("operator_email", "ops@demo.invalid")
        ops_pw = session.setdefault("operator_password", secrets.token_urlsafe(12))
        try:
            session["operator_token"] = call(
                base, "POST", "/api/login", body={"email": ops, "password": ops_pw}
            )["token"]
        except ApiError:
            subprocess.run(
                [
                    str(BIN / "cabinet-cloud"),
                    "create-user",
                    "--config",
                    str(self.cloud_conf),
                    ops,
                    "--operator",
                    "--password-stdin",
                ],
                input=ops_pw + "\n",
                text=True,
                check=True,
                capture_output=True,
                timeout=60,
            )
            session["operator_email"] = ops
            session["operator_token"] = call(
                base, "POST", "/api/login", body={"email": ops, "password": ops_pw}
            )["token"]
        op = session["operator_token"]
        if "merchant_id" not in session:
            m = call(
                base,
                "POST",
                "/api/merchants",
                op,
                {
                    "name": "Cafe Aurora (demo)",
                    "revenue_share_bp": 3000,
                    "currency": self.rail.merchant["currency"],
                    "timezone": self.rail.merchant["timezone"],
                },
            )
            session["merchant_id"] = m["id"]
            v = call(base, "POST", f"/api/merchants/{m['id']}/venues", op, {"name": "Aurora Station Hall"})
            session["venue_id"] = v["id"]
            t = call(
                base,
                "POST",
                "/api/tariffs",
                op,
                {
                    "name": "demo hourly",
                    "merchant_id": m["id"],
                    "default": True,
                    "tariff": dict(self.rail.tariff),
                },
            )
            session["tariff_id"] = t["id"]
        venue_ids = place_venues(call, base, op, session, self.rail.merchant["timezone"])  # two places nearby
        for i, c in enumerate(self.cabs):
            if c["id"] not in session.setdefault("cabinets", []):
                venue = venue_ids[min(i, len(venue_ids) - 1)]
                call(
                    base,
                    "POST",
                    "/api/cabinets",
                    op,
                    {"id": c["id"], "venue_id": venue, "tariff_id": session["tariff_id"]},
                )
                session["cabinets"].append(c["id"])
        renter = session.setdefault("renter_email", "renter@demo.invalid")
        pw = session.setdefault("renter_password", secrets.token_urlsafe(12))
        try:
            session["token"] = call(base, "POST", "/api/login", body={"email": renter, "password": pw})[
                "token"
            ]
        except ApiError:
            call(base, "POST", "/api/users", body={"email": renter, "password": pw})
            session["token"] = call(base, "POST", "/api/login", body={"email": renter, "password": pw})[
                "token"
            ]
            if self.rail.provider == "sandbox":
                call(base, "PUT", "/api/me/card", session["token"], {"card_token": "tok_ok"})
        if self.rail.provider != "sandbox" and not session.get("payment_method"):
            token, label = self.rail.renter_method(session)  # what the phone's provider flow gave
            call(base, "POST", "/api/me/payment-methods", session["token"],
                 {"provider": self.rail.provider, "token": token, "label": label})  # fmt: skip
            session["payment_method"] = label
        if self.rail.provider != "sandbox":
            call(base, "PUT", f"/api/merchants/{session['merchant_id']}/payments", op,
                 {"providers": [self.rail.provider], "payout_account": self.rail.payout_account()})  # fmt: skip
        if self.rail.needs_confirmation:  # app.py rent hands the demo what the phone would open
            session["phone_dir"] = str(self.phone_dir())
        try:  # the renter's phone signs in too: the code is in the cloud's log (sms_backend = log)
            session["token"] = sms_sign_in(call, base, session, self.var / "cloud.log")
        except (ApiError, RuntimeError) as e:
            print(f"demo: phone sign-in skipped: {e}")
        save_session(path, session)

    def phone_dir(self) -> Path:
        """Where ``app.py rent`` leaves the provider's ``client_action`` for the demo to play."""
        d = self.var / "phone"
        d.mkdir(mode=0o700, exist_ok=True)
        return d

    def answer_phone(self) -> None:
        """Play the renter's confirmation of each rental ``app.py rent`` left awaiting it."""
        sys.path.insert(0, str(ROOT / "scripts"))
        from app import load_session

        for f in sorted(self.phone_dir().glob("*.json")):
            try:
                answer = json.loads(f.read_text())
                f.unlink()
                print(f"\nrenter: rental {answer['rental_id']} awaits confirmation in the provider's app")
                print(self.rail.confirm(answer, load_session(self.var / "app-session.json")), flush=True)
            except (OSError, ValueError, KeyError, TypeError, Refused) as e:
                print(f"demo: cannot play the confirmation in {f.name}: {e}", flush=True)

    def start_cabinet(self, n: int, broker_port: int, cloud_keys: list[str]) -> None:
        cab_id = f"CAB-{n:04d}"
        d = self.var / cab_id
        d.mkdir(exist_ok=True)
        control, gpio, web_port, tech_port = free_port(), free_port(), free_port(), free_port()
        cert, key = self.cabinet_certificate(cab_id)
        pty = d / "ttySIM"
        pty.unlink(missing_ok=True)
        argv = [
            str(BIN / "cabinet-sim"), "run", "--slots", str(self.slots), "--slots-per-board", "4",
            "--seed", str(n), "--speed", str(SIM_SPEED), "--pty", str(pty), "--control", str(control),
            "--gpio", str(gpio),
        ]  # fmt: skip
        if n == 1:  # one pack of the first cabinet develops a soft internal short: watch Health catch it
            scenario = d / "scenario.toml"
            scenario.write_text(SCENARIO)
            argv += ["--scenario", str(scenario)]
        sim = self.spawn(f"{cab_id}-sim", argv)
        wait_until(
            lambda: pty.exists() and port_open(control) and port_open(gpio), 20, f"simulator {cab_id}", [sim]
        )
        conf = d / "cabinet.toml"
        keys = ", ".join(json.dumps(k) for k in cloud_keys)
        conf.write_text(
            f'[cabinet]\nid = "{cab_id}"\ndata_dir = "{d / "data"}"\nslots = {self.slots}\n\n'
            f'[bus]\nurl = "serial://{pty}"\nslots_per_board = 4\ntimeout_s = 0.2\npoll_interval_s = 1.0\n\n'
            f'[locks]\npin_factory = "cabinetsim"\nsim_address = "127.0.0.1:{gpio}"\n\n'
            "[health]\ninterval_s = 20\n\n[charging]\npower_budget_w = 200\n\n"
            f'[sync]\nbroker_host = "127.0.0.1"\nbroker_port = {broker_port}\ntls = false\ntelemetry_interval_s = 10\n'
            f"cloud_keys = [{keys}]\n\n"
            f'[web]\nhost = "127.0.0.1"\nport = {web_port}\ntech_host = "127.0.0.1"\ntech_port = {tech_port}\n'
            f'tls_cert_file = "{cert}"\ntls_key_file = "{key}"\n\n'
            f'[kiosk]\napp_url = "{self.cloud_url}/app/c/{{cabinet}}"\n'  # the QR code opens the app there
        )
        cab = self.spawn(
            cab_id,
            [str(BIN / "cabinet"), "run", "--config", str(conf)],
        )
        wait_until(lambda: (d / "data" / "ledger.db").exists(), 30, f"cabinet {cab_id}", [cab, sim])
        self.cabs.append({"id": cab_id, "control": control, "web": web_port, "proc": cab})
        self.urls += [
            (f"{cab_id} kiosk", f"http://127.0.0.1:{web_port}/kiosk"),
            (
                f"{cab_id} technician UI (HTTPS; demo CA {self.var / 'ca' / 'ca.pem'})",
                f"https://127.0.0.1:{tech_port}/tech",
            ),
            (f"{cab_id} simulator control API", f"http://127.0.0.1:{control}/state"),
        ]

    def cabinet_certificate(self, cab_id: str) -> tuple[Path, Path]:
        """The cabinet's certificate from a demo fleet CA (deploy/pki.py, as provisioning issues it):
        the technician UI is served over HTTPS with it."""
        import importlib.util

        spec = importlib.util.spec_from_file_location("deploy_pki", ROOT / "deploy" / "pki.py")
        assert spec and spec.loader
        pki = importlib.util.module_from_spec(spec)
        sys.modules.setdefault("deploy_pki", pki)
        spec.loader.exec_module(pki)
        root = self.var / "ca"
        ca = pki.Pki(root) if (root / "ca.pem").exists() else pki.Pki.init(root, name="Demo fleet CA")
        issued = self.var / "ca" / "issued" / "cabinets" / cab_id
        if not (issued / "client.pem").exists():
            ca.issue_cabinet(cab_id)
        return issued / "client.pem", issued / "client.key"

    def renter_journey(self) -> None:
        """What a person does with the demo, end to end through every process: rent in the app at the
        first cabinet (and confirm in the provider's app, played by its fake, when it asks), take the
        battery, return it at the last cabinet, and see the fee captured."""
        sys.path.insert(0, str(ROOT / "scripts"))
        from app import call, load_session

        session = load_session(self.var / "app-session.json")
        base, token = session["cloud"], session["token"]
        first, last = self.cabs[0], self.cabs[-1]
        sim_first, sim_last = f"http://127.0.0.1:{first['control']}", f"http://127.0.0.1:{last['control']}"

        def post(url: str, body: dict) -> object:
            req = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
            with urllib.request.urlopen(req, timeout=5) as r:
                return json.loads(r.read())

        def rentals() -> list[dict]:
            return call(base, "GET", "/api/me/rentals", token)

        # a battery must be known and charged enough before one can be rented
        wait_until(
            lambda: any(
                s.get("rentable") for s in get_json(f"http://127.0.0.1:{first['web']}/api/slots")["slots"]
            ),
            120,
            "a rentable battery",
            self.procs,
        )
        rental = call(base, "POST", "/api/rentals", token, {"cabinet_id": first["id"]})
        hold = format_money(rental["hold_amount"], rental["currency"])
        print(f"\nrenter: rental {rental['rental_id']} requested, hold {hold} ({rental['status']})")
        if rental["status"] == "awaiting_confirmation":  # nothing is ejected before the provider confirms
            what = ", ".join(sorted(rental["client_action"]))
            print(f"renter: the phone opens {self.rail.app} with the client_action ({what})")
            print(self.rail.confirm(rental, session))
        presented: list[dict] = []

        def find_presented() -> bool:
            presented[:] = [s for s in get_json(f"{sim_first}/state")["slots"] if s["presented"]]
            return bool(presented)

        wait_until(find_presented, 60, "the first cabinet to eject a battery", self.procs)
        slot, sn = presented[0]["slot"], presented[0]["battery"]["sn"]
        post(f"{sim_first}/take", {"slot": slot})
        print(f"renter: took battery {sn} from {first['id']} slot {slot}")
        wait_until(lambda: rentals()[0]["status"] == "active", 60, "the rental to become active", self.procs)
        empty = next(s["slot"] for s in get_json(f"{sim_last}/state")["slots"] if s["battery"] is None)
        post(f"{sim_last}/insert", {"slot": empty, "sn": sn})
        print(f"renter: returned {sn} into {last['id']} slot {empty}")

        def charged() -> bool:  # the cloud closes the rental, then settles its payment (none -> paid | due)
            r = rentals()[0]
            return r["status"] == "closed" and r["payment_status"] != "none"

        wait_until(charged, 90, "the rental to be closed and charged", self.procs)
        r = rentals()[0]
        print(
            f"renter: rental closed after {format_duration(r['duration_s'] or 0)}: fee {format_money(r['fee'], r['currency'])}, "
            f"captured {format_money(r['captured'], r['currency'])}, payment {r['payment_status']}"
        )
        line = self.rail.paid(r)
        if line:
            print(line)

    def table(self) -> str:
        lines = []
        for c in self.cabs:
            try:
                state = get_json(f"http://127.0.0.1:{c['control']}/state")
            except (OSError, urllib.error.URLError, ValueError) as e:
                lines.append(f"{c['id']}: simulator not answering ({e})")
                continue
            known = {}
            try:
                known = {s["slot"]: s for s in get_json(f"http://127.0.0.1:{c['web']}/api/slots")["slots"]}
            except (OSError, urllib.error.URLError, ValueError, KeyError, TypeError):
                pass
            lines.append(f"{c['id']}  slot  battery    SoC   temp   state")
            for s in state["slots"]:
                b = s["battery"]
                if b is None:
                    lines.append(f"        {s['slot']:>4}  {'-':<9}")
                    continue
                mark = "charging" if s["charge_enabled"] else ("presented" if s["presented"] else "idle")
                if s["slot"] in known and known[s["slot"]].get("state"):
                    mark = known[s["slot"]]["state"]
                lines.append(
                    f"        {s['slot']:>4}  {b['sn']:<9} {b['gauge_soc'] * 100:4.0f}%  {b['temp_c']:5.1f}C  {mark}"
                )
        return "\n".join(lines)


def cloud_mqtt_settings(broker_port: int, cloud_dir: Path) -> str:
    """The cloud's broker and signing-key settings, if this version of the cloud has them."""
    from cloud.config import CloudConfig

    known = set(CloudConfig.__dataclass_fields__)
    out = ""
    if "broker_port" in known:
        out += f'broker_host = "127.0.0.1"\nbroker_port = {broker_port}\n'
    if "mqtt_tls" in known:
        out += "mqtt_tls = false\n"
    if "data_dir" in known:
        out += f'data_dir = "{cloud_dir}"\n'
    return out


def cloud_key_lines(cloud_dir: Path) -> list[str]:
    """The 'keyid:base64' lines a cabinet trusts: the cloud's signing key, made once per cloud."""
    try:
        out = subprocess.run(
            [str(BIN / "cabinet-cloud"), "keys", "--data-dir", str(cloud_dir)],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout
        return [line.strip() for line in out.splitlines() if ":" in line and " " not in line.strip()]
    except (subprocess.CalledProcessError, FileNotFoundError, subprocess.TimeoutExpired):
        return []


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="./dev demo", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--cabinets", type=int, default=2, help="simulated cabinets (default 2)")
    ap.add_argument("--slots", type=int, default=12, help="slots per cabinet, 8..48 (default 12)")
    ap.add_argument("--check", action="store_true", help="start, check every part is up, stop")
    ap.add_argument("--fresh", action="store_true", help="forget the state of the previous run")
    ap.add_argument("--var", default=str(ROOT / "var" / "demo"), help="state directory (default var/demo)")
    ap.add_argument(
        "--provider",
        choices=CHOICES,
        default="sandbox",
        help="payment provider: the built-in sandbox (default), or Stripe's, WeChat Pay Score's or "
        "Alipay's SDK against the local fake of the tests (WeChat and Alipay: CNY; the demo plays the "
        "renter's confirmation in their apps)",
    )
    args = ap.parse_args(argv)
    var = Path(args.var)
    if args.fresh and var.exists():
        shutil.rmtree(var)
    var.mkdir(parents=True, exist_ok=True)
    if args.provider != "sandbox" and not args.fresh and (var / "app-session.json").exists():
        shutil.rmtree(var)  # the previous run's accounts belong to another provider (its fake is gone)
        var.mkdir(parents=True)
    demo = Demo(var, args.cabinets, args.slots, args.provider, rail(args.provider))
    # SIGTERM (kill, timeout, a closed terminal) stops every child too, like Ctrl-C
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    signal.signal(signal.SIGHUP, lambda *_: sys.exit(0))
    try:
        print("demo: starting the broker, the cloud and", args.cabinets, "simulated cabinets ...", flush=True)
        broker = demo.start_broker()
        _, keys = demo.start_cloud(broker)
        for n in range(1, args.cabinets + 1):
            demo.start_cabinet(n, broker, keys)
        demo.bootstrap_cloud()
        print("\nOpen:")
        for what, url in demo.urls:
            print(f"  {what:<40} {url}")
        print(
            f"\nThe renter app, {demo.cloud_url}/app/ (on this machine; the kiosks' QR codes open its cabinet pages):"
        )
        print(qr_text(f"{demo.cloud_url}/app/"), end="")
        first, py = demo.cabs[0], f"{BIN / 'python'} {ROOT / 'scripts' / 'app.py'}"
        sim = f"{BIN / 'cabinet-sim'}"
        confirm = (
            f"  (the renter confirms in {demo.rail.app} first: this demo plays it through the fake)\n"
            if demo.rail.needs_confirmation
            else ""
        )
        print(
            f"\nPlay the renter (a demo account with {demo.rail.title} is logged in):\n"
            f"  {py} rent {first['id']}          # the cabinet ejects a battery: take it in the simulator:\n"
            f"{confirm}"
            f"  {sim} take --url http://127.0.0.1:{first['control']} SLOT\n"
            f"  {sim} insert --url http://127.0.0.1:{demo.cabs[-1]['control']} --sn SN SLOT   # return it anywhere\n"
            f"  {py} rentals                   # the fee, captured when the return reached the cloud\n"
            f"  {py} pass                      # an offline pass: scan it at a kiosk (paste its text)\n"
            "Play the operator:\n"
            f"  {py} --operator fleet | alerts | events {first['id']} | money-check\n"
            f"Logs: {var}/*.log    Accounts and tokens: {var}/app-session.json    Stop: Ctrl-C\n",
            flush=True,
        )
        if args.check:
            wait_until(lambda: "PB" in demo.table(), 30, "the slot table", demo.procs)
            print(demo.table())
            demo.renter_journey()
            print("\ndemo: every part is up; a renter rented, took, returned and paid")
            return 0
        while True:
            print(f"\n--- {time.strftime('%H:%M:%S')} ---\n{demo.table()}", flush=True)
            for c in demo.cabs:
                if c["proc"].poll() is not None:
                    print(
                        f"demo: cabinet {c['id']} exited with {c['proc'].returncode}; see {var}/{c['id']}.log"
                    )
            for _ in range(10):  # the table every 5 s; a rental app.py left awaiting confirmation at once
                if demo.rail.needs_confirmation:
                    demo.answer_phone()
                time.sleep(0.5)
    except KeyboardInterrupt:
        return 0
    except Refused as e:
        print(f"demo: {e}", file=sys.stderr)
        return 1
    finally:
        print("demo: stopping ...", flush=True)
        demo.stop()


if __name__ == "__main__":
    sys.exit(main())
