"""Seeded, labelled telemetry windows from the physics model, under named scenario mixes.

Label: 1 when the pack's withdrawal criterion is met within ``HORIZON_CYCLES`` cycles after
the window's last sample (or already was), else 0. Healthy packs, young or old, never are.
The held-out mix differs from the training mix in seeds, fault/age proportions, air
temperatures, sampling intervals, charge currents and session counts.

    python -m models.training.datagen --out telemetry.csv --labels labels.csv --n 20 --seed 7
"""

from __future__ import annotations

import argparse
import csv
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from models.features import FEATURE_NAMES, extract_features
from models.telemetry import BatteryTelemetry, write_telemetry_csv
from models.training.physics import FAULT_KINDS, CabinetSetting, PackSpec, simulate_window

HORIZON_CYCLES = 20.0


@dataclass(frozen=True)
class ScenarioMix:
    """How packs and cabinets are drawn for a data set."""

    name: str
    kind_weights: dict[str, float]
    ambient_c: tuple[float, float]
    sample_s: tuple[float, ...]
    charge_a: tuple[float, ...]
    sessions: tuple[int, int]
    lead_cycles: tuple[float, float] = (-3.0, 70.0)
    old_cycles: tuple[float, float] = (500.0, 1500.0)
    fast_fault_share: float = 0.35  # faults that develop within a few cycles (onset 2-30)


TRAIN_MIX = ScenarioMix(
    name="train",
    kind_weights={"healthy": 0.2, "healthy_old": 0.2, **{k: 0.6 / len(FAULT_KINDS) for k in FAULT_KINDS}},
    ambient_c=(15.0, 35.0),
    sample_s=(10.0, 20.0, 30.0, 60.0, 120.0),
    charge_a=(1.0, 1.5, 2.0),
    sessions=(8, 12),
)
HELDOUT_MIX = ScenarioMix(
    name="heldout",
    kind_weights={"healthy": 0.15, "healthy_old": 0.3, **{k: 0.55 / len(FAULT_KINDS) for k in FAULT_KINDS}},
    ambient_c=(10.0, 40.0),
    sample_s=(15.0, 45.0, 90.0, 120.0),
    charge_a=(1.0, 1.2, 1.8, 2.0),
    sessions=(6, 14),
    lead_cycles=(-3.0, 80.0),
    old_cycles=(600.0, 1800.0),
    fast_fault_share=0.5,
)


@dataclass
class Dataset:
    """Windows with their ground truth (label, fault kind, cycles left until the criterion)."""

    windows: list[BatteryTelemetry] = field(default_factory=list)
    features: list[np.ndarray] = field(default_factory=list)
    serials: list[str] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    kinds: list[str] = field(default_factory=list)
    lead_cycles: list[float] = field(default_factory=list)

    def add(self, window: BatteryTelemetry, label: int, kind: str, lead: float, keep_window: bool) -> None:
        """Keep the window's features (and the window itself only if asked: they are large)."""
        self.features.append(extract_features(window).values)
        self.serials.append(window.battery_sn)
        if keep_window:
            self.windows.append(window)
        self.labels.append(label)
        self.kinds.append(kind)
        self.lead_cycles.append(lead)

    def matrix(self) -> np.ndarray:
        """Feature matrix (rows = windows, columns = FEATURE_NAMES)."""
        return np.vstack(self.features) if self.features else np.empty((0, len(FEATURE_NAMES)))


def random_pack(
    rng: np.random.Generator, kind: str, end_cycle: float, lead: float, sn: str, fast_share: float = 0.35
) -> PackSpec:
    """A pack of ``kind`` whose criterion (if faulty) is met ``lead`` cycles after ``end_cycle``.

    A ``fast_share`` of faults develop over 2-30 cycles (a short that grows within days), the rest
    over 40-160 cycles; at least half of the shorts are fast.
    """
    faulty = kind in FAULT_KINDS
    fast = rng.random() < (max(fast_share, 0.5) if kind == "short" else fast_share)
    return PackSpec(
        battery_sn=sn,
        kind=kind,
        capacity_ah=5.0 * rng.uniform(0.97, 1.03),
        fade_per_cycle=rng.uniform(0.8e-4, 1.5e-4),
        r0_ohm=rng.uniform(0.05, 0.10),
        r_growth_per_cycle=rng.uniform(2e-4, 5e-4),
        r1_ohm=rng.uniform(0.02, 0.05),
        tau1_s=rng.uniform(30.0, 120.0),
        rth_k_per_w=rng.uniform(8.0, 13.0),
        tau_th_s=rng.uniform(600.0, 1200.0),
        charger_loss=rng.uniform(0.04, 0.08),
        sd_base_pct_h=rng.uniform(0.01, 0.06),
        contact_ohm=rng.uniform(0.02, 0.08),
        fail_cycle=end_cycle + lead if faulty else math.inf,
        onset_cycles=rng.uniform(2.0, 30.0) if fast else rng.uniform(40.0, 160.0),
        shape=rng.uniform(1.0, 2.5),
    )


def random_setting(rng: np.random.Generator, mix: ScenarioMix) -> CabinetSetting:
    return CabinetSetting(
        ambient_c=rng.uniform(*mix.ambient_c),
        ambient_swing_c=rng.uniform(1.0, 4.0),
        charge_a=float(rng.choice(mix.charge_a)),
        sample_s=float(rng.choice(mix.sample_s)),
        sessions=int(rng.integers(mix.sessions[0], mix.sessions[1] + 1)),
        term_a=float(rng.choice([0.1, 0.15, 0.25])),
        topup_drop=rng.uniform(0.03, 0.10),
        # Cabinet firmwares differ: some charge at once, never pause, never change the current.
        wait_prob=float(rng.choice([0.0, 0.5, 0.9])),
        pause_prob=float(rng.choice([0.0, 0.15])),
        current_change_prob=float(rng.choice([0.0, 0.3])),
    )


def end_cycle_for(rng: np.random.Generator, kind: str, mix: ScenarioMix) -> float:
    if kind == "healthy":
        return rng.uniform(5.0, 400.0)
    if kind == "healthy_old":
        return rng.uniform(*mix.old_cycles)
    return rng.uniform(60.0, 1200.0)


def generate(n: int, seed: int, mix: ScenarioMix = TRAIN_MIX, *, keep_windows: bool = False) -> Dataset:
    """``n`` labelled windows; the same (n, seed, mix) always gives the same data."""
    kinds = list(mix.kind_weights)
    weights = np.array([mix.kind_weights[k] for k in kinds])
    weights = weights / weights.sum()
    ds = Dataset()
    for j, child in enumerate(np.random.SeedSequence(seed).spawn(n)):
        rng = np.random.default_rng(child)
        kind = kinds[int(rng.choice(len(kinds), p=weights))]
        end = end_cycle_for(rng, kind, mix)
        lead = rng.uniform(*mix.lead_cycles) if kind in FAULT_KINDS else math.inf
        sn = f"{mix.name[:2].upper()}{seed:04d}{j:06d}"
        pack = random_pack(rng, kind, end, lead, sn=sn, fast_share=mix.fast_fault_share)
        window = simulate_window(pack, end, random_setting(rng, mix), rng)
        ds.add(window, int(lead <= HORIZON_CYCLES), kind, lead, keep_windows)
    return ds


def generate_trajectories(
    n_per_kind: int,
    seed: int,
    mix: ScenarioMix = HELDOUT_MIX,
    leads: Sequence[float] = (60, 50, 40, 30, 25, 20, 15, 10, 5, 0),
    *,
    keep_windows: bool = False,
) -> Dataset:
    """The same faulty packs watched at several points before their criterion (for lead time).

    Windows of one pack share its serial number; ``lead_cycles`` says how far ahead each one is.
    """
    ds = Dataset()
    for ki, kind in enumerate(FAULT_KINDS):
        for j, child in enumerate(np.random.SeedSequence([seed, ki]).spawn(n_per_kind)):
            rng = np.random.default_rng(child)
            fail = rng.uniform(120.0, 1200.0)
            pack = random_pack(rng, kind, fail, 0.0, sn=f"TR{ki}{j:05d}", fast_share=mix.fast_fault_share)
            cab = random_setting(rng, mix)
            for lead in leads:
                window = simulate_window(pack, fail - lead, cab, rng)
                ds.add(window, int(lead <= HORIZON_CYCLES), kind, float(lead), keep_windows)
    return ds


def main(argv: Sequence[str] | None = None) -> int:
    """Write a telemetry CSV (the contract's format) and its ground-truth labels."""
    ap = argparse.ArgumentParser(prog="python -m models.training.datagen", description=main.__doc__)
    ap.add_argument("--out", required=True, help="telemetry CSV to write")
    ap.add_argument("--labels", help="ground truth CSV to write (battery_sn,kind,label,lead_cycles)")
    ap.add_argument("--n", type=int, default=20, help="number of batteries")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--mix", choices=("train", "heldout"), default="heldout")
    args = ap.parse_args(argv)
    ds = generate(args.n, args.seed, TRAIN_MIX if args.mix == "train" else HELDOUT_MIX, keep_windows=True)
    write_telemetry_csv(args.out, ds.windows)
    if args.labels:
        with open(args.labels, "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f, lineterminator="\n")
            w.writerow(("battery_sn", "kind", "label", "lead_cycles"))
            for win, kind, label, lead in zip(ds.windows, ds.kinds, ds.labels, ds.lead_cycles, strict=True):
                w.writerow((win.battery_sn, kind, label, "" if math.isinf(lead) else f"{lead:.1f}"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
