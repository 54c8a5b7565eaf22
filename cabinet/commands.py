"""Cloud commands on the cabinet: verify, deduplicate, record, apply, record the result.

Verification (signature, addressing, expiry, replay counter) and ``command_received`` are
written in one ledger transaction, so a command is either fully accepted and recorded or not
at all; its result is a ledger event too, so it travels to the cloud on the ordered stream.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from cabinet.controller import Controller, RentRequest
from cabinet.ledger import Ledger, LedgerUnwritable
from cabinet.trust import Trust
from sync.commands import Command, CommandKind
from sync.errors import Duplicate, ProtocolError, SecurityRejection

log = logging.getLogger(__name__)


@dataclass
class CommandHandler:
    """Applies verified commands exactly once (by cmd id) and records what happened."""

    ledger: Any  # AsyncLedger
    controller: Controller
    trust: Trust
    hooks: dict[str, Callable[[Command], Awaitable[tuple[bool, str]]]] = field(default_factory=dict)

    async def handle(self, payload: bytes) -> Command | None:
        """Handle one ``cmd`` message; returns the command when it was accepted and applied."""

        def accept(led: Ledger) -> Command | None:
            with led.atomic():
                cmd = self.trust.verifier(led).verify_command(payload)
                if led.command_seen(cmd.cmd_id) is not None:
                    return None
                led.record("command_received", cmd_id=cmd.cmd_id, kind=cmd.kind.value, args=dict(cmd.args))
                return cmd

        try:
            cmd = await self.ledger.run(accept)
        except LedgerUnwritable as e:
            # card full or read-only: not accepted, so not acted on; the cloud's eject times out
            # (and its hold is released) or it sends the command again later
            log.error("command not accepted, storage not writable: %s", e)
            return None
        except Duplicate:
            return None  # at-least-once redelivery of something already accepted
        except SecurityRejection as e:
            await self.ledger.record("security_event", kind=type(e).__name__.lower(), detail=e.reason[:2000])
            log.warning("command refused: %s", e.reason)
            return None
        except ProtocolError as e:
            await self.ledger.record("security_event", kind="malformed_command", detail=e.reason[:2000])
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
            await self.ledger.record("command_result", cmd_id=cmd.cmd_id, ok=ok, detail=detail[:2000])
        except LedgerUnwritable as e:  # only when the card filled up completely meanwhile
            log.error("command %s result not recorded (%s): %s", cmd.cmd_id, detail, e)
        log.info("command %s (%s): %s: %s", cmd.cmd_id, cmd.kind.value, "ok" if ok else "failed", detail)
        return cmd

    async def apply(self, cmd: Command) -> tuple[bool, str]:
        a = cmd.args
        match cmd.kind:
            case CommandKind.EJECT:
                out = await self.controller.rent(
                    RentRequest(rental_id=a["rental_id"], source="cloud", user=a["user"], cmd_id=cmd.cmd_id)
                )
                return out.ok, f"{out.status}: {out.reason or f'slot {out.slot} battery {out.sn}'}"
            case CommandKind.UNLOCK:
                result = await self.controller.unlock(a["slot"], a["reason"], a["technician"])
                return result != "jammed", result
            case CommandKind.QUARANTINE_SLOT:
                await self.controller.quarantine_slot(a["slot"], a["reason"], "cloud")
                return True, "quarantined"
            case CommandKind.RELEASE_SLOT:
                await self.controller.release_slot(
                    a["slot"], a.get("reason", "released by the cloud"), "cloud"
                )
                return True, "released"
            case CommandKind.PING:
                return True, f"pong {a.get('nonce', '')}".strip()
        hook = self.hooks.get(cmd.kind.value)
        if hook is None:
            return False, f"{cmd.kind.value} is not supported by this cabinet"
        return await hook(cmd)
