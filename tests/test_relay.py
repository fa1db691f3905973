"""The channel layer relay: every watched channel joins its group, even many at once."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from channels_redis.core import RedisChannelLayer
from channels_redis.pubsub import RedisPubSubChannelLayer

from tests.conftest import TIMEOUT
from ws4redis_channels.accelerator.queues import SmallQueue
from ws4redis_channels.names import group_for
from ws4redis_channels.relay import EVENT_TYPE, LayerRelay


def _receive_queues(layer: Any) -> list[asyncio.Queue[Any]]:
    """The queues channels-redis keeps per channel being received (core, pub/sub)."""
    buffer = getattr(layer, "receive_buffer", None)
    return list((buffer if buffer is not None else layer.channels).values())


async def _storm(layer: Any, caplog: Any) -> None:
    got: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue()
    relay = LayerRelay(layer, lambda channel, event: got.put_nowait((channel, event)))
    # A reconnect storm of logged-in sockets: 300 new user channels in one pass.
    channels = [f"storm{i}:news" for i in range(300)]
    try:
        with caplog.at_level(logging.WARNING, logger="ws4redis_channels.relay"):
            for channel in channels:
                relay.watch(channel, True)
            await asyncio.wait_for(relay.ready(channels), TIMEOUT)
        assert [r.getMessage() for r in caplog.records] == []
        # Each channel's queue in the layer holds its waiting receive in lists, not deques.
        queues = _receive_queues(layer)
        assert len(queues) >= len(channels)
        for queue in queues:
            assert {type(vars(queue)[n]) for n in ("_queue", "_getters")} == {SmallQueue}
        for channel in (channels[0], channels[-1]):
            await layer.group_send(group_for(channel), {"type": EVENT_TYPE, "text": channel})
            assert await asyncio.wait_for(got.get(), TIMEOUT) == (
                channel,
                {"type": "websocket.send", "text": channel},
            )
    finally:
        await relay.close()
        await layer.flush()


async def test_a_storm_of_new_channels_joins_its_groups_on_the_core_layer(redis_server, caplog):
    """channels_redis' core layer takes a pooled connection per group_add: the relay
    must not empty the pool (it did: MaxConnectionsError, and every relay paused)."""
    await _storm(RedisChannelLayer(hosts=[redis_server.url], prefix="relaystorm"), caplog)


async def test_a_storm_of_new_channels_joins_its_groups_on_the_pubsub_layer(redis_server, caplog):
    await _storm(RedisPubSubChannelLayer(hosts=[redis_server.url], prefix="relaystormps"), caplog)


class _Blip:
    """A pub/sub layer whose first new_channel meets a Redis that just went away."""

    def __init__(self, layer: Any) -> None:
        self.layer = layer
        self.failed = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self.layer, name)

    async def new_channel(self, prefix: str = "specific.") -> str:
        if not self.failed:
            self.failed = True
            raise ConnectionError("Connection closed by server.")
        return str(await self.layer.new_channel(prefix))


async def test_a_relay_whose_new_channel_fails_tries_again(redis_server, caplog):
    layer = _Blip(RedisPubSubChannelLayer(hosts=[redis_server.url], prefix="relayblip"))
    got: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue()
    relay = LayerRelay(layer, lambda channel, event: got.put_nowait((channel, event)))
    try:
        with caplog.at_level(logging.WARNING, logger="ws4redis_channels.relay"):
            relay.watch("blip:news", True)
            await asyncio.wait_for(relay.ready(["blip:news"]), TIMEOUT)
        assert layer.failed
        assert any("Connection closed by server" in r.getMessage() for r in caplog.records)
        await layer.group_send(group_for("blip:news"), {"type": EVENT_TYPE, "text": "back"})
        assert (await asyncio.wait_for(got.get(), TIMEOUT))[1]["text"] == "back"
    finally:
        await relay.close()
        await layer.flush()
