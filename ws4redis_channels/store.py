"""Persistence and history: publish a message, store it, give it a position, in one round trip.

The app publishes with the Lua script of :mod:`ws4redis_channels.scripts`
(``EVALSHA``), one call per channel in one pipeline; on a cluster, one call
per channel, each sent to its channel's primary. Publishing also loads the
Redis function ``ws4redis_publish`` (Redis 7+) with the app's history
settings, so that other languages and ``redis-cli`` publish the same way.

A bare ``PUBLISH`` is live-only: nothing is stored, it has no position.

With a :class:`~ws4redis_channels.fence.Fence` the scripts are followed, in
the same round trip and on the same connection, by ``WAIT``: a publication
counts only once a replica has it, so a Sentinel failover (which promotes a
replica) cannot discard a publication reported as done.

Every function raises the app's :class:`~ws4redis_channels.exceptions.RedisError`
subclasses, never redis-py's.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import redis
import redis.asyncio

from .connection import is_cluster, redis_errors
from .fence import Fence
from .positions import Position
from .scripts import (
    FUNCTION_LIBRARY,
    FUNCTION_NAME,
    PUBLISH_SCRIPT,
    READ_SCRIPT,
    History,
    function_library,
)

__all__ = [
    "FUNCTION_LIBRARY",
    "FUNCTION_NAME",
    "PUBLISH_SCRIPT",
    "READ_SCRIPT",
    "History",
    "Published",
    "Replay",
    "afetch",
    "aload_function",
    "apublish",
    "aread",
    "configured",
    "fetch",
    "function_library",
    "load_function",
    "publish",
    "read",
]

logger = logging.getLogger(__name__)


class Published(int):
    """How many subscribers got a publication (as before), with the positions it got.

    ``positions`` maps each channel to the message's position there;
    ``duplicate`` is True when every channel knew the message id already.
    """

    positions: dict[str, Position]
    duplicate: bool

    def __new__(cls, receivers: int, positions: dict[str, Position], duplicate: bool) -> Published:
        value = super().__new__(cls, receivers)
        value.positions = positions
        value.duplicate = duplicate
        return value


@dataclass
class Replay:
    """What one channel gives a joining socket (see :data:`READ_SCRIPT`)."""

    stored: bytes | None
    version: Position | None
    position: Position
    status: str
    entries: list[tuple[Position, bytes]]


def configured() -> tuple[History, int]:
    """Return the history settings and ``WS4REDIS_EXPIRE`` (read now, from Django settings)."""
    from .conf import conf

    return History(conf.WS4REDIS_HISTORY_SIZE, conf.WS4REDIS_HISTORY_TTL), conf.WS4REDIS_EXPIRE


_sync_scripts: weakref.WeakKeyDictionary[redis.Redis, dict[str, Any]] = weakref.WeakKeyDictionary()
_async_scripts: weakref.WeakKeyDictionary[redis.asyncio.Redis, dict[str, Any]] = (
    weakref.WeakKeyDictionary()
)
# The library each client loaded last: a process that only publishes (a
# Celery worker, manage.py) makes the function available to other languages.
_functions_loaded: weakref.WeakKeyDictionary[redis.Redis | redis.asyncio.Redis, str] = (
    weakref.WeakKeyDictionary()
)


def _script(client: Any, source: str, cache: Any) -> Any:
    scripts = cache.get(client)
    if scripts is None:
        scripts = cache[client] = {}
    script = scripts.get(source)
    if script is None:
        script = scripts[source] = client.register_script(source)
    return script


def _args(message: bytes, expire: int, message_id: str | None, history: History) -> list[Any]:
    if message_id is not None and (not isinstance(message_id, str) or not message_id):
        raise ValueError(f"message_id must be a non-empty str, got {message_id!r}")
    return [message, max(expire, 0), message_id or "", history.size, history.ttl, history.command]


def _on(client: Any, history: History) -> History:
    """Return ``history`` with the publish command of ``client``: SPUBLISH on a cluster."""
    if is_cluster(client) and history.command != "SPUBLISH":
        return dataclasses.replace(history, command="SPUBLISH")
    return history


def _pipeline(
    pipe: Any, sha: str, channels: Sequence[str], args: list[Any], fence: Fence | None
) -> None:
    for channel in channels:
        pipe.evalsha(sha, 1, channel, *args)
    if fence is not None:
        fence.add_to(pipe)


def _outcome(channels: Sequence[str], results: list[Any], fence: Fence | None) -> Published:
    if fence is not None:
        results = fence.check(results)
    replies = results[: len(channels)]
    for reply in replies:
        if isinstance(reply, Exception):
            raise reply
    return _published(channels, replies)


def _noscript(results: list[Any]) -> bool:
    return any(isinstance(result, redis.exceptions.NoScriptError) for result in results)


def _published(channels: Sequence[str], replies: Sequence[Any]) -> Published:
    positions = {
        channel: Position.parse(reply[1]) for channel, reply in zip(channels, replies, strict=True)
    }
    duplicate = all(int(reply[2]) for reply in replies)
    return Published(sum(int(reply[0]) for reply in replies), positions, duplicate)


def publish(
    client: redis.Redis,
    channels: Sequence[str],
    message: bytes,
    expire: int,
    *,
    message_id: str | None = None,
    history: History | None = None,
    fence: Fence | None = None,
) -> Published:
    """Publish ``message`` on ``channels`` (one script per channel, one round trip).

    With a ``fence``, replicas confirm it in the same round trip, or
    :class:`~ws4redis_channels.exceptions.NotReplicated` is raised.
    """
    if not channels:
        return Published(0, {}, False)
    settings_history, default_expire = configured()
    history = _on(client, history or settings_history)
    library = function_library(history, default_expire)
    args = _args(message, expire, message_id, history)
    with redis_errors():
        if _functions_loaded.get(client) != library and load_function(client, library):
            _functions_loaded[client] = library
        script = _script(client, PUBLISH_SCRIPT, _sync_scripts)
        if is_cluster(client):
            # A cluster pipeline cannot carry scripts: one call per channel,
            # each sent to its channel's primary (no WAIT: it has no key).
            return _published(channels, [script(keys=[ch], args=args) for ch in channels])
        for _ in range(2):
            pipe = client.pipeline(transaction=False)
            _pipeline(pipe, script.sha, channels, args, fence)
            results = pipe.execute(raise_on_error=False)
            if _noscript(results):
                script.sha = client.script_load(PUBLISH_SCRIPT)
                continue
            break
        return _outcome(channels, results, fence)


async def apublish(
    client: redis.asyncio.Redis,
    channels: Sequence[str],
    message: bytes,
    expire: int,
    *,
    message_id: str | None = None,
    history: History | None = None,
    fence: Fence | None = None,
) -> Published:
    """Asynchronous :func:`publish`."""
    if not channels:
        return Published(0, {}, False)
    settings_history, default_expire = configured()
    history = _on(client, history or settings_history)
    library = function_library(history, default_expire)
    args = _args(message, expire, message_id, history)
    with redis_errors():
        if _functions_loaded.get(client) != library and await aload_function(client, library):
            _functions_loaded[client] = library
        script = _script(client, PUBLISH_SCRIPT, _async_scripts)
        if is_cluster(client):
            calls = [script(keys=[ch], args=args) for ch in channels]
            return _published(channels, await asyncio.gather(*calls))
        for _ in range(2):
            pipe = client.pipeline(transaction=False)
            _pipeline(pipe, script.sha, channels, args, fence)
            results = await pipe.execute(raise_on_error=False)
            if _noscript(results):
                script.sha = await client.script_load(PUBLISH_SCRIPT)
                continue
            break
        return _outcome(channels, results, fence)


def _replay(reply: list[Any]) -> Replay:
    stored, version, position, status = reply[:4]
    current = Position.parse(position)
    entries = [
        (Position(current.epoch, int(reply[i])), bytes(reply[i + 1]))
        for i in range(4, len(reply) - 1, 2)
    ]
    status_text = status.decode() if isinstance(status, bytes) else str(status)
    return Replay(
        stored if stored else None,
        Position.parse(version) if version else None,
        current,
        status_text,
        entries,
    )


def read(
    client: redis.Redis, channels: Sequence[str], since: Sequence[Position | None], ttl: int
) -> list[Replay]:
    """Return what each channel gives a reader that has the positions ``since``."""
    script = _script(client, READ_SCRIPT, _sync_scripts)
    if is_cluster(client):
        with redis_errors():
            return [
                _replay(script(keys=[ch], args=[str(pos or ""), ttl]))
                for ch, pos in zip(channels, since, strict=True)
            ]
    with redis_errors(), client.pipeline(transaction=False) as pipe:
        for channel, position in zip(channels, since, strict=True):
            script(keys=[channel], args=[str(position or ""), ttl], client=pipe)
        replies = pipe.execute()
    return [_replay(reply) for reply in replies]


async def aread(
    client: redis.asyncio.Redis,
    channels: Sequence[str],
    since: Sequence[Position | None],
    ttl: int,
) -> list[Replay]:
    """Asynchronous :func:`read`."""
    if not channels:
        return []
    script = _script(client, READ_SCRIPT, _async_scripts)
    if is_cluster(client):
        with redis_errors():
            calls = [
                script(keys=[ch], args=[str(pos or ""), ttl])
                for ch, pos in zip(channels, since, strict=True)
            ]
            return [_replay(reply) for reply in await asyncio.gather(*calls)]
    with redis_errors():
        async with client.pipeline(transaction=False) as pipe:
            for channel, position in zip(channels, since, strict=True):
                await script(keys=[channel], args=[str(position or ""), ttl], client=pipe)
            replies = await pipe.execute()
    return [_replay(reply) for reply in replies]


def fetch(client: redis.Redis, channel: str) -> bytes | None:
    """Return the message stored for ``channel``, if any."""
    with redis_errors():
        value: bytes | None = client.get(channel)  # type: ignore[assignment]
    return value


async def afetch(client: redis.asyncio.Redis, channel: str) -> bytes | None:
    """Asynchronous :func:`fetch`."""
    with redis_errors():
        value: bytes | None = await client.get(channel)  # type: ignore[assignment]
    return value


def load_function(client: redis.Redis, library: str | None = None) -> bool:
    """Load the ``ws4redis_publish`` function; return False on Redis older than 7.

    ``library`` defaults to the one built from the current settings.
    """
    if library is None:
        history, expire = configured()
        library = function_library(_on(client, history), expire)
    with redis_errors():
        try:
            client.function_load(library, replace=True)
        except redis.ResponseError as exc:
            logger.debug("Cannot load the ws4redis function library: %s", exc)
            return False
    return True


async def aload_function(client: redis.asyncio.Redis, library: str | None = None) -> bool:
    """Asynchronous :func:`load_function`."""
    if library is None:
        history, expire = configured()
        library = function_library(_on(client, history), expire)
    with redis_errors():
        try:
            await client.function_load(library, replace=True)
        except redis.ResponseError as exc:
            logger.debug("Cannot load the ws4redis function library: %s", exc)
            return False
    return True
