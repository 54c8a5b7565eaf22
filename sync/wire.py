"""``to_wire`` / ``from_wire`` derived from a frozen dataclass's fields, for every record of the protocol.

A record declares its fields once, with their types; how a field travels is said in its
dataclass metadata (``wire(...)``), and the class checks its values in ``__post_init__`` (so a
bad value fails where it is made, on either side). Nothing is written by hand per message:

- ``to_wire(obj)``: every field under its own name, in declaration order (the encoding sorts the
  keys anyway); a ``None`` is left out where the field says ``omit_none``; enum members become
  their value, maps are copied, tuples become arrays and nested records their own ``to_wire()``;
- ``from_wire(cls, d, where)``: ``d`` must be a map; a field without a default is required (absent
  or ``None`` is "missing"); a field with a default takes it when the key is absent (with
  ``empty_is_default`` also when the value is null or empty; otherwise a null is handed on, for
  the class to accept or refuse); a field's ``check`` (a function
  returning what is wrong, or ``None``) runs here too, field by field in declaration order, so the
  first bad field is the one named; a ``strict`` class refuses keys it does not declare (event
  bodies: a typo must not vanish), the others ignore them (a newer sender may add optional ones).
  Values are handed to the class as decoded (a nested map stays a map, an array a list): its
  ``__post_init__`` checks and converts them.

Every refusal names the record and the field. The messages' exception and wording are the
class's ``WIRE_ERRORS`` (a ``WireErrors``): ``MalformedMessage("ack.cabinet: missing")`` for a
message, the ledger's wording for an event body (``sync.events``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from enum import Enum
from typing import Any, ClassVar, TypeVar

from sync.errors import MalformedMessage, ProtocolError

Check = Callable[[Any], str | None]
"""A value check: ``None`` when the value is good, else what is wrong ("must be an integer")."""

METADATA_KEY = "sync.wire"

T = TypeVar("T")


@dataclasses.dataclass(frozen=True)
class WireOptions:
    """How one dataclass field travels (its ``metadata[METADATA_KEY]``)."""

    omit_none: bool = False
    """``to_wire`` leaves the key out while the value is ``None``."""
    required: bool = False
    """Required on the wire although the dataclass gives it a default."""
    empty_is_default: bool = False
    """``from_wire``: a null or empty (falsy) value reads as the default, not only an absent key."""
    check: Check | None = None
    """Checked by ``from_wire`` (and by the class's ``__post_init__``, through ``check_fields``)."""
    cast: Callable[[Any], Any] | None = None
    """Applied to a value that passed ``check`` (e.g. text to its enum member)."""


def wire(
    *,
    omit_none: bool = False,
    required: bool = False,
    empty_is_default: bool = False,
    check: Check | None = None,
    cast: Callable[[Any], Any] | None = None,
) -> dict[str, Any]:
    """Field metadata: ``battery: str | None = field(default=None, metadata=wire(omit_none=True))``."""
    return {METADATA_KEY: WireOptions(omit_none, required, empty_is_default, check, cast)}


class WireErrors:
    """How a refusal is worded and raised; a class picks its own with ``WIRE_ERRORS``."""

    def missing(self, where: str, name: str) -> ProtocolError:
        return MalformedMessage(f"{where}.{name}: missing")

    def invalid(self, where: str, name: str, problem: str, value: Any) -> ProtocolError:
        return MalformedMessage(f"{where}.{name}: {problem} (got {value!r})")

    def unknown(self, where: str, names: list[str]) -> ProtocolError:
        return MalformedMessage(f"{where}: unknown field(s) {', '.join(names)}")

    def not_a_map(self, where: str, value: Any) -> ProtocolError:
        return MalformedMessage(f"{where}: expected a map, got {type(value).__name__}")


WIRE_ERRORS = WireErrors()


@dataclasses.dataclass(frozen=True)
class WireField:
    """One field as the codec sees it."""

    name: str
    opts: WireOptions
    required: bool
    default: Callable[[], Any] | None


@dataclasses.dataclass(frozen=True)
class WireSpec:
    """The fields of one record class, in declaration order."""

    fields: tuple[WireField, ...]
    names: frozenset[str]
    writes: tuple[tuple[str, bool], ...]
    """(name, omit_none) of each field, for ``to_wire``."""
    strict: bool
    errors: WireErrors


_NO_OPTIONS = WireOptions()


def _constant(value: Any) -> Callable[[], Any]:
    return lambda: value


_SPECS: dict[type, WireSpec] = {}


def spec(cls: type) -> WireSpec:
    """The wire view of a dataclass (computed once per class)."""
    s = _SPECS.get(cls)
    if s is None:
        s = _SPECS[cls] = _spec(cls)
    return s


def _spec(cls: type) -> WireSpec:
    out = []
    for f in dataclasses.fields(cls):
        opts = f.metadata.get(METADATA_KEY, _NO_OPTIONS)
        default: Callable[[], Any] | None
        if f.default is not dataclasses.MISSING:
            default = _constant(f.default)
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory
        else:
            default = None
        out.append(WireField(f.name, opts, default is None or opts.required, default))
    return WireSpec(
        tuple(out),
        frozenset(f.name for f in out),
        tuple((f.name, f.opts.omit_none) for f in out),
        bool(getattr(cls, "WIRE_STRICT", False)),
        getattr(cls, "WIRE_ERRORS", WIRE_ERRORS),
    )


_PLAIN = frozenset({str, int, float, bool, bytes, type(None)})


def _wire_value(v: Any) -> Any:
    t = type(v)
    if t in _PLAIN:
        return v
    if t is dict:
        return dict(v)
    if isinstance(v, Enum):
        return v.value
    if isinstance(v, str | int | float | bytes):
        return v
    if isinstance(v, Mapping):
        return dict(v)
    if isinstance(v, tuple | list):
        return [_wire_value(x) for x in v]
    to_wire = getattr(v, "to_wire", None)
    if to_wire is not None:
        return to_wire()
    return v


def to_wire(obj: Any) -> dict[str, Any]:
    """The record as a CBOR-ready map (see the module's docstring)."""
    out: dict[str, Any] = {}
    for name, omit_none in spec(type(obj)).writes:
        v = getattr(obj, name)
        if v is None and omit_none:
            continue
        out[name] = _wire_value(v)
    return out


def check_field(errors: WireErrors, where: str, f: WireField, value: Any) -> Any:
    """One field's value after the presence rule, its check and its cast (raises naming the field)."""
    if value is None:
        if f.required:
            raise errors.missing(where, f.name)
        return None
    if f.opts.check is not None:
        problem = f.opts.check(value)
        if problem:
            raise errors.invalid(where, f.name, problem, value)
    return f.opts.cast(value) if f.opts.cast is not None else value


def check_fields(obj: Any, where: str) -> None:
    """Run every field's presence rule, check and cast on a made record, in declaration order
    (for ``__post_init__``, so a record built by hand is held to what ``from_wire`` holds it to)."""
    s = spec(type(obj))
    for f in s.fields:
        if f.opts.check is None and f.opts.cast is None and not f.required:
            continue
        value = getattr(obj, f.name)
        clean = check_field(s.errors, where, f, value)
        if clean is not value:
            object.__setattr__(obj, f.name, clean)


def from_wire(cls: type[T], d: Any, where: str) -> T:
    """A record of ``cls`` from a decoded map (see the module's docstring); refusals name the field."""
    s = spec(cls)
    if not isinstance(d, Mapping):
        raise s.errors.not_a_map(where, d)
    if s.strict:
        unknown = sorted(str(k) for k in set(d) - s.names)
        if unknown:
            raise s.errors.unknown(where, unknown)
    values: dict[str, Any] = {}
    for f in s.fields:
        if f.name in d:
            value = d[f.name]  # a null stays null: the class says whether it may be
            if f.default is not None and f.opts.empty_is_default and not value:
                value = f.default()
        elif f.default is not None and not f.required:
            value = f.default()
        else:
            value = None
        values[f.name] = check_field(s.errors, where, f, value)
    return cls(**values)


class WireRecord:
    """Mixin for a frozen dataclass record: ``to_wire()`` from its fields, ``WIRE_*`` options."""

    WIRE_STRICT: ClassVar[bool] = False
    WIRE_ERRORS: ClassVar[WireErrors] = WIRE_ERRORS

    def to_wire(self) -> dict[str, Any]:
        return to_wire(self)
