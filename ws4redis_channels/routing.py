"""URL patterns and a ready-made websocket application for ``asgi.py``.

``websocket_urlpatterns`` is built from ``WEBSOCKET_URL`` when it is
accessed (not at import), for use in your own ``URLRouter``::

    from ws4redis_channels.routing import websocket_urlpatterns

:func:`websocket_application` wraps them the way the docs recommend: the
``Origin`` header checked against ``WS4REDIS_ALLOWED_ORIGINS`` (or, when that
is not set, ``ALLOWED_HOSTS``), then channels' ``AuthMiddlewareStack``.
"""

from __future__ import annotations

import re
from typing import Any

from django.urls import URLPattern, re_path

__all__ = ["websocket_application", "websocket_urlpatterns"]  # noqa: F822 (module __getattr__)


def _patterns() -> list[URLPattern]:
    from .conf import conf
    from .consumer import WebsocketConsumer

    prefix = re.escape(conf.WEBSOCKET_URL.lstrip("/"))
    # Capture everything after the prefix (newlines too) so that an invalid
    # facility gets a specific close code instead of "no route".
    return [re_path(rf"(?s)^{prefix}(?P<facility>.*)\Z", WebsocketConsumer.as_asgi())]


def websocket_application(inner: Any = None) -> Any:
    """Return the websocket ASGI app: origin check, auth/session, then ``inner``.

    ``inner`` defaults to a ``URLRouter`` over :data:`websocket_urlpatterns`.
    """
    from channels.auth import AuthMiddlewareStack
    from channels.routing import URLRouter
    from channels.security.websocket import AllowedHostsOriginValidator, OriginValidator

    from .conf import conf

    app = AuthMiddlewareStack(inner if inner is not None else URLRouter(_patterns()))
    origins = conf.WS4REDIS_ALLOWED_ORIGINS
    if origins is not None:
        return OriginValidator(app, origins)
    return AllowedHostsOriginValidator(app)


def __getattr__(name: str) -> Any:
    if name == "websocket_urlpatterns":
        return _patterns()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
