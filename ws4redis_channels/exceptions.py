"""The exceptions ws4redis_channels raises.

* :class:`WS4RedisError` is the base of them all.

  * :class:`InvalidName`: a facility, user, session or group name that cannot
    name a channel (it is also a :class:`ValueError`).
  * :class:`IdentityRequired`: a user or session audience was asked for without
    an authenticated user or a saved session.
  * :class:`RedisError`: something went wrong talking to Redis. Every error of
    the Redis client (redis-py) and of the app's own pub/sub connection is
    re-raised as one of these, so code above never needs redis-py's classes.

    * :class:`RedisUnavailable`: Redis could not be reached (also a
      :class:`ConnectionError`).

      * :class:`RedisTimeout`: Redis did not answer within the configured
        bound (also a :class:`TimeoutError`). The command may have run anyway.

    * :class:`RedisCommandError`: Redis answered with an error reply
      (``-ERR ...``, a failed script, a wrong password).

      * :class:`NotReplicated`: Redis ran a publication, but too few replicas
        confirmed it in time, or the master moved meanwhile; a failover may
        discard it.
"""

from __future__ import annotations

__all__ = [
    "IdentityRequired",
    "InvalidName",
    "NotReplicated",
    "RedisCommandError",
    "RedisError",
    "RedisTimeout",
    "RedisUnavailable",
    "WS4RedisError",
]


class WS4RedisError(Exception):
    """Base class of every error this library raises."""


class InvalidName(WS4RedisError, ValueError):
    """A name that cannot be part of a channel name."""


class IdentityRequired(WS4RedisError):
    """A user or session channel was asked for, but there is no such identity."""


class RedisError(WS4RedisError):
    """Talking to Redis failed."""


class RedisUnavailable(RedisError, ConnectionError):
    """Redis could not be reached in time."""


class RedisTimeout(RedisUnavailable, TimeoutError):
    """Redis did not answer in time; the command may have been executed anyway."""


class RedisCommandError(RedisError):
    """Redis answered a command with an error reply."""


class NotReplicated(RedisUnavailable):
    """The master ran a publication that too few replicas confirmed.

    Its sockets may have received it, but a failover can discard it: do not
    count it as published. Retrying can deliver it twice.
    """
