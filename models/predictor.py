"""Fault prediction on the cabinet: the shipped ONNX model run by onnxruntime on one thread.

``FaultPredictor.predict`` takes each battery's recent telemetry window and gives the risk that
the battery must be withdrawn within its next 20 charge cycles, flags (too little data, a
withdrawal criterion already visible: then the risk is 1) and the features that drove the risk. The explanation is
occlusion: each feature in turn is set to its healthy reference value (stored in the model file)
and the drop in risk is its contribution; all of it runs in the same batched call.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from models.features import FEATURE_INDEX, FEATURE_NAMES, FeatureVector, extract_features
from models.telemetry import BatteryTelemetry

DEFAULT_MODEL_PATH = Path(__file__).with_name("fault_predictor.onnx")

# Flags: a withdrawal criterion of the issue is already visible in the window.
FLAG_INSUFFICIENT_DATA = "insufficient_data"
FLAG_OVERHEATED = "overheated"  # above 60 C while charging
FLAG_FAST_SELF_DISCHARGE = "fast_self_discharge"  # more than 3 % SoC per hour at rest
FLAG_LOW_CAPACITY = "low_capacity"  # capacity below 70 % of rated
FLAG_NOT_ACCEPTING_CHARGE = "not_accepting_charge"  # idle below 90 % SoC most of its slot time
_NOT_EXPLAINED = {"insufficient_data", "n_sessions", "n_charge_sessions", "window_h", "sample_interval_s"}


class ModelError(RuntimeError):
    """The model file is missing, unreadable, built for other features, or gives nonsense."""


@dataclass(frozen=True)
class FeatureContribution:
    """A feature's value and how much risk it adds over its healthy reference value."""

    name: str
    value: float
    contribution: float


@dataclass(frozen=True)
class Prediction:
    """Risk in [0, 1] of withdrawal within 20 charge cycles, with flags and its main reasons."""

    battery_sn: str
    risk: float
    flags: tuple[str, ...]
    top_features: tuple[FeatureContribution, ...]


class FaultPredictor:
    """Loads the model once (one thread, no memory arena); ``predict`` is batched over batteries."""

    def __init__(
        self,
        model_path: str | Path | None = None,
        *,
        top_k: int = 3,
        explain: bool = True,
        explain_above: float | None = None,
    ):
        """Load ``model_path`` (default: the shipped model). Explanations (``top_features``) are
        computed for batteries whose risk is at least ``explain_above`` (default: half the model's
        recommended threshold; 0 explains every battery), so a healthy batch costs one model call."""
        self.model_path = Path(model_path) if model_path is not None else DEFAULT_MODEL_PATH
        self.top_k = top_k
        self.explain = explain
        try:
            data = self.model_path.read_bytes()
        except OSError as e:
            raise ModelError(f"cannot read model {self.model_path}: {e.strerror or e}") from e
        self.model_sha256 = hashlib.sha256(data).hexdigest()
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        opts.enable_cpu_mem_arena = False
        opts.log_severity_level = 3
        try:
            self._session = ort.InferenceSession(data, sess_options=opts, providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own exception types for bad files
            raise ModelError(f"model {self.model_path} does not load: {e}") from e
        meta = self._session.get_modelmeta().custom_metadata_map
        self.model_version = meta.get("version", "unknown")
        try:
            names = tuple(json.loads(meta["feature_names"]))
            self.reference = np.asarray(json.loads(meta["reference"]), dtype=np.float32)
            self.threshold = float(meta.get("threshold", "0.5"))
        except (KeyError, ValueError) as e:
            raise ModelError(f"model {self.model_path} lacks valid metadata ({e})") from e
        if names != FEATURE_NAMES or self.reference.shape != (len(FEATURE_NAMES),):
            raise ModelError(
                f"model {self.model_path} was trained on other features "
                f"({len(names)} features, this code extracts {len(FEATURE_NAMES)})"
            )
        self._input = self._session.get_inputs()[0].name
        outputs = [o.name for o in self._session.get_outputs()]
        self._output = "probabilities" if "probabilities" in outputs else outputs[-1]
        self._explained = [i for i, n in enumerate(FEATURE_NAMES) if n not in _NOT_EXPLAINED]
        self.explain_above = self.threshold / 2.0 if explain_above is None else explain_above

    @property
    def model_id(self) -> str:
        """Version and short hash, for the cabinet's state and alerts."""
        return f"{self.model_version}+{self.model_sha256[:12]}"

    def risk(self, x: np.ndarray) -> np.ndarray:
        """The model's P(at risk) for a feature matrix (rows = batteries, columns = FEATURE_NAMES).

        ``predict`` also raises the risk to 1 where a withdrawal criterion is already met."""
        x = np.asarray(x, dtype=np.float32).reshape(-1, len(FEATURE_NAMES))
        if x.shape[0] == 0:
            return np.empty(0)
        out = self._session.run([self._output], {self._input: x})[0]
        risk: np.ndarray = np.clip(np.asarray(out, dtype=float)[:, 1], 0.0, 1.0)
        return risk

    def predict(
        self, windows: Iterable[BatteryTelemetry] | Mapping[str, BatteryTelemetry]
    ) -> list[Prediction]:
        """One prediction per battery window, in input order."""
        items = windows.values() if isinstance(windows, Mapping) else windows
        return self.predict_features([extract_features(w) for w in items])

    def predict_features(self, vectors: Sequence[FeatureVector]) -> list[Prediction]:
        """Predictions from already extracted features (one onnxruntime call for the whole batch)."""
        if not vectors:
            return []
        x = np.vstack([v.values for v in vectors]).astype(np.float32)
        base = self.risk(x)
        explain = np.flatnonzero(base >= self.explain_above) if self.explain else np.empty(0, dtype=int)
        tops: dict[int, tuple[FeatureContribution, ...]] = {}
        if explain.size:
            xe, cols = x[explain], self._explained
            occluded = np.repeat(xe[None, :, :], len(cols), axis=0)
            for k, j in enumerate(cols):
                occluded[k, :, j] = self.reference[j]
            risks = self.risk(occluded.reshape(-1, x.shape[1])).reshape(len(cols), explain.size)
            for e, b in enumerate(explain):
                contrib = [
                    FeatureContribution(FEATURE_NAMES[j], float(x[b, j]), float(base[b] - risks[k, e]))
                    for k, j in enumerate(cols)
                ]
                contrib.sort(key=lambda c: c.contribution, reverse=True)
                tops[int(b)] = tuple(c for c in contrib[: self.top_k] if c.contribution > 0.005)
        out = []
        for b, vec in enumerate(vectors):
            flags, risk, top = flags_for(vec), float(base[b]), tops.get(b, ())
            due = [feature for flag, feature, _ in CRITERIA if flag in flags]
            if due:  # already due: risk 1, and the criterion is the first reason
                first = FeatureContribution(due[0], float(x[b, FEATURE_INDEX[due[0]]]), 1.0 - risk)
                top = (first, *(c for c in top if c.name != due[0]))[: self.top_k]
                risk = 1.0
            out.append(Prediction(vec.battery_sn, risk, flags, top))
        return out

    def smoke_test(self) -> None:
        """Built-in check after loading or updating a model: healthy reference gives a sane, low risk."""
        risk = self.risk(self.reference[None, :])
        if risk.shape != (1,) or not np.isfinite(risk).all() or not 0.0 <= risk[0] <= 1.0:
            raise ModelError(f"model {self.model_path} gives {risk!r} for the healthy reference")
        if risk[0] >= self.threshold:
            raise ModelError(f"model {self.model_path} flags the healthy reference (risk {risk[0]:.3f})")


# A withdrawal criterion already met in the window: (flag, feature, test). The window shows the
# battery is due now, so its risk is 1 whatever the model says (the model ranks what is coming).
CRITERIA: tuple[tuple[str, str, Callable[[np.ndarray], np.ndarray]], ...] = (
    (FLAG_OVERHEATED, "max_temp_charging_c", lambda v: v > 60.0),
    (FLAG_FAST_SELF_DISCHARGE, "self_discharge_pct_h_max", lambda v: v > 3.0),
    (FLAG_LOW_CAPACITY, "capacity_ah_recent", lambda v: v < 0.7 * 5.0),
    (FLAG_NOT_ACCEPTING_CHARGE, "refusal_frac", lambda v: v > 0.5),
)


def criteria_met(x: np.ndarray) -> np.ndarray:
    """Per row of a feature matrix: is a withdrawal criterion already met in that window?"""
    x = np.asarray(x, dtype=float).reshape(-1, len(FEATURE_NAMES))
    met = np.zeros(x.shape[0], dtype=bool)
    with np.errstate(invalid="ignore"):
        for _, feature, test in CRITERIA:
            met |= test(x[:, FEATURE_INDEX[feature]])
    return met


def flags_for(vec: FeatureVector) -> tuple[str, ...]:
    """Flags for a window: too little data, and each withdrawal criterion already met."""
    flags = [FLAG_INSUFFICIENT_DATA] if vec.insufficient_data else []
    with np.errstate(invalid="ignore"):
        flags += [flag for flag, feature, test in CRITERIA if test(vec.values[FEATURE_INDEX[feature]])]
    return tuple(flags)
