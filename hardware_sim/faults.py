"""Faults the simulator can inject, and scenario files that schedule them.

A fault has a kind, a target (a battery by serial number or by the slot it sits in, a slot,
or a slot board by unit id) and a few parameters. A scenario file (TOML or JSON) lists
faults with the sim time at which they start (and optionally end)::

    [[fault]]
    at = 60                 # sim seconds after start
    kind = "internal_short"
    slot = 3                # the battery in slot 3 at that moment
    leak_ma = 20
    growth_ma_per_h = 40

    [[fault]]
    at = 10
    clear_at = 70
    kind = "silent_board"
    board = 2

JSON uses the same keys: ``{"fault": [{"at": 60, "kind": ..., ...}]}``.
"""

from __future__ import annotations

import json
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class ScenarioError(ValueError):
    """A scenario file or fault description is wrong; the message says where and why."""


@dataclass(frozen=True)
class Param:
    """One parameter of a fault kind: type, bounds, default and meaning."""

    type: type
    default: Any
    low: float | None = None
    high: float | None = None
    help: str = ""


@dataclass(frozen=True)
class FaultSpec:
    """What a fault kind applies to and which parameters it takes."""

    scope: str  # "battery" | "slot" | "board"
    help: str
    params: dict[str, Param] = field(default_factory=dict)


FAULT_KINDS: dict[str, FaultSpec] = {
    "accelerated_ageing": FaultSpec(
        "battery",
        "resistance grows and capacity fades faster",
        {"factor": Param(float, 20.0, 1.0, 1000.0, "ageing speed multiplier")},
    ),
    "internal_short": FaultSpec(
        "battery",
        "soft internal short: a leak current that grows and heats the pack",
        {
            "leak_ma": Param(float, 20.0, 0.0, 5000.0, "leak current at injection, mA"),
            "growth_ma_per_h": Param(float, 20.0, 0.0, 100000.0, "leak growth, mA per sim hour"),
        },
    ),
    "cell_failure": FaultSpec(
        "battery",
        "sudden capacity loss",
        {"capacity_left": Param(float, 0.5, 0.01, 1.0, "fraction of capacity that remains")},
    ),
    "charge_failure": FaultSpec("battery", "the pack takes no charge current"),
    "contact_resistance": FaultSpec(
        "slot",
        "rising contact resistance between slot and pack",
        {
            "ohm": Param(float, 0.15, 0.0, 10.0, "extra resistance at injection, ohm"),
            "growth_ohm_per_h": Param(float, 0.0, 0.0, 100.0, "growth, ohm per sim hour"),
        },
    ),
    "lock_jam": FaultSpec("slot", "the latch does not open when the lock is energised"),
    "stuck_seat": FaultSpec(
        "slot",
        "the seat switch reads a fixed value whatever the pack does",
        {"seated": Param(bool, True, help="the value the switch is stuck at")},
    ),
    "silent_board": FaultSpec("board", "the slot board answers nothing"),
    "garbled_replies": FaultSpec(
        "board",
        "replies carry a bad CRC (RTU) or a broken header (TCP)",
        {"probability": Param(float, 1.0, 0.0, 1.0, "share of replies garbled")},
    ),
    "slow_replies": FaultSpec(
        "board",
        "replies come late (longer than a sane client timeout)",
        {"delay_s": Param(float, 0.5, 0.0, 30.0, "reply delay, real seconds")},
    ),
}

TARGET_KEYS = ("battery", "slot", "board")


@dataclass(frozen=True)
class Fault:
    """One fault: kind, target and parameters (validated)."""

    kind: str
    slot: int | None = None
    battery: str | None = None
    board: int | None = None
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def scope(self) -> str:
        """'battery', 'slot' or 'board'."""
        return FAULT_KINDS[self.kind].scope

    def target(self) -> str:
        """Human-readable target, e.g. 'slot 3' or 'battery PB00A1B2'."""
        if self.battery is not None:
            return f"battery {self.battery}"
        if self.slot is not None:
            return f"slot {self.slot}"
        return f"board {self.board}"

    def to_dict(self) -> dict[str, Any]:
        """The fault as the control API and scenario files spell it."""
        d: dict[str, Any] = {"kind": self.kind}
        for key in TARGET_KEYS:
            if getattr(self, key) is not None:
                d[key] = getattr(self, key)
        d.update(self.params)
        return d


@dataclass(frozen=True)
class ScheduledFault:
    """A fault from a scenario file, with when it starts (and ends) in sim seconds."""

    at: float
    fault: Fault
    clear_at: float | None = None
    where: str = ""  # "f.toml line 7" for messages


def parse_fault(
    raw: dict[str, Any], where: str = "fault", slots: int | None = None, boards: int | None = None
) -> Fault:
    """Validate one fault description (a dict from JSON/TOML/the control API) into a :class:`Fault`.

    ``slots``/``boards`` (when given) bound the slot and board numbers.
    """
    if not isinstance(raw, dict):
        raise ScenarioError(f"{where}: a fault must be a table/object, not {type(raw).__name__}")
    kind = raw.get("kind")
    if kind is None:
        raise ScenarioError(f"{where}: missing key 'kind' (one of {', '.join(FAULT_KINDS)})")
    if kind not in FAULT_KINDS:
        raise ScenarioError(
            f"{where}: key 'kind': unknown fault kind {kind!r} (one of {', '.join(FAULT_KINDS)})"
        )
    spec = FAULT_KINDS[kind]
    allowed = {"kind", "at", "clear_at", *TARGET_KEYS, *spec.params}
    for key in raw:
        if key not in allowed:
            raise ScenarioError(
                f"{where}: key {key!r} is not used by {kind!r} (allowed: {', '.join(sorted(allowed))})"
            )
    targets = {k: raw[k] for k in TARGET_KEYS if k in raw}
    scope_targets = {"battery": ("battery", "slot"), "slot": ("slot",), "board": ("board",)}[spec.scope]
    if len(targets) != 1 or next(iter(targets)) not in scope_targets:
        raise ScenarioError(
            f"{where}: {kind!r} needs exactly one of {' or '.join(repr(t) for t in scope_targets)}"
        )
    battery = targets.get("battery")
    if battery is not None and (not isinstance(battery, str) or not battery or len(battery) > 8):
        raise ScenarioError(
            f"{where}: key 'battery' must be a serial number of 1..8 characters, not {battery!r}"
        )
    slot = _bounded_int(targets, "slot", slots, where)
    board = _bounded_int(targets, "board", boards, where)
    params: dict[str, Any] = {}
    for name, p in spec.params.items():
        value = raw.get(name, p.default)
        if p.type is bool:
            if not isinstance(value, bool):
                raise ScenarioError(f"{where}: key {name!r} must be true or false, not {value!r}")
        else:
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ScenarioError(f"{where}: key {name!r} must be a number, not {value!r}")
            value = float(value)
            if (p.low is not None and value < p.low) or (p.high is not None and value > p.high):
                raise ScenarioError(
                    f"{where}: key {name!r}: {value:g} is outside {p.low:g}..{p.high:g} ({p.help})"
                )
        params[name] = value
    return Fault(kind=kind, slot=slot, battery=battery, board=board, params=params)


def _bounded_int(targets: dict[str, Any], key: str, high: int | None, where: str) -> int | None:
    if key not in targets:
        return None
    v = targets[key]
    if isinstance(v, bool) or not isinstance(v, int):
        raise ScenarioError(f"{where}: key {key!r} must be an integer, not {v!r}")
    if v < 1 or (high is not None and v > high):
        raise ScenarioError(f"{where}: key {key!r}: {v} is outside 1..{high if high is not None else 'N'}")
    return v


def load_scenario(
    path: str | Path, slots: int | None = None, boards: int | None = None
) -> list[ScheduledFault]:
    """Read and validate a scenario file (.toml or .json); faults sorted by start time."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ScenarioError(f"{path}: cannot read scenario file: {e.strerror}") from e
    return parse_scenario(
        text,
        name=str(path),
        fmt="json" if path.suffix.lower() == ".json" else "toml",
        slots=slots,
        boards=boards,
    )


def parse_scenario(
    text: str, name: str = "scenario", fmt: str = "toml", slots: int | None = None, boards: int | None = None
) -> list[ScheduledFault]:
    """Parse scenario text; errors name the file, the line (TOML) and the key."""
    lines: list[int] = []
    try:
        if fmt == "json":
            data = json.loads(text)
        else:
            data = tomllib.loads(text)
            lines = [
                i + 1 for i, line in enumerate(text.splitlines()) if re.match(r"\s*\[\[\s*fault\s*\]\]", line)
            ]
    except json.JSONDecodeError as e:
        raise ScenarioError(f"{name} line {e.lineno}: invalid JSON: {e.msg}") from e
    except tomllib.TOMLDecodeError as e:
        raise ScenarioError(f"{name}: invalid TOML: {e}") from e
    if not isinstance(data, dict):
        raise ScenarioError(f"{name}: the top level must be a table/object with a 'fault' list")
    unknown = set(data) - {"fault"}
    if unknown:
        raise ScenarioError(
            f"{name}: unknown top-level key(s) {', '.join(sorted(unknown))}; expected only 'fault'"
        )
    raw_faults = data.get("fault", [])
    if not isinstance(raw_faults, list):
        raise ScenarioError(f"{name}: 'fault' must be a list ([[fault]] tables in TOML)")
    out = []
    for i, raw in enumerate(raw_faults):
        where = f"{name} line {lines[i]} (fault #{i + 1})" if i < len(lines) else f"{name} fault #{i + 1}"
        fault = parse_fault(raw, where, slots, boards)
        at = _time(raw, "at", where, required=True)
        clear_at = _time(raw, "clear_at", where, required=False)
        assert at is not None
        if clear_at is not None and clear_at <= at:
            raise ScenarioError(f"{where}: key 'clear_at' ({clear_at:g}) must be later than 'at' ({at:g})")
        out.append(ScheduledFault(at=at, fault=fault, clear_at=clear_at, where=where))
    return sorted(out, key=lambda s: s.at)


def _time(raw: dict[str, Any], key: str, where: str, required: bool) -> float | None:
    if key not in raw:
        if required:
            raise ScenarioError(f"{where}: missing key {key!r} (sim seconds after start)")
        return None
    v = raw[key]
    if isinstance(v, bool) or not isinstance(v, int | float) or v < 0:
        raise ScenarioError(f"{where}: key {key!r} must be a number of sim seconds >= 0, not {v!r}")
    return float(v)
