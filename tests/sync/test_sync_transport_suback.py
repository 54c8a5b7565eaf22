"""A subscription the broker refuses in its SUBACK is never silent (issue 11.5).

The broker is a real Mosquitto with the dynamic-security plugin (the production broker's
access control, which refuses a subscription when it is made): anonymous clients may
subscribe to ``cab/v1/CAB-1/#`` only. MQTT 5 refuses with 0x87, MQTT 3.1.1 with 0x80.
"""

from __future__ import annotations

import glob
import json
import logging
from pathlib import Path

import pytest

from sync.transport import Refused
from tests.conftest import until

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def acl_broker(make_broker, tmp_path: Path):
    plugins = sorted(glob.glob("/usr/lib/*/mosquitto_dynamic_security.so"))
    if not plugins:
        pytest.fail("mosquitto_dynamic_security.so not found: Debian's mosquitto package ships it")
    allow = [
        {"acltype": t, "topic": "cab/v1/CAB-1/#", "allow": True}
        for t in ("subscribePattern", "publishClientReceive", "publishClientSend")
    ]
    conf = tmp_path / "dynsec.json"
    conf.write_text(
        json.dumps(
            {
                "defaultACLAccess": {
                    "publishClientSend": False,
                    "publishClientReceive": False,
                    "subscribe": False,
                    "unsubscribe": True,
                },
                "anonymousGroup": "anon",
                "groups": [{"groupname": "anon", "roles": [{"rolename": "own"}]}],
                "roles": [{"rolename": "own", "acls": allow}],
                "clients": [],
            }
        )
    )
    return make_broker(f"plugin {plugins[0]}\nplugin_opt_config_file {conf}\n")


@pytest.mark.parametrize(("protocol", "code"), [("5", "0x87"), ("3.1.1", "0x80")])
async def test_a_refused_subscription_raises_and_is_logged(
    acl_broker, transports, caplog: pytest.LogCaptureFixture, protocol: str, code: str
) -> None:
    cab = transports(acl_broker.host, acl_broker.port, "CAB-1", protocol=protocol)
    await cab.start()
    await cab.wait_connected(5)
    await cab.subscribe("cab/v1/CAB-1/cmd", 1)  # allowed: returns quietly
    with caplog.at_level(logging.ERROR, logger="sync.transport"), pytest.raises(Refused, match=code):
        await cab.subscribe("$share/cloud/cab/v1/+/ev", 1)
    assert "$share/cloud/cab/v1/+/ev" in caplog.text and code in caplog.text
    assert set(cab.refused_subscriptions) == {"$share/cloud/cab/v1/+/ev"}


async def test_a_subscription_refused_on_connect_is_logged_with_its_filter(
    acl_broker, transports, caplog: pytest.LogCaptureFixture
) -> None:
    """Subscriptions given to the constructor are sent on every connect, with nobody awaiting
    their SUBACK: a refusal still names the filter in an error and in ``refused_subscriptions``."""
    subs = [("cab/v1/CAB-1/cmd", 1), ("cab/v1/+/ev", 1)]
    with caplog.at_level(logging.ERROR, logger="sync.transport"):
        cab = transports(acl_broker.host, acl_broker.port, "CAB-1", subs)
        await cab.start()
        await cab.wait_connected(5)
        await until(lambda: cab.refused_subscriptions, what="the refusing SUBACK")
    assert set(cab.refused_subscriptions) == {"cab/v1/+/ev"}
    assert "0x87" in cab.refused_subscriptions["cab/v1/+/ev"]
    assert "cab/v1/+/ev" in (cab.last_error or "")
    assert any("cab/v1/+/ev" in r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR)
