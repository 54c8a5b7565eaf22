"""Signed commands from the cloud to one cabinet (topic ``cmd``).

Each kind declares its arguments once (``ARGS``): name, type check, required. Unknown extra
arguments are kept (a newer cloud may add optional ones) but never required by this code.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from sync.codec import WireMessage, as_int, as_map, as_text, require
from sync.config import ModelManifest, check_validity
from sync.errors import InvalidTopic, MalformedMessage
from sync.topics import validate_cabinet_id
from sync.wire import wire


class CommandKind(StrEnum):
    """What the cloud asks the cabinet to do."""

    EJECT = "eject"
    UNLOCK = "unlock"
    QUARANTINE_SLOT = "quarantine_slot"
    RELEASE_SLOT = "release_slot"
    RESTART = "restart"
    REBOOT = "reboot"
    SET_CONFIG = "set_config"
    PING = "ping"
    MODEL_UPDATE = "model_update"


def _slot(v: Any, w: str) -> Any:
    return as_int(v, w, 0, 255)


def _id(v: Any, w: str) -> Any:
    return as_text(v, w)


def _user(v: Any, w: str) -> Any:
    return as_text(v, w, 128)


def _reason(v: Any, w: str) -> Any:
    return as_text(v, w, 256)


def _manifest(v: Any, w: str) -> Any:
    ModelManifest.from_wire(v, w)
    return dict(v)


Check = Callable[[Any, str], Any]
ARGS: dict[CommandKind, dict[str, tuple[Check, bool]]] = {
    CommandKind.EJECT: {
        "rental_id": (_id, True),
        "user": (_user, True),
        "slot": (_slot, False),
        "battery": (_id, False),
    },
    CommandKind.UNLOCK: {"slot": (_slot, True), "reason": (_reason, True), "technician": (_user, True)},
    CommandKind.QUARANTINE_SLOT: {"slot": (_slot, True), "reason": (_reason, True)},
    CommandKind.RELEASE_SLOT: {"slot": (_slot, True), "reason": (_reason, False)},
    CommandKind.RESTART: {"reason": (_reason, False)},
    CommandKind.REBOOT: {"reason": (_reason, False)},
    CommandKind.SET_CONFIG: {"settings": (as_map, True)},
    CommandKind.PING: {"nonce": (_id, False)},
    CommandKind.MODEL_UPDATE: {"manifest": (_manifest, True)},
}
"""Arguments of each command kind: name -> (check, required)."""


@dataclass(frozen=True)
class Command(WireMessage):
    """One signed instruction; ``cmd_id`` deduplicates it, ``counter`` guards against replay."""

    KIND = "cmd"
    cmd_id: str
    cabinet: str
    counter: int
    issued_at: float
    expires_at: float
    kind: CommandKind
    args: Mapping[str, Any] = field(default_factory=dict, metadata=wire(empty_is_default=True))

    def __post_init__(self) -> None:
        w = f"cmd {self.cmd_id!r}"
        as_text(self.cmd_id, "cmd.cmd_id")
        try:
            validate_cabinet_id(self.cabinet)
        except InvalidTopic as err:
            raise MalformedMessage(f"{w}.cabinet: {err}") from None
        as_int(self.counter, f"{w}.counter", 1)
        i, e = check_validity(self.issued_at, self.expires_at, w)
        object.__setattr__(self, "issued_at", i)
        object.__setattr__(self, "expires_at", e)
        as_text(self.kind, f"{w}.kind", 32)
        try:
            kind = CommandKind(self.kind)
        except ValueError:
            raise MalformedMessage(f"{w}.kind: unknown command kind {self.kind!r}") from None
        object.__setattr__(self, "kind", kind)
        args = as_map(self.args, f"{w}.args")
        for name, (check, required) in ARGS[kind].items():
            if args.get(name) is None:
                require(not required, f"{w}.args.{name}: missing (needed by {kind.value})")
                args.pop(name, None)
            else:
                check(args[name], f"{w}.args.{name}")
        object.__setattr__(self, "args", args)

    @property
    def manifest(self) -> ModelManifest:
        """The model manifest of a ``model_update`` command."""
        require(
            self.kind is CommandKind.MODEL_UPDATE, f"cmd {self.cmd_id}: {self.kind.value} has no manifest"
        )
        return ModelManifest.from_wire(self.args["manifest"], "cmd.args.manifest")
