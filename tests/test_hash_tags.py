"""Braces never reach a name part: a channel's keys share its Redis Cluster slot."""

from __future__ import annotations

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings

from ws4redis_channels.conf import conf
from ws4redis_channels.exceptions import InvalidName
from ws4redis_channels.names import Audience, Target, channel_for, companion_key


@pytest.mark.parametrize(
    ("audience", "identity"),
    [
        (Audience.USER, "jo{hn"),
        (Audience.USER, "jo}hn"),
        (Audience.USER, "{john}"),
        (Audience.GROUP, "{admins}"),
        (Audience.GROUP, "ad}mins"),
        (Audience.SESSION, "{" + "a" * 30 + "}"),
    ],
)
def test_braces_in_user_session_and_group_names_are_rejected(audience, identity):
    with pytest.raises(InvalidName, match=r"'\{' or '\}'|session key"):
        channel_for(Target(audience, "foobar", identity))


@pytest.mark.parametrize("facility", ["{foo}", "foo{", "a/}b"])
def test_braces_in_facilities_are_rejected(facility):
    with pytest.raises(InvalidName):
        channel_for(Target(Audience.BROADCAST, facility))


def test_braces_in_the_prefix_are_rejected():
    with pytest.raises(InvalidName, match="prefix"):
        channel_for(Target(Audience.BROADCAST, "foobar"), prefix="{p}")
    with override_settings(WS4REDIS_PREFIX="{p}"), pytest.raises(ImproperlyConfigured):
        _ = conf.WS4REDIS_PREFIX


def test_companion_keys_use_the_whole_channel_as_hash_tag():
    assert companion_key("_broadcast_:foo", "pos") == "{_broadcast_:foo}:pos"
    assert companion_key("p:john:foo", "hist") == "{p:john:foo}:hist"


def test_companion_keys_hash_to_the_slot_of_the_channel_key():
    from redis.crc import key_slot

    for channel in ["_broadcast_:foo", "john:chat/room-1", "p:_group_:admins:x"]:
        for kind in ("pos", "hist", "ids"):
            assert key_slot(companion_key(channel, kind).encode()) == key_slot(channel.encode())
