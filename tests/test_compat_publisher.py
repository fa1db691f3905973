"""``RedisPublisher`` behaves as django-websocket-redis's did for the code written for it."""

from __future__ import annotations

import logging

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AnonymousUser, Group
from django.test import RequestFactory, override_settings

from tests.conftest import Spy, connect, nothing_arrives, recv, session_cookie
from ws4redis.publisher import RedisPublisher
from ws4redis.redis_store import SELF, RedisMessage
from ws4redis_channels.exceptions import InvalidName
from ws4redis_channels.publisher import apublish, publish

TYPED = {"WS4REDIS_NAMING": "typed", "WS4REDIS_PREFIX": "demo"}


def test_a_publisher_without_arguments_fetches_like_the_original(redis_client):
    redis_client.set("_broadcast_:unittest", b"stored")
    publisher = RedisPublisher()
    request = RequestFactory().get("/chat/")
    assert publisher.fetch_message(request, "unittest", "broadcast") == b"stored"
    assert publisher.fetch_message(request, "unittest") == b"stored"
    assert publisher.channels == []
    assert publisher._publishers == set()


def test_a_publisher_with_only_a_facility_fetches_the_users_message(redis_client):
    with override_settings(**TYPED):
        redis_client.set("demo:user:john:unittest", b"for john")
        request = RequestFactory().get("/chat/")
        request.user = get_user_model().objects.get_or_create(username="john")[0]
        publisher = RedisPublisher(facility="unittest")
        assert publisher.fetch_message(request, "unittest", "user") == b"for john"
        request.user = None
        assert publisher.fetch_message(request, "unittest", "user") is None
        assert publisher._connection.get("demo:user:john:unittest") == b"for john"


def test_a_fetch_only_publisher_publishes_to_nobody_and_says_so(redis_client, caplog):
    spy = Spy(redis_client)
    with caplog.at_level(logging.WARNING, "ws4redis_channels.publisher"):
        assert RedisPublisher(facility="unittest").publish_message(RedisMessage("lost")) == 0
    assert "no audience" in caplog.text
    assert spy.messages() == []


def test_the_original_channel_attributes_show_the_typed_names():
    with override_settings(**TYPED):
        pub1 = RedisPublisher(facility="unittest", broadcast=True)
        assert pub1._publishers == {"demo:broadcast:unittest"}
        pub2 = RedisPublisher(facility="unittest", users=["john"])
        assert pub2._publishers == {"demo:user:john:unittest"}
        assert RedisPublisher.get_prefix() == "demo:"
    assert RedisPublisher.get_prefix() == ""


async def test_pipeline_publish_message_publishes_and_stores_on_every_channel(daphne, redis_client):
    broadcast = await connect(daphne, "/ws/piped?subscribe-broadcast")
    user = await connect(daphne, "/ws/piped?subscribe-user", session=session_cookie("mary"))
    publisher = RedisPublisher(facility="piped", broadcast=True, users=["mary"])
    assert publisher.pipeline_publish_message(RedisMessage("both"), expire=30) == 2
    assert await recv(broadcast) == "both"
    assert await recv(user) == "both"
    assert redis_client.get("_broadcast_:piped") == b"both"
    assert redis_client.get("mary:piped") == b"both"
    assert 28 <= redis_client.ttl("mary:piped") <= 30
    await broadcast.close()
    await user.close()


async def test_an_empty_user_from_a_form_is_skipped_with_a_warning(daphne, redis_client, caplog):
    # The original example's user chat posts user="" when nobody is picked.
    ws = await connect(daphne, "/ws/foobar?subscribe-user", session=session_cookie("john"))
    spy = Spy(redis_client)
    with caplog.at_level(logging.WARNING, "ws4redis_channels.publisher"):
        nobody = RedisPublisher(facility="foobar", users=[""])
        assert nobody.publish_message(RedisMessage("to nobody")) == 0
        missing = RedisPublisher(facility="foobar", users=[None])
        assert missing.channels == []
    assert "skipping an empty name in users" in caplog.text
    both = RedisPublisher(facility="foobar", users=["", "john"])
    assert both.channels == ["john:foobar"]
    both.publish_message(RedisMessage("to john"))
    assert await recv(ws) == "to john"
    assert spy.channels() == ["john:foobar"]
    await ws.close()


def test_names_that_would_alias_another_channel_still_raise():
    with pytest.raises(InvalidName):
        RedisPublisher(facility="foobar", users=["_broadcast_"])
    with pytest.raises(InvalidName):
        RedisPublisher(facility="foobar", groups=["a:b"])
    with pytest.raises(ValueError, match="facility"):
        RedisPublisher(broadcast=True)


def test_deprecated_audience_forms_of_the_original_still_work():
    request = RequestFactory().get("/")
    request.user = get_user_model().objects.get_or_create(username="john")[0]
    with pytest.deprecated_call():
        assert RedisPublisher(facility="f", users="mary").channels == ["mary:f"]
    with pytest.deprecated_call():
        assert RedisPublisher(facility="f", users=True, request=request).channels == ["john:f"]
    request.user = AnonymousUser()
    assert RedisPublisher(facility="f", users=False, broadcast=True).channels == ["_broadcast_:f"]


async def test_groups_self_reach_the_members_sockets(daphne, redis_client):
    mary = get_user_model().objects.get_or_create(username="mary")[0]
    group = Group.objects.get_or_create(name="compat-readers")[0]
    mary.groups.add(group)
    try:
        ws = await connect(daphne, "/ws/foobar?subscribe-group", session=session_cookie("mary"))
        other = await connect(daphne, "/ws/foobar?subscribe-group", session=session_cookie("john"))
        request = RequestFactory().get("/")
        request.user = mary
        publisher = RedisPublisher(facility="foobar", groups=[SELF], request=request)
        assert publisher.channels == ["_group_:compat-readers:foobar"]
        publisher.publish_message("hi group")
        assert await recv(ws) == "hi group"
        assert await nothing_arrives(other)
        await ws.close()
        await other.close()
    finally:
        group.delete()


async def test_an_empty_message_is_refused_by_the_api_and_skipped_by_the_compat_publisher(
    daphne, redis_client, caplog
):
    # No socket ever gets an empty message (tests.conftest.empty_messages_reach_no_socket):
    # the API says so; code written for django-websocket-redis gets a warning.
    ws = await connect(daphne, "/ws/foobar?subscribe-broadcast")
    spy = Spy(redis_client)
    for empty in ("", b""):
        with pytest.raises(ValueError, match="an empty message reaches no socket"):
            publish("foobar", empty, broadcast=True)
        with pytest.raises(ValueError, match="an empty message reaches no socket"):
            await apublish("foobar", empty, broadcast=True)
    old = RedisPublisher(facility="foobar", broadcast=True)
    with caplog.at_level(logging.WARNING, "ws4redis_channels.publisher"):
        assert old.publish_message(RedisMessage("")) == 0
        assert await old.apublish_message(b"") == 0
    assert "RedisPublisher skipped an empty message" in caplog.text
    assert spy.channels() == []  # nothing reached Redis
    old.publish_message(RedisMessage("not empty"))
    assert await recv(ws) == "not empty"
    await ws.close()
