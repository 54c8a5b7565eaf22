"""What the fleet must be told, cabinet side: conditions recorded in the ledger on each
transition only (``cabinet/conditions.py``), on the real simulator.

- a slot board unplugged (the simulator's ``silent_board``) for hours of bus time: ONE
  ``board_down`` however many retries fail, ONE ``board_up`` when it answers again;
- the cabinet filling up (returns refused) and running out of rentable packs: ``stock_changed``
  once per change;
- a short-lived client certificate: ``cert_expiring`` once, ``cert_renewed`` when replaced;
- what is recorded is read back at start, so a restart repeats nothing.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from dataclasses import replace
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from cabinet.conditions import TYPES, ConditionWatch, recorded_conditions
from hardware_sim.faults import Fault

SPEED = 3600.0  # bus seconds per real second


def watch_of(rig) -> ConditionWatch:
    assert rig.cab.conditions is not None
    return rig.cab.conditions


async def conditions(rig) -> list[tuple[str, dict]]:
    return [(e.type, e.body) for e in await rig.events() if e.type in TYPES]


def write_cert(path: Path, days: float) -> float:
    """A self-signed certificate valid for ``days`` from now, as the cabinet's client cert; its notAfter."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "CAB-T1")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=days))
        .sign(key, hashes.SHA256())
    )
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert.not_valid_after_utc.timestamp()


async def test_a_board_down_for_hours_is_recorded_once_and_its_return_once(fault_rig) -> None:
    rig = await fault_rig()
    bus = rig.cab.bus
    t0 = time.monotonic()
    bus._clock = lambda: t0 + (time.monotonic() - t0) * SPEED  # hours of backoff in seconds
    assert await conditions(rig) == []

    fault = rig.simcab.inject(Fault("silent_board", board=2))
    await rig.until(lambda: bus.health()[1].isolated, what="board 2 to be isolated")
    requests_then = bus.health()[1].requests
    await rig.until(lambda: bus.health()[1].requests >= requests_then + 5, what="five failed retries")
    await asyncio.sleep(3 * rig.cab.config["bus.poll_interval_s"])  # a few more rounds of the watch
    found = await conditions(rig)
    assert [(t, b["board"], b["first_slot"], b["last_slot"]) for t, b in found] == [("board_down", 2, 5, 8)]
    assert found[0][1]["detail"]  # why: the bus's last error

    rig.simcab.clear(fault)
    await rig.until(lambda: bus.health()[1].online, timeout=10, what="board 2 to answer again")

    async def up() -> bool:
        return [t for t, _ in await conditions(rig)] == ["board_down", "board_up"]

    await rig.until(up, what="one board_up")
    await asyncio.sleep(3 * rig.cab.config["bus.poll_interval_s"])
    assert [t for t, _ in await conditions(rig)] == ["board_down", "board_up"]
    assert await rig.ledger.run(recorded_conditions) == (set(), (False, False), set())


async def test_full_and_empty_are_recorded_on_each_change_only(fault_rig, cloud_keys) -> None:
    rig = await fault_rig(alerts={"stock_hold_s": 0})
    watch = watch_of(rig)
    await rig.until(lambda: rig.controller.scans > 4, what="the inventory scans")
    await watch.check_stock()
    assert await conditions(rig) == []  # 3 rentable packs, 4 free slots: nothing to tell

    for slot in (4, 6, 7, 8):  # every slot taken: a renter could not return a pack here
        rig.simcab.insert(slot, sn=f"PB00000{slot}", soc=0.9)
    await rig.settle()

    async def changes() -> list[dict]:
        return [b for t, b in await conditions(rig) if t == "stock_changed"]

    await rig.until(lambda: _len_at_least(changes, 1), what="stock_changed: full")
    first = (await changes())[0]  # the new packs may still be being confirmed: rentable 3..7
    assert (first["empty"], first["full"], first["free"]) == (False, True, 0) and first["rentable"] >= 3

    task = asyncio.create_task(rig.cab.passes.submit(cloud_keys.offline_pass("P-1")))  # a rental frees a slot
    await rig.until(lambda: any(s.presented for s in rig.simcab.slots), what="a slot to present")
    rig.simcab.take(next(s.number for s in rig.simcab.slots if s.presented))
    assert (await asyncio.wait_for(task, 10)).status == "started"
    await rig.until(lambda: _len_at_least(changes, 2), what="stock_changed: not full")
    second = (await changes())[1]
    assert (second["empty"], second["full"], second["free"]) == (False, False, 1)

    rig.controller.settings = replace(rig.controller.settings, min_soc=100)  # nothing rentable any more
    await rig.until(lambda: _len_at_least(changes, 3), what="stock_changed: empty")
    assert (await changes())[2] == {"empty": True, "full": False, "rentable": 0, "free": 1}
    await asyncio.sleep(5 * rig.cab.config["bus.poll_interval_s"])
    assert len(await changes()) == 3  # no repeat while it stays so

    fresh = ConditionWatch(
        rig.cab.config, rig.ledger, rig.cab.bus, rig.controller
    )  # a restart reads the recorded state back: nothing repeated
    await fresh.start()
    try:
        assert fresh.stock == (True, False)
        await fresh.check_stock()
        assert len(await changes()) == 3
    finally:
        await fresh.stop()


async def _len_at_least(fn, n: int) -> bool:
    return len(await fn()) >= n


async def test_a_short_lived_client_certificate_is_recorded_once_and_its_renewal(fault_rig, tmp_path) -> None:
    cert = tmp_path / "client.pem"
    not_after = write_cert(cert, days=2)
    rig = await fault_rig(
        sync={"cert_file": str(cert)}, alerts={"cert_warn_days": 30, "cert_check_interval_s": 1}
    )

    async def certs() -> list[tuple[str, dict]]:
        return [(t, b) for t, b in await conditions(rig) if t.startswith("cert_")]

    await rig.until(lambda: _len_at_least(certs, 1), what="cert_expiring")
    ((t, body),) = await certs()
    assert t == "cert_expiring" and body["cert"] == "client"
    assert abs(body["not_after"] - not_after) < 1 and 1.9 < body["days_left"] <= 2.0
    await asyncio.sleep(2.5)  # two more checks: nothing repeated
    assert len(await certs()) == 1

    renewed = write_cert(cert, days=400)  # the technician installed a new certificate
    await rig.until(lambda: _len_at_least(certs, 2), what="cert_renewed")
    assert (await certs())[1] == ("cert_renewed", {"cert": "client", "not_after": renewed})
    assert await rig.ledger.run(recorded_conditions) == (set(), (False, False), set())
