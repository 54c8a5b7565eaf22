"""Adds the optional parts (sync agent, health, web UI) to a Cabinet, each from its config section."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cabinet.service import Cabinet


def add_extras(cab: Cabinet) -> None:
    """Create the parts that run beside the bus poller and the controller, in start order."""
    return None
