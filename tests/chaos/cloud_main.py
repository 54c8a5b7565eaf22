"""``cabinet-cloud`` with the chaos test's reconnect timings.

The cloud worker's broker backoff (1 s to 30 s) and its housekeeping period (30 s: queued
commands are re-sent after a broker outage at that pace) are not config keys; this wrapper
shortens them (backoff 0.2 s to 2 s, housekeeping every 1 s) and then runs the real
``cabinet-cloud`` command line unchanged.

    python -m tests.chaos.cloud_main serve --config cloud.toml
"""

from __future__ import annotations

import dataclasses
import functools
import sys

import cloud.app as app
from cloud import cli

BACKOFF = {"backoff_initial_s": 0.2, "backoff_max_s": 2.0, "stable_after_s": 2.0}


def main(argv: list[str]) -> int:
    real_options = app.mqtt_options_from
    app.mqtt_options_from = lambda c: dataclasses.replace(real_options(c), **BACKOFF)  # type: ignore[assignment]
    app.FleetSettings = functools.partial(app.FleetSettings, housekeeping_interval_s=1.0)  # type: ignore[misc]
    return cli.main(argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
