"""Compatibility imports for code written for django-websocket-redis.

``from ws4redis.publisher import RedisPublisher``,
``from ws4redis.redis_store import RedisMessage, SELF``,
``from ws4redis import settings`` and ``ws4redis.context_processors`` keep
working after a migration to ws4redis_channels; new code should import from
``ws4redis_channels``. ``ws4redis.django_runserver`` and
``ws4redis.uwsgi_runserver`` raise an error that says to use daphne.
Uninstall django-websocket-redis first: both distributions provide this
package.
"""

from ws4redis_channels import __version__

__all__ = ["__version__"]
