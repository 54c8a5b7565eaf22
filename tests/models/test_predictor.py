"""The shipped ONNX model and the predictor around it."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

from models.features import FEATURE_NAMES
from models.predictor import (
    DEFAULT_MODEL_PATH,
    FLAG_FAST_SELF_DISCHARGE,
    FLAG_INSUFFICIENT_DATA,
    FaultPredictor,
    ModelError,
)
from models.telemetry import BatteryTelemetry


@pytest.fixture(scope="module")
def shipped() -> FaultPredictor:
    return FaultPredictor()


def simulated(kind: str, end_cycle: float, lead: float, seed: int) -> BatteryTelemetry:
    datagen = pytest.importorskip("models.training.datagen")
    physics = pytest.importorskip("models.training.physics")
    rng = np.random.default_rng(seed)
    pack = datagen.random_pack(rng, kind, end_cycle, lead, sn=f"{kind}-{seed}")
    cab = physics.CabinetSetting(
        ambient_c=25.0, ambient_swing_c=2.0, charge_a=1.5, sample_s=30.0, sessions=10
    )
    return physics.simulate_window(pack, end_cycle, cab, rng)


def test_shipped_model_is_small_and_loads_with_its_identity(shipped: FaultPredictor):
    assert DEFAULT_MODEL_PATH.stat().st_size < 1_000_000
    assert shipped.model_version != "unknown" and len(shipped.model_sha256) == 64
    assert shipped.model_id.startswith(shipped.model_version + "+")
    assert 0.0 < shipped.threshold < 1.0
    shipped.smoke_test()


def test_shipped_model_gives_risks_in_0_1_for_every_battery(shipped: FaultPredictor, known_window):
    preds = shipped.predict([known_window("A"), known_window("B", self_discharge_pct_h=4.0, rest_h=5.0)])
    assert [p.battery_sn for p in preds] == ["A", "B"]
    assert all(0.0 <= p.risk <= 1.0 for p in preds)
    assert FLAG_FAST_SELF_DISCHARGE in preds[1].flags and FLAG_FAST_SELF_DISCHARGE not in preds[0].flags


def test_a_criterion_already_met_makes_the_risk_1_and_leads_the_reasons(
    shipped: FaultPredictor, known_window
):
    leaky, calm = shipped.predict(
        [known_window("LEAKY", self_discharge_pct_h=4.0, rest_h=5.0), known_window("CALM")]
    )
    assert leaky.risk == 1.0 and calm.risk < shipped.threshold
    assert leaky.top_features[0].name == "self_discharge_pct_h_max"
    assert leaky.top_features[0].value == pytest.approx(4.0, abs=0.3)


@pytest.mark.parametrize("kind", ["short", "overheat", "fade", "no_charge", "contact"])
def test_faulty_batteries_rank_above_healthy_old_ones(shipped: FaultPredictor, kind: str):
    """Packs 3 cycles from their fault against packs with 1400 cycles that are still fine."""
    faulty = [simulated(kind, 600.0, 3.0, seed=s) for s in (11, 12, 13, 14)]
    old = [simulated("healthy_old", 1400.0, float("inf"), seed=s) for s in (21, 22, 23, 24)]
    risks = [p.risk for p in shipped.predict(faulty + old)]
    risk_faulty, risk_old = risks[:4], risks[4:]
    assert min(risk_faulty) > max(risk_old)
    assert np.median(risk_faulty) > shipped.threshold > max(risk_old)


def test_features_that_drove_a_high_risk_are_reported(shipped: FaultPredictor):
    (pred,) = shipped.predict([simulated("short", 600.0, 0.0, seed=21)])
    assert pred.top_features, "a risky battery must come with its reasons"
    assert all(c.name in FEATURE_NAMES and c.contribution > 0 for c in pred.top_features)
    contributions = [c.contribution for c in pred.top_features]
    assert contributions == sorted(contributions, reverse=True)


def test_only_risky_batteries_are_explained_and_explaining_does_not_change_the_risk(known_window):
    lazy, eager = FaultPredictor(), FaultPredictor(explain_above=0.0)
    windows = [known_window("CALM"), simulated("overheat", 600.0, 0.0, seed=31)]
    calm, hot = lazy.predict(windows)
    assert calm.risk < lazy.explain_above and calm.top_features == ()
    assert hot.top_features and hot.top_features[0].name in (
        "temp_rise_per_a",
        "max_temp_rise_c",
        "max_temp_charging_c",
    )
    assert [p.risk for p in eager.predict(windows)] == [calm.risk, hot.risk]


def test_too_little_data_gives_a_flagged_risk_not_a_crash(shipped: FaultPredictor, known_window):
    w = known_window("TINY", sessions=1)
    tiny = BatteryTelemetry(
        "TINY", *(getattr(w, c)[:5] for c in ("t_s", "voltage_v", "current_a", "temp_c", "soc_pct", "cycle"))
    )
    empty = BatteryTelemetry("NONE", *(np.empty(0) for _ in range(6)))
    preds = shipped.predict({"TINY": tiny, "NONE": empty})
    assert all(FLAG_INSUFFICIENT_DATA in p.flags and 0.0 <= p.risk <= 1.0 for p in preds)


def test_empty_batch_gives_no_predictions(shipped: FaultPredictor):
    assert shipped.predict([]) == []


def test_model_for_other_features_is_refused(tmp_path):
    proto = onnx.load(str(DEFAULT_MODEL_PATH))
    for prop in proto.metadata_props:
        if prop.key == "feature_names":
            prop.value = json.dumps([*FEATURE_NAMES[:-1], "something_else"])
    bad = tmp_path / "other.onnx"
    bad.write_bytes(proto.SerializeToString())
    with pytest.raises(ModelError, match="other features"):
        FaultPredictor(bad)


def test_corrupt_or_missing_model_file_is_a_model_error(tmp_path):
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(DEFAULT_MODEL_PATH.read_bytes()[:1000])
    with pytest.raises(ModelError, match="does not load"):
        FaultPredictor(junk)
    with pytest.raises(ModelError, match="cannot read"):
        FaultPredictor(tmp_path / "absent.onnx")
