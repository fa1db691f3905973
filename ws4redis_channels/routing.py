"""URL patterns and a ready-made websocket application for ``asgi.py``.

``websocket_urlpatterns`` is built from ``WEBSOCKET_URL`` when it is
accessed (not at import), for use in your own ``URLRouter``::

    from ws4redis_channels.routing import websocket_urlpatterns

:func:`websocket_application` wraps them the way the docs recommend: the
``Origin`` header checked against ``WS4REDIS_ALLOWED_ORIGINS`` (or, when that
is not set, ``ALLOWED_HOSTS``), then the cookies, session and user that
channels' ``AuthMiddlewareStack`` would give, in one layer
(:mod:`ws4redis_channels.middleware`); a path outside ``WEBSOCKET_URL`` is
answered with 4404. It reads those settings when
a socket connects, so ``override_settings`` applies to it too.

:func:`http_application` wraps the HTTP side: a plain HTTP request for a path
under ``WEBSOCKET_URL`` is answered with 400 and a short text, as
django-websocket-redis did, instead of Django's 404 page::

    application = ProtocolTypeRouter({
        "http": http_application(django_asgi_app),
        "websocket": websocket_application(),
    })
"""

from __future__ import annotations

import re
from typing import Any

from django.conf import settings
from django.urls import URLPattern, re_path

__all__ = ["Routes", "http_application", "websocket_application", "websocket_urlpatterns"]  # noqa: F822 (module __getattr__)


def _patterns() -> list[URLPattern]:
    from .conf import conf
    from .consumer import WebsocketConsumer

    prefix = re.escape(conf.WEBSOCKET_URL.lstrip("/"))
    # Capture everything after the prefix (newlines too) so that an invalid
    # facility gets a specific close code instead of "no route".
    return [re_path(rf"(?s)^{prefix}(?P<facility>.*)\Z", WebsocketConsumer.as_asgi())]


class Routes:
    """The default routes of :func:`websocket_application`: ``WEBSOCKET_URL<facility>`` to
    the consumer, any other path to 4404.

    It matches as channels' ``URLRouter`` over :data:`websocket_urlpatterns`
    and a catch-all route would (``root_path``, ``path_remaining``,
    ``url_route``), but :meth:`route` gives the consumer to serve the scope
    with instead of awaiting it, so that an open socket keeps no router's
    frame, no copy of the scope and no ``as_asgi`` wrapper: the middleware
    awaits the consumer itself.
    """

    def __init__(self) -> None:
        from django.urls.resolvers import RegexPattern

        from .consumer import NoRouteConsumer, WebsocketConsumer

        self._routes = [
            (_patterns()[0].pattern, WebsocketConsumer),
            (RegexPattern(r""), NoRouteConsumer),
        ]

    def route(self, scope: Any) -> Any:
        """Add ``path_remaining`` and ``url_route`` to ``scope`` (in place); return the consumer
        instance to serve it."""
        path = scope.get("path_remaining", scope.get("path", None))
        if path is None:
            raise ValueError("No 'path' key in connection scope, cannot route URLs")
        if "path_remaining" not in scope:
            root_path = scope.get("root_path", "")
            if root_path and not path.startswith(root_path):
                raise ValueError(f"No route found for path {path!r}.")
            path = path[len(root_path) :]
        path = path.lstrip("/")
        for pattern, consumer in self._routes:
            match = pattern.match(path)
            if match:
                new_path, args, kwargs = match
                outer = scope.get("url_route", {})
                scope["path_remaining"] = new_path
                scope["url_route"] = {
                    "args": outer.get("args", ()) + args,
                    "kwargs": {**outer.get("kwargs", {}), **kwargs},
                }
                return consumer()
        raise ValueError(f"No route found for path {path!r}.")  # pragma: no cover - r"" matches

    async def __call__(self, scope: Any, receive: Any, send: Any) -> Any:
        scope = dict(scope)
        return await self.route(scope)(scope, receive, send)


class _WebsocketApplication:
    """The websocket app of :func:`websocket_application`, rebuilt when its settings change."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self._key: tuple[Any, ...] | None = None
        self._app: Any = None

    def _settings_key(self) -> tuple[Any, ...]:
        from .conf import conf

        origins = conf.WS4REDIS_ALLOWED_ORIGINS
        return (
            conf.WEBSOCKET_URL,
            None if origins is None else tuple(origins),
            tuple(settings.ALLOWED_HOSTS),
            settings.DEBUG,
        )

    def _build(self) -> Any:
        from .conf import conf
        from .middleware import WebsocketAuthMiddleware

        inner = Routes() if self.inner is None else self.inner
        origins = conf.WS4REDIS_ALLOWED_ORIGINS
        if origins is None:
            # As channels' AllowedHostsOriginValidator: ALLOWED_HOSTS, and
            # local hosts when DEBUG leaves it empty.
            origins = list(settings.ALLOWED_HOSTS)
            if settings.DEBUG and not origins:
                origins = ["localhost", "127.0.0.1", "[::1]"]
        return WebsocketAuthMiddleware(inner, origins)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> Any:
        key = self._settings_key()
        if key != self._key:
            self._app, self._key = self._build(), key
        app = self._app
        # The middleware's own __call__, inlined: one suspended frame less for
        # every open socket.
        prepared = await app.admit(scope, receive, send)
        if prepared is None:
            return None
        return await app.target(prepared)(prepared, receive, send)


def websocket_application(inner: Any = None) -> Any:
    """Return the websocket ASGI app: origin check, auth/session, then ``inner``.

    ``inner`` defaults to a ``URLRouter`` over :data:`websocket_urlpatterns`
    that answers other paths with 4404.
    """
    return _WebsocketApplication(inner)


#: The body of the 400 answer to plain HTTP on ``WEBSOCKET_URL``.
UPGRADE_REQUIRED_TEXT = (
    b"400 Bad Request: this URL needs a websocket upgrade "
    b"(the client did not ask to upgrade to a websocket).\n"
)


class _HttpApplication:
    """The HTTP app of :func:`http_application`."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    async def __call__(self, scope: Any, receive: Any, send: Any) -> Any:
        from .conf import conf

        if scope.get("type") == "http" and scope.get("path", "").startswith(conf.WEBSOCKET_URL):
            await send(
                {
                    "type": "http.response.start",
                    "status": 400,
                    "headers": [
                        (b"content-type", b"text/plain; charset=utf-8"),
                        (b"content-length", str(len(UPGRADE_REQUIRED_TEXT)).encode()),
                    ],
                }
            )
            body = b"" if scope.get("method") == "HEAD" else UPGRADE_REQUIRED_TEXT
            await send({"type": "http.response.body", "body": body})
            return None
        return await self.inner(scope, receive, send)


def http_application(inner: Any) -> Any:
    """Return ``inner`` (Django's ASGI app) with plain HTTP on ``WEBSOCKET_URL`` answered 400."""
    return _HttpApplication(inner)


def __getattr__(name: str) -> Any:
    if name == "websocket_urlpatterns":
        return _patterns()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
