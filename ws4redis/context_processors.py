"""django-websocket-redis's ``ws4redis.context_processors``, served by ws4redis_channels."""

from ws4redis_channels.context_processors import default

__all__ = ["default"]
