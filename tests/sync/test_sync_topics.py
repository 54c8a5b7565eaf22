"""Topic building and parsing."""

import pytest

from sync.errors import InvalidTopic
from sync.topics import (
    CHANNELS,
    CLOUD_SHARED_EV,
    Channel,
    TopicAddress,
    parse_topic,
    shared_subscription,
    subscription,
    topic,
    validate_cabinet_id,
)


@pytest.mark.parametrize("channel", list(Channel))
def test_topic_round_trips_through_parse(channel: Channel) -> None:
    t = topic("CAB-0001", channel)
    assert t == f"cab/v1/CAB-0001/{channel.value}"
    assert parse_topic(t) == TopicAddress("CAB-0001", channel)
    assert parse_topic(t).topic == t


@pytest.mark.parametrize("bad", ["", "a/b", "+", "#", "$SYS", "-lead", "x" * 65, "caf\u00e9", "a b", "a\x00"])
def test_bad_cabinet_ids_are_refused(bad: str) -> None:
    with pytest.raises(InvalidTopic):
        validate_cabinet_id(bad)
    with pytest.raises(InvalidTopic):
        topic(bad, Channel.EV)


@pytest.mark.parametrize(
    "bad",
    ["cab/v1/CAB-1", "cab/v2/CAB-1/ev", "cab/v1/CAB-1/ev/x", "cab/v1/CAB-1/nope", "cab/v1/+/ev", "x/v1/C/ev"],
)
def test_parse_topic_refuses_foreign_topics(bad: str) -> None:
    with pytest.raises(InvalidTopic):
        parse_topic(bad)


def test_subscriptions_cover_one_cabinet_or_the_fleet() -> None:
    assert subscription(Channel.CMD, "CAB-7") == "cab/v1/CAB-7/cmd"
    assert subscription("state") == "cab/v1/+/state"
    assert CLOUD_SHARED_EV == "$share/cloud/cab/v1/+/ev"
    assert shared_subscription(Channel.TM, "workers") == "$share/workers/cab/v1/+/tm"
    with pytest.raises(InvalidTopic):
        shared_subscription(Channel.EV, "a/b")


def test_retained_channels_are_state_and_cfg_only() -> None:
    assert {c for c, spec in CHANNELS.items() if spec.retain} == {Channel.STATE, Channel.CFG}
    assert CHANNELS[Channel.TM].qos == 0
