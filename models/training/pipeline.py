"""One command from nothing to the shipped model and its numbers: generate, train, export, evaluate.

    python -m models.training.pipeline --out models/fault_predictor.onnx --metrics metrics.json

Seeded end to end: the same arguments give the same data, the same model file (same sha256)
and the same metrics. Held-out data use other seeds and the HELDOUT scenario mix.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from models.predictor import criteria_met
from models.training.datagen import HELDOUT_MIX, TRAIN_MIX, Dataset, generate, generate_trajectories
from models.training.evaluate import Metrics, baseline_score, evaluate, threshold_at_fpr
from models.training.train import TrainConfig, export_onnx, fit, healthy_reference

MODEL_VERSION = "1.0.0"


@dataclass
class PipelineResult:
    """What a run produced: the model file, its hash, and model vs baseline metrics."""

    model_path: Path
    sha256: str
    size_bytes: int
    model: Metrics
    baseline: Metrics
    threshold: float
    seconds: float
    sklearn_model: object


def _features(ds: Dataset) -> np.ndarray:
    # Rounded to float32 before training so tree thresholds sit where ONNX (float32) compares.
    return ds.matrix().astype(np.float32).astype(np.float64)


def run(
    out: str | Path,
    *,
    n_train: int = 6000,
    n_val: int = 1000,
    n_test: int = 2500,
    n_traj: int = 30,
    seed: int = 1,
    config: TrainConfig = TrainConfig(),
    log=print,
) -> PipelineResult:
    """Generate, train, export to ``out`` and evaluate on held-out data; returns the metrics."""
    t0 = time.monotonic()
    train = generate(n_train, seed, TRAIN_MIX)
    x, y = _features(train), np.array(train.labels)
    log(f"train: {len(y)} windows, {int(y.sum())} at risk ({time.monotonic() - t0:.0f} s)")
    model = fit(x, y, config)
    val = generate(n_val, seed + 100, TRAIN_MIX)
    xv = _features(val)
    threshold = threshold_at_fpr(np.array(val.labels), model.predict_proba(xv)[:, 1])
    export_onnx(
        model,
        out,
        version=MODEL_VERSION,
        reference=healthy_reference(x, y),
        threshold=threshold,
        extra={"trained_by": f"python -m models.training.pipeline --seed {seed} --n-train {n_train}"},
    )
    data = Path(out).read_bytes()
    log(f"model: {out} {len(data)} bytes ({time.monotonic() - t0:.0f} s)")

    test = generate(n_test, seed + 200, HELDOUT_MIX)
    xt, yt = _features(test), np.array(test.labels)
    traj = generate_trajectories(n_traj, seed + 300, HELDOUT_MIX) if n_traj else None
    lead = np.array(test.lead_cycles)
    log(
        f"held-out: {len(yt)} windows + {len(traj.labels) if traj else 0} trajectory windows ({time.monotonic() - t0:.0f} s)"
    )

    def traj_args(score_fn) -> tuple | None:
        if traj is None:
            return None
        return score_fn(_features(traj)), traj.serials, traj.kinds, np.array(traj.lead_cycles)

    def model_score(a: np.ndarray) -> np.ndarray:
        # What the predictor ships: the model's risk, raised to 1 where a criterion is already met.
        return np.where(criteria_met(a), 1.0, model.predict_proba(a)[:, 1])

    m_model = evaluate(
        yt, model_score(xt), test.kinds, lead, traj_args(model_score), fixed_threshold=threshold
    )
    m_base = evaluate(
        yt, baseline_score(xt), test.kinds, lead, traj_args(baseline_score), fixed_threshold=1.0
    )
    return PipelineResult(
        model_path=Path(out),
        sha256=hashlib.sha256(data).hexdigest(),
        size_bytes=len(data),
        model=m_model,
        baseline=m_base,
        threshold=threshold,
        seconds=time.monotonic() - t0,
        sklearn_model=model,
    )


def metrics_blob(r: PipelineResult) -> dict:
    """Everything the model card reports, as JSON-able data."""
    return {
        "sha256": r.sha256,
        "size_bytes": r.size_bytes,
        "threshold": r.threshold,
        "seconds": round(r.seconds, 1),
        "model": r.model.as_dict(),
        "baseline": r.baseline.as_dict(),
    }


def markdown(blob: dict) -> str:
    """The model card's metrics tables, from ``metrics_blob`` (or its JSON file)."""
    m, b = blob["model"], blob["baseline"]
    lines = [
        f"Held-out set: {m['n']} windows, {m['positives']} at risk; model sha256 `{blob['sha256'][:16]}`, "
        f"{blob['size_bytes']} bytes, pipeline {blob['seconds']:.0f} s.",
        "",
        "| metric | model | rule baseline |",
        "|---|---|---|",
        f"| ROC-AUC | {m['roc_auc']:.3f} | {b['roc_auc']:.3f} |",
        f"| PR-AUC | {m['pr_auc']:.3f} | {b['pr_auc']:.3f} |",
        f"| recall at 10% FPR | {m['recall_at_10fpr']:.3f} | {b['recall_at_10fpr']:.3f} |",
        f"| recall / FPR at its own fixed threshold (model {m['fixed_threshold']:.3f}, rule 55 C or 1.5 %/h) | "
        f"{m['recall_at_fixed']:.3f} / {m['fpr_at_fixed']:.3f} | {b['recall_at_fixed']:.3f} / {b['fpr_at_fixed']:.3f} |",
        "",
        "| fault kind | n at risk | model ROC-AUC | model recall@10%FPR | baseline ROC-AUC | baseline recall@10%FPR |",
        "|---|---|---|---|---|---|",
    ]
    for kind, v in m["per_kind"].items():
        if "roc_auc" in v:
            bv = b["per_kind"][kind]
            lines.append(
                f"| {kind} | {v['n_pos']} | {v['roc_auc']:.3f} | {v['recall_at_10fpr']:.3f} | "
                f"{bv['roc_auc']:.3f} | {bv['recall_at_10fpr']:.3f} |"
            )
    lines += ["", "| not at risk | n | model flagged | baseline flagged |", "|---|---|---|---|"]
    for kind, v in m["per_kind"].items():
        if "flagged_frac" in v:
            lines.append(
                f"| {kind} | {v['n']} | {v['flagged_frac']:.3f} | {b['per_kind'][kind]['flagged_frac']:.3f} |"
            )
    if m["lead_time"]:
        lines += [
            "",
            "| lead time | packs | model: median cycles ahead (warned packs) | model: warned >=10 ahead | "
            "model: never warned | baseline: warned >=10 ahead | baseline: never warned |",
            "|---|---|---|---|---|---|---|",
        ]
        for kind, v in m["lead_time"].items():
            bv = b["lead_time"][kind]
            lines.append(
                f"| {kind} | {v['packs']} | {v['median_lead_cycles']:.0f} | {v['warned_ge10']:.2f} | "
                f"{v['never_warned']:.2f} | {bv['warned_ge10']:.2f} | {bv['never_warned']:.2f} |"
            )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m models.training.pipeline", description=__doc__.splitlines()[0]
    )
    ap.add_argument("--out", default="models/fault_predictor.onnx", help="ONNX file to write")
    ap.add_argument("--metrics", help="also write the metrics as JSON here")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--n-train", type=int, default=6000)
    ap.add_argument("--n-val", type=int, default=1000)
    ap.add_argument("--n-test", type=int, default=2500)
    ap.add_argument(
        "--n-traj", type=int, default=30, help="faulty packs per kind watched over time (lead time)"
    )
    args = ap.parse_args(argv)
    r = run(
        args.out,
        n_train=args.n_train,
        n_val=args.n_val,
        n_test=args.n_test,
        n_traj=args.n_traj,
        seed=args.seed,
        log=lambda s: print(s, file=sys.stderr, flush=True),
    )
    blob = metrics_blob(r)
    print(markdown(blob))
    if args.metrics:
        Path(args.metrics).write_text(json.dumps(blob, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
