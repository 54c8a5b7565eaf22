"""Held-out metrics for the model and for the rule baseline, computed the same way for both."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

from models.features import FEATURE_INDEX
from models.training.physics import FAULT_KINDS

TARGET_FPR = 0.10
# The rule baseline a careful operator would write without a model: flag hot or leaking packs
# somewhat before the withdrawal limits (60 C while charging, 3 %/h at rest).
BASELINE_TEMP_C = 55.0
BASELINE_SELF_DISCHARGE_PCT_H = 1.5


def baseline_score(x: np.ndarray) -> np.ndarray:
    """Rule baseline as a score: how close the worst of temperature and self-discharge is to its limit."""
    temp = np.nan_to_num(x[:, FEATURE_INDEX["max_temp_charging_c"]], nan=0.0)
    sd = np.nan_to_num(x[:, FEATURE_INDEX["self_discharge_pct_h_max"]], nan=0.0)
    return np.maximum(temp / BASELINE_TEMP_C, sd / BASELINE_SELF_DISCHARGE_PCT_H)


@dataclass
class Metrics:
    """Ranking quality and the operating point at a fixed false-positive rate."""

    n: int
    positives: int
    roc_auc: float
    pr_auc: float
    recall_at_10fpr: float
    threshold_at_10fpr: float
    fixed_threshold: float = float("nan")
    recall_at_fixed: float = float("nan")
    fpr_at_fixed: float = float("nan")
    per_kind: dict[str, dict[str, float]] = field(default_factory=dict)
    lead_time: dict[str, dict[str, float]] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return asdict(self)


def threshold_at_fpr(y: np.ndarray, score: np.ndarray, fpr: float = TARGET_FPR) -> float:
    """Lowest score threshold whose false-positive rate stays at or below ``fpr``."""
    neg = np.sort(score[y == 0])[::-1]
    k = math.floor(fpr * neg.size)
    return float(np.nextafter(neg[k], np.inf)) if k < neg.size else float(neg[-1])


def recall_at_fpr(y: np.ndarray, score: np.ndarray, fpr: float = TARGET_FPR) -> float:
    """Best recall on the ROC curve with false-positive rate at most ``fpr``."""
    f, t, _ = roc_curve(y, score)
    return float(t[f <= fpr + 1e-12].max())


def evaluate(
    y: np.ndarray,
    score: np.ndarray,
    kinds: list[str],
    lead: np.ndarray,
    traj: tuple[np.ndarray, list[str], list[str], np.ndarray] | None = None,
    fixed_threshold: float | None = None,
) -> Metrics:
    """Metrics on a held-out set; per fault kind: that kind's positives against every negative.

    ``traj`` (scores, serials, kinds, leads) are the same packs watched ahead of their fault:
    lead time = cycles before the criterion when the pack is first above the 10%-FPR threshold.
    """
    thr = threshold_at_fpr(y, score)
    m = Metrics(
        n=int(y.size),
        positives=int(y.sum()),
        roc_auc=float(roc_auc_score(y, score)),
        pr_auc=float(average_precision_score(y, score)),
        recall_at_10fpr=recall_at_fpr(y, score),
        threshold_at_10fpr=thr,
    )
    kinds_arr = np.array(kinds)
    neg = y == 0
    if fixed_threshold is not None:
        m.fixed_threshold = float(fixed_threshold)
        m.recall_at_fixed = float(np.mean(score[y == 1] >= fixed_threshold))
        m.fpr_at_fixed = float(np.mean(score[neg] >= fixed_threshold))
    for kind in FAULT_KINDS:
        pos = (y == 1) & (kinds_arr == kind)
        if not pos.any():
            continue
        sel = pos | neg
        m.per_kind[kind] = {
            "n_pos": int(pos.sum()),
            "roc_auc": float(roc_auc_score(y[sel], score[sel])),
            "recall_at_10fpr": float(np.mean(score[pos] >= thr)),
        }
    for name, sel in (("healthy", kinds_arr == "healthy"), ("healthy_old", kinds_arr == "healthy_old")):
        if sel.any():
            m.per_kind[name] = {"n": int(sel.sum()), "flagged_frac": float(np.mean(score[sel] >= thr))}
    early = (y == 0) & np.isfinite(lead)
    if early.any():
        m.per_kind["faulty_not_yet_due"] = {
            "n": int(early.sum()),
            "flagged_frac": float(np.mean(score[early] >= thr)),
        }
    if traj is not None:
        m.lead_time = lead_times(*traj, threshold=thr)
    return m


def lead_times(
    score: np.ndarray, serials: list[str], kinds: list[str], lead: np.ndarray, threshold: float
) -> dict[str, dict[str, float]]:
    """Per kind: median cycles of warning and share of packs warned >=5 and >=10 cycles ahead."""
    first: dict[str, tuple[str, float]] = {}
    for s, sn, kind, ld in zip(score, serials, kinds, lead, strict=True):
        entry = first.setdefault(sn, (kind, -math.inf))
        if s >= threshold and ld > entry[1]:
            first[sn] = (kind, float(ld))
    out: dict[str, dict[str, float]] = {}
    for kind in [*FAULT_KINDS, "all"]:
        leads = np.array([ld for k, ld in first.values() if kind in ("all", k)])
        if not leads.size:
            continue
        warned = leads[np.isfinite(leads)]
        out[kind] = {
            "packs": int(leads.size),
            "median_lead_cycles": float(np.median(warned)) if warned.size else float("nan"),
            "warned_ge5": float(np.mean(leads >= 5)),
            "warned_ge10": float(np.mean(leads >= 10)),
            "never_warned": float(np.mean(~np.isfinite(leads))),
        }
    return out
