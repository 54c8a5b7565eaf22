"""Random cabinet config files: loaded, or refused with a ConfigError naming the file; nothing else.

The files are real TOML written to disk and read with ``cabinet.config.load`` as the service does
at start-up (a ConfigError there means exit 78, no restart loop; any other exception would be a
crash loop under systemd). Values that load must respect every declared bound.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cabinet import config as cfg

FUZZ = settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
SECTIONS = sorted({k.section for k in cfg.KEYS})


def toml_value(v: object) -> str:
    """A TOML literal for a generated value (inline tables for maps)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)  # JSON string escapes are TOML basic-string escapes
    if isinstance(v, dt.date | dt.datetime | dt.time):
        return v.isoformat()
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{json.dumps(k)} = {toml_value(x)}" for k, x in v.items()) + "}"
    raise TypeError(type(v))


def toml_text(doc: dict[str, object]) -> str:
    lines = []
    for section, body in doc.items():
        if isinstance(body, dict):
            lines.append(f"[{json.dumps(section)}]")
            lines += [f"{json.dumps(k)} = {toml_value(v)}" for k, v in body.items()]
        else:
            lines.insert(0, f"{json.dumps(section)} = {toml_value(body)}")
    return "\n".join(lines) + "\n"


scalars = (
    st.booleans()
    | st.integers()
    | st.integers(min_value=-(10**400), max_value=10**400)
    | st.floats()
    | st.text(max_size=40)
    | st.dates()
    | st.times()
    | st.datetimes()
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=6,
)


@st.composite
def near_bounds(draw: st.DrawFn, key: cfg.Key) -> object:
    """Values of the key's own type at and around its bounds (where off-by-one and NaN bugs live)."""
    if key.type is float:
        edges = [x for x in (key.min, key.max) if x is not None]
        return draw(st.sampled_from([math.nan, math.inf, -math.inf, *edges]) | st.floats())
    if key.type is int:
        edges = [int(x) for x in (key.min, key.max) if x is not None]
        return draw(st.sampled_from([e + d for e in edges for d in (-1, 0, 1)] or [0]) | st.integers())
    if key.type is list:
        return draw(st.lists(st.text(max_size=6) | st.integers(), max_size=50))
    if key.choices:
        return draw(st.sampled_from(key.choices) | st.text(max_size=8))
    return draw(values)


@st.composite
def documents(draw: st.DrawFn) -> dict[str, object]:
    doc: dict[str, object] = {}
    if draw(st.integers(0, 4)):  # mostly a valid id, so the other keys get checked too
        doc["cabinet"] = {"id": "CAB-1" if draw(st.integers(0, 3)) else draw(st.text(max_size=40))}
    for _ in range(draw(st.integers(0, 6))):
        key = draw(st.sampled_from(cfg.KEYS))
        # mostly real keys with values near their bounds; now and then a wrong place or type
        section = (
            key.section if draw(st.integers(0, 5)) else draw(st.sampled_from(SECTIONS) | st.text(max_size=8))
        )
        name = key.name if draw(st.integers(0, 5)) else draw(st.text(max_size=8))
        value = draw(near_bounds(key)) if draw(st.integers(0, 3)) else draw(values)
        body = doc.setdefault(section, {})
        if isinstance(body, dict):
            body[name] = value
        else:
            doc[section] = {name: value}
    if draw(st.integers(0, 9)) == 0:
        doc[draw(st.sampled_from(SECTIONS))] = draw(scalars)  # a key where a table belongs
    return doc


def load_or_config_error(path: Path) -> cfg.Config | None:
    try:
        return cfg.load(path)
    except cfg.ConfigError as e:
        assert str(path) in str(e), f"the error must name the file: {e}"
        return None


def assert_within_bounds(c: cfg.Config) -> None:
    for k in cfg.KEYS:
        v = c[k.path]
        if k.type in (int, float):
            assert isinstance(v, k.type) and not isinstance(v, bool), (k.path, v)
            assert math.isfinite(v), f"{k.path} = {v!r} was accepted"
            assert k.min is None or v >= k.min, (k.path, v)
            assert k.max is None or v <= k.max, (k.path, v)
        if k.choices:
            assert v in k.choices, (k.path, v)


@FUZZ
@given(documents())
def test_random_config_documents_load_within_bounds_or_raise_config_error(tmp_path: Path, doc) -> None:
    path = tmp_path / "cabinet.toml"
    path.write_text(toml_text(doc), encoding="utf-8", errors="surrogatepass")
    c = load_or_config_error(path)
    if c is not None:
        assert_within_bounds(c)


@FUZZ
@given(st.binary(max_size=300) | st.text(max_size=300).map(lambda t: t.encode("utf-8", "surrogatepass")))
def test_random_bytes_as_config_file_raise_config_error(tmp_path: Path, raw: bytes) -> None:
    path = tmp_path / "cabinet.toml"
    path.write_bytes(b'[cabinet]\nid = "CAB-1"\n' + raw)
    c = load_or_config_error(path)
    if c is not None:
        assert_within_bounds(c)


def test_missing_or_unreadable_config_file_is_a_config_error(tmp_path: Path) -> None:
    for path in (tmp_path / "absent.toml", tmp_path):  # no file; a directory
        assert load_or_config_error(path) is None
