"""Redis errors reach the app as its own exceptions, and sockets close with the documented 4503.

redis-py's ``ConnectionError`` and ``TimeoutError`` are not the builtin ones;
before they were folded into the app's hierarchy, a frame sent while Redis was
down or slow killed the consumer with a traceback and the client saw 1011.
"""

from __future__ import annotations

import asyncio

import pytest
import redis

from testproject.redis_server import RedisServer, free_port
from tests.conftest import TIMEOUT, close_code, connect
from ws4redis_channels import store
from ws4redis_channels.connection import async_client, parse_target, sync_client
from ws4redis_channels.exceptions import (
    RedisCommandError,
    RedisError,
    RedisTimeout,
    RedisUnavailable,
    WS4RedisError,
)
from ws4redis_channels.resp import ReplyError

# redis-py's command timeout (connection.COMMAND_TIMEOUT) bounds a paused publish.
PAUSED_PUBLISH = 10.0


def test_the_exception_hierarchy_has_one_root():
    assert issubclass(RedisUnavailable, RedisError)
    assert issubclass(RedisTimeout, RedisUnavailable)
    assert issubclass(RedisCommandError, RedisError)
    assert issubclass(ReplyError, RedisCommandError)
    assert issubclass(RedisError, WS4RedisError)
    # Code that catches the builtins keeps working.
    assert issubclass(RedisUnavailable, ConnectionError)
    assert issubclass(RedisTimeout, TimeoutError)


def test_publishing_to_a_stopped_redis_raises_redis_unavailable():
    client = sync_client(parse_target(f"redis://127.0.0.1:{free_port()}/0"))
    with pytest.raises(RedisUnavailable) as info:
        store.publish(client, ["_broadcast_:x"], b"hello", 0)
    assert not isinstance(info.value, redis.RedisError)
    with pytest.raises(RedisUnavailable):
        store.fetch(client, "_broadcast_:x")


async def test_an_error_reply_raises_redis_command_error(redis_server, redis_client):
    redis_client.set("_broadcast_:list", "x")
    client = async_client(parse_target(redis_server.url))
    redis_client.delete("_broadcast_:list")
    redis_client.rpush("_broadcast_:list", "a")
    with pytest.raises(RedisCommandError):
        await asyncio.wait_for(store.afetch(client, "_broadcast_:list"), TIMEOUT)


async def test_a_frame_sent_while_redis_is_down_closes_with_4503(daphne_factory):
    with RedisServer() as redis_server:
        server = daphne_factory({"REDIS_URL": redis_server.url})
        ws = await connect(server, "/ws/chat?publish-broadcast&subscribe-broadcast")
        redis_server.stop()
        await ws.send("while Redis is down")
        assert await close_code(ws) == 4503
        log = server.log()
        assert "publishing failed" in log
        # channels-redis (the demo's channel layer) logs its own tracebacks; ours are lines.
        assert "/ws4redis_channels/" not in log, log


async def test_a_frame_sent_while_redis_is_paused_closes_with_4503(daphne_factory):
    with RedisServer() as redis_server:
        server = daphne_factory({"REDIS_URL": redis_server.url})
        ws = await connect(server, "/ws/chat?publish-broadcast&subscribe-broadcast")
        client = redis.Redis(port=redis_server.port)
        # Scripts (our publish) wait while writes are paused; PING does not.
        client.execute_command("CLIENT", "PAUSE", int((PAUSED_PUBLISH + 10) * 1000), "WRITE")
        try:
            await ws.send("while Redis is paused")
            assert await close_code(ws, PAUSED_PUBLISH + TIMEOUT) == 4503
        finally:
            client.execute_command("CLIENT", "UNPAUSE")
            client.close()
        log = server.log()
        assert "RedisTimeout" in log or "did not answer in time" in log
        # channels-redis (the demo's channel layer) logs its own tracebacks; ours are lines.
        assert "/ws4redis_channels/" not in log, log
