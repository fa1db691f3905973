"""django-websocket-redis's ``ws4redis.redis_store``, served by ws4redis_channels."""

from ws4redis_channels.publisher import SELF, RedisMessage, fetch_message

__all__ = ["SELF", "RedisMessage", "fetch_message"]
