"""End to end: sockets, Python, the shell and Redis itself publish; stored messages replay."""

from __future__ import annotations

import asyncio
import io
import json
import threading

import pytest
import redis
from channels.layers import get_channel_layer
from django.core.management import call_command
from django.test import override_settings

from tests.conftest import Spy, connect, nothing_arrives, recv, session_cookie
from ws4redis_channels import publisher
from ws4redis_channels.names import group_for
from ws4redis_channels.publisher import SELF, RedisMessage, RedisPublisher


async def test_socket_publication_reaches_another_process_but_not_the_sender(
    daphne_factory, redis_client
):
    first, second = daphne_factory(), daphne_factory()
    sender = await connect(first, "/ws/chat?subscribe-broadcast&publish-broadcast")
    local = await connect(first, "/ws/chat?subscribe-broadcast")
    remote = await connect(second, "/ws/chat?subscribe-broadcast")
    await sender.send("hello everyone")
    assert await recv(remote) == "hello everyone"
    assert await recv(local) == "hello everyone"
    assert await nothing_arrives(sender)
    await sender.send("hello everyone")  # the same text again is not mistaken for an echo
    assert await recv(remote) == "hello everyone"
    assert await nothing_arrives(sender)
    for ws in (sender, local, remote):
        await ws.close()


async def test_echo_returns_the_senders_own_publications(daphne, redis_client):
    sender = await connect(daphne, "/ws/chat?subscribe-broadcast&publish-broadcast&echo")
    await sender.send("me too")
    assert await recv(sender) == "me too"
    await sender.close()


async def test_binary_frames_are_published_as_bytes(daphne, redis_client):
    sender = await connect(daphne, "/ws/chat?publish-broadcast")
    receiver = await connect(daphne, "/ws/chat?subscribe-broadcast")
    await sender.send(b"\x00\xffraw")
    assert await recv(receiver) == b"\x00\xffraw"
    assert redis_client.get("_broadcast_:chat") == b"\x00\xffraw"
    await sender.close()
    await receiver.close()


async def test_each_audience_publishes_only_on_the_senders_own_channel(daphne, redis_client):
    spy = Spy(redis_client)
    john_key, mary_key = session_cookie("john"), session_cookie("mary")
    mary = await connect(daphne, "/ws/news?subscribe-user&subscribe-session", session=mary_key)
    # Flag values are ignored: "=mary" cannot redirect john's publication.
    john = await connect(
        daphne,
        "/ws/news?publish-user=mary&publish-session=" + mary_key + "&publish-group=admins",
        session=john_key,
    )
    await john.send("from john")
    seen = spy.messages()
    assert sorted(channel for channel, _ in seen) == sorted(
        ["john:news", f"{john_key}:news", "_group_:staff:news"]
    )
    assert {data for _, data in seen} == {b"from john"}
    assert await nothing_arrives(mary)
    await john.close()
    await mary.close()


async def test_stored_message_is_replayed_first_then_live_ones(daphne, redis_client):
    publisher.publish("persist", "stored", broadcast=True, expire=30)
    assert 28 <= redis_client.ttl("_broadcast_:persist") <= 30
    ws = await connect(daphne, "/ws/persist?subscribe-broadcast")
    assert await recv(ws) == "stored"
    redis_client.publish("_broadcast_:persist", "live")
    assert await recv(ws) == "live"
    assert await nothing_arrives(ws)
    await ws.close()


async def test_socket_publications_are_stored_with_the_configured_expiry(daphne, redis_client):
    ws = await connect(daphne, "/ws/chat?publish-broadcast")
    await ws.send("kept")
    for _ in range(100):
        if redis_client.exists("_broadcast_:chat"):
            break
        await asyncio.sleep(0.02)
    assert redis_client.get("_broadcast_:chat") == b"kept"
    assert 3590 <= redis_client.ttl("_broadcast_:chat") <= 3600  # testproject: WS4REDIS_EXPIRE=3600
    late = await connect(daphne, "/ws/chat?subscribe-broadcast")
    assert await recv(late) == "kept"
    await ws.close()
    await late.close()


async def test_nothing_is_replayed_after_the_expiry(daphne, redis_client):
    publisher.publish("brief", "short-lived", broadcast=True, expire=1)
    while redis_client.exists("_broadcast_:brief"):
        await asyncio.sleep(0.05)
    ws = await connect(daphne, "/ws/brief?subscribe-broadcast")
    assert await nothing_arrives(ws)
    await ws.close()


async def test_expire_zero_stores_nothing(daphne_factory, redis_client):
    server = daphne_factory({"WS4REDIS_EXPIRE": "0"})
    receiver = await connect(server, "/ws/chat?subscribe-broadcast")
    sender = await connect(server, "/ws/chat?publish-broadcast")
    await sender.send("live only")
    assert await recv(receiver) == "live only"
    assert redis_client.exists("_broadcast_:chat") == 0
    with override_settings(WS4REDIS_EXPIRE=0):
        publisher.publish("chat", "also live only", broadcast=True)
    assert await recv(receiver) == "also live only"
    assert redis_client.exists("_broadcast_:chat") == 0
    await sender.close()
    await receiver.close()


async def test_redis_publisher_of_the_original_docs_reaches_broadcast_sockets(daphne, redis_client):
    ws = await connect(daphne, "/ws/foobar?subscribe-broadcast")
    redis_publisher = RedisPublisher(facility="foobar", broadcast=True)
    assert redis_publisher.publish_message(RedisMessage("Hello")) == 1
    assert await recv(ws) == "Hello"
    assert redis_publisher.fetch_message(None, "foobar", audience="broadcast") == b"Hello"
    await ws.close()


async def test_redis_publisher_resolves_self_from_the_request(daphne, redis_client):
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import AnonymousUser
    from django.test import RequestFactory

    from ws4redis_channels.exceptions import IdentityRequired

    ws = await connect(daphne, "/ws/inbox?subscribe-user", session=session_cookie("john"))
    request = RequestFactory().get("/")
    request.user = get_user_model().objects.get(username="john")
    RedisPublisher(facility="inbox", users=SELF, request=request).publish_message(b"to myself")
    assert await recv(ws) == "to myself"
    request.user = AnonymousUser()
    with pytest.raises(IdentityRequired):
        RedisPublisher(facility="inbox", users=SELF, request=request)
    await ws.close()


async def test_async_publish_and_fetch(daphne, redis_client):
    ws = await connect(daphne, "/ws/inbox?subscribe-user", session=session_cookie("mary"))
    assert await publisher.apublish("inbox", "async hello", users=["mary"], expire=10) == 1
    assert await recv(ws) == "async hello"
    assert await publisher.afetch("inbox", audience="user", identity="mary") == b"async hello"
    assert publisher.fetch("inbox", audience="user", identity="mary") == b"async hello"
    await ws.close()


async def test_management_command_publishes_and_stores(daphne, redis_client):
    ws = await connect(daphne, "/ws/shell?subscribe-broadcast")
    out = io.StringIO()
    call_command("ws4redis_publish", "shell", "from manage.py", "--expire", "60", stdout=out)
    assert "_broadcast_:shell" in out.getvalue()
    assert await recv(ws) == "from manage.py"
    assert 58 <= redis_client.ttl("_broadcast_:shell") <= 60
    await ws.close()


async def test_redis_function_publishes_with_persistence_by_name(daphne, redis_client):
    ws = await connect(daphne, "/ws/polyglot?subscribe-broadcast")  # the bridge loads the function
    if int(redis_client.info("server")["redis_version"].split(".")[0]) < 7:
        pytest.skip("Redis functions need Redis 7")
    receivers = redis_client.fcall("ws4redis_publish", 1, "_broadcast_:polyglot", "from lua", 120)
    assert receivers == 1
    assert await recv(ws) == "from lua"
    assert redis_client.get("_broadcast_:polyglot") == b"from lua"
    assert 118 <= redis_client.ttl("_broadcast_:polyglot") <= 120
    await ws.close()


async def test_heartbeat_is_answered_to_the_sender_only_and_never_published(daphne, redis_client):
    spy = Spy(redis_client)
    sender = await connect(daphne, "/ws/chat?subscribe-broadcast&publish-broadcast&echo")
    other = await connect(daphne, "/ws/chat?subscribe-broadcast")
    await sender.send("--heartbeat--")
    assert await recv(sender) == "--heartbeat--"
    assert await nothing_arrives(other)
    assert spy.messages() == []
    assert redis_client.exists("_broadcast_:chat") == 0
    await sender.close()
    await other.close()


async def test_group_send_on_the_channel_layer_reaches_the_same_sockets_once(
    daphne_factory, redis_client
):
    first, second = daphne_factory(), daphne_factory()
    sockets = [
        await connect(first, "/ws/layer?subscribe-broadcast"),
        await connect(first, "/ws/layer?subscribe-broadcast"),
        await connect(second, "/ws/layer?subscribe-broadcast"),
    ]
    layer = get_channel_layer()
    group = group_for("_broadcast_:layer")
    await layer.group_send(group, {"type": "ws4redis.message", "text": "via the layer"})
    await layer.group_send(group, {"type": "ws4redis.message", "bytes": b"\x01\x02"})
    for ws in sockets:
        assert await recv(ws) == "via the layer"
        assert await recv(ws) == b"\x01\x02"
        assert await nothing_arrives(ws, 0.3)
        await ws.close()


async def test_a_message_published_while_sockets_connect_arrives_once_and_in_order(
    daphne, redis_server
):
    """Replay and live delivery race; every socket must see a gap-free, duplicate-free run."""
    client = redis.Redis(port=redis_server.port)
    stop = threading.Event()
    published: list[int] = []

    def publish_steadily() -> None:
        i = 0
        # About 500 messages/s: a busy channel, well below what one process can fan out.
        while not stop.wait(0.002):
            with override_settings(WS4REDIS_EXPIRE=60):
                publisher.publish("race", json.dumps(i), broadcast=True)
            published.append(i)
            i += 1

    thread = threading.Thread(target=publish_steadily)
    thread.start()
    try:
        sockets = []
        for _ in range(40):
            sockets.append(await connect(daphne, "/ws/race?subscribe-broadcast"))
        await asyncio.sleep(0.2)
    finally:
        stop.set()
        thread.join()
    last = published[-1]
    for ws in sockets:
        seen = []
        while not seen or seen[-1] != last:
            seen.append(json.loads(await recv(ws)))
        assert seen == list(range(seen[0], last + 1)), seen
        await ws.close()
    client.close()


def test_the_load_function_command_makes_fcall_work_on_an_empty_redis(redis_client):
    if int(redis_client.info("server")["redis_version"].split(".")[0]) < 7:
        pytest.skip("Redis functions need Redis 7")
    redis_client.function_flush()
    out = io.StringIO()
    call_command("ws4redis_load_function", stdout=out)
    assert "ws4redis_publish" in out.getvalue()
    assert redis_client.fcall("ws4redis_publish", 1, "_broadcast_:fn", "x", 5) == 0
    assert redis_client.get("_broadcast_:fn") == b"x"
    out = io.StringIO()
    call_command("ws4redis_load_function", "--print", stdout=out)
    assert out.getvalue().startswith("#!lua name=ws4redis")
