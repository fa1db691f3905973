"""Settings of the demo project that ``make run`` serves and the tests drive.

``REDIS_URL`` (environment, default ``redis://127.0.0.1:6379/0``) points both
ws4redis_channels and the channel layer at Redis; a
``redis+sentinel://host:port[,host:port]/service`` URL works for both; with a
``redis+cluster://host:port[,host:port]/`` URL the demo runs on a Redis Cluster
(sharded pub/sub) without a channel layer.
"""

from __future__ import annotations

import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent
REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")

# From the environment: DJANGO_SECRET_KEY, DJANGO_DEBUG (1 or 0) and
# DJANGO_ALLOWED_HOSTS (comma-separated, e.g. for HOST=0.0.0.0 in `make run`).
SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "testproject-insecure-key-for-the-demo-only")
DEBUG = os.environ.get("DJANGO_DEBUG", "1") == "1"
ALLOWED_HOSTS = [
    host.strip()
    for host in os.environ.get("DJANGO_ALLOWED_HOSTS", "127.0.0.1,localhost,[::1]").split(",")
    if host.strip()
]

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "ws4redis_channels",
    "testproject",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]

ROOT_URLCONF = "testproject.urls"
ASGI_APPLICATION = "testproject.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                # WEBSOCKET_URI and WS4REDIS_HEARTBEAT for the pages' websocket clients
                "ws4redis_channels.context_processors.default",
            ],
        },
    },
]

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("TESTPROJECT_DB", str(BASE_DIR.parent / "testproject.sqlite3")),
        # Seconds a thread keeps its database connection ("" = for ever); Django's
        # default 0 opens one per handshake that loads a user (docs/howto/deploy.rst).
        "CONN_MAX_AGE": (
            None
            if os.environ.get("TESTPROJECT_CONN_MAX_AGE") == ""
            else int(os.environ.get("TESTPROJECT_CONN_MAX_AGE", "0"))
        ),
    }
}

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
USE_TZ = True
STATIC_URL = "/static/"
LOGIN_URL = "/login/"
LOGIN_REDIRECT_URL = "/"

# The channel layer shares Redis with ws4redis_channels. The pub/sub layer
# keeps long-lived reader connections without the 5 s socket timeout that
# redis-py 8 applies by default (see docs/topics/architecture).
if REDIS_URL.startswith("redis+sentinel://"):
    from ws4redis_channels.connection import parse_target

    _t = parse_target(REDIS_URL)
    _layer_host: object = {
        "sentinels": list(_t.sentinels),
        "master_name": _t.service_name,
        "db": _t.db,
        "password": _t.password,
    }
else:
    _layer_host = REDIS_URL
CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
        "CONFIG": {"hosts": [_layer_host]},
    }
}
if REDIS_URL.startswith(("redis+cluster://", "rediss+cluster://")):
    # channels_redis does not speak Redis Cluster: on a cluster the demo has
    # no channel layer (group_send), only Redis pub/sub.
    CHANNEL_LAYERS = {}

# ws4redis_channels
WEBSOCKET_URL = "/ws/"
WS4REDIS_CONNECTION = REDIS_URL
if not CHANNEL_LAYERS:
    WS4REDIS_CHANNEL_LAYER = None
WS4REDIS_EXPIRE = int(os.environ.get("WS4REDIS_EXPIRE", "3600"))
WS4REDIS_PREFIX = os.environ.get("WS4REDIS_PREFIX", "")
# Keep the last 100 messages of each channel: pages resume after a reconnect.
WS4REDIS_HISTORY_SIZE = int(os.environ.get("WS4REDIS_HISTORY_SIZE", "100"))
WS4REDIS_HEARTBEAT = "--heartbeat--"
# The demo chat: anyone, anonymous visitors too, may publish-broadcast on "chat".
WS4REDIS_OPEN_FACILITIES = ["chat"]
if "WS4REDIS_OUTAGE_TIMEOUT" in os.environ:
    WS4REDIS_OUTAGE_TIMEOUT = float(os.environ["WS4REDIS_OUTAGE_TIMEOUT"])
if "WS4REDIS_CONNECT_TIMEOUT" in os.environ:
    WS4REDIS_CONNECT_TIMEOUT = float(os.environ["WS4REDIS_CONNECT_TIMEOUT"])
if "WS4REDIS_MAX_BUFFER_SIZE" in os.environ:
    WS4REDIS_MAX_BUFFER_SIZE = int(os.environ["WS4REDIS_MAX_BUFFER_SIZE"])
if "WS4REDIS_MAX_HANDSHAKES" in os.environ:
    WS4REDIS_MAX_HANDSHAKES = int(os.environ["WS4REDIS_MAX_HANDSHAKES"])
if "WS4REDIS_LISTEN_BACKLOG" in os.environ:
    WS4REDIS_LISTEN_BACKLOG = int(os.environ["WS4REDIS_LISTEN_BACKLOG"])
if "WS4REDIS_DIRECT_WRITES" in os.environ:
    WS4REDIS_DIRECT_WRITES = os.environ["WS4REDIS_DIRECT_WRITES"] == "1"
if os.environ.get("WS4REDIS_ACCELERATIONS_OFF"):  # comma-separated names
    WS4REDIS_ACCELERATIONS_OFF = os.environ["WS4REDIS_ACCELERATIONS_OFF"].split(",")
if "WS4REDIS_CLUSTER_PLAIN_PUBLISH" in os.environ:
    WS4REDIS_CLUSTER_PLAIN_PUBLISH = os.environ["WS4REDIS_CLUSTER_PLAIN_PUBLISH"] == "1"
if "WS4REDIS_PUBLISH_RATE" in os.environ:
    WS4REDIS_PUBLISH_RATE = float(os.environ["WS4REDIS_PUBLISH_RATE"])
if "WS4REDIS_PUBLISH_BYTES_RATE" in os.environ:
    WS4REDIS_PUBLISH_BYTES_RATE = float(os.environ["WS4REDIS_PUBLISH_BYTES_RATE"])
if "WS4REDIS_METRICS" in os.environ:
    WS4REDIS_METRICS = os.environ["WS4REDIS_METRICS"] == "1"

# daphne configures the root handler; this only sets how much the app says.
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "loggers": {"ws4redis_channels": {"level": os.environ.get("WS4REDIS_LOG_LEVEL", "INFO")}},
}
