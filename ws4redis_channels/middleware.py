"""The origin check, cookies, session and user for websocket scopes, in one layer.

It does what channels' ``OriginValidator`` (with its own origin matching)
and ``AuthMiddlewareStack`` do for a websocket (``scope["cookies"]``, a lazy
``scope["session"]`` from the session cookie, ``scope["user"]`` as channels'
``get_user`` resolves it, for all the handshakes waiting at once in one
trip to the database thread: ``ws4redis_channels.sessions``) with one
copy of the scope and one suspended frame instead of four layers, which
matters when a process holds thousands of idle sockets. For websockets,
channels' session middleware does nothing else: it saves sessions only on
HTTP responses.
"""

from __future__ import annotations

import logging
from importlib import import_module
from typing import Any
from urllib.parse import urlparse

from channels.auth import UserLazyObject
from channels.security.websocket import OriginValidator, WebsocketDenier
from django.conf import settings
from django.http.cookie import parse_cookie

from .codes import CLOSE_REASONS, CloseCode
from .logs import describe_socket, escaped
from .sessions import load_user

__all__ = ["WebsocketAuthMiddleware"]

logger = logging.getLogger(__name__)


class WebsocketAuthMiddleware:
    """Refuse foreign origins (403); populate ``cookies``, ``session`` and ``user``."""

    def __init__(self, inner: Any, allowed_origins: list[str]) -> None:
        self.inner = inner
        # channels' matching rules (wildcards, ports, schemes), without its layer.
        self._origins = OriginValidator(None, allowed_origins)
        self._allowed = list(allowed_origins)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> Any:
        prepared = await self.admit(scope, receive, send)
        if prepared is None:
            return None
        return await self.target(prepared)(prepared, receive, send)

    async def admit(self, scope: Any, receive: Any, send: Any) -> Any:
        """Return the scope with cookies, session and user, or None once the socket has
        been refused (403 for a foreign origin, 4500 when the session cannot be loaded)."""
        try:
            prepared = await self._prepare(scope)
        except Exception as exc:
            # A broken session store or database: a documented refusal, not HTTP 500.
            logger.error(
                "Handshake of websocket %s failed: %s",
                describe_socket(scope),
                escaped(repr(exc), 500),
                exc_info=True,
            )
            await _refuse(receive, send, CloseCode.HANDSHAKE_FAILED)
            return None
        if prepared is None:
            await WebsocketDenier()(scope, receive, send)
        return prepared

    def target(self, prepared: Any) -> Any:
        """Return the ASGI app to serve ``prepared`` with: ``inner``, or, when ``inner`` is
        the default router (:func:`~ws4redis_channels.routing.websocket_application`), the
        consumer its route names, so that the socket keeps no router's frame and copy
        of the scope while it is open."""
        from .routing import Routes

        inner = self.inner
        return inner.route(prepared) if isinstance(inner, Routes) else inner

    async def _prepare(self, scope: Any) -> Any:
        """Return the scope with cookies, session and user; None if the origin is refused."""
        cookies: dict[str, str] = {}
        origin = None
        raw_origin = None
        for name, value in scope.get("headers", ()):
            if name == b"cookie":
                cookies = parse_cookie(value.decode("latin1"))
            elif name == b"origin":
                raw_origin = value
                try:
                    origin = urlparse(value.decode("latin1"))
                except (UnicodeDecodeError, ValueError):
                    origin = None
        if not self._origins.valid_origin(origin):
            from .metrics import recorder

            recorder().handshake(403)
            logger.warning(
                "Refused websocket %s with 403: origin %s is not allowed (allowed: %s); "
                "add it to WS4REDIS_ALLOWED_ORIGINS, or its host to ALLOWED_HOSTS",
                describe_socket(scope),
                "(none sent)" if raw_origin is None else repr(escaped(raw_origin)),
                ", ".join(self._allowed) or "nothing: ALLOWED_HOSTS is empty",
            )
            return None
        scope = dict(scope, cookies=cookies)
        anonymous = False
        if "session" not in scope:
            engine = import_module(settings.SESSION_ENGINE)
            key = cookies.get(settings.SESSION_COOKIE_NAME)
            scope["session"] = engine.SessionStore(key)
            # A session without a key is empty in every engine: nobody is
            # logged in, and get_user's thread hop (most of an anonymous
            # handshake's wait) would only say so.
            anonymous = not key
        if "user" not in scope:
            user = UserLazyObject()
            if anonymous:
                # Imported here: the module must import before the app registry is ready.
                from django.contrib.auth.models import AnonymousUser

                user._wrapped = AnonymousUser()
            else:
                user._wrapped = await load_user(scope)
            scope["user"] = user
        return scope


async def _refuse(receive: Any, send: Any, code: CloseCode) -> None:
    """Answer a websocket with ``code``: accept it, then close it with the code's reason."""
    message = await receive()
    if message.get("type") != "websocket.connect":
        return
    await send({"type": "websocket.accept"})
    await send({"type": "websocket.close", "code": int(code), "reason": CLOSE_REASONS[code]})
