"""Persistence and history: publish a message, store it, give it a position, in one script.

One Lua script does everything for ONE channel atomically (so that it works
on Redis Cluster too, where a channel and its companion keys share a slot):

1. with a message id, return the earlier position if the id is known (an
   idempotent retry publishes nothing);
2. give the message the next position of the channel (``{<channel>}:pos``),
   starting a new epoch when the channel has none, or when a promoted replica
   first writes a channel the old master wrote;
3. store it under the channel's own name for ``expire`` seconds (``GET
   <channel>`` returns the raw payload, as django-websocket-redis users expect);
4. append it to the channel's history (``{<channel>}:hist``, a stream whose
   ids are the offsets) when history is on;
5. publish its position on ``{<channel>}:pos``, then the raw payload on the
   channel (``PUBLISH``, or ``SPUBLISH`` on a cluster).

The same code runs two ways: as a script (``EVALSHA``), which is how the app
publishes, one call per channel in one pipeline; and as the Redis function
``ws4redis_publish`` (Redis 7+), loaded with the history settings of the app,
so that other languages and ``redis-cli`` publish with persistence and
history by name::

    FCALL ws4redis_publish 1 _broadcast_:foobar "Hello" 3600
    FCALL ws4redis_publish 1 _broadcast_:foobar "Hello" 3600 order-17

The first form answers the number of receivers, as before; with a message
id (``""`` for none) it answers ``[receivers, [position of each channel],
duplicate]``. Several channels in one call work on a single Redis, not
across the slots of a cluster: the app itself calls once per channel.

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

FUNCTION_NAME = "ws4redis_publish"
#: Message ids are remembered for at least this many messages per channel.
MIN_ID_WINDOW = 1000


@dataclass(frozen=True)
class History:
    """How publishing keeps history: messages per channel (0: off), their lifetime, the
    publish command."""

    size: int = 0
    ttl: int = 300
    command: str = "PUBLISH"


# Shared by both scripts: the channel's epoch, created or renewed as needed.
_EPOCH = """
local function ws4redis_epoch(channel, ttl, writing)
  local pos_key = '{' .. channel .. '}:pos'
  local state = redis.call('HMGET', pos_key, 'e', 'o', 'r')
  local epoch, offset, writer = state[1], tonumber(state[2]), state[3]
  if epoch and not writing then
    -- A reader needs no replication check: only a write could reuse offsets.
    return pos_key, epoch, offset or 0
  end
  local info = redis.call('INFO', 'replication')
  local replid = string.match(info, 'master_replid:(%w+)') or ''
  local replid2 = string.match(info, 'master_replid2:(%w+)') or ''
  -- A promoted replica (it has a previous replication id) writing a channel
  -- last written under another id: the old master may have written more
  -- that this node never got. Start a new epoch rather than reuse offsets.
  local promoted = writer and writer ~= replid and string.find(replid2, '[^0]') ~= nil
  if epoch and not promoted then
    if writer ~= replid then
      redis.call('HSET', pos_key, 'r', replid)
    end
    return pos_key, epoch, offset or 0
  end
  local now = redis.call('TIME')
  local fresh = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
  if epoch then
    -- Epochs never go down on a channel: positions stay ordered.
    if tonumber(epoch) >= fresh then
      fresh = tonumber(epoch) + 1
    end
    redis.call('HSET', pos_key, 'pe', epoch, 'po', offset or 0)
    redis.call('DEL', '{' .. channel .. '}:hist', '{' .. channel .. '}:ids')
  end
  local new_epoch = string.format('%.0f', fresh)
  redis.call('HSET', pos_key, 'e', new_epoch, 'o', 0, 'r', replid)
  if redis.call('TTL', pos_key) < ttl then
    redis.call('EXPIRE', pos_key, ttl)
  end
  return pos_key, new_epoch, 0
end
"""

_PUBLISH = """
local function ws4redis_publish_one(KEYS, ARGV, defaults)
  local channel = KEYS[1]
  local message = ARGV[1]
  local expire = tonumber(ARGV[2]) or defaults.expire
  local message_id = ARGV[3] or ''
  local size = tonumber(ARGV[4]) or defaults.size
  local ttl = tonumber(ARGV[5]) or defaults.ttl
  local command = ARGV[6] or defaults.command
  local ids_key = '{' .. channel .. '}:ids'
  if message_id ~= '' then
    local seen = redis.call('ZSCORE', ids_key, message_id)
    if seen then
      local epoch = redis.call('HGET', '{' .. channel .. '}:pos', 'e') or '0'
      return {0, epoch .. ':' .. seen, 1}
    end
  end
  local keep = math.max(ttl, expire)
  local pos_key, epoch, offset = ws4redis_epoch(channel, keep, true)
  offset = offset + 1
  local position = epoch .. ':' .. offset
  redis.call('HSET', pos_key, 'o', offset)
  if expire > 0 then
    redis.call('SET', channel, message, 'EX', expire)
    redis.call('HSET', pos_key, 'sv', position)
  end
  if size > 0 then
    local hist_key = '{' .. channel .. '}:hist'
    redis.call('XADD', hist_key, 'MAXLEN', size, offset .. '-1', 'd', message)
    redis.call('EXPIRE', hist_key, ttl)
  end
  if message_id ~= '' then
    redis.call('ZADD', ids_key, offset, message_id)
    redis.call('ZREMRANGEBYSCORE', ids_key, '-inf', offset - math.max(size, MIN_ID_WINDOW))
    redis.call('EXPIRE', ids_key, ttl)
  end
  if redis.call('TTL', pos_key) < keep then
    redis.call('EXPIRE', pos_key, keep)
  end
  redis.call(command, pos_key, position)
  local receivers = redis.call(command, channel, message)
  return {receivers, position, 0}
end
""".replace("MIN_ID_WINDOW", str(MIN_ID_WINDOW))

#: KEYS[1]: the channel. ARGV: message, expire, message id ("": none), history size,
#: history TTL, publish command. Answers [receivers, position, duplicate (0/1)].
PUBLISH_SCRIPT = (
    _EPOCH
    + _PUBLISH
    + "return ws4redis_publish_one(KEYS, ARGV, {expire = 0, size = 0, ttl = 300, "
    + "command = 'PUBLISH'})\n"
)

_READ = """
-- KEYS[1]: the channel. ARGV[1]: the position the reader has ('' for none),
-- ARGV[2]: seconds a new epoch lives. Answers {stored message or false,
-- its version or false, the current position, status, offset1, message1, ...}.
local channel = KEYS[1]
local since = ARGV[1] or ''
local ttl = tonumber(ARGV[2]) or 300
local pos_key, epoch, offset = ws4redis_epoch(channel, ttl, false)
local stored = redis.call('GET', channel)
local state = redis.call('HMGET', pos_key, 'sv', 'pe', 'po')
local version = state[1]
if not stored then
  version = false
end
local reply = {stored, version, epoch .. ':' .. offset}
if since == '' then
  reply[4] = 'new'
  return reply
end
local since_epoch, since_offset = string.match(since, '^(%d+):(%d+)$')
since_offset = tonumber(since_offset)
if since_epoch == state[2] and since_offset == tonumber(state[3]) then
  -- The reader has the last message of the previous epoch: go on from the start.
  since_epoch, since_offset = epoch, 0
end
if since_epoch ~= epoch or since_offset > offset then
  reply[4] = 'lost'
  return reply
end
if since_offset == offset then
  reply[4] = 'recovered'
  return reply
end
local entries = redis.call('XRANGE', '{' .. channel .. '}:hist', (since_offset + 1) .. '-1', '+')
local first = entries[1] and tonumber(string.match(entries[1][1], '^(%d+)'))
if first == since_offset + 1 and #entries == offset - since_offset then
  reply[4] = 'recovered'
  for _, entry in ipairs(entries) do
    reply[#reply + 1] = tonumber(string.match(entry[1], '^(%d+)'))
    reply[#reply + 1] = entry[2][2]
  end
elseif stored and offset == since_offset + 1 and version == epoch .. ':' .. offset then
  -- Without history, the stored message is the history of one message.
  reply[4] = 'recovered'
  reply[5] = offset
  reply[6] = stored
else
  reply[4] = 'lost'
end
return reply
"""

#: The script that reads what a joining socket gets from one channel.
READ_SCRIPT = _EPOCH + _READ


def function_library(history: History | None = None, expire: int = 0) -> str:
    """Return the function library, with the app's settings as the defaults of
    ``ws4redis_publish``."""
    history = history or History()
    return (
        "#!lua name=ws4redis\n"
        + _EPOCH
        + _PUBLISH
        + "local function ws4redis_publish(KEYS, ARGV)\n"
        + f"  local defaults = {{expire = {int(expire)}, size = {int(history.size)}, "
        + f"ttl = {int(history.ttl)}, command = '{history.command}'}}\n"
        + "  local receivers, positions, duplicate = 0, {}, 1\n"
        + "  for _, channel in ipairs(KEYS) do\n"
        + "    local reply = ws4redis_publish_one({channel}, ARGV, defaults)\n"
        + "    receivers = receivers + reply[1]\n"
        + "    positions[#positions + 1] = reply[2]\n"
        + "    duplicate = math.min(duplicate, reply[3])\n"
        + "  end\n"
        + "  if #ARGV < 3 then\n"
        + "    return receivers\n"
        + "  end\n"
        + "  return {receivers, positions, duplicate}\n"
        + "end\n"
        + f"redis.register_function('{FUNCTION_NAME}', ws4redis_publish)\n"
    )


#: The function library with the default settings (history off, nothing stored by default).
FUNCTION_LIBRARY = function_library()


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
