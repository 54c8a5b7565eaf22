"""Topic building and parsing."""

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sync.errors import InvalidTopic
from sync.topics import (
    CABINET_ID_PATTERN,
    CHANNELS,
    CLOUD_SHARED_EV,
    Channel,
    TopicAddress,
    is_valid_cabinet_id,
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


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "a/b",
        "+",
        "#",
        "$SYS",
        "-lead",
        "x" * 33,
        "caf\u00e9",
        "a b",
        "a\x00",
        "A\n",
        "a.b",
        "cloud",
        "CLOUD-2",
    ],
)
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


@settings(max_examples=500, deadline=None)
@given(st.text(max_size=40) | st.from_regex(r"[A-Za-z0-9._\-\n]{1,34}", fullmatch=True))
def test_one_cabinet_id_rule_for_topics_and_the_pattern(cabinet_id: str) -> None:
    """The topics accept exactly the ids of ``CABINET_ID_PATTERN`` (the pattern the cloud's
    ``POST /api/cabinets`` schema uses) minus the cloud's reserved names (issue 11.6)."""
    try:
        built = parse_topic(topic(cabinet_id, Channel.EV)).cabinet == cabinet_id
    except InvalidTopic:
        built = False
    assert built == is_valid_cabinet_id(cabinet_id)
    reserved = re.fullmatch(r"cloud(-[0-9]{1,3})?", cabinet_id, re.IGNORECASE) is not None
    assert built == (re.fullmatch(CABINET_ID_PATTERN, cabinet_id) is not None and not reserved)
