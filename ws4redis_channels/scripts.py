"""The Lua code that publishes a message, stores it and gives it a position; and reads.

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

The same code runs two ways: as a script (:data:`PUBLISH_SCRIPT`, sent with
``EVALSHA``), which is how the app publishes, one call per channel in one
pipeline; and as the Redis function ``ws4redis_publish`` (Redis 7+,
:func:`function_library`), loaded with the history settings of the app, so
that other languages and ``redis-cli`` publish with persistence and history
by name::

    FCALL ws4redis_publish 1 _broadcast_:foobar "Hello" 3600
    FCALL ws4redis_publish 1 _broadcast_:foobar "Hello" 3600 order-17

The first form answers the number of receivers, as before; with a message
id (``""`` for none) it answers ``[receivers, [position of each channel],
duplicate]``. Several channels in one call work on a single Redis, not
across the slots of a cluster: the app itself calls once per channel.

:data:`READ_SCRIPT` reads what a joining socket gets from one channel. This
module holds text only, no I/O: :mod:`ws4redis_channels.store` runs it.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "FUNCTION_LIBRARY",
    "FUNCTION_NAME",
    "MIN_ID_WINDOW",
    "PUBLISH_SCRIPT",
    "READ_SCRIPT",
    "History",
    "function_library",
]

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
