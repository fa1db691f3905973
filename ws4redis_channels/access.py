"""Who is connecting and what they may do: URL flags, identity, and the permission policy.

Identity comes from Django: the user from ``scope["user"]`` (channels'
``AuthMiddlewareStack``), the session from the session cookie only after the
session store confirms that such a session exists (a forged cookie never
names a channel), the groups from the user's Django groups.

Permissions: ``WS4REDIS_ALLOWED_CHANNELS``, when set, decides which of the
requested flags a socket gets; otherwise :func:`default_policy` does. It lets
every socket subscribe, lets authenticated users publish to their own user,
session and groups, and lets anyone publish to broadcast only on the
facilities in ``WS4REDIS_OPEN_FACILITIES``. ``WS4REDIS_PUBLISH_POLICY =
'permissive'`` restores django-websocket-redis's behaviour (every flag).
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import unquote

from channels.db import database_sync_to_async
from django.core.exceptions import ImproperlyConfigured
from django.http import QueryDict

from .conf import conf
from .exceptions import InvalidName
from .names import Audience, validate_identity
from .sessions import loaded_key

__all__ = [
    "FLAGS",
    "MAX_QUERY_FIELDS",
    "MAX_QUERY_LENGTH",
    "PUBLISH_FLAGS",
    "SUBSCRIBE_FLAGS",
    "Identity",
    "WebsocketRequest",
    "allowed_flags",
    "default_policy",
    "parse_flags",
    "resolve_identity",
]

logger = logging.getLogger(__name__)

SUBSCRIBE_FLAGS = {
    "subscribe-broadcast": Audience.BROADCAST,
    "subscribe-user": Audience.USER,
    "subscribe-session": Audience.SESSION,
    "subscribe-group": Audience.GROUP,
}
PUBLISH_FLAGS = {
    "publish-broadcast": Audience.BROADCAST,
    "publish-user": Audience.USER,
    "publish-session": Audience.SESSION,
    "publish-group": Audience.GROUP,
}
FLAGS = frozenset({*SUBSCRIBE_FLAGS, *PUBLISH_FLAGS, "echo"})

#: Longer query strings, or more parameters, are refused with 4400 at the handshake.
MAX_QUERY_LENGTH = 8192
MAX_QUERY_FIELDS = 100


def parse_flags(query_string: bytes | str) -> list[str]:
    """Return the known flags of a query string, in order, without duplicates.

    Flags are parameter names; values are ignored, unknown names are dropped.
    """
    if isinstance(query_string, bytes):
        query_string = query_string.decode("latin-1")
    flags: dict[str, None] = {}
    for part in query_string.split("&"):
        name = unquote(part.partition("=")[0])
        if name in FLAGS:
            flags[name] = None
    return list(flags)


@dataclass(frozen=True)
class Identity:
    """The names a socket's channels may be derived from."""

    user: str | None = None
    session: str | None = None
    groups: tuple[str, ...] = field(default=())

    @property
    def authenticated(self) -> bool:
        return self.user is not None


def _username(scope: Mapping[str, Any]) -> str | None:
    user = scope.get("user")
    if user is None or not getattr(user, "is_authenticated", False):
        return None
    name = user.get_username()
    return name if isinstance(name, str) and name else None


def _group_names(user: Any) -> list[str]:
    groups = getattr(user, "groups", None)
    if groups is None:
        return []
    return [str(name) for name in groups.values_list("name", flat=True)]


def _session_exists(session: Any, key: str) -> bool:
    return bool(session.exists(key))


async def resolve_identity(
    scope: Mapping[str, Any], *, session: bool = False, groups: bool = False
) -> Identity:
    """Return the identity of a connecting socket; look up session and groups if asked."""
    user = _username(scope)
    session_key = None
    if session:
        store = scope.get("session")
        # Before the session is loaded, session_key is the raw cookie value:
        # only trust it once the store confirms it names a saved session.
        key = getattr(store, "session_key", None)
        if isinstance(key, str) and key:
            try:
                validate_identity(Audience.SESSION, key)
            except InvalidName:
                key = None
            known, loaded = loaded_key(store) if key else (True, None)
            if known:
                session_key = loaded
            elif key and await database_sync_to_async(_session_exists)(store, key):
                session_key = key
    group_names: tuple[str, ...] = ()
    if groups and user is not None:
        names = await database_sync_to_async(_group_names)(scope["user"])
        valid = []
        for name in names:
            try:
                valid.append(validate_identity(Audience.GROUP, name))
            except InvalidName as exc:
                logger.warning("Skipping group of user %r: %s", user, exc)
        group_names = tuple(valid)
    return Identity(user=user, session=session_key, groups=group_names)


class WebsocketRequest:
    """A request-like view of a websocket scope, for ``WS4REDIS_ALLOWED_CHANNELS`` callbacks.

    It offers what callbacks written for django-websocket-redis use
    (``user``, ``session``, ``path``, ``GET``, ``COOKIES``, ``META``) and the
    scope itself as ``scope``.
    """

    method = "GET"

    def __init__(self, scope: Mapping[str, Any], facility: str) -> None:
        self.scope = scope
        self.facility = facility
        self.path = self.path_info = scope.get("path", "")
        self.user = scope.get("user")
        self.session = scope.get("session")
        # Parsed now: Django's DATA_UPLOAD_MAX_NUMBER_FIELDS refuses the handshake here.
        query = scope.get("query_string", b"")
        self.GET = QueryDict(query.decode("latin-1") if isinstance(query, bytes) else query)

    # Built on first use: the default policy reads neither, and every
    # handshake makes a request.

    @cached_property
    def COOKIES(self) -> dict[str, str]:
        cookies = dict(self.scope.get("cookies") or {})
        if not cookies and "HTTP_COOKIE" in self.META:
            parsed = SimpleCookie(self.META["HTTP_COOKIE"])
            cookies = {k: v.value for k, v in parsed.items()}
        return cookies

    @cached_property
    def META(self) -> dict[str, str]:
        meta: dict[str, str] = {}
        for name, value in self.scope.get("headers") or ():
            key = name.decode("latin-1").upper().replace("-", "_")
            meta[f"HTTP_{key}"] = value.decode("latin-1")
        client = self.scope.get("client") or (None, None)
        meta["REMOTE_ADDR"] = str(client[0] or "")
        meta["QUERY_STRING"] = self.GET.urlencode()
        return meta

    def __repr__(self) -> str:
        return f"<WebsocketRequest {self.path!r}>"


def default_policy(request: WebsocketRequest, flags: Iterable[str]) -> list[str]:
    """The built-in permission policy (see the module docstring)."""
    flags = list(flags)
    if conf.WS4REDIS_PUBLISH_POLICY == "permissive":
        return flags
    user = getattr(request, "user", None)
    authenticated = bool(getattr(user, "is_authenticated", False))
    open_facility = request.facility in conf.WS4REDIS_OPEN_FACILITIES
    allowed = []
    for flag in flags:
        if flag == "publish-broadcast":
            if not open_facility:
                continue
        elif flag in PUBLISH_FLAGS and not authenticated:
            continue
        allowed.append(flag)
    return allowed


async def allowed_flags(request: WebsocketRequest, flags: list[str]) -> list[str]:
    """Return the requested flags the socket gets; raise ``PermissionDenied`` to refuse it.

    The result never contains a flag that was not requested.
    """
    callback = conf.WS4REDIS_ALLOWED_CHANNELS
    if callback is None:
        return default_policy(request, flags)
    if inspect.iscoroutinefunction(callback) or inspect.iscoroutinefunction(
        type(callback).__call__
    ):
        result = await callback(request, list(flags))
    else:
        result = await database_sync_to_async(callback)(request, list(flags))
    if result is None or isinstance(result, (str, bytes)) or not hasattr(result, "__iter__"):
        raise ImproperlyConfigured(
            f"WS4REDIS_ALLOWED_CHANNELS returned {result!r}; it must return the permitted "
            "flags (a subset of the list it was given) or raise PermissionDenied"
        )
    permitted = set(result)
    return [flag for flag in flags if flag in permitted]
