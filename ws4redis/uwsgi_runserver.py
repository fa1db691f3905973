"""Gone: django-websocket-redis's uWSGI websocket server. Importing it says what to use instead."""

from __future__ import annotations

from django.core.exceptions import ImproperlyConfigured

__all__: list[str] = []

raise ImproperlyConfigured(
    "ws4redis.uwsgi_runserver is gone: ws4redis_channels serves websockets through ASGI, "
    "no second uWSGI instance and no gevent. Serve the project's asgi.py with daphne "
    "(daphne <project>.asgi:application) behind your proxy. See the migration guide."
)
