"""End to end: a raw PUBLISH reaches the right sockets of real daphne processes."""

from __future__ import annotations

import asyncio
import shutil
import subprocess

import pytest
import redis

from tests.conftest import (
    TIMEOUT,
    close_code,
    connect,
    empty_messages_reach_no_socket,
    nothing_arrives,
    recv,
    session_cookie,
)
from tests.servers import Daphne


async def test_raw_publish_from_redis_py_reaches_broadcast_subscribers(daphne, redis_client):
    sockets = [await connect(daphne, "/ws/foobar?subscribe-broadcast") for _ in range(3)]
    assert redis_client.publish("_broadcast_:foobar", "Hello World") == 1  # one process
    for ws in sockets:
        assert await recv(ws) == "Hello World"
        await ws.close()


@pytest.mark.skipif(shutil.which("redis-cli") is None, reason="needs the redis-cli binary")
async def test_raw_publish_from_redis_cli_reaches_broadcast_subscribers(daphne, redis_server):
    ws = await connect(daphne, "/ws/foobar?subscribe-broadcast")
    subprocess.run(
        [
            "redis-cli",
            "-p",
            str(redis_server.port),
            "PUBLISH",
            "_broadcast_:foobar",
            "from the shell",
        ],
        check=True,
        capture_output=True,
        timeout=TIMEOUT,
    )
    assert await recv(ws) == "from the shell"
    await ws.close()


async def test_other_facilities_do_not_leak_in(daphne, redis_client):
    ws = await connect(daphne, "/ws/foobar?subscribe-broadcast")
    redis_client.publish("_broadcast_:other", "not for foobar")
    redis_client.publish("_broadcast_:foobar2", "not for foobar either")
    redis_client.publish("_broadcast_:foobar", "for foobar")
    assert await recv(ws) == "for foobar"
    assert await nothing_arrives(ws)
    await ws.close()


async def test_messages_arrive_in_publish_order(daphne, redis_client):
    ws = await connect(daphne, "/ws/ordered?subscribe-broadcast")
    pipe = redis_client.pipeline(transaction=False)
    for i in range(500):
        pipe.publish("_broadcast_:ordered", str(i))
    pipe.execute()
    received = [await recv(ws) for _ in range(500)]
    assert received == [str(i) for i in range(500)]
    await ws.close()


async def test_non_utf8_payload_arrives_as_a_binary_frame(daphne, redis_client):
    ws = await connect(daphne, "/ws/bin?subscribe-broadcast")
    redis_client.publish("_broadcast_:bin", b"\xff\xfe\x00binary")
    redis_client.publish("_broadcast_:bin", "text é")
    assert await recv(ws) == b"\xff\xfe\x00binary"
    assert await recv(ws) == "text é"
    await ws.close()


async def test_an_empty_message_reaches_no_socket(daphne, redis_client):
    # On the fast path too, though it could send one: the ASGI path cannot.
    await empty_messages_reach_no_socket(daphne, redis_client)


async def test_user_channel_reaches_only_that_user(daphne, redis_client):
    john = await connect(daphne, "/ws/news?subscribe-user", session=session_cookie("john"))
    mary = await connect(daphne, "/ws/news?subscribe-user", session=session_cookie("mary"))
    redis_client.publish("john:news", "for john")
    assert await recv(john) == "for john"
    assert await nothing_arrives(mary)
    redis_client.publish("mary:news", "for mary")
    assert await recv(mary) == "for mary"
    assert await nothing_arrives(john)
    await john.close()
    await mary.close()


async def test_every_socket_of_a_user_receives_the_user_channel(daphne, redis_client):
    first = await connect(daphne, "/ws/news?subscribe-user", session=session_cookie("john"))
    second = await connect(daphne, "/ws/news?subscribe-user", session=session_cookie("john"))
    redis_client.publish("john:news", "both tabs")
    assert await recv(first) == "both tabs"
    assert await recv(second) == "both tabs"
    await first.close()
    await second.close()


async def test_session_channel_reaches_only_that_session(daphne, redis_client):
    key_a, key_b = session_cookie(), session_cookie()
    a = await connect(daphne, "/ws/cart?subscribe-session", session=key_a)
    b = await connect(daphne, "/ws/cart?subscribe-session", session=key_b)
    redis_client.publish(f"{key_a}:cart", "for a")
    assert await recv(a) == "for a"
    assert await nothing_arrives(b)
    await a.close()
    await b.close()


async def test_group_channel_reaches_only_members(daphne, redis_client):
    # The demo data puts john in "staff"; mary is in no group.
    john = await connect(daphne, "/ws/ops?subscribe-group", session=session_cookie("john"))
    mary = await connect(daphne, "/ws/ops?subscribe-group", session=session_cookie("mary"))
    redis_client.publish("_group_:staff:ops", "staff only")
    assert await recv(john) == "staff only"
    assert await nothing_arrives(mary)
    await john.close()
    await mary.close()


async def test_two_processes_deliver_each_message_exactly_once_per_socket(
    daphne_factory, redis_client
):
    first, second = daphne_factory(), daphne_factory()
    sockets = [await connect(server, "/ws/twice?subscribe-broadcast") for server in (first, second)]
    sockets += [
        await connect(server, "/ws/twice?subscribe-broadcast") for server in (first, second)
    ]
    for i in range(50):
        assert redis_client.publish("_broadcast_:twice", f"m{i}") == 2  # one per process
    for ws in sockets:
        assert [await recv(ws) for _ in range(50)] == [f"m{i}" for i in range(50)]
        assert await nothing_arrives(ws, 0.3)
        await ws.close()


def _clients_of(client: redis.Redis, exclude_name: str = "") -> list[dict[str, str]]:
    own = client.client_id()
    return [
        c for c in client.client_list() if int(c["id"]) != own and c.get("name") != exclude_name
    ]


async def test_200_sockets_add_only_a_handful_of_redis_connections(daphne_factory, redis_client):
    before = len(_clients_of(redis_client))
    server = daphne_factory()
    sockets = await asyncio.gather(
        *(connect(server, f"/ws/many{i % 10}?subscribe-broadcast") for i in range(200))
    )
    added = len(_clients_of(redis_client)) - before
    assert 1 <= added <= 6, redis_client.client_list()
    assert redis_client.publish("_broadcast_:many3", "hello") == 1
    received = await asyncio.gather(*(recv(ws) for ws in sockets[3::10]))
    assert received == ["hello"] * 20
    await asyncio.gather(*(ws.close() for ws in sockets))


async def test_closed_sockets_are_unsubscribed_until_none_is_left(daphne_factory, redis_client):
    server = daphne_factory()
    a = await connect(server, "/ws/gone?subscribe-broadcast")
    b = await connect(server, "/ws/gone?subscribe-broadcast")
    assert redis_client.pubsub_numsub("_broadcast_:gone") == [(b"_broadcast_:gone", 1)]
    await a.close()
    await asyncio.sleep(0.2)
    assert redis_client.pubsub_numsub("_broadcast_:gone") == [(b"_broadcast_:gone", 1)]
    await b.close()
    for _ in range(100):
        if redis_client.pubsub_numsub("_broadcast_:gone") == [(b"_broadcast_:gone", 0)]:
            break
        await asyncio.sleep(0.05)
    assert redis_client.pubsub_numsub("_broadcast_:gone") == [(b"_broadcast_:gone", 0)]
    assert redis_client.pubsub_channels("_broadcast_:*") == []


async def test_socket_open_means_subscribed(daphne, redis_client):
    """Once the client sees the socket open, a publish right away reaches it."""
    for i in range(20):
        ws = await connect(daphne, f"/ws/instant{i}?subscribe-broadcast")
        redis_client.publish(f"_broadcast_:instant{i}", "now")
        assert await recv(ws) == "now"
        await ws.close()


async def test_server_closes_cleanly_when_the_client_closes(daphne):
    ws = await connect(daphne, "/ws/foobar?subscribe-broadcast")
    await ws.close()
    assert ws.close_code == 1000
    assert "Traceback" not in daphne.log()


def test_daphne_fixture_serves_the_demo_page(daphne):
    import urllib.request

    with urllib.request.urlopen(daphne.http("/"), timeout=TIMEOUT) as response:
        assert response.status == 200
        assert b"ws4redis_channels" in response.read()


async def test_unused_close_code_helper_reports_server_close(daphne):
    ws = await connect(daphne, "/ws/bad:facility?subscribe-broadcast")
    assert await close_code(ws) == 4400


async def test_prefixed_names_are_used_when_prefix_is_set(daphne_factory, redis_client):
    server: Daphne = daphne_factory({"WS4REDIS_PREFIX": "p"})
    ws = await connect(server, "/ws/foobar?subscribe-broadcast")
    redis_client.publish("_broadcast_:foobar", "unprefixed")
    redis_client.publish("p:_broadcast_:foobar", "prefixed")
    assert await recv(ws) == "prefixed"
    await ws.close()
