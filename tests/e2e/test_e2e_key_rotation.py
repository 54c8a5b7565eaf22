"""Key rotation end to end: the cloud rotates twice, the cabinet restarts in between and follows the chain.

Real Mosquitto, the cloud app with its fleet link signing from its data directory
(``KeyStoreSigner``, rotated by ``cabinet-cloud keys rotate`` / ``retire`` as an operator runs
them), a real cabinet on the simulator. After each rotation the cloud re-signs the configs
(signed by the old key, announcing both), then retires the old key; a command or pass signed by
a retired key is refused, one by the current key accepted, across restarts.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

import pytest

from cloud.cli import main as cloud_cli
from cloud.fleet.keys import KeyStoreSigner, load_key, load_or_create_key
from sync.commands import Command
from sync.passes import OfflinePass
from sync.signing import Signer
from tests.e2e.conftest import CABINET, Cloud, until
from tests.rigs import CloudKeys, Rig

pytestmark = pytest.mark.timeout(240)


@pytest.fixture
def cloud_keys(tmp_path: Path) -> CloudKeys:
    """The e2e fixtures' cloud key, but kept and rotated in a cloud data directory."""
    keys = CloudKeys()
    data = tmp_path / "cloud-keys"
    load_or_create_key(data)
    keys.signer = KeyStoreSigner(data)
    keys.config_entry = load_key(data).config_line
    keys.data_dir = data  # type: ignore[attr-defined]
    return keys


def snapshot(signer: KeyStoreSigner) -> Signer:
    """The current key as a plain signer (its private file is deleted when it is retired)."""
    return Signer(signer.private_key, signer.key_id)


def keys_cli(*argv: str, data: Path) -> None:
    assert cloud_cli(["keys", *argv, "--data-dir", str(data)]) == 0


async def trusted(site: Rig, want: set[str]) -> None:
    await until(lambda: set(site.cab.trust.keyring) == want, 30, what=f"the cabinet to trust exactly {want}")


async def command_ok(cloud: Cloud) -> None:
    """An operator command, signed by the cloud's current key, runs on the cabinet."""
    r = await cloud.client.post(
        f"/api/fleet/cabinets/{CABINET}/commands",
        json={"kind": "ping", "args": {"nonce": "n"}},
        headers=cloud.auth(),
    )
    assert r.status == 202, await r.text()
    cmd_id = (await r.json())["cmd_id"]

    async def done() -> bool:
        c = await (await cloud.client.get(f"/api/fleet/commands/{cmd_id}", headers=cloud.auth())).json()
        return c["status"] == "ok"

    await until(done, 30, what="the current key's command to run")


async def refused_command(cloud: Cloud, site: Rig, old: Signer) -> None:
    """A command signed by a retired key reaches the cabinet and is refused as an unknown key."""
    now = time.time()
    cmd_id = f"OLD-{uuid.uuid4().hex[:8]}"
    payload = old.sign(Command(cmd_id, CABINET, 10_000_000, now, now + 60, "ping", {}))
    await cloud.ctx.fleet.transport.publish(f"cab/v1/{CABINET}/cmd", payload, qos=1)

    async def refusal() -> bool:
        evs = await site.ledger.events_after(0, limit=100_000, max_bytes=1 << 30)
        return any(e.type == "security_event" and old.key_id in e.body.get("detail", "") for e in evs)

    await until(refusal, 30, what=f"the command signed by {old.key_id} to be refused")
    assert await site.ledger.command_seen(cmd_id) is None


def a_pass(signer: Signer) -> str:
    now = time.time()
    return signer.sign_pass(OfflinePass(f"P-{uuid.uuid4().hex[:8]}", "u-pass", now, now + 3600, 1))


async def test_two_rotations_with_a_restart_between_leave_only_the_current_key_trusted(
    broker, make_cloud, make_site, cloud_keys
) -> None:
    data = cloud_keys.data_dir  # type: ignore[attr-defined]
    cloud = await make_cloud(broker)
    site = await make_site(broker)
    k1 = snapshot(cloud_keys.signer)
    await until(lambda: site.cab.trust.config is not None, 30, what="the first signed config")

    # rotation 1: k2 signs commands at once; configs by k1 announce both until retire
    keys_cli("rotate", "--overlap", "7d", data=data)
    k2 = snapshot(cloud_keys.signer)
    await trusted(site, {k1.key_id, k2.key_id})
    await command_ok(cloud)
    keys_cli("retire", data=data)
    await trusted(site, {k2.key_id})

    await site.restart()  # before the fix: back to the bootstrap k1, and k2 refused
    assert set(site.cab.trust.keyring) == {k2.key_id}
    await site.cab.sync.transport.wait_connected(20)
    await command_ok(cloud)
    await refused_command(cloud, site, k1)
    out = await site.cab.passes.submit(a_pass(k1))
    assert (out.status, out.reason) == ("refused", "pass_unknown_key")

    # rotation 2, then a restart again
    keys_cli("rotate", "--overlap", "7d", data=data)
    k3 = snapshot(cloud_keys.signer)
    await trusted(site, {k2.key_id, k3.key_id})
    keys_cli("retire", data=data)
    await trusted(site, {k3.key_id})
    await site.restart()
    assert set(site.cab.trust.keyring) == {k3.key_id}
    await site.cab.sync.transport.wait_connected(20)
    await command_ok(cloud)
    for old in (k1, k2):
        await refused_command(cloud, site, old)
        out = await site.cab.passes.submit(a_pass(old))
        assert (out.status, out.reason) == ("refused", "pass_unknown_key")

    task = asyncio.create_task(site.cab.passes.submit(a_pass(k3)))  # the current key's pass rents
    sim = site.sim.cabinet
    slot = await until(lambda: next((s.number for s in sim.slots if s.presented), None), 20, what="a slot")
    sim.take(slot)
    assert (await asyncio.wait_for(task, 10)).status == "started"
