"""Compatibility imports for code written for django-websocket-redis.

``from ws4redis.publisher import RedisPublisher`` and
``from ws4redis.redis_store import RedisMessage, SELF`` keep working after a
migration to ws4redis_channels; new code should import from
``ws4redis_channels.publisher``. Uninstall django-websocket-redis first: both
distributions provide this package.
"""

from ws4redis_channels import __version__

__all__ = ["__version__"]
