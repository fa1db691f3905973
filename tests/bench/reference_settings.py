"""Django settings of the reference servers ("naive" and "groups").

The minimum a newcomer needs for websockets behind ``AuthMiddlewareStack``:
auth, sessions, channels. ``BENCH_LAYER`` picks the channel layer of the
"groups" design (``core`` or ``pubsub``); the "naive" design has none. The
layers get what redis-py 8 needs for long-lived readers and many sockets
(``socket_timeout=None`` and a large pool; see SPEC.md, "Traps"), so they
fail only for reasons of their design.
"""

from __future__ import annotations

import os
from typing import Any

SECRET_KEY = "bench-reference-insecure"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
INSTALLED_APPS = [
    "daphne",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "channels",
]
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("TESTPROJECT_DB", "bench.sqlite3"),
    }
}
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
ASGI_APPLICATION = "tests.bench.reference.application"

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
_HOST = {"address": REDIS_URL, "socket_timeout": None, "max_connections": 10_000}
_LAYERS = {
    "core": "channels_redis.core.RedisChannelLayer",
    "pubsub": "channels_redis.pubsub.RedisPubSubChannelLayer",
}
CHANNEL_LAYERS: dict[str, Any] = {}
if os.environ.get("BENCH_LAYER"):
    CHANNEL_LAYERS["default"] = {
        "BACKEND": _LAYERS[os.environ["BENCH_LAYER"]],
        "CONFIG": {"hosts": [_HOST]},
    }
