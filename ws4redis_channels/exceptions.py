"""The exceptions ws4redis_channels raises.

* :class:`WS4RedisError` is the base of them all.

  * :class:`InvalidName`: a facility, user, session or group name that cannot
    name a channel (it is also a :class:`ValueError`).
  * :class:`IdentityRequired`: a user or session audience was asked for without
    an authenticated user or a saved session.
  * :class:`RedisUnavailable`: Redis did not answer within the configured bound.

    * :class:`NotReplicated`: Redis ran a publication, but not enough replicas
      confirmed it in time; a failover may discard it.
"""

from __future__ import annotations

__all__ = ["IdentityRequired", "InvalidName", "NotReplicated", "RedisUnavailable", "WS4RedisError"]


class WS4RedisError(Exception):
    """Base class of every error this library raises."""


class InvalidName(WS4RedisError, ValueError):
    """A name that cannot be part of a channel name."""


class IdentityRequired(WS4RedisError):
    """A user or session channel was asked for, but there is no such identity."""


class RedisUnavailable(WS4RedisError, ConnectionError):
    """Redis could not be reached in time."""


class NotReplicated(RedisUnavailable):
    """The master ran a publication that too few replicas confirmed.

    Its sockets may have received it, but a failover can discard it: do not
    count it as published. Retrying can deliver it twice.
    """
