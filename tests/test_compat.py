"""Code written for django-websocket-redis imports from ``ws4redis`` unchanged."""

from __future__ import annotations

import ws4redis_channels.context_processors
import ws4redis_channels.publisher


def test_the_original_import_paths_lead_to_the_same_objects():
    from ws4redis.context_processors import default
    from ws4redis.publisher import RedisPublisher
    from ws4redis.redis_store import SELF, RedisMessage

    assert RedisPublisher is ws4redis_channels.publisher.RedisPublisher
    assert RedisMessage is ws4redis_channels.publisher.RedisMessage
    assert SELF is ws4redis_channels.publisher.SELF
    assert default is ws4redis_channels.context_processors.default


def test_redis_message_accepts_what_the_original_accepted():
    from ws4redis.redis_store import RedisMessage

    assert RedisMessage("Hello") == b"Hello"
    assert RedisMessage(b"\xff") == b"\xff"
    assert RedisMessage([b"message", b"_broadcast_:foo", b"raw"]) == b"raw"
