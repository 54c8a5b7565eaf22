"""Random event bodies for every ledger event type: written whole, or an EventBodyError and nothing written.

The ledger's body check is the last gate before the SD card; a body that slips through as another
exception (or half-written) would stop the cabinet's writer thread or poison the replay check.
Bodies are drawn from each type's declared fields with values of every CBOR-able kind.
"""

from __future__ import annotations

import math
from pathlib import Path

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from cabinet.ledger import EVENT_TYPES, EventBodyError, Ledger, LedgerRuleError, verify

FUZZ = settings(
    max_examples=150,  # each example opens the ledger file (migrations check, lock, fsync)
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(10**400), max_value=10**400)
    | st.floats()
    | st.text(max_size=30)
    | st.text(min_size=190, max_size=2100)
    | st.binary(max_size=20)
    | st.sampled_from(["cloud", "pass", " ", "PB000001", "R-1", 0, 1, 3, 100, 1023])
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.text(max_size=6) | st.integers(0, 3), inner, max_size=3)
    ),
    max_leaves=8,
)


#: Plausible values per field name: most examples get past the other fields' checks, so the
#: one odd value is what decides (a body that is wrong everywhere tests only the first check).
PLAUSIBLE = {
    "slot": st.integers(0, 1023),
    "sn": st.sampled_from(["PB000001", "PB000002"]),
    "source": st.sampled_from(["cloud", "pass"]),
    "ok": st.booleans(),
    "args": st.dictionaries(st.text(max_size=6), scalars, max_size=3),
    "soc": st.floats(0, 100) | st.integers(0, 100),
    "risk": st.floats(0, 1),
    "temp_c": st.floats(-60, 200),
    "cycles": st.integers(0, 1_000_000),
    "version": st.integers(1, 10_000),
    "board": st.integers(1, 247),
    "first_slot": st.integers(0, 1023),
    "last_slot": st.integers(0, 1023),
    "empty": st.booleans(),
    "full": st.booleans(),
    "rentable": st.integers(0, 1023),
    "free": st.integers(0, 1023),
    "not_after": st.floats(0, 1e11),
    "days_left": st.floats(-1e6, 1e6),
}
ODD_NUMBERS = st.sampled_from([math.nan, math.inf, -math.inf, 10**400, -(10**400), 2**53 + 1, True, -0.0])


@st.composite
def bodies(draw: st.DrawFn) -> tuple[str, dict]:
    type_ = draw(st.sampled_from(sorted(EVENT_TYPES)) | st.text(max_size=12))
    spec = EVENT_TYPES.get(type_)
    body = {}
    for f in spec.fields if spec else ():
        pick = draw(st.integers(0, 9))
        if pick == 0:
            continue  # absent
        if pick <= 6:
            body[f.name] = draw(PLAUSIBLE.get(f.name, st.sampled_from(["R-1", "P-1", "cabinet", "x" * 200])))
        elif pick <= 8:
            body[f.name] = draw(ODD_NUMBERS)
        else:
            body[f.name] = draw(values)
    for _ in range(draw(st.integers(0, 9)) // 9):
        body[draw(st.text(min_size=1, max_size=8))] = draw(values)  # a field no type declares
    return type_, body


def snapshot(lg: Ledger) -> tuple:
    tables = ("events", "slots", "batteries", "rentals", "commands_seen", "pass_uses", "replay_guard")
    return tuple(tuple(lg.conn.execute(f"SELECT * FROM {t}").fetchall()) for t in tables)


@FUZZ
@given(bodies())
def test_any_event_body_is_recorded_whole_or_refused_with_nothing_written(tmp_path: Path, sample) -> None:
    type_, body = sample
    path = tmp_path / "ledger.db"
    with Ledger.open(path, "CAB-FZ1") as lg:
        if lg.battery("PB000001") is None:  # the file is shared by the examples of one run
            lg.record("battery_seen", slot=1, sn="PB000001")  # something for rules to act on
        before = snapshot(lg)
        try:
            ev = lg.record(type_, **body)
        except EventBodyError as e:
            assert str(e).strip()
            assert snapshot(lg) == before
            event("EventBodyError")
            return
        except LedgerRuleError:
            assert snapshot(lg) == before
            event("LedgerRuleError")
            return
        event(f"recorded {type_}")
        assert ev.seq == lg.last_seq
        for f in EVENT_TYPES[type_].fields:
            v = ev.body[f.name]
            assert v is not None or f.optional
            if isinstance(v, float):
                assert math.isfinite(v)
    report = verify(path)
    assert report.ok, report.summary()


#: A body that passes every check, per event type (built from the declared fields).
VALID_FIELD = {"slot": 2, "sn": "PB000002", "source": "pass", "ok": True, "args": {"slot": 2}, "soc": 50,
               "risk": 0.5, "temp_c": 25.0, "cycles": 3, "version": 2, "board": 2, "first_slot": 5,
               "last_slot": 8, "empty": False, "full": True, "rentable": 0, "free": 0,
               "not_after": 1.8e9, "days_left": 3.5}  # fmt: skip


def valid_body(type_: str) -> dict:
    return {f.name: VALID_FIELD.get(f.name, "x-1") for f in EVENT_TYPES[type_].fields}


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(sorted(EVENT_TYPES)), st.data())
def test_one_odd_field_among_valid_ones_is_an_event_body_error_or_a_clean_value(type_: str, data) -> None:
    from cabinet.ledger.events import encode_body, validate_body

    body = valid_body(type_)
    validate_body(type_, body)  # the base really is valid
    name = data.draw(st.sampled_from(sorted(body)), label="field")
    odd = ODD_NUMBERS | values
    if name == "args" and data.draw(st.booleans()):  # an odd value deep inside a plausible map
        odd = st.dictionaries(st.text(max_size=4), st.lists(odd, max_size=2) | odd, min_size=1, max_size=2)
    body[name] = data.draw(odd, label="value")
    try:
        clean = validate_body(type_, body)
    except EventBodyError as e:
        assert type_ in str(e)
        return
    # accepted: it must also survive the trip to the cloud (plain data: text keys all the way down)
    from sync.codec import check_plain

    check_plain(clean, f"{type_} body")
    encode_body(clean)
