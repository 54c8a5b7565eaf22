"""Cloud commands on the cabinet: verify, deduplicate, record, apply, record the result.

Each :class:`~sync.commands.CommandKind` has exactly one handler, registered with
``@on(CommandKind.X)`` in :data:`HANDLERS` (``tests/cabinet/test_commands.py`` checks that every
kind has one). A handler gets a :class:`CommandContext` with only what commands may act on.

Verification (signature, addressing, expiry, replay counter) and ``command_received`` are
written in one ledger transaction, so a command is either fully accepted and recorded or not
at all; its result is a ledger event too, so it travels to the cloud on the ordered stream.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any, Protocol

from cabinet.config import ConfigError, check_value
from cabinet.controller import Controller, RentRequest
from cabinet.ledger import Ledger, LedgerUnwritable
from cabinet.trust import Trust
from sync.commands import Command, CommandKind
from sync.errors import Duplicate, ProtocolError, SecurityRejection
from sync.events import EventType

log = logging.getLogger(__name__)


class ModelApplier(Protocol):
    """What ``model_update`` needs (cabinet.model_update.ModelUpdater)."""

    async def apply(self, cmd: Command) -> tuple[bool, str]: ...


@dataclass
class CommandContext:
    """What a command handler may act on."""

    controller: Controller
    request_exit: Callable[[int, str], None] | None = None  # restart: Cabinet.request_exit
    models: ModelApplier | None = None  # model_update


Result = tuple[bool, str]
Handler = Callable[[CommandContext, Command], Awaitable[Result]]

#: One handler per command kind.
HANDLERS: dict[CommandKind, Handler] = {}


def on(kind: CommandKind) -> Callable[[Handler], Handler]:
    """Register the handler of ``kind`` (one per kind)."""

    def register(fn: Handler) -> Handler:
        if kind in HANDLERS:
            raise RuntimeError(f"two handlers for {kind.value}: {HANDLERS[kind].__name__} and {fn.__name__}")
        HANDLERS[kind] = fn
        return fn

    return register


@on(CommandKind.EJECT)
async def eject(ctx: CommandContext, cmd: Command) -> Result:
    a = cmd.args
    out = await ctx.controller.rent(
        RentRequest(rental_id=a["rental_id"], source="cloud", user=a["user"], cmd_id=cmd.cmd_id)
    )
    return out.ok, f"{out.status}: {out.reason or f'slot {out.slot} battery {out.sn}'}"


@on(CommandKind.UNLOCK)
async def unlock(ctx: CommandContext, cmd: Command) -> Result:
    a = cmd.args
    result = await ctx.controller.unlock(a["slot"], a["reason"], a["technician"])
    return result != "jammed", result


@on(CommandKind.QUARANTINE_SLOT)
async def quarantine_slot(ctx: CommandContext, cmd: Command) -> Result:
    await ctx.controller.quarantine_slot(cmd.args["slot"], cmd.args["reason"], "cloud")
    return True, "quarantined"


@on(CommandKind.RELEASE_SLOT)
async def release_slot(ctx: CommandContext, cmd: Command) -> Result:
    await ctx.controller.release_slot(
        cmd.args["slot"], cmd.args.get("reason", "released by the cloud"), "cloud"
    )
    return True, "released"


@on(CommandKind.PING)
async def ping(ctx: CommandContext, cmd: Command) -> Result:
    return True, f"pong {cmd.args.get('nonce', '')}".strip()


@on(CommandKind.RESTART)
async def restart(ctx: CommandContext, cmd: Command) -> Result:
    if ctx.request_exit is None:
        return False, "restart is not supported by this cabinet"
    ctx.request_exit(75, f"restart asked by the cloud: {cmd.args.get('reason', '')}")
    return True, "restarting"


@on(CommandKind.REBOOT)
async def reboot(ctx: CommandContext, cmd: Command) -> Result:
    proc = await asyncio.create_subprocess_exec(
        "systemctl", "reboot", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    out, _ = await proc.communicate()
    return (
        proc.returncode == 0,
        f"systemctl reboot: exit {proc.returncode} {out.decode(errors='replace')[:200]}",
    )


#: Settings a ``set_config`` command may change at run time (others need a config file change).
RUNTIME_SETTINGS = {"rent.min_soc": ("min_soc", int), "rent.eject_timeout_s": ("eject_timeout_s", float)}


@on(CommandKind.SET_CONFIG)
async def set_config(ctx: CommandContext, cmd: Command) -> Result:
    settings = dict(cmd.args["settings"])
    unknown = sorted(set(settings) - set(RUNTIME_SETTINGS))
    if unknown:
        return (
            False,
            f"not settable at run time: {', '.join(unknown)} (settable: {', '.join(RUNTIME_SETTINGS)})",
        )
    changes = {}
    for key, value in settings.items():
        field_name, _ = RUNTIME_SETTINGS[key]
        try:
            changes[field_name] = check_value(key, value, f"set_config {cmd.cmd_id}")
        except ConfigError as e:
            return False, str(e)
    ctx.controller.settings = replace(ctx.controller.settings, **changes)
    return True, f"applied {', '.join(f'{k}={v}' for k, v in settings.items())}"


@on(CommandKind.MODEL_UPDATE)
async def model_update(ctx: CommandContext, cmd: Command) -> Result:
    if ctx.models is None:
        return False, "model_update is not supported by this cabinet (no fault model part)"
    return await ctx.models.apply(cmd)


class CommandHandler:
    """Applies verified commands exactly once (by cmd id) and records what happened."""

    def __init__(
        self,
        ledger: Any,  # AsyncLedger
        controller: Controller,
        trust: Trust,
        *,
        request_exit: Callable[[int, str], None] | None = None,
        models: ModelApplier | None = None,
    ) -> None:
        self.ledger = ledger
        self.controller = controller
        self.trust = trust
        self.context = CommandContext(controller, request_exit, models)

    async def handle(self, payload: bytes) -> Command | None:
        """Handle one ``cmd`` message; returns the command when it was accepted and applied."""

        def accept(led: Ledger) -> Command | None:
            with led.atomic():
                cmd = self.trust.verifier(led).verify_command(payload)
                if led.command_seen(cmd.cmd_id) is not None:
                    return None
                led.record(
                    EventType.COMMAND_RECEIVED, cmd_id=cmd.cmd_id, kind=cmd.kind.value, args=dict(cmd.args)
                )
                return cmd

        try:
            cmd: Command | None = await self.ledger.run(accept)
        except LedgerUnwritable as e:
            # card full or read-only: not accepted, so not acted on; the cloud's eject times out
            # (and its hold is released) or it sends the command again later
            log.error("command not accepted, storage not writable: %s", e)
            return None
        except Duplicate:
            return None  # at-least-once redelivery of something already accepted
        except SecurityRejection as e:
            await self.ledger.record(
                EventType.SECURITY_EVENT, kind=type(e).__name__.lower(), detail=e.reason[:2000]
            )
            log.warning("command refused: %s", e.reason)
            return None
        except ProtocolError as e:
            await self.ledger.record(
                EventType.SECURITY_EVENT, kind="malformed_command", detail=e.reason[:2000]
            )
            log.warning("malformed command: %s", e.reason)
            return None
        if cmd is None:
            return None
        try:
            ok, detail = await self.apply(cmd)
        except LedgerUnwritable as e:
            ok, detail = False, f"refused: storage_unwritable ({e.reason})"
        except Exception as e:  # the result must be recorded whatever happens
            log.exception("command %s (%s) failed", cmd.cmd_id, cmd.kind.value)
            ok, detail = False, f"error: {e}"
        try:
            await self.ledger.record(EventType.COMMAND_RESULT, cmd_id=cmd.cmd_id, ok=ok, detail=detail[:2000])
        except LedgerUnwritable as e:  # only when the card filled up completely meanwhile
            log.error("command %s result not recorded (%s): %s", cmd.cmd_id, detail, e)
        log.info("command %s (%s): %s: %s", cmd.cmd_id, cmd.kind.value, "ok" if ok else "failed", detail)
        return cmd

    async def apply(self, cmd: Command) -> Result:
        handler = HANDLERS.get(cmd.kind)
        if handler is None:
            return False, f"{cmd.kind.value} is not supported by this cabinet"
        return await handler(self.context, cmd)
