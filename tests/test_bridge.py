"""The per-process bridge against a real Redis: subscriptions, replay, bursts, outages."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator

import pytest
import redis

from testproject.redis_server import RedisServer, free_port
from tests.conftest import TIMEOUT
from ws4redis_channels import store
from ws4redis_channels.bridge import Bridge
from ws4redis_channels.connection import async_client, parse_target
from ws4redis_channels.exceptions import RedisUnavailable
from ws4redis_channels.frames import Batch


class Collect:
    """A sink that records what it gets."""

    def __init__(self) -> None:
        self.messages: list[str | bytes] = []
        self.lost = asyncio.Event()
        self.arrived = asyncio.Event()

    def deliver(self, batch: Batch) -> None:
        self.messages.extend(m.get("text", m.get("bytes")) for m in batch.messages)
        self.arrived.set()

    def going_away(self) -> None:
        pass

    def redis_lost(self) -> None:
        self.lost.set()

    async def wait_for(self, count: int) -> list[str | bytes]:
        async def enough() -> None:
            while len(self.messages) < count:
                self.arrived.clear()
                await self.arrived.wait()

        await asyncio.wait_for(enough(), TIMEOUT)
        return self.messages


@pytest.fixture
async def bridge(redis_server) -> AsyncIterator[Bridge]:
    instance = Bridge(parse_target(redis_server.url), connect_timeout=5, outage_timeout=30)
    yield instance
    await instance.close()


async def numsub(client: redis.Redis, channel: str, expected: int) -> None:
    for _ in range(200):
        if client.pubsub_numsub(channel)[0][1] == expected:
            return
        await asyncio.sleep(0.02)
    assert client.pubsub_numsub(channel)[0][1] == expected


async def test_a_channel_is_subscribed_while_a_sink_needs_it(bridge, redis_client):
    a, b = Collect(), Collect()
    await bridge.join(a, ["_broadcast_:x"])
    await bridge.join(b, ["_broadcast_:x", "john:x"])
    assert bridge.subscriptions() == ["_broadcast_:x", "john:x"]
    assert redis_client.pubsub_numsub("_broadcast_:x")[0][1] == 1  # one connection for both
    redis_client.publish("_broadcast_:x", "hi")
    redis_client.publish("john:x", "john")
    assert await a.wait_for(1) == ["hi"]
    assert await b.wait_for(2) == ["hi", "john"]
    bridge.leave(a, ["_broadcast_:x"])
    assert bridge.subscriptions() == ["_broadcast_:x", "john:x"]
    bridge.leave(b, ["_broadcast_:x", "john:x"])
    assert bridge.subscriptions() == []
    await numsub(redis_client, "_broadcast_:x", 0)
    await numsub(redis_client, "john:x", 0)


async def test_a_connect_burst_of_1000_sinks_shares_one_subscription(bridge, redis_client):
    """The redis-py trap: concurrent first subscriptions must not land on another connection."""
    sinks = [Collect() for _ in range(1000)]
    await asyncio.gather(
        *(bridge.join(s, [f"_broadcast_:burst{i % 7}"]) for i, s in enumerate(sinks))
    )
    for i in range(7):
        assert redis_client.publish(f"_broadcast_:burst{i}", f"m{i}") == 1
    for i, sink in enumerate(sinks):
        assert await sink.wait_for(1) == [f"m{i % 7}"]


async def test_the_stored_message_comes_first_and_once(bridge, redis_server, redis_client):
    client = async_client(parse_target(redis_server.url))
    await store.apublish(client, ["_broadcast_:stored"], b"old", 60)
    sink = Collect()
    await bridge.join(sink, ["_broadcast_:stored"])
    await store.apublish(client, ["_broadcast_:stored"], b"new", 60)
    assert await sink.wait_for(2) == ["old", "new"]
    await asyncio.sleep(0.2)
    assert sink.messages == ["old", "new"]


async def test_publications_of_a_sink_skip_it_without_echo(bridge, redis_client):
    me, other = Collect(), Collect()
    await bridge.join(me, ["_broadcast_:e"])
    await bridge.join(other, ["_broadcast_:e"])
    await bridge.publish(me, ["_broadcast_:e"], b"same", 0, echo=False)
    await bridge.publish(None, ["_broadcast_:e"], b"same", 0)
    assert await other.wait_for(2) == ["same", "same"]
    assert await me.wait_for(1) == ["same"]  # only the one it did not send
    await asyncio.sleep(0.1)
    assert me.messages == ["same"]


async def test_joining_fails_fast_when_redis_is_unreachable():
    # A connect timeout far beyond the waits below: a join that fails inside them
    # failed because Redis refused, not because the timeout ran out.
    bridge = Bridge(
        parse_target(f"redis://127.0.0.1:{free_port()}/0"), connect_timeout=60, outage_timeout=90
    )
    with pytest.raises(RedisUnavailable):
        await asyncio.wait_for(bridge.join(Collect(), ["_broadcast_:x"]), 10)
    # Known to be down now: a later join fails at once, without a connection attempt.
    with pytest.raises(RedisUnavailable):
        await asyncio.wait_for(bridge.join(Collect(), ["_broadcast_:x"]), 10)
    await bridge.close()


@pytest.mark.slow
async def test_a_restarted_redis_is_resubscribed_and_sinks_keep_receiving():
    with RedisServer() as server:
        bridge = Bridge(parse_target(server.url), connect_timeout=2, outage_timeout=30)
        sink = Collect()
        await bridge.join(sink, ["_broadcast_:r"])
        server.stop()
        await asyncio.sleep(0.5)
        server.start()
        client = redis.Redis(port=server.port)
        for _ in range(200):
            if client.pubsub_numsub("_broadcast_:r")[0][1] == 1:
                break
            await asyncio.sleep(0.05)
        client.publish("_broadcast_:r", "after restart")
        assert await sink.wait_for(1) == ["after restart"]
        assert not sink.lost.is_set()
        client.close()
        await bridge.close()


@pytest.mark.slow
async def test_sinks_are_told_when_redis_stays_down_past_the_bound():
    with RedisServer() as server:
        bridge = Bridge(parse_target(server.url), connect_timeout=2, outage_timeout=1)
        sink = Collect()
        await bridge.join(sink, ["_broadcast_:down"])
        server.stop()
        await asyncio.wait_for(sink.lost.wait(), 5)
        await bridge.close()


def _kill_bridge_and_publish(client: redis.Redis, channel: str, message: str | None) -> None:
    """In one transaction: drop the bridge's connection, then store and publish."""
    name = f"ws4redis-bridge-{os.getpid()}"  # this process's bridge, not a daphne's
    (bridge_id,) = [c["id"] for c in client.client_list() if c["name"] == name]
    pipe = client.pipeline(transaction=True)
    pipe.execute_command("CLIENT", "KILL", "ID", bridge_id)
    if message is not None:
        pipe.set(channel, message, ex=60)
        pipe.publish(channel, message)
    pipe.execute()


async def test_what_was_stored_while_disconnected_is_caught_up_once(bridge, redis_client):
    sink = Collect()
    await bridge.join(sink, ["_broadcast_:gap"])
    redis_client.set("_broadcast_:gap", "seen", ex=60)
    redis_client.publish("_broadcast_:gap", "seen")
    assert await sink.wait_for(1) == ["seen"]
    # Dropped with nothing new stored: nothing is replayed again.
    _kill_bridge_and_publish(redis_client, "_broadcast_:gap", None)
    await numsub(redis_client, "_broadcast_:gap", 0)
    await numsub(redis_client, "_broadcast_:gap", 1)
    redis_client.publish("_broadcast_:gap", "live")
    assert await sink.wait_for(2) == ["seen", "live"]
    # Dropped while a message was stored and published: it is caught up.
    redis_client.set("_broadcast_:gap", "live", ex=60)
    _kill_bridge_and_publish(redis_client, "_broadcast_:gap", "missed")
    assert await sink.wait_for(3) == ["seen", "live", "missed"]
    redis_client.publish("_broadcast_:gap", "after")
    assert await sink.wait_for(4) == ["seen", "live", "missed", "after"]
    await asyncio.sleep(0.2)
    assert len(sink.messages) == 4


async def test_a_burst_on_one_channel_is_delivered_in_one_call_per_sink(bridge, redis_client):
    calls: list[int] = []

    class Counting(Collect):
        def deliver(self, batch: Batch) -> None:
            calls.append(len(batch.messages))
            super().deliver(batch)

    sink = Counting()
    await bridge.join(sink, ["_broadcast_:run", "_broadcast_:other"])
    pipe = redis_client.pipeline(transaction=False)
    for i in range(100):
        pipe.publish("_broadcast_:run", str(i))
    pipe.publish("_broadcast_:other", "x")
    pipe.publish("_broadcast_:run", "last")
    pipe.execute()
    assert await sink.wait_for(102) == [*map(str, range(100)), "x", "last"]
    assert len(calls) < 20  # runs of one channel arrive together, not one call each


async def test_the_bridge_and_the_publisher_work_over_a_unix_socket(tmp_path):
    from ws4redis_channels import store
    from ws4redis_channels.connection import async_client

    path = tmp_path / "redis.sock"
    with RedisServer(None, "--unixsocket", str(path), "--unixsocketperm", "700"):
        target = parse_target(f"unix://{path}")
        bridge = Bridge(target, connect_timeout=5, outage_timeout=30)
        sink = Collect()
        await bridge.join(sink, ["_broadcast_:unix"])
        assert await store.apublish(async_client(target), ["_broadcast_:unix"], b"via unix", 5) == 1
        assert await sink.wait_for(1) == ["via unix"]
        await bridge.close()


async def test_a_consumer_cancelled_during_its_handshake_leaves_nothing_behind(redis_server):
    """The server may cancel a consumer at any await; its socket must not stay joined."""
    from channels.testing import WebsocketCommunicator

    from ws4redis_channels.routing import websocket_application
    from ws4redis_channels.runtime import current_bridge

    communicator = WebsocketCommunicator(
        websocket_application(),
        "/ws/cancelled?subscribe-broadcast",
        headers=[(b"origin", b"http://127.0.0.1")],
    )
    connected, _ = await communicator.connect(timeout=5)
    assert connected
    bridge = current_bridge()
    assert bridge.local_sinks("_broadcast_:cancelled") == 1
    communicator.future.cancel()  # as daphne does with an application that will not stop
    await asyncio.gather(communicator.future, return_exceptions=True)
    assert bridge.local_sinks("_broadcast_:cancelled") == 0
    assert bridge.members() == []
