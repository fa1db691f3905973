"""Persistence: publish a message and store it under its channel name in one round trip.

The same Lua code runs two ways:

* as a script (``EVALSHA``), which is how the app itself publishes, on any
  Redis from 2.6 on;
* as the Redis function ``ws4redis_publish`` (Redis 7+), which the app loads
  on connect so other languages and ``redis-cli`` can publish *with*
  persistence by name::

      FCALL ws4redis_publish 1 _broadcast_:foobar "Hello" 3600

A bare ``PUBLISH`` is live-only: nothing is stored, nothing is replayed.

On a Redis Cluster the app publishes with ``SPUBLISH`` (sharded pub/sub),
one channel per call (a script's keys must share a slot), and the function
chooses ``SPUBLISH`` by itself when it runs on a cluster node::

    redis-cli -c FCALL ws4redis_publish 1 _broadcast_:foobar "Hello" 3600

With ``replicas`` > 0 the script is followed, in the same round trip and on
the same connection, by ``WAIT replicas timeout``: a publication counts only
once that many replicas have it, so a Sentinel failover (which promotes a
replica) cannot discard a publication reported as done. Too few
confirmations raise :class:`~ws4redis_channels.exceptions.NotReplicated`.

Every function raises the app's :class:`~ws4redis_channels.exceptions.RedisError`
subclasses, never redis-py's.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Callable, Sequence
from typing import Any

import redis
import redis.asyncio

from .connection import is_cluster, redis_errors
from .exceptions import NotReplicated

__all__ = [
    "FUNCTION_LIBRARY",
    "FUNCTION_NAME",
    "PUBLISH_SCRIPT",
    "afetch",
    "aload_function",
    "apublish",
    "fetch",
    "load_function",
    "publish",
]

logger = logging.getLogger(__name__)

FUNCTION_NAME = "ws4redis_publish"

_BODY = """
local message = ARGV[1]
local expire = tonumber(ARGV[2]) or 0
local command = ARGV[3]
if command ~= 'PUBLISH' and command ~= 'SPUBLISH' then
  -- Called without a choice (FCALL from another language): sharded pub/sub on a cluster.
  local info = redis.call('INFO', 'cluster')
  command = string.find(info, 'cluster_enabled:1', 1, true) and 'SPUBLISH' or 'PUBLISH'
end
local receivers = 0
for _, channel in ipairs(KEYS) do
  if expire > 0 then
    redis.call('SET', channel, message, 'EX', expire)
  end
  receivers = receivers + redis.call(command, channel, message)
end
return receivers
"""

#: KEYS: the channels; ARGV[1]: the message; ARGV[2]: seconds to keep it (0: don't store);
#: ARGV[3]: ``PUBLISH`` or ``SPUBLISH`` (absent: ``SPUBLISH`` on a cluster node).
PUBLISH_SCRIPT = _BODY.strip() + "\n"

#: The function library loaded with ``FUNCTION LOAD REPLACE`` (Redis 7+).
FUNCTION_LIBRARY = (
    "#!lua name=ws4redis\n"
    "local function ws4redis_publish(KEYS, ARGV)\n"
    + _BODY.strip()
    + "\nend\n"
    + f"redis.register_function('{FUNCTION_NAME}', ws4redis_publish)\n"
)

_sync_scripts: weakref.WeakKeyDictionary[redis.Redis, redis.commands.core.Script] = (
    weakref.WeakKeyDictionary()
)
_async_scripts: weakref.WeakKeyDictionary[redis.asyncio.Redis, redis.commands.core.AsyncScript] = (
    weakref.WeakKeyDictionary()
)


# Clients that loaded the function library once: a process that only
# publishes (a Celery worker, manage.py) makes it available to other languages.
_functions_loaded: weakref.WeakKeyDictionary[redis.Redis | redis.asyncio.Redis, bool] = (
    weakref.WeakKeyDictionary()
)


def _script(client: redis.Redis) -> redis.commands.core.Script:
    script = _sync_scripts.get(client)
    if script is None:
        script = _sync_scripts[client] = client.register_script(PUBLISH_SCRIPT)
    return script


def _ascript(client: redis.asyncio.Redis) -> redis.commands.core.AsyncScript:
    script = _async_scripts.get(client)
    if script is None:
        script = _async_scripts[client] = client.register_script(PUBLISH_SCRIPT)
    return script


def _confirmed(
    results: list[Any], replicas: int, timeout: float, holds: Callable[[], bool] | None
) -> int:
    """Return the script's result, or raise if too few replicas confirmed it."""
    result, acks = results
    if isinstance(result, Exception):
        raise result
    if holds is not None and not holds():
        raise NotReplicated(
            "Sentinel moved the master while this publication ran: it may have reached "
            "some sockets, and the old master may discard it"
        )
    # A demoted master (now a replica) answers WAIT with an error.
    confirmed = acks if isinstance(acks, Exception) else int(acks)
    if isinstance(confirmed, Exception) or confirmed < replicas:
        raise NotReplicated(
            f"{confirmed} of {replicas} replica(s) confirmed the publication within "
            f"{timeout}s: it may have reached some sockets, and a failover may discard it"
        )
    return int(result)


def publish(
    client: redis.Redis,
    channels: Sequence[str],
    message: bytes,
    expire: int,
    *,
    replicas: int = 0,
    timeout: float = 1.0,
    holds: Callable[[], bool] | None = None,
) -> int:
    """Publish ``message`` on ``channels``, storing it for ``expire`` seconds if positive.

    With ``replicas``, wait up to ``timeout`` seconds for that many replicas to
    have it; with ``holds``, fail unless ``holds()`` is still true once Redis
    answered (the master did not move meanwhile).
    """
    if not channels:
        return 0
    with redis_errors():
        if client not in _functions_loaded:
            _functions_loaded[client] = load_function(client)
        script = _script(client)
        if is_cluster(client):
            # The cluster client sends each call to the primary of its channel.
            # (WAIT has no key to route by: replicas are not waited for.)
            cluster_args: list[bytes | int | str] = [message, max(expire, 0), "SPUBLISH"]
            return sum(int(script(keys=[channel], args=cluster_args)) for channel in channels)
        args: list[bytes | int | str] = [message, max(expire, 0), "PUBLISH"]
        if not replicas:
            result = int(script(keys=list(channels), args=args))
            return _confirmed([result, 0], 0, timeout, holds)
        for _ in range(2):
            pipe = client.pipeline(transaction=False)
            pipe.evalsha(script.sha, len(channels), *channels, *args)
            pipe.execute_command("WAIT", replicas, max(int(timeout * 1000), 1))  # type: ignore[no-untyped-call]
            results = pipe.execute(raise_on_error=False)
            if isinstance(results[0], redis.exceptions.NoScriptError):
                script.sha = client.script_load(PUBLISH_SCRIPT)
                continue
            break
        return _confirmed(results, replicas, timeout, holds)


async def apublish(
    client: redis.asyncio.Redis,
    channels: Sequence[str],
    message: bytes,
    expire: int,
    *,
    replicas: int = 0,
    timeout: float = 1.0,
    holds: Callable[[], bool] | None = None,
) -> int:
    """Asynchronous :func:`publish`."""
    if not channels:
        return 0
    with redis_errors():
        if client not in _functions_loaded:
            _functions_loaded[client] = await aload_function(client)
        script = _ascript(client)
        if is_cluster(client):
            cluster_args: list[bytes | int | str] = [message, max(expire, 0), "SPUBLISH"]
            calls = (script(keys=[channel], args=cluster_args) for channel in channels)
            return sum(int(count) for count in await asyncio.gather(*calls))
        args: list[bytes | int | str] = [message, max(expire, 0), "PUBLISH"]
        if not replicas:
            result = int(await script(keys=list(channels), args=args))
            return _confirmed([result, 0], 0, timeout, holds)
        for _ in range(2):
            pipe = client.pipeline(transaction=False)
            pipe.evalsha(script.sha, len(channels), *channels, *args)
            pipe.execute_command("WAIT", replicas, max(int(timeout * 1000), 1))
            results = await pipe.execute(raise_on_error=False)
            if isinstance(results[0], redis.exceptions.NoScriptError):
                script.sha = await client.script_load(PUBLISH_SCRIPT)
                continue
            break
        return _confirmed(results, replicas, timeout, holds)


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


def load_function(client: redis.Redis) -> bool:
    """Load the ``ws4redis_publish`` function; return False on Redis older than 7."""
    with redis_errors():
        try:
            client.function_load(FUNCTION_LIBRARY, replace=True)
        except redis.ResponseError as exc:
            logger.debug("Cannot load the ws4redis function library: %s", exc)
            return False
    return True


async def aload_function(client: redis.asyncio.Redis) -> bool:
    """Asynchronous :func:`load_function`."""
    with redis_errors():
        try:
            await client.function_load(FUNCTION_LIBRARY, replace=True)
        except redis.ResponseError as exc:
            logger.debug("Cannot load the ws4redis function library: %s", exc)
            return False
    return True
