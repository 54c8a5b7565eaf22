"""MQTT topics of the edge<->cloud protocol: ``cab/v1/{cabinet}/{channel}``.

One place builds and parses every topic so that neither side ever formats a topic by hand.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

from sync.errors import InvalidTopic

PREFIX = "cab/v1"
CABINET_ID_MAX = 32
# The ONE rule for cabinet ids (issue 11.6): topics, the broker's per-cabinet ACL roles
# (deploy/pki.py), ``POST /api/cabinets`` and its JSON schema all use it. 32 characters, as
# ``cabinet.id`` in the cabinet's config and the certificate CN that provisioning issues.
# Written so that it means the same under ``re.fullmatch`` and as a JSON-schema pattern.
CABINET_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,31}$"
_CABINET_RE = re.compile(CABINET_ID_PATTERN)
# The cloud workers' identities (certificate CN = broker user name): never a cabinet's.
RESERVED_IDS = re.compile(r"cloud(-[0-9]{1,3})?", re.IGNORECASE)
CLOUD_SHARE_GROUP = "cloud"
_GROUP_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")


class Channel(StrEnum):
    """The last topic level: what flows on the topic."""

    EV = "ev"
    ACK = "ack"
    CMD = "cmd"
    TM = "tm"
    STATE = "state"
    CFG = "cfg"
    MODEL = "model"


@dataclass(frozen=True)
class ChannelSpec:
    """How a channel is published: direction, QoS and retain flag."""

    upstream: bool  # True: edge -> cloud
    qos: int
    retain: bool


CHANNELS: dict[Channel, ChannelSpec] = {
    Channel.EV: ChannelSpec(upstream=True, qos=1, retain=False),
    Channel.ACK: ChannelSpec(upstream=False, qos=1, retain=False),
    Channel.CMD: ChannelSpec(upstream=False, qos=1, retain=False),
    Channel.TM: ChannelSpec(upstream=True, qos=0, retain=False),
    Channel.STATE: ChannelSpec(upstream=True, qos=1, retain=True),
    Channel.CFG: ChannelSpec(upstream=False, qos=1, retain=True),
    Channel.MODEL: ChannelSpec(upstream=False, qos=1, retain=False),
}


@dataclass(frozen=True)
class TopicAddress:
    """A parsed topic: which cabinet, which channel."""

    cabinet: str
    channel: Channel

    @property
    def topic(self) -> str:
        return topic(self.cabinet, self.channel)


def _channel(channel: Channel | str) -> Channel:
    try:
        return Channel(channel)
    except ValueError:
        names = ", ".join(c.value for c in Channel)
        raise InvalidTopic(f"unknown channel {str(channel)[:40]!r} (one of {names})") from None


def is_valid_cabinet_id(cabinet: str) -> bool:
    """True if ``cabinet`` is 1-32 chars of ``A-Z a-z 0-9 _ -``, starting with a letter or digit,
    and not one of the cloud's identities (``cloud``, ``cloud-N``, any case)."""
    return (
        isinstance(cabinet, str)
        and _CABINET_RE.fullmatch(cabinet) is not None
        and RESERVED_IDS.fullmatch(cabinet) is None
    )


def validate_cabinet_id(cabinet: str) -> str:
    """Return ``cabinet`` unchanged or raise ``InvalidTopic`` saying why it cannot be a cabinet id."""
    if not isinstance(cabinet, str):
        raise InvalidTopic(f"cabinet id must be a string, got {type(cabinet).__name__}")
    if not is_valid_cabinet_id(cabinet):
        if _CABINET_RE.fullmatch(cabinet) is not None:
            raise InvalidTopic(f"invalid cabinet id {cabinet!r}: reserved for the cloud's identities")
        raise InvalidTopic(
            f"invalid cabinet id {cabinet[:80]!r}: 1-{CABINET_ID_MAX} chars of A-Z a-z 0-9 _ -, "
            "starting with a letter or digit"
        )
    return cabinet


def topic(cabinet: str, channel: Channel | str) -> str:
    """The topic a message for ``cabinet`` on ``channel`` is published to."""
    return f"{PREFIX}/{validate_cabinet_id(cabinet)}/{_channel(channel).value}"


def subscription(channel: Channel | str, cabinet: str = "+") -> str:
    """A subscription filter for one cabinet's channel, or every cabinet's with ``+``."""
    cab = cabinet if cabinet == "+" else validate_cabinet_id(cabinet)
    return f"{PREFIX}/{cab}/{_channel(channel).value}"


def shared_subscription(channel: Channel | str = Channel.EV, group: str = CLOUD_SHARE_GROUP) -> str:
    """``$share/{group}/cab/v1/+/{channel}``: the broker spreads the fleet over the group's workers."""
    if not isinstance(group, str) or _GROUP_RE.fullmatch(group) is None:
        raise InvalidTopic(f"invalid share group name {group!r}")
    return f"$share/{group}/{subscription(channel)}"


CLOUD_SHARED_EV = shared_subscription(Channel.EV)


def parse_topic(value: str) -> TopicAddress:
    """Split a received topic into cabinet and channel, or raise ``InvalidTopic``."""
    parts = value.split("/") if isinstance(value, str) else []
    if len(parts) != 4 or f"{parts[0]}/{parts[1]}" != PREFIX:
        raise InvalidTopic(f"topic {str(value)[:120]!r} is not {PREFIX}/{{cabinet}}/{{channel}}")
    return TopicAddress(validate_cabinet_id(parts[2]), _channel(parts[3]))
