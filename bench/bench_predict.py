"""Fault predictor on a 48-slot batch: inference time and the memory the model adds.

    .venv/bin/python -m bench.bench_predict [--quick] [--model FILE.onnx] [--repeat 200]

Goals from issue 6: under 5 ms per 48-slot batch, under 30 MB added memory. Memory is read
from /proc/self/status (VmRSS) before onnxruntime is imported and after the model is loaded
and has run once. Telemetry windows come from the training simulator (needs the train extra).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


def timed(fn, repeat: int) -> tuple[float, float]:
    """Median and 95th percentile wall time in ms."""
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1000.0)
    times.sort()
    return statistics.median(times), times[int(0.95 * (len(times) - 1))]


def memory(model: str | None, slots: int) -> dict[str, float]:
    """RSS before onnxruntime, after its import, and with the model loaded and run once (this process)."""
    base = rss_mb()
    from models.predictor import FaultPredictor

    after_import = rss_mb()
    predictor = FaultPredictor(model)
    predictor.risk(np.tile(predictor.reference, (slots, 1)))
    return {"base": base, "import": after_import - base, "loaded": rss_mb() - base}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None)
    ap.add_argument("--repeat", type=int, default=200)
    ap.add_argument("--slots", type=int, default=48)
    ap.add_argument("--quick", action="store_true", help="fewer repetitions")
    ap.add_argument("--memory-only", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.memory_only:
        print(json.dumps(memory(args.model, args.slots)))
        return 0
    if args.quick:
        args.repeat = 40
    cmd = [sys.executable, "-m", "bench.bench_predict", "--memory-only", "--slots", str(args.slots)]
    if args.model:
        cmd += ["--model", args.model]
    mem = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)

    from models.predictor import FaultPredictor

    predictor = FaultPredictor(args.model)

    from models.features import extract_features
    from models.training.datagen import HELDOUT_MIX, generate

    ds = generate(args.slots, seed=12345, mix=HELDOUT_MIX, keep_windows=True)
    windows = ds.windows
    vectors = [extract_features(w) for w in windows]
    x = np.vstack([v.values for v in vectors]).astype(np.float32)
    samples = [len(w) for w in windows]

    risk_ms = timed(lambda: predictor.risk(x), args.repeat)
    explain_ms = timed(lambda: predictor.predict_features(vectors), max(20, args.repeat // 4))
    explain_all = FaultPredictor(args.model, explain_above=0.0)
    explain_all_ms = timed(lambda: explain_all.predict_features(vectors), max(20, args.repeat // 4))
    full_ms = timed(lambda: predictor.predict(windows), 5)
    risky = sum(p.risk >= predictor.explain_above for p in predictor.predict_features(vectors))

    print(f"model {predictor.model_id} ({predictor.model_path.stat().st_size} bytes), {args.slots} slots")
    print(f"windows: median {int(np.median(samples))} samples (min {min(samples)}, max {max(samples)})")
    print(f"risk only (one onnxruntime call):         median {risk_ms[0]:.3f} ms  p95 {risk_ms[1]:.3f} ms")
    print(
        f"risk + explanations, {risky} risky explained:  median {explain_ms[0]:.3f} ms  p95 {explain_ms[1]:.3f} ms"
    )
    print(
        f"risk + explanations, all explained:       median {explain_all_ms[0]:.3f} ms  p95 {explain_all_ms[1]:.3f} ms"
    )
    print(f"feature extraction + risk + explanations: median {full_ms[0]:.1f} ms  p95 {full_ms[1]:.1f} ms")
    print(
        f"RSS: {mem['base']:.1f} MB before onnxruntime, +{mem['import']:.1f} MB import, "
        f"+{mem['loaded']:.1f} MB with the model loaded and run once"
    )

    from bench.report import write_section

    batch_ok = "meets" if explain_ms[0] < 5 else "misses"
    mem_ok = "meets" if mem["loaded"] < 30 else "misses"
    write_section(
        "Fault model on a 48-slot batch",
        f"`.venv/bin/python -m bench.bench_predict{' --quick' if args.quick else ''}` "
        f"(model {predictor.model_id}, {predictor.model_path.stat().st_size:,} bytes; {args.slots} windows from the "
        f"held-out simulator mix, median {int(np.median(samples))} samples)\n\n"
        "| what | median ms | p95 ms |\n|---|---|---|\n"
        f"| baseline: one onnxruntime call (risk only) | {risk_ms[0]:.2f} | {risk_ms[1]:.2f} |\n"
        f"| risk + explanations of the {risky} risky ones (what the cabinet runs) | {explain_ms[0]:.2f} | {explain_ms[1]:.2f} |\n"
        f"| risk + explanations of all 48 | {explain_all_ms[0]:.2f} | {explain_all_ms[1]:.2f} |\n"
        f"| feature extraction + the above (off the event loop) | {full_ms[0]:.0f} | {full_ms[1]:.0f} |\n\n"
        f"Goal < 5 ms per batch: **{batch_ok}** ({explain_ms[0] / risk_ms[0]:.1f}x the bare call).\n\n"
        f"Memory, fresh process: {mem['base']:.1f} MB before onnxruntime, +{mem['import']:.1f} MB for its import, "
        f"**+{mem['loaded']:.1f} MB** with the model loaded and run once. Goal < 30 MB added: **{mem_ok}** "
        "(onnxruntime's import alone costs most of it, whatever the model).\n",
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
