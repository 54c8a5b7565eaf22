"""Fit the gradient-boosted classifier and export it to ONNX with the metadata the predictor needs."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import skl2onnx.common.tree_ensemble as _tree_ensemble
from skl2onnx import to_onnx
from sklearn.ensemble import HistGradientBoostingClassifier

from models.features import FEATURE_NAMES

TARGET_OPSET = 17
IR_VERSION = 8  # readable by onnxruntime >= 1.10 (older cabinets)


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters (small trees, few of them: the file must stay well under 1 MB)."""

    max_iter: int = 250
    learning_rate: float = 0.08
    max_leaf_nodes: int = 15
    min_samples_leaf: int = 20
    l2_regularization: float = 1.0
    random_state: int = 0


def fit(x: np.ndarray, y: np.ndarray, cfg: TrainConfig = TrainConfig()) -> HistGradientBoostingClassifier:
    """Train on a feature matrix (NaN = unknown, handled natively by the trees)."""
    model = HistGradientBoostingClassifier(
        max_iter=cfg.max_iter,
        learning_rate=cfg.learning_rate,
        max_leaf_nodes=cfg.max_leaf_nodes,
        min_samples_leaf=cfg.min_samples_leaf,
        l2_regularization=cfg.l2_regularization,
        early_stopping=False,
        random_state=cfg.random_state,
    )
    return model.fit(x, y)


@contextmanager
def _bool_safe_tree_converter() -> Iterator[None]:
    """skl2onnx 1.20 passes Python bools for ``nodes_missing_value_tracks_true`` (leaves of a
    HistGradientBoosting tree), which onnx 1.23 rejects; cast them to int while converting."""
    original = _tree_ensemble.add_node

    def add_node(*args, nodes_missing_value_tracks_true=0, **kwargs):
        return original(*args, nodes_missing_value_tracks_true=int(nodes_missing_value_tracks_true), **kwargs)

    _tree_ensemble.add_node = add_node
    try:
        yield
    finally:
        _tree_ensemble.add_node = original


def healthy_reference(x: np.ndarray, y: np.ndarray) -> list[float]:
    """Median of each feature over windows not at risk: the 'normal' value for explanations."""
    ref = np.nanmedian(x[y == 0], axis=0)
    return [float(v) if np.isfinite(v) else 0.0 for v in ref]


def export_onnx(
    model: HistGradientBoostingClassifier,
    path: str | Path,
    *,
    version: str,
    reference: list[float],
    threshold: float,
    extra: dict[str, str] | None = None,
) -> onnx.ModelProto:
    """Write the classifier as ONNX (input ``features`` float32 [N, F], output probabilities [N, 2])."""
    sample = np.zeros((1, len(FEATURE_NAMES)), dtype=np.float32)
    with _bool_safe_tree_converter():
        proto = to_onnx(
            model,
            sample,
            options={id(model): {"zipmap": False}},
            target_opset={"": TARGET_OPSET, "ai.onnx.ml": 3},
            naming="fp_",
        )
    proto.ir_version = IR_VERSION
    proto.doc_string = "Battery fault predictor: P(withdrawal within 20 charge cycles)"
    meta = {
        "version": version,
        "feature_names": json.dumps(list(FEATURE_NAMES)),
        "reference": json.dumps([round(v, 6) for v in reference]),
        "threshold": f"{threshold:.6f}",
        **(extra or {}),
    }
    del proto.metadata_props[:]
    for key, value in meta.items():
        prop = proto.metadata_props.add()
        prop.key, prop.value = key, value
    onnx.checker.check_model(proto)
    Path(path).write_bytes(proto.SerializeToString())
    return proto
