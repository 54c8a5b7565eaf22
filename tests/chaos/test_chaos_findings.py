"""What the chaos runs found, each as a small deterministic test of the cloud's ingest."""

from __future__ import annotations

import time
from pathlib import Path

from sqlalchemy import select

from cloud.app import CloudContext
from cloud.config import CloudConfig
from cloud.db import fleet_alerts, migrate
from cloud.fleet.ingest import EventApplier
from sync.messages import EventBatch, WireEvent


def _event(seq: int, type_: str, **body: object) -> WireEvent:
    return WireEvent(seq, f"ev-{seq}", type_, time.time(), 100.0 + seq, "boot-1", body)


def test_untaken_offline_pass_rental_raises_no_ingest_error(tmp_path: Path) -> None:
    ctx = CloudContext(CloudConfig.from_mapping({"database": str(tmp_path / "cloud.db"), "scrypt_n": 1024}))
    migrate(ctx.engine)
    rental = "P-P-0123456789abcdef-0123456789ab"
    batch = EventBatch(
        "CAB-1",
        (
            _event(1, "rental_requested", rental_id=rental, source="pass", pass_id="P-0123456789abcdef"),
            _event(2, "rental_aborted", rental_id=rental, slot=3, reason="not_taken", source="pass"),
        ),
    )
    out = EventApplier(ctx.engine, ctx.rentals, time.time).apply_batch(batch)
    assert out.acked_seq == 2  # the stream never sticks, whatever happens
    with ctx.engine.connect() as conn:
        kinds = [r.kind for r in conn.execute(select(fleet_alerts.c.kind, fleet_alerts.c.detail))]
    assert out.errors == [] and "ingest_error" not in kinds
