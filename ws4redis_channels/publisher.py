"""Publishing from Django code, sync and async, and the django-websocket-redis names.

The modern API::

    from ws4redis_channels.publisher import publish, apublish, fetch

    publish("foobar", "Hello", broadcast=True)
    await apublish("foobar", b"\\x00binary", users=["john"], expire=60)
    fetch("foobar")                                  # stored broadcast message
    fetch("foobar", audience="user", identity="john")

``expire`` defaults to ``WS4REDIS_EXPIRE``; the message is stored under each
channel name in the same round trip as the ``PUBLISH`` when it is positive.

The names django-websocket-redis users know are a thin layer over it::

    from ws4redis_channels.publisher import RedisPublisher, RedisMessage, SELF

    RedisPublisher(facility="foobar", broadcast=True).publish_message(RedisMessage("Hello"))
    RedisPublisher(facility="foobar", users=[SELF], request=request).publish_message("Hi")
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from . import store
from .conf import conf
from .connection import async_client, parse_target, sync_client
from .exceptions import IdentityRequired
from .metrics import recorder
from .names import Audience, Target, channel_for, channels_for

__all__ = [
    "SELF",
    "RedisMessage",
    "RedisPublisher",
    "afetch",
    "apublish",
    "channels",
    "fetch",
    "fetch_message",
    "publish",
]

Message = str | bytes | bytearray | memoryview


def _payload(message: Any) -> bytes:
    if isinstance(message, str):
        return message.encode("utf-8")
    if isinstance(message, (bytes, bytearray, memoryview)):
        return bytes(message)
    raise TypeError(f"a message must be str or bytes, got {type(message).__name__}")


def _names(values: Any, what: str) -> list[str]:
    if isinstance(values, str):
        raise TypeError(f"{what} must be a list of names, got the string {values!r}")
    names = []
    for value in values or ():
        if hasattr(value, "get_username"):
            value = value.get_username()
        elif hasattr(value, "session_key"):
            value = value.session_key
        elif what == "groups" and hasattr(value, "name"):
            value = value.name
        names.append(value)
    return names


def channels(
    facility: str,
    *,
    broadcast: bool = False,
    users: Iterable[Any] = (),
    sessions: Iterable[Any] = (),
    groups: Iterable[Any] = (),
) -> list[str]:
    """Return the Redis channels of the given audiences of ``facility`` (current settings)."""
    result = channels_for(
        facility,
        broadcast=broadcast,
        users=_names(users, "users"),
        sessions=_names(sessions, "sessions"),
        groups=_names(groups, "groups"),
        prefix=conf.WS4REDIS_PREFIX,
        naming=conf.WS4REDIS_NAMING,
    )
    if not result:
        raise ValueError("say who the message is for: broadcast=True, users, sessions or groups")
    return result


def _expire(expire: int | None) -> int:
    if expire is None:
        return conf.WS4REDIS_EXPIRE
    if isinstance(expire, bool) or not isinstance(expire, int) or expire < 0:
        raise ValueError(f"expire must be a non-negative int (seconds), got {expire!r}")
    return expire


def publish(
    facility: str,
    message: Message,
    *,
    broadcast: bool = False,
    users: Iterable[Any] = (),
    sessions: Iterable[Any] = (),
    groups: Iterable[Any] = (),
    expire: int | None = None,
) -> int:
    """Publish ``message`` to the audiences of ``facility``; return how many subscribers got it.

    Subscribers are counted by Redis: processes, not sockets.
    """
    names = channels(facility, broadcast=broadcast, users=users, sessions=sessions, groups=groups)
    client = sync_client(parse_target(conf.WS4REDIS_CONNECTION))
    receivers = store.publish(client, names, _payload(message), _expire(expire))
    recorder().published(len(names))
    return receivers


async def apublish(
    facility: str,
    message: Message,
    *,
    broadcast: bool = False,
    users: Iterable[Any] = (),
    sessions: Iterable[Any] = (),
    groups: Iterable[Any] = (),
    expire: int | None = None,
) -> int:
    """Asynchronous :func:`publish`."""
    names = channels(facility, broadcast=broadcast, users=users, sessions=sessions, groups=groups)
    client = async_client(parse_target(conf.WS4REDIS_CONNECTION))
    receivers = await store.apublish(client, names, _payload(message), _expire(expire))
    recorder().published(len(names))
    return receivers


def _channel(facility: str, audience: Audience | str, identity: str | None) -> str:
    target = Target(Audience(audience), facility, identity)
    return channel_for(target, prefix=conf.WS4REDIS_PREFIX, naming=conf.WS4REDIS_NAMING)


def fetch(
    facility: str, *, audience: Audience | str = Audience.BROADCAST, identity: str | None = None
) -> bytes | None:
    """Return the message stored for one audience of ``facility``, or None."""
    client = sync_client(parse_target(conf.WS4REDIS_CONNECTION))
    return store.fetch(client, _channel(facility, audience, identity))


async def afetch(
    facility: str, *, audience: Audience | str = Audience.BROADCAST, identity: str | None = None
) -> bytes | None:
    """Asynchronous :func:`fetch`."""
    client = async_client(parse_target(conf.WS4REDIS_CONNECTION))
    return await store.afetch(client, _channel(facility, audience, identity))


# -- django-websocket-redis compatible names ------------------------------------


class _Self:
    """Stands for "the user, groups or session of the request" in :class:`RedisPublisher`."""

    def __repr__(self) -> str:
        return "SELF"


SELF = _Self()


class RedisMessage(bytes):
    """A message as bytes, built from str, bytes or a redis-py pub/sub reply."""

    def __new__(cls, value: Any) -> RedisMessage:
        if isinstance(value, list):
            # A raw pub/sub reply: [b"message", channel, data].
            if len(value) >= 3 and value[0] in (b"message", "message"):
                value = value[2]
            else:
                raise ValueError(f"not a pub/sub message: {value!r}")
        return super().__new__(cls, _payload(value))


def _resolve_self(values: Any, request: Any, what: str) -> list[Any]:
    if values is SELF:
        values = [SELF]
    if isinstance(values, (list, tuple, set, frozenset)) and SELF in values:
        others = [v for v in values if v is not SELF]
        if request is None:
            raise IdentityRequired(f"{what}=SELF needs request=...")
        if what == "sessions":
            key = getattr(getattr(request, "session", None), "session_key", None)
            if not key:
                raise IdentityRequired("sessions=SELF, but the request has no saved session")
            return [*others, key]
        user = getattr(request, "user", None)
        if user is None or not user.is_authenticated:
            raise IdentityRequired(f"{what}=SELF, but the request's user is anonymous")
        if what == "users":
            return [*others, user.get_username()]
        return [*others, *user.groups.values_list("name", flat=True)]
    return list(values or ())


class RedisPublisher:
    """django-websocket-redis's publisher: ``RedisPublisher(facility=..., broadcast=True)``."""

    def __init__(
        self,
        *,
        facility: str,
        broadcast: bool = False,
        users: Any = (),
        groups: Any = (),
        sessions: Any = (),
        request: Any = None,
        connection: Any = None,
    ) -> None:
        # ``connection`` is accepted for compatibility and ignored:
        # WS4REDIS_CONNECTION decides where messages go.
        self.facility = facility
        self.request = request
        self._channels = channels(
            facility,
            broadcast=broadcast,
            users=_resolve_self(users, request, "users"),
            groups=_resolve_self(groups, request, "groups"),
            sessions=_resolve_self(sessions, request, "sessions"),
        )

    @property
    def channels(self) -> list[str]:
        """The Redis channels this publisher publishes on."""
        return list(self._channels)

    def publish_message(self, message: Message, expire: int | None = None) -> int:
        """Publish (and store, see ``expire``) ``message``; return the subscriber count."""
        client = sync_client(parse_target(conf.WS4REDIS_CONNECTION))
        return store.publish(client, self._channels, _payload(message), _expire(expire))

    async def apublish_message(self, message: Message, expire: int | None = None) -> int:
        """Asynchronous :meth:`publish_message`."""
        client = async_client(parse_target(conf.WS4REDIS_CONNECTION))
        return await store.apublish(client, self._channels, _payload(message), _expire(expire))

    def fetch_message(self, request: Any, facility: str, audience: str = "any") -> bytes | None:
        """Return the stored message for ``request`` on ``facility``.

        ``audience`` is ``session``, ``user``, ``group``, ``broadcast`` or
        ``any`` (the first stored one, in that order), as in django-websocket-redis.
        """
        return fetch_message(request, facility, audience)


def _fetch_channels(request: Any, facility: str, audience: str) -> list[str]:
    if audience not in ("session", "user", "group", "broadcast", "any"):
        raise ValueError(
            f"audience must be session, user, group, broadcast or any; got {audience!r}"
        )
    result: list[str] = []
    session = getattr(request, "session", None)
    user = getattr(request, "user", None)
    authenticated = bool(user is not None and user.is_authenticated)
    if audience in ("session", "any") and getattr(session, "session_key", None):
        result.append(_channel(facility, Audience.SESSION, session.session_key))  # type: ignore[union-attr]
    if audience in ("user", "any") and authenticated:
        result.append(_channel(facility, Audience.USER, user.get_username()))  # type: ignore[union-attr]
    if audience in ("group", "any") and authenticated:
        for name in user.groups.values_list("name", flat=True):  # type: ignore[union-attr]
            result.append(_channel(facility, Audience.GROUP, name))
    if audience in ("broadcast", "any"):
        result.append(_channel(facility, Audience.BROADCAST, None))
    return result


def fetch_message(request: Any, facility: str, audience: str = "any") -> bytes | None:
    """Module-level form of :meth:`RedisPublisher.fetch_message`."""
    client = sync_client(parse_target(conf.WS4REDIS_CONNECTION))
    for channel in _fetch_channels(request, facility, audience):
        value = store.fetch(client, channel)
        if value:
            return RedisMessage(value)
    return None
