"""The catch-up against a real Redis: sockets of one channel caught up at different times."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from testproject.redis_server import RedisServer
from tests.conftest import TIMEOUT
from tests.test_bridge import Collect
from ws4redis_channels import catchup, store
from ws4redis_channels.bridge import Bridge
from ws4redis_channels.connection import parse_target

CHANNEL = "_broadcast_:split"


class Jitter:
    """The catch-up's retry delays, chosen by the test: one per failed catch-up, in order."""

    def __init__(self, delays: list[float]) -> None:
        self.delays = delays
        self.asked = 0
        self.all_asked = asyncio.Event()

    def uniform(self, low: float, high: float) -> float:
        delay = self.delays[self.asked]
        self.asked += 1
        if self.asked == len(self.delays):
            self.all_asked.set()
        return delay


@pytest.fixture
def redis_with_bridge_user() -> Iterator[tuple[RedisServer, redis.Redis]]:
    """A private Redis with a user ``bridge`` whose commands the test can refuse."""
    with RedisServer() as server:
        client = redis.Redis(port=server.port)
        client.execute_command("ACL", "SETUSER", "bridge", "on", ">secret", "~*", "&*", "+@all")
        yield server, client
        client.close()


async def caught_up(bridge: Bridge, client: redis.Redis) -> None:
    """Wait until the bridge is subscribed again and no socket is still catching up."""
    while client.pubsub_numsub(CHANNEL)[0][1] < 1 or bridge._channels[CHANNEL.encode()].joining:
        await asyncio.sleep(0.02)


async def test_sockets_caught_up_one_after_another_get_every_message_once(
    redis_with_bridge_user: tuple[RedisServer, redis.Redis], monkeypatch: Any
) -> None:
    # After a failover the catch-up's read can fail while the subscriber is back
    # (the cluster client still knows the old primary); each socket's catch-up is
    # then tried again on its own, with jitter, so that the sockets of one channel
    # come back one after another while the first ones already get live messages.
    server, client = redis_with_bridge_user
    jitter = Jitter([0.3, 3600.0])  # A is retried soon; B when the test says
    monkeypatch.setattr(catchup, "random", jitter)
    bridge = Bridge(parse_target(f"redis://bridge:secret@127.0.0.1:{server.port}/0"))
    try:
        a, b = Collect(), Collect()
        await bridge.join(a, [CHANNEL])
        await bridge.join(b, [CHANNEL])
        store.publish(client, [CHANNEL], b"1", 60)
        assert await a.wait_for(1) == ["1"]
        assert await b.wait_for(1) == ["1"]

        # The subscriber reconnects; the catch-up's read is refused for both sockets.
        client.execute_command("ACL", "SETUSER", "bridge", "-evalsha", "-eval")
        client.client_kill_filter(_type="pubsub")
        await asyncio.wait_for(jitter.all_asked.wait(), TIMEOUT)
        client.execute_command("ACL", "SETUSER", "bridge", "+evalsha", "+eval")

        # A's second try succeeds; it gets "2" while B is still catching up.
        store.publish(client, [CHANNEL], b"2", 60)
        assert await a.wait_for(2) == ["1", "2"]
        assert b.messages == ["1"]

        # B's second try reads the channel, and "3" reaches A live before B's catch-up
        # is over: B holds "2" and "3".
        joiner = bridge._joiner
        read = joiner._read

        async def read_then_publish(wanted: Any) -> Any:
            result = await read(wanted)
            joiner._read = read  # type: ignore[method-assign]
            store.publish(client, [CHANNEL], b"3", 60)
            assert await a.wait_for(3) == ["1", "2", "3"]
            return result

        joiner._read = read_then_publish  # type: ignore[method-assign]
        bridge._retry_rejoin(b, [CHANNEL.encode()], None, 1)  # what B's timer would do
        assert await b.wait_for(3) == ["1", "2", "3"]

        # Another reconnect: both are caught up together, and nothing comes twice.
        client.client_kill_filter(_type="pubsub")
        await asyncio.wait_for(caught_up(bridge, client), TIMEOUT)
        store.publish(client, [CHANNEL], b"4", 60)
        assert await a.wait_for(4) == ["1", "2", "3", "4"]
        assert await b.wait_for(4) == ["1", "2", "3", "4"]
        store.publish(client, [CHANNEL], b"end", 60)
        await a.wait_for(5)
        await b.wait_for(5)
        assert a.messages == b.messages == ["1", "2", "3", "4", "end"]
    finally:
        await bridge.close()
