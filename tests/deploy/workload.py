"""What the cabinet process does with its libraries, run as one script (under tests/deploy/sandbox.py).

Each step uses a library the way the cabinet does: ONNX inference, numpy, Ed25519, TLS-capable
MQTT, SQLite in WAL with synchronous=FULL, a serial port (a pty) configured with termios,
an aiohttp server and client, gpiozero with mock pins, CBOR. It prints one JSON line with the
step names that passed and exits non-zero at the first step that fails.

Usage: ``python workload.py BROKER_HOST BROKER_PORT WORK_DIR MODEL.onnx...``
"""

from __future__ import annotations

import asyncio
import importlib
import json
import os
import sys
import threading
from pathlib import Path


def step_numpy() -> None:
    import numpy as np

    a = np.random.default_rng(1).standard_normal((128, 128))
    inv = np.linalg.inv(a @ a.T + np.eye(128))
    assert np.isfinite(inv).all()


def step_onnxruntime(models: list[str]) -> None:
    import numpy as np
    import onnxruntime as ort

    for path in models:
        for threads in (1, 0):  # the cabinet's small-footprint setting, and onnxruntime's default pool
            so = ort.SessionOptions()
            so.intra_op_num_threads = threads
            so.inter_op_num_threads = 1 if threads else 0
            so.enable_cpu_mem_arena = threads == 0
            sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
            inp = sess.get_inputs()[0]
            width = inp.shape[1] if isinstance(inp.shape[1], int) else 4
            x = np.random.default_rng(2).standard_normal((256, width)).astype(np.float32)
            out = sess.run(None, {inp.name: x})
            assert out and len(out[0]) == 256, f"{path}: unexpected output {out!r}"


def step_crypto() -> None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    sig = key.sign(b"eject slot 3")
    key.public_key().verify(sig, b"eject slot 3")


def step_sqlite(work: Path) -> None:
    import sqlite_utils

    db = sqlite_utils.Database(work / "ledger.db")
    db.enable_wal()
    db.execute("PRAGMA synchronous=FULL")
    with db.atomic():
        db["events"].insert_all(({"seq": i, "type": "tick"} for i in range(100)), pk="seq")
    assert db["events"].count == 100


def step_serial() -> None:
    import serial

    master, slave = os.openpty()
    port = serial.Serial(os.ttyname(slave), baudrate=115200, timeout=1)
    port.write(b"\x01\x03\x00\x00\x00\x08")
    assert os.read(master, 6) == b"\x01\x03\x00\x00\x00\x08"
    os.write(master, b"pong")
    assert port.read(4) == b"pong"
    port.close()
    os.close(master)
    os.close(slave)


def step_mqtt(host: str, port: int) -> None:
    import paho.mqtt.client as mqtt

    got = threading.Event()
    subscribed = threading.Event()
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="sandbox-workload")
    c.on_connect = lambda cl, *_: cl.subscribe("cab/v1/SANDBOX/cmd", qos=1)
    c.on_subscribe = lambda *_: subscribed.set()
    c.on_message = lambda *_: got.set()
    c.connect(host, port)
    c.loop_start()
    try:
        assert subscribed.wait(10), "no SUBACK"
        c.publish("cab/v1/SANDBOX/cmd", b"x", qos=1)
        assert got.wait(10), "own message did not come back"
    finally:
        c.disconnect()
        c.loop_stop()


async def _web_round_trip() -> None:
    import aiohttp
    from aiohttp import web

    app = web.Application()
    app.router.add_get("/health", lambda _r: web.json_response({"ok": True}))
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        async with aiohttp.ClientSession() as s, s.get(f"http://localhost:{port}/health") as r:
            assert (await r.json()) == {"ok": True}
    finally:
        await runner.cleanup()


def step_web() -> None:
    asyncio.run(_web_round_trip())


def step_gpio() -> None:
    from gpiozero import Button, OutputDevice
    from gpiozero.pins.mock import MockFactory

    factory = MockFactory()
    lock = OutputDevice(17, pin_factory=factory)
    seat = Button(27, pin_factory=factory)
    lock.on()
    factory.pin(27).drive_low()
    assert lock.value == 1 and seat.is_pressed
    factory.reset()


def step_cbor() -> None:
    import cbor2

    msg = {"seq": 7, "type": "rent", "body": b"\x00\x01"}
    assert cbor2.loads(cbor2.dumps(msg, canonical=True)) == msg


def step_project_imports() -> None:
    for module in ("cabinet.cli", "cabinet.config", "drivers.register_map", "sync"):
        importlib.import_module(module)


def main(argv: list[str]) -> int:
    host, port, work, models = argv[0], int(argv[1]), Path(argv[2]), argv[3:]
    steps = [
        ("numpy", step_numpy),
        ("onnxruntime", lambda: step_onnxruntime(models)),
        ("crypto", step_crypto),
        ("sqlite", lambda: step_sqlite(work)),
        ("serial", step_serial),
        ("mqtt", lambda: step_mqtt(host, port)),
        ("web", step_web),
        ("gpio", step_gpio),
        ("cbor", step_cbor),
        ("project_imports", step_project_imports),
    ]
    passed: list[str] = []
    for name, fn in steps:
        try:
            fn()
        except BaseException as e:
            print(json.dumps({"passed": passed, "failed": name, "error": repr(e)}))
            return 1
        passed.append(name)
    print(json.dumps({"passed": passed}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
