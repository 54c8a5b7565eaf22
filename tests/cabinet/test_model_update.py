"""Fault model updates from the cloud over a real broker: signed manifest, chunks, verify, swap, roll back."""

from __future__ import annotations

import asyncio
import hashlib

import pytest

from models.predictor import DEFAULT_MODEL_PATH
from sync.model_transfer import manifest_for, split
from sync.topics import Channel, topic
from sync.transport import MqttOptions, MqttTransport


@pytest.fixture
async def cloud(broker):
    t = MqttTransport(MqttOptions(host=broker.host, port=broker.port, client_id="cloud-test"))
    await t.start()
    await t.wait_connected(10)
    yield t
    await t.close()


async def send_update(rig, cloud, cloud_keys, blob: bytes, version: str, manifest=None, chunks=None) -> None:
    manifest = manifest or manifest_for(blob, version)
    cmd = cloud_keys.command("model_update", manifest=manifest.to_wire())
    await rig.cab.sync.transport.wait_connected(10)
    await cloud.publish(topic("CAB-T1", Channel.CMD), cmd, qos=1)
    await asyncio.sleep(0.2)  # the cabinet records the command before the chunks arrive
    for chunk in chunks if chunks is not None else split("CAB-T1", version, blob, 60_000):
        await cloud.publish(topic("CAB-T1", Channel.MODEL), chunk.encode(), qos=1)


async def result_of(rig) -> tuple[bool, str]:
    res = await rig.until(lambda: rig.events("command_result"), what="the command result")
    return res[-1].body["ok"], res[-1].body.get("detail", "")


async def test_good_model_is_verified_swapped_and_kept_for_the_next_start(
    make_rig, broker, cloud, cloud_keys
) -> None:
    rig = await make_rig(broker=broker)
    blob = DEFAULT_MODEL_PATH.read_bytes()
    await send_update(rig, cloud, cloud_keys, blob, "2026.11-test")
    ok, detail = await result_of(rig)
    assert ok, detail
    assert "active" in detail
    assert rig.cab.model_updater.store.current().read_bytes() == blob
    assert rig.cab.status_summary()["versions"]["model"].endswith(hashlib.sha256(blob).hexdigest()[:12])
    # what the next start loads: the stored current model, through the same Health part
    from cabinet.health import Health

    again = Health(rig.ledger, rig.cab.telemetry, str(rig.cab.model_updater.store.current()))
    await again.start()
    await again.stop()
    assert again.model_version == rig.cab.health.model_version


async def test_bad_hash_is_refused_and_the_old_model_stays(make_rig, broker, cloud, cloud_keys) -> None:
    rig = await make_rig(broker=broker)
    before = rig.cab.health.model_version
    blob = DEFAULT_MODEL_PATH.read_bytes()
    tampered = blob[:-10] + b"\0" * 10
    await send_update(rig, cloud, cloud_keys, tampered, "evil", manifest=manifest_for(blob, "evil"))
    ok, detail = await result_of(rig)
    assert not ok and "sha256" in detail
    assert rig.cab.health.model_version == before
    assert rig.cab.model_updater.store.current() is None


async def test_model_that_does_not_load_is_rolled_back(make_rig, broker, cloud, cloud_keys) -> None:
    rig = await make_rig(broker=broker)
    before = rig.cab.health.model_version
    junk = b"not an onnx model" * 100
    await send_update(rig, cloud, cloud_keys, junk, "junk")
    ok, detail = await result_of(rig)
    assert not ok and "rolled back" in detail
    assert rig.cab.health.model_version == before
    assert not list(rig.cab.model_updater.store.dir.glob("model-junk*"))


async def test_update_with_a_forged_signature_is_refused_as_a_security_event(
    make_rig, broker, cloud, cloud_keys
) -> None:
    from tests.rigs import CloudKeys

    rig = await make_rig(broker=broker)
    blob = DEFAULT_MODEL_PATH.read_bytes()
    await send_update(rig, cloud, CloudKeys(), blob, "forged")
    events = await rig.until(lambda: rig.events("security_event"), what="the security event")
    assert events[0].body["kind"] == "forged"
    assert await rig.events("command_received") == []
