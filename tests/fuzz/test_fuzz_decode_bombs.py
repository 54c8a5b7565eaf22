"""The cabinet's pass desk and command handler refuse CBOR bombs promptly, on a real ledger.

A pass is scanned from a QR code anyone can print, and the pass check runs on the ledger's
writer thread, so a slow decode there would hold up every rent and return. The known-bad
payloads of ``tests/sync/cbor_bombs.py`` (a 553-byte shared-reference fan-out ran
for ever before the fix) must each end as a refusal with a recorded ``security_event``.
"""

from __future__ import annotations

import time

import pytest
from cbor_bombs import BOUND_S, KNOWN_BAD, WATCHDOG_S, watchdog

from cabinet.passes import REASONS
from sync.passes import MAX_PASS_TEXT, encode_pass_text

SMALL = sorted(name for name, (data, _) in KNOWN_BAD.items() if len(encode_pass_text(data)) <= MAX_PASS_TEXT)


@pytest.mark.parametrize("name", SMALL)
def test_pass_desk_refuses_a_cbor_bomb_pass_quickly_and_records_it(desk, name: str) -> None:
    text = encode_pass_text(KNOWN_BAD[name][0])
    before = desk.last_seq()
    with watchdog(WATCHDOG_S):
        t0 = time.perf_counter()
        out = desk.run(desk.passes.submit(text))
        elapsed = time.perf_counter() - t0
    assert elapsed < BOUND_S, f"{name}: {elapsed * 1000:.1f} ms"
    assert (out.status, out.reason) == ("refused", "pass_unreadable")
    assert out.reason in REASONS
    new = [e for e in desk.events() if e.seq > before]
    assert [(e.type, e.body["kind"]) for e in new] == [("security_event", "pass_malformed")]


def test_command_handler_refuses_every_cbor_bomb_quickly_and_acts_on_none(desk) -> None:
    before = desk.last_seq()
    for name, (data, _) in sorted(KNOWN_BAD.items()):
        with watchdog(WATCHDOG_S):
            t0 = time.perf_counter()
            got = desk.run(desk.commands.handle(data))
            elapsed = time.perf_counter() - t0
        assert elapsed < BOUND_S, f"{name}: {elapsed * 1000:.1f} ms"
        assert got is None, name
    new = [e for e in desk.events() if e.seq > before]
    assert new and {e.type for e in new} == {"security_event"}
