"""The naming functions: the wire format, the rules, and that no two audiences collide."""

from __future__ import annotations

import re

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from ws4redis_channels.exceptions import InvalidName
from ws4redis_channels.names import (
    FACILITY_MAX_LENGTH,
    Audience,
    Naming,
    Target,
    channel_for,
    channels_for,
    group_for,
    parse_channel,
    validate_facility,
)

GROUP_NAME_RE = re.compile(r"^[a-zA-Z\d\-_.]+$")


@pytest.mark.parametrize(
    ("target", "classic", "typed"),
    [
        (Target(Audience.BROADCAST, "foobar"), "_broadcast_:foobar", "broadcast:foobar"),
        (Target(Audience.USER, "foobar", "johndoe"), "johndoe:foobar", "user:johndoe:foobar"),
        (
            Target(Audience.SESSION, "foobar", "wnqd0gbw5obpnj50zwh6yaq2yz4o8g9x"),
            "wnqd0gbw5obpnj50zwh6yaq2yz4o8g9x:foobar",
            "session:wnqd0gbw5obpnj50zwh6yaq2yz4o8g9x:foobar",
        ),
        (Target(Audience.GROUP, "foobar", "staff"), "_group_:staff:foobar", "group:staff:foobar"),
    ],
)
def test_both_conventions_produce_the_documented_names(target, classic, typed):
    assert channel_for(target) == classic
    assert channel_for(target, naming=Naming.TYPED) == typed
    assert channel_for(target, prefix="p") == f"p:{classic}"
    assert channel_for(target, prefix="p", naming=Naming.TYPED) == f"p:{typed}"


@pytest.mark.parametrize(
    "facility",
    [
        "",
        "a:b",
        "a b",
        "a\x00b",
        "../x",
        "x/..",
        "/x",
        "x/",
        "a//b",
        ".",
        "..",
        "café",
        "a\nb",
        "x" * (FACILITY_MAX_LENGTH + 1),
        "-x",
        "_broadcast_:x",
    ],
)
def test_bad_facilities_are_rejected(facility):
    with pytest.raises(InvalidName):
        validate_facility(facility)


@pytest.mark.parametrize(
    "facility", ["foobar", "chat", "a.b-c_d", "rooms/42", "A1/b2/c3", "x" * 100]
)
def test_good_facilities_are_accepted(facility):
    assert validate_facility(facility) == facility


@pytest.mark.parametrize(
    ("audience", "identity"),
    [
        (Audience.USER, "_broadcast_"),
        (Audience.USER, "_group_"),
        (Audience.USER, "a:b"),
        (Audience.USER, ""),
        (Audience.USER, "abcdefghijklmnopqrstuvwxyz012345"),  # looks like a session key
        (Audience.USER, "tab\there"),
        (Audience.GROUP, "a:b"),
        (Audience.SESSION, "john"),
        (Audience.SESSION, "_broadcast_"),
        (Audience.SESSION, "ABCDEFGHIJKLMNOPQRSTUVWXYZ012345"),
    ],
)
def test_identities_that_could_alias_another_channel_are_rejected(audience, identity):
    with pytest.raises(InvalidName):
        channel_for(Target(audience, "foobar", identity))


def test_a_session_shaped_user_name_is_fine_with_the_typed_naming():
    name = "abcdefghijklmnopqrstuvwxyz012345"
    assert channel_for(Target(Audience.USER, "f", name), naming=Naming.TYPED) == f"user:{name}:f"


def test_broadcast_takes_no_identity_and_others_need_one():
    with pytest.raises(InvalidName):
        channel_for(Target(Audience.BROADCAST, "f", "john"))
    with pytest.raises(InvalidName):
        channel_for(Target(Audience.USER, "f"))


def test_channels_for_lists_each_audience_once():
    assert channels_for("f", broadcast=True, users=["a", "a"], groups=["g"]) == [
        "_broadcast_:f",
        "a:f",
        "_group_:g:f",
    ]


# -- properties ------------------------------------------------------------------

facilities = st.from_regex(
    r"\A[A-Za-z0-9][A-Za-z0-9._-]{0,8}(/[A-Za-z0-9][A-Za-z0-9._-]{0,5}){0,2}\Z"
)
names = st.one_of(
    st.text(min_size=1, max_size=12),
    st.sampled_from(["_broadcast_", "_group_", "broadcast", "user", "group", "session", "a:b"]),
    st.from_regex(r"\A[a-z0-9]{32}\Z"),
)
targets = st.one_of(
    st.builds(Target, st.just(Audience.BROADCAST), facilities),
    st.builds(
        Target,
        st.sampled_from([Audience.USER, Audience.SESSION, Audience.GROUP]),
        facilities,
        names,
    ),
)
namings = st.sampled_from(list(Naming))
prefixes = st.sampled_from(["", "p", "ws4redis", "a:b"])


def _channel(target: Target, prefix: str, naming: Naming) -> str | None:
    try:
        return channel_for(target, prefix=prefix, naming=naming)
    except InvalidName:
        return None


@settings(max_examples=2000)
@given(targets, targets, namings, prefixes)
def test_no_two_distinct_targets_share_a_channel(first, second, naming, prefix):
    assume(first != second)
    a, b = _channel(first, prefix, naming), _channel(second, prefix, naming)
    assume(a is not None and b is not None)
    assert a != b


@settings(max_examples=1000)
@given(targets, namings, prefixes)
def test_parse_channel_inverts_channel_for(target, naming, prefix):
    channel = _channel(target, prefix, naming)
    assume(channel is not None)
    assert parse_channel(channel, prefix=prefix, naming=naming) == target


@given(st.text(max_size=40), namings)
def test_parse_channel_rejects_or_roundtrips_any_string(text, naming):
    try:
        target = parse_channel(text, naming=naming)
    except InvalidName:
        return
    assert channel_for(target, naming=naming) == text


@settings(max_examples=2000)
@given(st.text(min_size=1, max_size=200), st.text(min_size=1, max_size=200))
def test_group_names_are_valid_for_channels_and_collision_free(first, second):
    a, b = group_for(first), group_for(second)
    assert GROUP_NAME_RE.match(a) and len(a) < 100
    if first != second:
        assert a != b


def test_group_names_are_readable_when_short():
    assert group_for("_broadcast_:foobar") == "ws4redis._5fbroadcast_5f.foobar"
    assert group_for("x" * 300).startswith("ws4redis-")
