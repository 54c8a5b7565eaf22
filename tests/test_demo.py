"""The README's demo starts every part (broker, cloud, simulated cabinets) and they come up, and a
renter rents, takes, returns and pays with each payment provider the demo offers."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
#: --provider choice -> (the cloud's provider name, the fake's line in the URL list)
FAKES = {
    "stripe-fake": ("stripe", "Stripe (local fake of the tests, real SDK)"),
    "wechat-fake": ("wechat", "WeChat Pay (local fake of the tests, real SDK)"),
    "alipay-fake": ("alipay", "Alipay (local fake of the tests, real SDK)"),
}
#: what the renter confirms in the provider's app (the demo plays it through the fake)
CONFIRMATIONS = {
    "wechat-fake": "renter: confirmed the Pay Score order in WeChat (played by the fake)",
    "alipay-fake": "renter: confirmed the credit freeze (免押) in the Alipay app (played by the fake)",
}
#: the provider's notification that the fee was collected, as the demo reports it
COLLECTED = {
    "wechat-fake": "WeChat: collected 2.00 CNY from the renter; its PAYSCORE.USER_PAID notification reached the cloud",
    "alipay-fake": "Alipay: paid 2.00 CNY against the freeze; its trade_status_sync notification reached the cloud",
}


@pytest.mark.timeout(300)
@pytest.mark.parametrize("provider", ["sandbox", "stripe-fake", "wechat-fake", "alipay-fake"])
def test_demo_starts_every_part_and_a_renter_rents_returns_and_pays(tmp_path: Path, provider: str) -> None:
    var = tmp_path / "demo"
    r = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "demo.py"),
            "--check",
            "--var",
            str(var),
            "--provider",
            provider,
        ],
        capture_output=True,
        text=True,
        timeout=280,
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    out = r.stdout
    assert "demo: every part is up; a renter rented, took, returned and paid" in out
    assert "renter: rental closed" in out and "payment paid" in out
    assert out.count("/kiosk") == 2 and "openapi.json" in out
    assert "PB" in out  # the live slot table shows batteries

    # money is shown in major units with the currency, never in minor units
    currency = "CNY" if provider in CONFIRMATIONS else "EUR"
    hold = re.search(r"renter: rental \S+ requested, hold (\S+) ([A-Z]{3}) \((\w+)\)", out)
    assert hold, out[-3000:]
    assert re.fullmatch(r"\d+\.\d\d", hold[1]) and hold[2] == currency
    closed = re.search(r"fee (\d+\.\d\d) ([A-Z]{3}), captured (\d+\.\d\d) ([A-Z]{3}), payment paid", out)
    assert closed and closed[2] == closed[4] == currency, out[-3000:]
    assert closed[1] == closed[3]  # all the fee was captured

    if provider == "sandbox":
        assert hold[3] == "ejecting"
        return
    name, label = FAKES[provider]
    assert label in out
    # paid through the provider's real SDK and the fake, its notifications verified by the cloud
    log = (var / "cloud.log").read_text()
    accepted = [ln for ln in log.splitlines() if f"POST /api/payments/{name}/notify" in ln and '" 200 ' in ln]
    assert accepted, log[-3000:]
    # the keys reach the cloud by its environment: the config names variables, holds no key
    conf = (var / "cloud" / "cloud.toml").read_text()
    assert f'provider = "{name}"' in conf
    assert "-----BEGIN" not in conf and "sk_" not in conf and "whsec_" not in conf
    if provider in CONFIRMATIONS:
        assert "_key_env = " in conf  # e.g. apiv3_key_env = "WECHAT_APIV3_KEY"
        # 202 awaiting_confirmation; the renter confirms (played by the fake), then the cabinet ejects
        assert hold[3] == "awaiting_confirmation" and (hold[1], hold[2]) == ("99.00", "CNY")
        confirmed, took = out.index(CONFIRMATIONS[provider]), out.index("renter: took battery")
        assert confirmed < took
        # one period of the CNY tariff (no free minutes), collected by the provider, which told the cloud
        assert (closed[1], closed[3]) == ("2.00", "2.00")
        assert COLLECTED[provider] in out
        assert len(accepted) >= 2  # the confirmation and the payment
