"""django-websocket-redis's ``ws4redis.publisher``, served by ws4redis_channels."""

from ws4redis_channels.publisher import RedisPublisher

__all__ = ["RedisPublisher"]
