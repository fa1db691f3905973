"""django-websocket-redis's ``ws4redis.settings``: its setting names with its defaults.

Code written for the original reads ``from ws4redis import settings`` and then
``settings.WS4REDIS_EXPIRE``; each access reads ``django.conf.settings`` at
that moment (never at import), so ``override_settings`` applies. Values are
returned as configured, unvalidated, like the original did; ws4redis_channels
itself reads them through :mod:`ws4redis_channels.conf`. Assigning to this
module changes nothing: use Django's settings (or ``override_settings``).
"""

from __future__ import annotations

from typing import Any

from django.conf import settings as _django_settings

__all__ = [  # noqa: F822 (module __getattr__)
    "WEBSOCKET_URL",
    "WS4REDIS_ALLOWED_CHANNELS",
    "WS4REDIS_CONNECTION",
    "WS4REDIS_EXPIRE",
    "WS4REDIS_HEARTBEAT",
    "WS4REDIS_PREFIX",
    "WS4REDIS_PROCESS_REQUEST",
    "WS4REDIS_SUBSCRIBER",
]

# The defaults of django-websocket-redis 0.6 (its WS4REDIS_PREFIX default was None).
_DEFAULTS: dict[str, Any] = {
    "WEBSOCKET_URL": "/ws/",
    "WS4REDIS_CONNECTION": {"host": "localhost", "port": 6379, "db": 0, "password": None},
    "WS4REDIS_PREFIX": None,
    "WS4REDIS_EXPIRE": 3600,
    "WS4REDIS_SUBSCRIBER": "ws4redis.subscriber.RedisSubscriber",
    "WS4REDIS_HEARTBEAT": None,
    "WS4REDIS_ALLOWED_CHANNELS": None,
    "WS4REDIS_PROCESS_REQUEST": None,
}


def __getattr__(name: str) -> Any:
    if name in _DEFAULTS:
        return getattr(_django_settings, name, _DEFAULTS[name])
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_DEFAULTS])
