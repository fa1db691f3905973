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

import logging
import warnings
from collections.abc import Iterable
from typing import Any

from . import store
from .conf import conf
from .connection import RedisTarget, async_client, parse_target, sync_client
from .exceptions import IdentityRequired
from .fence import fence
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

logger = logging.getLogger(__name__)

Message = str | bytes | bytearray | memoryview


def _payload(message: Any) -> bytes:
    if isinstance(message, str):
        return message.encode("utf-8")
    if isinstance(message, (bytes, bytearray, memoryview)):
        return bytes(message)
    raise TypeError(f"a message must be str or bytes, got {type(message).__name__}")


# daphne's ASGI send drops empty frames, so no socket ever gets an empty message
# (fanout.py skips those that other publishers send): the API refuses them.
_EMPTY = (
    "an empty message reaches no socket (daphne cannot send an empty frame); send a non-empty one"
)


def _deliverable(message: Any) -> bytes:
    payload = _payload(message)
    if not payload:
        raise ValueError(_EMPTY)
    return payload


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
    message_id: str | None = None,
) -> store.Published:
    """Publish ``message`` to the audiences of ``facility``; return how many subscribers got it.

    Subscribers are counted by Redis: processes, not sockets. The result is an
    int with ``positions`` (channel -> :class:`~ws4redis_channels.positions.Position`)
    and ``duplicate``. With a ``message_id``, publishing the same id again
    within the history window stores and delivers nothing (a retry after a
    timeout is safe).
    """
    names = channels(facility, broadcast=broadcast, users=users, sessions=sessions, groups=groups)
    target = parse_target(conf.WS4REDIS_CONNECTION)
    result = store.publish(
        sync_client(target),
        names,
        _deliverable(message),
        _expire(expire),
        message_id=message_id,
        **_fenced(target),
    )
    recorder().published(len(names))
    return result


async def apublish(
    facility: str,
    message: Message,
    *,
    broadcast: bool = False,
    users: Iterable[Any] = (),
    sessions: Iterable[Any] = (),
    groups: Iterable[Any] = (),
    expire: int | None = None,
    message_id: str | None = None,
) -> store.Published:
    """Asynchronous :func:`publish`."""
    names = channels(facility, broadcast=broadcast, users=users, sessions=sessions, groups=groups)
    target = parse_target(conf.WS4REDIS_CONNECTION)
    result = await store.apublish(
        async_client(target),
        names,
        _deliverable(message),
        _expire(expire),
        message_id=message_id,
        **_fenced(target),
    )
    recorder().published(len(names))
    return result


def _fenced(target: RedisTarget) -> dict[str, Any]:
    # Taken before the publication starts: see connection.fence.
    return {"fence": fence(target)}


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


def _audience_list(values: Any, request: Any, what: str) -> list[Any]:
    """Normalize one audience argument the way django-websocket-redis accepted it."""
    if values is True:
        warnings.warn(
            f"{what}=True is deprecated: write {what}=[SELF]", DeprecationWarning, stacklevel=4
        )
        values = [SELF]
    elif values is False or values is None:
        return []
    elif isinstance(values, str):
        warnings.warn(
            f"{what}={values!r} is deprecated: write {what}=[{values!r}]",
            DeprecationWarning,
            stacklevel=4,
        )
        values = [values]
    elif values is SELF:
        values = [SELF]
    values = list(values)
    kept = []
    for value in values:
        if value is None or value == "":
            # A form posted with nothing picked: the original published to a
            # channel nobody listens to; skip it, say so, and keep the view working.
            logger.warning(
                "RedisPublisher: skipping an empty name in %s=%r (nobody has it)", what, values
            )
            continue
        kept.append(value)
    return _resolve_self(kept, request, what)


def _resolve_self(values: list[Any], request: Any, what: str) -> list[Any]:
    if not any(v is SELF for v in values):
        return values
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


class RedisPublisher:
    """django-websocket-redis's publisher: ``RedisPublisher(facility=..., broadcast=True)``.

    Without an audience (``RedisPublisher()``) it is a fetch-only publisher, as
    in the original: :meth:`fetch_message` works and publishing reaches nobody.
    Empty names (``users=[""]``, ``None``) are skipped with a warning.
    """

    def __init__(
        self,
        *,
        facility: str | None = None,
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
        audience = {
            "users": _audience_list(users, request, "users"),
            "groups": _audience_list(groups, request, "groups"),
            "sessions": _audience_list(sessions, request, "sessions"),
        }
        if not broadcast and not any(audience.values()):
            self._channels: list[str] = []
            return
        if facility is None:
            raise ValueError("RedisPublisher needs facility=... to publish to an audience")
        self._channels = channels(facility, broadcast=broadcast, **audience)

    @property
    def channels(self) -> list[str]:
        """The Redis channels this publisher publishes on."""
        return list(self._channels)

    @property
    def _publishers(self) -> set[str]:
        # The original's attribute, read by tests written for it.
        return set(self._channels)

    @property
    def _connection(self) -> Any:
        # The original's redis client attribute, e.g. ``publisher._connection.get(key)``.
        return sync_client(parse_target(conf.WS4REDIS_CONNECTION))

    @staticmethod
    def get_prefix() -> str:
        """Return ``WS4REDIS_PREFIX`` followed by ``:``, or ``""`` without a prefix."""
        prefix = conf.WS4REDIS_PREFIX
        return f"{prefix}:" if prefix else ""

    def publish_message(
        self, message: Message, expire: int | None = None, *, message_id: str | None = None
    ) -> int:
        """Publish (and store, see ``expire``) ``message``; return the subscriber count."""
        payload = self._payload_for_some(message)
        if payload is None:
            return 0
        target = parse_target(conf.WS4REDIS_CONNECTION)
        return store.publish(
            sync_client(target),
            self._channels,
            payload,
            _expire(expire),
            message_id=message_id,
            **_fenced(target),
        )

    def _payload_for_some(self, message: Message) -> bytes | None:
        """The payload, or None (with a warning) when it would reach nobody.

        django-websocket-redis published an empty message like any other; it
        reaches no socket here, so code written for it gets a warning, not an error.
        """
        payload = _payload(message)
        if not self._channels:
            logger.warning("RedisPublisher has no audience; the message reaches nobody")
            return None
        if not payload:
            logger.warning("RedisPublisher skipped an empty message: %s", _EMPTY)
            return None
        return payload

    def pipeline_publish_message(self, message: Message, expire: int | None = None) -> int:
        """The original's pipelined :meth:`publish_message`: every channel in one round trip.

        :meth:`publish_message` already publishes and stores in one atomic round trip;
        this name is kept for code written for django-websocket-redis.
        """
        return self.publish_message(message, expire)

    async def apublish_message(
        self, message: Message, expire: int | None = None, *, message_id: str | None = None
    ) -> int:
        """Asynchronous :meth:`publish_message`."""
        payload = self._payload_for_some(message)
        if payload is None:
            return 0
        target = parse_target(conf.WS4REDIS_CONNECTION)
        return await store.apublish(
            async_client(target),
            self._channels,
            payload,
            _expire(expire),
            message_id=message_id,
            **_fenced(target),
        )

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
