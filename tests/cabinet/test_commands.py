"""Cloud commands at the cabinet: verified, recorded once, applied, result recorded; bad ones refused."""

from __future__ import annotations

import asyncio
import time

import pytest

from cabinet.commands import HANDLERS, CommandContext, CommandHandler, on
from sync.commands import CommandKind


def handler(rig) -> CommandHandler:
    return CommandHandler(
        rig.ledger,
        rig.controller,
        rig.cab.trust,
        request_exit=rig.cab.request_exit,
        models=rig.cab.model_updater,
    )


def test_every_command_kind_has_exactly_one_handler() -> None:
    assert set(HANDLERS) == set(CommandKind), set(CommandKind) ^ set(HANDLERS)
    with pytest.raises(RuntimeError, match="two handlers for ping"):

        @on(CommandKind.PING)
        async def another_ping(ctx: CommandContext, cmd) -> tuple[bool, str]:
            return True, ""


async def results(rig) -> list[tuple[bool, str]]:
    return [(e.body["ok"], e.body.get("detail", "")) for e in await rig.events("command_result")]


async def test_eject_command_rents_once_even_when_delivered_twice(rig, cloud_keys) -> None:
    h = handler(rig)
    payload = cloud_keys.command("eject", rental_id="R-C1", user="u7")
    task = asyncio.create_task(h.handle(payload))
    await rig.until(lambda: rig.simcab.slot(1).presented, what="slot 1 to present")
    rig.simcab.take(1)
    assert (await asyncio.wait_for(task, 5)).kind.value == "eject"
    assert await h.handle(payload) is None  # redelivery: nothing happens
    assert [e.body["rental_id"] for e in await rig.events("rental_started")] == ["R-C1"]
    assert [ok for ok, _ in await results(rig)] == [True]
    assert len(await rig.events("command_received")) == 1


async def test_forged_expired_misaddressed_and_replayed_commands_are_refused(rig, cloud_keys) -> None:
    from tests.rigs import CloudKeys

    h = handler(rig)
    ok = cloud_keys.command("ping", counter=100)
    assert await h.handle(ok) is not None
    refused = [
        CloudKeys().command("ping"),  # another key under the same key id
        cloud_keys.command("ping", issued_at=time.time() - 7200, ttl=60),  # expired long ago
        cloud_keys.command("ping", cabinet="CAB-OTHER"),  # for another cabinet
        cloud_keys.command("ping", counter=10),  # far below the replay window's high-water mark
    ]
    for payload in refused:
        assert await h.handle(payload) is None
    kinds = [e.body["kind"] for e in await rig.events("security_event")]
    assert kinds == ["forged", "expired", "misaddressed", "replayed"]
    assert len(await rig.events("command_received")) == 1


async def test_set_config_checks_bounds_and_applies_good_values(rig, cloud_keys) -> None:
    h = handler(rig)
    await h.handle(cloud_keys.command("set_config", settings={"rent.min_soc": -5}))
    await h.handle(cloud_keys.command("set_config", settings={"web.port": 1}))
    await h.handle(cloud_keys.command("set_config", settings={"rent.min_soc": 70}))
    got = await results(rig)
    assert got[0][0] is False and "rent.min_soc = -5 is below the minimum 0" in got[0][1]
    assert got[1][0] is False and "not settable at run time" in got[1][1]
    assert got[2] == (True, "applied rent.min_soc=70")
    assert rig.controller.settings.min_soc == 70
