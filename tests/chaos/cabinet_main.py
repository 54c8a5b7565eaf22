"""``cabinet run`` with the chaos test's reconnect timings (the e2e tests' ``quick_reconnects``).

Production waits 1 s doubling to 120 s between broker attempts and 20 s for an ack before
resending; a test that kills the broker every few seconds would spend its minute waiting.
The cabinet's config has no keys for these, so this wrapper shortens them (backoff
0.2 s to 2 s, ack timeout 3 s) and then runs the real ``cabinet`` command line unchanged.

    python -m tests.chaos.cabinet_main run --config cabinet.toml
"""

from __future__ import annotations

import dataclasses
import functools
import sys

import cabinet.assemble as assemble
from cabinet import cli

BACKOFF = {"backoff_initial_s": 0.2, "backoff_max_s": 2.0, "stable_after_s": 2.0}
ACK_TIMEOUT_S = 3.0


def main(argv: list[str]) -> int:
    real_options = assemble.mqtt_options
    assemble.mqtt_options = lambda c: dataclasses.replace(real_options(c), **BACKOFF)  # type: ignore[assignment]
    assemble.SyncSettings = functools.partial(assemble.SyncSettings, ack_timeout_s=ACK_TIMEOUT_S)  # type: ignore[misc]
    return cli.main(argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
