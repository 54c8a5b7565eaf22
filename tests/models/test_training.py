"""The training pipeline on a tiny data set: generate, train, export, load, predict; and its metrics."""

from __future__ import annotations

import ast
import math
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("sklearn")
pytest.importorskip("skl2onnx")

from models.features import FEATURE_NAMES
from models.predictor import FaultPredictor
from models.training.datagen import HORIZON_CYCLES, TRAIN_MIX, generate
from models.training.evaluate import baseline_score, evaluate, recall_at_fpr, threshold_at_fpr
from models.training.train import TrainConfig, export_onnx, fit, healthy_reference

MODELS_DIR = Path(__file__).resolve().parents[2] / "models"


def test_tiny_pipeline_runs_end_to_end_and_the_file_predicts(tiny_model, known_window):
    assert tiny_model.model_path.exists() and tiny_model.size_bytes < 1_000_000
    assert 0.0 <= tiny_model.model.roc_auc <= 1.0 and tiny_model.model.n == 100
    assert tiny_model.seconds < 60
    predictor = FaultPredictor(tiny_model.model_path)
    assert predictor.model_sha256 == tiny_model.sha256
    (pred,) = predictor.predict([known_window()])
    assert 0.0 <= pred.risk <= 1.0


def test_onnx_predictions_equal_the_sklearn_model(tiny_model):
    ds = generate(40, seed=99, mix=TRAIN_MIX)
    x = ds.matrix().astype(np.float32)
    assert np.isnan(x).any(), "the sample should exercise missing values too"
    onnx_risk = FaultPredictor(tiny_model.model_path).risk(x)
    sk_risk = tiny_model.sklearn_model.predict_proba(x.astype(np.float64))[:, 1]
    np.testing.assert_allclose(onnx_risk, sk_risk, atol=1e-5)


def test_generation_is_reproducible_and_seeds_differ():
    a, b, c = (
        generate(3, seed=5, keep_windows=True),
        generate(3, seed=5, keep_windows=True),
        generate(3, seed=6),
    )
    assert all(
        np.array_equal(w1.voltage_v, w2.voltage_v) for w1, w2 in zip(a.windows, b.windows, strict=True)
    )
    np.testing.assert_array_equal(a.matrix(), b.matrix())
    assert not np.array_equal(np.nan_to_num(a.matrix()), np.nan_to_num(c.matrix()))


def test_labels_follow_the_20_cycle_horizon():
    ds = generate(60, seed=8)
    for label, kind, lead in zip(ds.labels, ds.kinds, ds.lead_cycles, strict=True):
        assert label == int(lead <= HORIZON_CYCLES)
        if kind.startswith("healthy"):
            assert label == 0 and math.isinf(lead)


def test_same_data_and_seed_give_a_byte_identical_model(tmp_path):
    ds = generate(60, seed=4)
    x, y = ds.matrix().astype(np.float32).astype(np.float64), np.array(ds.labels)
    paths = []
    for name in ("a.onnx", "b.onnx"):
        model = fit(x, y, TrainConfig(max_iter=15))
        export_onnx(model, tmp_path / name, version="t", reference=healthy_reference(x, y), threshold=0.5)
        paths.append(tmp_path / name)
    assert paths[0].read_bytes() == paths[1].read_bytes()


def test_metrics_are_right_on_known_scores():
    y = np.array([0] * 10 + [1] * 5)
    perfect = np.concatenate([np.linspace(0, 0.4, 10), np.linspace(0.6, 1.0, 5)])
    assert recall_at_fpr(y, perfect) == 1.0
    useless = np.concatenate([np.linspace(0.6, 1.0, 10), np.linspace(0, 0.4, 5)])
    assert recall_at_fpr(y, useless) == 0.0
    thr = threshold_at_fpr(y, perfect, 0.1)
    assert np.mean(perfect[y == 0] >= thr) <= 0.1
    m = evaluate(y, perfect, ["healthy"] * 10 + ["short"] * 5, np.array([math.inf] * 10 + [5.0] * 5))
    assert m.roc_auc == 1.0 and m.per_kind["short"]["recall_at_10fpr"] == 1.0


def test_rule_baseline_scores_hot_and_leaking_packs_above_its_limit():
    x = np.full((3, len(FEATURE_NAMES)), np.nan)
    temp, sd = FEATURE_NAMES.index("max_temp_charging_c"), FEATURE_NAMES.index("self_discharge_pct_h_max")
    x[0, temp], x[1, temp], x[1, sd], x[2, temp] = 40.0, 40.0, 2.0, 58.0
    score = baseline_score(x)
    assert score[0] < 1.0 <= score[1] and score[2] >= 1.0


def test_inference_modules_import_only_numpy_onnxruntime_and_the_stdlib():
    allowed = {"numpy", "onnxruntime", "models"}
    import sys

    for path in MODELS_DIR.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for name in names:
                top = name.split(".")[0]
                assert top in allowed or top in sys.stdlib_module_names, f"{path.name} imports {name}"
                assert not name.startswith("models.training"), f"{path.name} imports training code"
