"""docs/protocol.md stays true to the code: generated examples, every kind, channel and field."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from sync.commands import ARGS as COMMAND_ARGS
from sync.commands import Command, CommandKind
from sync.config import Config, ConfigBody, ModelManifest, Tariff
from sync.diag import diagnostic
from sync.docs_gen import examples
from sync.messages import Ack, EventBatch, SlotSample, State, Telemetry, WireEvent
from sync.passes import OfflinePass
from sync.topics import Channel

DOC = Path(__file__).resolve().parents[2] / "docs" / "protocol.md"


def _generated_section(text: str) -> str:
    begin, end = "<!-- BEGIN GENERATED EXAMPLES -->\n", "<!-- END GENERATED EXAMPLES -->"
    return text[text.index(begin) + len(begin) : text.index(end)]


def test_examples_in_the_document_match_the_encoders() -> None:
    assert _generated_section(DOC.read_text()).strip() == examples().strip(), (
        "docs/protocol.md examples are stale: regenerate with `python -m sync.docs_gen`"
    )


def test_document_names_every_channel_command_kind_and_argument() -> None:
    text = DOC.read_text()
    for ch in Channel:
        assert f"cab/v1/{{cabinet}}/{ch.value}" in text
    for kind in CommandKind:
        assert f"| `{kind.value}` |" in text
        for arg in COMMAND_ARGS[kind]:
            assert f"`{arg}`" in text, (kind, arg)


def test_document_describes_every_field_of_every_message() -> None:
    text = DOC.read_text()
    for cls in (
        WireEvent,
        EventBatch,
        Ack,
        SlotSample,
        Telemetry,
        State,
        Command,
        Config,
        ConfigBody,
        Tariff,
        ModelManifest,
        OfflinePass,
    ):
        for f in dataclasses.fields(cls):
            assert f"`{f.name}`" in text, f"{cls.__name__}.{f.name} is not documented"


def test_diagnostic_notation_shows_uuids_bytes_and_embedded_cbor() -> None:
    import cbor2

    data = cbor2.dumps({"p": cbor2.dumps({"a": 1}), "b": b"\x01\x02", "u": __import__("uuid").UUID(int=1)})
    out = diagnostic(data)
    assert '"p": <<{' in out and "h'0102'" in out and "37(h'00000000000000000000000000000001')" in out


def test_package_hands_on_every_public_name() -> None:
    """sync/__init__.py re-exports exist (loaded by path: tests/sync can shadow the package name)."""
    import importlib.util

    init = DOC.parents[1] / "sync" / "__init__.py"
    spec = importlib.util.spec_from_file_location("sync_public_api", init)
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert len(mod.__all__) > 50
    for name in mod.__all__:
        assert getattr(mod, name) is not None, name
