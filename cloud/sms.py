"""Text messages to renters' phones (the one-time sign-in code): a pluggable sender.

A backend implements :class:`SmsSender` (one method, ``send``) and is chosen by the config key
``sms_backend``. The only one here is ``log``, for development and the demo: it writes the
message to the cloud's log at WARNING (the demo reads the code from there). A real backend (an
SMS gateway's HTTP API) is a class with the same ``send``, registered in ``BACKENDS``; it raises
:class:`SmsFailed` when the gateway refuses, and the API answers 503.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Protocol, runtime_checkable

from cloud.config import CloudConfig, ConfigError
from cloud.errors import CloudError

log = logging.getLogger(__name__)


class SmsFailed(CloudError, RuntimeError):
    """The SMS backend could not send the message (the renter may ask again later)."""

    status = 503
    code = "sms_unavailable"


@runtime_checkable
class SmsSender(Protocol):
    """Sends one text message to an E.164 number; raises :class:`SmsFailed` if it cannot."""

    def send(self, phone: str, text: str) -> None: ...


def masked(phone: str) -> str:
    """The number as a log may show it: country code and first digits, the last four hidden."""
    return phone[:-4] + "****" if len(phone) > 8 else "+****"


class LogSender:
    """The development backend: the message goes to the cloud's log, nowhere else."""

    def __init__(self, logger: logging.Logger = log) -> None:
        self.log = logger

    def send(self, phone: str, text: str) -> None:
        self.log.warning("SMS to %s: %s", masked(phone), text)


BACKENDS: dict[str, Callable[[CloudConfig], SmsSender]] = {"log": lambda config: LogSender()}


def build_sender(config: CloudConfig) -> SmsSender:
    """The sender ``config.sms_backend`` names."""
    factory = BACKENDS.get(config.sms_backend)
    if factory is None:
        raise ConfigError(f"cloud.sms_backend {config.sms_backend!r} unknown (known: {', '.join(BACKENDS)})")
    return factory(config)
