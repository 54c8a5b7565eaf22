"""Health: runs the fault model over each battery's recent telemetry and takes risky ones out of service.

A battery at or above the quarantine risk is quarantined in the ledger (``battery_quarantined``
with its risk): it is never charged or rented until a technician releases it. Inference runs
off the event loop (onnxruntime is blocking), one thread, every ``interval_s``.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any

from cabinet.tasks import cancel_and_wait
from cabinet.telemetry import TelemetryStore
from models.features import MIN_SAMPLES
from models.predictor import CRITERIA, FaultPredictor, ModelError, Prediction
from models.telemetry import BatteryTelemetry, TelemetryError, TelemetrySample

log = logging.getLogger(__name__)

#: Below this SoC a pack the cabinet does not charge (power budget) would look like one that
#: refuses charge to the model, which assumes every pack in a slot charges: such samples are left out.
POLICY_IDLE_BELOW_SOC = 90

#: Flags that say a withdrawal criterion is already met (measured, not predicted).
CRITERION_FLAGS = frozenset(flag for flag, _, _ in CRITERIA)


@dataclass
class Health:
    """The cabinet part that predicts faults; ``risks`` is the latest prediction per battery."""

    ledger: Any  # AsyncLedger
    telemetry: TelemetryStore
    model_path: str | None
    risk_quarantine: float = 0.7
    interval_s: float = 300.0
    min_window_s: float = 2 * 3600.0  # hardware time a window must span before its risk can quarantine
    risks: dict[str, Prediction] = field(default_factory=dict)
    last_run_at: float | None = None
    problem: str | None = None
    predictor: FaultPredictor | None = None
    _task: asyncio.Task[None] | None = None

    @property
    def model_version(self) -> str:
        return self.predictor.model_id if self.predictor else "none"

    async def start(self) -> None:
        try:
            self.predictor = await asyncio.to_thread(FaultPredictor, self.model_path or None)
            await asyncio.to_thread(self.predictor.smoke_test)
        except ModelError as e:
            # without a model the cabinet still rents; the UI and state show the problem
            self.problem = str(e)
            log.error("fault model unavailable: %s", e)
            return
        self._task = asyncio.create_task(self._loop(), name="health")

    async def swap(self, path: Any) -> None:
        """Load ``path`` and make it the model in use; raises (keeping the old one) if it fails
        to load or to pass its smoke test."""
        new = await asyncio.to_thread(FaultPredictor, path)
        await asyncio.to_thread(new.smoke_test)
        self.predictor, self.problem = new, None
        if self._task is None:
            self._task = asyncio.create_task(self._loop(), name="health")
        log.info("fault model %s in use", new.model_id)

    async def stop(self) -> None:
        if self._task:
            await cancel_and_wait([self._task])

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                await self.run_once()
                await asyncio.to_thread(self.telemetry.prune)
            except Exception:
                log.exception("fault prediction run failed")

    def windows(self, sns: list[str]) -> list[BatteryTelemetry]:
        """Each battery's stored samples as the model's input window (t_s from its first sample)."""
        out = []
        for sn in sns:
            samples = self.telemetry.window(sn)
            if not samples:
                continue
            timed: list[tuple[float, Any]] = []
            for s in samples:
                if s.charge_enabled is False and s.soc < POLICY_IDLE_BELOW_SOC:
                    continue  # held back by the cabinet's charge plan, not refusing charge: not evidence
                t = s.t_hw if s.t_hw is not None else s.at_wall
                if timed and t < timed[-1][0]:
                    timed = []  # the timeline restarted (e.g. samples from before hardware time): keep the newest part
                timed.append((t, s))
            if not timed:
                continue
            t0 = timed[0][0]
            rows = [
                TelemetrySample(t - t0, s.voltage_v, s.current_a, s.temp_c, s.soc, s.cycle) for t, s in timed
            ]
            try:
                out.append(BatteryTelemetry.from_samples(sn, rows))
            except TelemetryError as e:  # e.g. the wall clock jumped back: skip this battery this time
                log.warning("battery %s: telemetry window not usable: %s", sn, e)
        return out

    async def run_once(self) -> list[Prediction]:
        """Predict for every battery in a slot; quarantine those at or above the threshold."""
        if self.predictor is None:
            return []
        in_slots = [b for b in await self.ledger.batteries() if b.place == "slot"]
        windows = self.windows([b.sn for b in in_slots])
        spans = {w.battery_sn: float(w.t_s[-1]) if len(w) >= MIN_SAMPLES else 0.0 for w in windows}
        predictions = await asyncio.to_thread(self.predictor.predict, windows)
        self.last_run_at = time.time()
        quarantined = {b.sn for b in in_slots if b.quarantined}
        for p in predictions:
            self.risks[p.battery_sn] = p
            if not set(p.flags) & CRITERION_FLAGS:
                if spans.get(p.battery_sn, 0.0) < self.min_window_s:
                    continue  # a guess from a short window never takes a battery out of service
                if p.top_features and math.isnan(p.top_features[0].value):
                    continue  # its strongest reason is something the window could not measure: not evidence
            if p.risk >= self.risk_quarantine and p.battery_sn not in quarantined:
                reasons = ", ".join(f"{c.name}={c.value:.3g}" for c in p.top_features) or "model risk"
                await self.ledger.record(
                    "battery_quarantined",
                    sn=p.battery_sn,
                    risk=round(p.risk, 4),
                    reason=f"fault risk {p.risk:.2f} ({reasons})"[:500],
                )
                log.warning("battery %s quarantined: fault risk %.2f", p.battery_sn, p.risk)
        return predictions
