"""Fleet condition alerts, cloud side (``cloud/fleet/alerting.py``): raised once while a condition
lasts, cleared when it ends, visible and acknowledgeable in the operator API.

- cabinet events through the real ingest: board_down/board_up, stock_changed (empty/full),
  cert_expiring/cert_renewed; a second raise while open only moves last_seen;
- a silent cabinet: the last will published by a real Mosquitto (the cabinet's link closes),
  cleared by its next live state; and the no-news timeout of the periodic check;
- the cloud's own certificate and CRL close to expiry (short-lived test files);
- point alerts (security events, quarantines) keep working and end with the acknowledgement.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
import uuid

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from cloud.app import CTX, create_app
from cloud.config import CloudConfig
from cloud.fleet import alerting
from cloud.fleet.ingest import EventApplier
from cloud.fleet.view import acknowledge_alert, alerts, apply_state, list_cabinets
from cloud.pricing import Tariff
from sync.messages import EventBatch, State, WireEvent
from sync.topics import Channel, topic
from sync.transport import MqttOptions, MqttTransport, Will
from tests.conftest import until

PW = "correct horse battery"
BOOT = "6f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9"


def ev(seq: int, type_: str, **body) -> WireEvent:
    return WireEvent(seq, str(uuid.uuid4()), type_, 1_789_963_200.0 + seq, 100.0 + seq, BOOT, body)


def batch(cab: str, events: list[WireEvent]) -> EventBatch:
    return EventBatch(cab, tuple(events))


def condition(engine, kind: str, cabinet: str = "CAB-A", **kw) -> list[dict]:
    return [a for a in alerts(engine, cabinet, open_only=False, **kw) if a["kind"] == kind]


def test_board_down_is_raised_once_and_cleared_by_board_up(world) -> None:
    applier = EventApplier(world.engine, world.service, world.clock)
    down = ev(1, "board_down", board=2, first_slot=5, last_slot=8, detail="read: no reply within 0.2 s")
    applier.apply_batch(batch("CAB-A", [down]))
    applier.apply_batch(batch("CAB-A", [down]))  # redelivered
    world.clock.advance(60)
    again = ev(2, "board_down", board=2, first_slot=5, last_slot=8, detail="still")  # e.g. a replayed ledger
    applier.apply_batch(batch("CAB-A", [again]))
    (a,) = condition(world.engine, "board_down")
    assert (a["key"], a["subject"], a["open"], a["seq"]) == ("CAB-A:board_down:board 2", "board 2", True, 1)
    assert a["last_seen"] == a["at"] + 60 and "slots 5-8" in a["detail"]

    world.clock.advance(60)
    applier.apply_batch(batch("CAB-A", [ev(3, "board_up", board=2, detail="answers again")]))
    (a,) = condition(world.engine, "board_down")
    assert a["open"] is False and a["cleared_at"] == world.clock()
    assert condition(world.engine, "board_down", state="open") == []
    assert [x["id"] for x in condition(world.engine, "board_down", state="cleared")] == [a["id"]]

    applier.apply_batch(batch("CAB-A", [ev(4, "board_down", board=2, first_slot=5, last_slot=8)]))
    assert [x["open"] for x in condition(world.engine, "board_down")] == [True, False]  # a new episode


def test_empty_and_full_follow_stock_changed_and_certificates_their_events(world) -> None:
    applier = EventApplier(world.engine, world.service, world.clock)
    applier.apply_batch(batch("CAB-A", [
        ev(1, "stock_changed", empty=False, full=True, rentable=7, free=0),
        ev(2, "cert_expiring", cert="client", not_after=world.clock() + 2 * 86400, days_left=2.0),
    ]))  # fmt: skip
    assert [a["open"] for a in condition(world.engine, "cabinet_full")] == [True]
    assert condition(world.engine, "cabinet_empty") == []
    (cert,) = condition(world.engine, "cert_expiring")
    assert cert["subject"] == "client certificate" and "2.0 days left" in cert["detail"]

    applier.apply_batch(batch("CAB-A", [
        ev(3, "stock_changed", empty=True, full=False, rentable=0, free=1),
        ev(4, "cert_renewed", cert="client", not_after=world.clock() + 400 * 86400),
    ]))  # fmt: skip
    assert [a["open"] for a in condition(world.engine, "cabinet_full")] == [False]
    assert [a["open"] for a in condition(world.engine, "cabinet_empty")] == [True]
    assert [a["open"] for a in condition(world.engine, "cert_expiring")] == [False]


def test_point_alerts_still_raise_once_and_end_with_the_acknowledgement(world) -> None:
    applier = EventApplier(world.engine, world.service, world.clock)
    events = [ev(1, "security_event", kind="forged", detail="cmd x"), ev(2, "slot_quarantined", slot=2,
              reason="returned hot", by="cabinet")]  # fmt: skip
    applier.apply_batch(batch("CAB-A", events))
    applier.apply_batch(batch("CAB-A", events))
    found = alerts(world.engine, "CAB-A")
    assert sorted((a["kind"], a["key"], a["open"]) for a in found) == [
        ("forged", None, True),
        ("slot_quarantined", None, True),
    ]
    assert acknowledge_alert(world.engine, found[0]["id"], world.clock())
    assert len(alerts(world.engine, "CAB-A", state="open")) == 1  # acknowledged point alert: ended


def test_the_last_will_raises_offline_and_a_live_state_clears_it_and_so_does_silence(world) -> None:
    apply_state(world.engine, State("CAB-A", True, world.clock()), world.clock())
    assert alerting.check_silent(world.engine, world.clock() + 599, 600) == []
    apply_state(world.engine, State("CAB-A", False, world.clock()), world.clock())  # the will
    apply_state(world.engine, State("CAB-A", False, world.clock()), world.clock() + 5)  # retained again
    (a,) = condition(world.engine, "cabinet_offline")
    assert a["open"] and a["severity"] == "critical" and "last will" in a["detail"]
    assert a["last_seen"] == a["at"] + 5
    apply_state(world.engine, State("CAB-A", True, world.clock()), world.clock() + 10)
    assert [x["open"] for x in condition(world.engine, "cabinet_offline")] == [False]

    # no will (a cut cable the broker has not noticed): nothing heard for alert_offline_after_s
    later = world.clock() + 10 + 601
    assert alerting.check_silent(world.engine, later, 600) == ["CAB-A"]
    assert alerting.check_silent(world.engine, later + 60, 600) == ["CAB-A"]  # still: the same alert
    offline = condition(world.engine, "cabinet_offline", state="open")
    assert len(offline) == 1 and "nothing heard" in offline[0]["detail"]
    assert offline[0]["last_seen"] == later + 60
    assert {c["id"]: c["open_alerts"] for c in list_cabinets(world.engine, later)}["CAB-A"] == 1
    apply_state(world.engine, State("CAB-A", True, later + 70), later + 70)
    assert condition(world.engine, "cabinet_offline", state="open") == []


def short_cert(path, days: float) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fleet CA")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=days)).sign(key, hashes.SHA256())
    )  # fmt: skip
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    crl = (
        x509.CertificateRevocationListBuilder().issuer_name(name).last_update(now)
        .next_update(now + dt.timedelta(days=days)).sign(key, hashes.SHA256())
    )  # fmt: skip
    path.with_name("crl.pem").write_bytes(crl.public_bytes(serialization.Encoding.PEM))


def test_the_clouds_ca_and_crl_close_to_expiry_are_raised_once_and_cleared_when_renewed(
    engine, tmp_path
) -> None:
    pki = tmp_path / "pki"
    pki.mkdir()
    short_cert(pki / "ca.pem", days=5)
    cfg = CloudConfig(data_dir=str(tmp_path), alert_cert_warn_days=30)
    files = alerting.pki_files(cfg)
    assert [s for s, _ in files] == ["provisioning CA", "CRL"]
    now = time.time()
    assert alerting.check_pki(engine, files, now, 30) == ["provisioning CA", "CRL"]
    assert alerting.check_pki(engine, files, now + 60, 30) == ["provisioning CA", "CRL"]
    found = alerts(engine, "*", state="open")
    assert sorted((a["kind"], a["subject"]) for a in found) == [
        ("cert_expiring", "provisioning CA"),
        ("crl_expiring", "CRL"),
    ]
    assert all("days left" in a["detail"] and a["last_seen"] == now + 60 for a in found)
    short_cert(pki / "ca.pem", days=400)  # renewed (and the CRL re-signed)
    assert alerting.check_pki(engine, files, now + 120, 30) == []
    assert alerts(engine, "*", state="open") == []


@pytest.fixture
async def linked(aiohttp_client, db_url, clock, tmp_path, broker):
    """The cloud app with a fleet link to a real Mosquitto (real clock: the link stamps arrivals)."""
    cfg = CloudConfig(database=db_url, scrypt_n=2**10, data_dir=str(tmp_path / "cloud"), broker_host=broker.host,
                      broker_port=broker.port, mqtt_tls=False, mqtt_client_id="cloud-t", alert_check_interval_s=1,
                      alert_offline_after_s=3600)  # fmt: skip
    app = create_app(cfg, background=False)
    ctx = app[CTX]
    m = ctx.catalog.create_merchant("Cafe", 3000, "EUR", "UTC")
    ctx.catalog.create_tariff("t", Tariff(currency="EUR", price_per_period=250), m.id, default=True)
    ctx.catalog.add_cabinet("CAB-A", ctx.catalog.create_venue(m.id, "V"))
    ctx.accounts.register("ops@example.com", PW, role="operator")
    client = await aiohttp_client(app)
    await ctx.fleet.wait_connected()
    r = await client.post("/api/login", json={"email": "ops@example.com", "password": PW})
    client.ops = {"Authorization": f"Bearer {(await r.json())['token']}"}
    return client


def cabinet_link(broker) -> MqttTransport:
    t = MqttTransport(MqttOptions(host=broker.host, port=broker.port, client_id="CAB-A", keepalive_s=5))
    t.set_will(Will(topic("CAB-A", Channel.STATE), State("CAB-A", False, time.time()).encode(), 1, True))
    return t


async def test_a_real_last_will_is_one_alert_in_the_api_acknowledged_and_cleared_when_heard(
    linked, broker
) -> None:
    async def offline(**params) -> list[dict]:
        q = "&".join(f"{k}={v}" for k, v in {"cabinet": "CAB-A", **params}.items())
        r = await linked.get(f"/api/fleet/alerts?{q}", headers=linked.ops)
        assert r.status == 200
        return [a for a in await r.json() if a["kind"] == "cabinet_offline"]

    cab = cabinet_link(broker)
    await cab.start()
    await cab.wait_connected(10)
    await cab.publish(topic("CAB-A", Channel.STATE), State("CAB-A", True, time.time()).encode(), 1, True)
    await cab.close()  # the link ends: the broker publishes the will (retained)
    found = await until(lambda: offline(), what="the cabinet_offline alert")
    assert len(found) == 1 and found[0]["open"] and "last will" in found[0]["detail"]

    r = await linked.post(f"/api/fleet/alerts/{found[0]['id']}/ack", headers=linked.ops)
    assert r.status == 200
    assert await offline() == []  # the default list: unacknowledged
    (still,) = await offline(state="open")  # acknowledged, but the cabinet is still away
    assert still["acknowledged_at"] is not None
    assert (await linked.get("/api/fleet/alerts?state=nope", headers=linked.ops)).status == 400

    cab = cabinet_link(broker)  # back
    await cab.start()
    await cab.wait_connected(10)
    await cab.publish(topic("CAB-A", Channel.STATE), State("CAB-A", True, time.time()).encode(), 1, True)
    try:
        await until(lambda: _none_open(offline), what="the alert to clear")
    finally:
        await cab.close()
    (done,) = await offline(state="cleared")
    assert done["id"] == found[0]["id"] and done["cleared_at"] >= done["at"]
    await asyncio.sleep(0)


async def _none_open(offline) -> bool:
    return await offline(state="open") == []
