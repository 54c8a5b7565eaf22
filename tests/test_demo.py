"""The README's demo starts every part (broker, cloud, simulated cabinets) and they come up."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.timeout(300)
@pytest.mark.parametrize("provider", ["sandbox", "stripe-fake"])
def test_demo_starts_every_part_and_a_renter_rents_returns_and_pays(tmp_path: Path, provider: str) -> None:
    r = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "demo.py"),
            "--check",
            "--var",
            str(tmp_path / "demo"),
            "--provider",
            provider,
        ],
        capture_output=True,
        text=True,
        timeout=280,
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "demo: every part is up; a renter rented, took, returned and paid" in r.stdout
    assert "renter: rental closed" in r.stdout and "payment paid" in r.stdout
    if (
        provider == "stripe-fake"
    ):  # paid through Stripe's SDK and the fake, its webhooks verified by the cloud
        assert "Stripe (local fake of the tests, real SDK)" in r.stdout
        log = (tmp_path / "demo" / "cloud.log").read_text()
        assert any("POST /api/payments/stripe/notify" in ln and '" 200 ' in ln for ln in log.splitlines())
    assert r.stdout.count("/kiosk") == 2 and "openapi.json" in r.stdout
    assert "PB" in r.stdout  # the live slot table shows batteries
