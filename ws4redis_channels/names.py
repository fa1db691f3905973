"""Pure functions that map a facility and an audience to Redis and Channels names.

This module is the single source of truth for the wire format. Two conventions
exist:

``classic`` (the default, the original usage document's convention)::

    _broadcast_:<facility>
    <username>:<facility>
    <session_key>:<facility>
    _group_:<group>:<facility>

``typed`` (what django-websocket-redis 0.3.0 to 0.6.0 publish on)::

    broadcast:<facility>
    user:<username>:<facility>
    session:<session_key>:<facility>
    group:<group>:<facility>

With a prefix ``p`` every name starts with ``p:``. The validation rules below
make the mapping injective: no two distinct (audience, identity, facility)
triples produce the same channel, so a crafted username, session cookie,
group or facility can never alias another audience's channel.

Nothing here imports Django or touches the network.
"""

from __future__ import annotations

import enum
import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass

from .exceptions import InvalidName

__all__ = [
    "FACILITY_MAX_LENGTH",
    "GROUP_NAME_MAX_LENGTH",
    "Audience",
    "Naming",
    "Target",
    "channel_for",
    "channels_for",
    "companion_key",
    "group_for",
    "parse_channel",
    "validate_facility",
    "validate_identity",
]

FACILITY_MAX_LENGTH = 100
IDENTITY_MAX_LENGTH = 150  # Django's username length

# Segments of ASCII letters, digits, '.', '_' and '-', each starting with a
# letter or digit, joined by single '/'. This excludes '', '.', '..', ':',
# whitespace, control characters and non-ASCII text.
_FACILITY_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*(?:/[A-Za-z0-9][A-Za-z0-9._-]*)*")
# Django's server-side session backends create 32 lowercase letters/digits.
_SESSION_KEY_RE = re.compile(r"[a-z0-9]{32}")
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")

BROADCAST_MARK = "_broadcast_"
GROUP_MARK = "_group_"
_RESERVED_IDENTITIES = frozenset({BROADCAST_MARK, GROUP_MARK})

# Channels group names: ASCII letters, digits, '-', '_', '.'; fewer than 100.
GROUP_NAME_MAX_LENGTH = 99
_GROUP_PLAIN = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-")
_GROUP_READABLE_PREFIX = "ws4redis."
_GROUP_HASHED_PREFIX = "ws4redis-"


class Audience(str, enum.Enum):
    """Who a message is for."""

    BROADCAST = "broadcast"
    USER = "user"
    SESSION = "session"
    GROUP = "group"


class Naming(str, enum.Enum):
    """The channel naming convention (setting ``WS4REDIS_NAMING``)."""

    CLASSIC = "classic"
    TYPED = "typed"


@dataclass(frozen=True)
class Target:
    """One audience of one facility: what a Redis channel name stands for."""

    audience: Audience
    facility: str
    identity: str | None = None


def validate_facility(facility: str) -> str:
    """Return ``facility`` if it is allowed, else raise :class:`InvalidName`."""
    if not isinstance(facility, str):
        raise InvalidName(f"facility must be a str, got {type(facility).__name__}")
    if not facility:
        raise InvalidName("facility is empty")
    if len(facility) > FACILITY_MAX_LENGTH:
        raise InvalidName(
            f"facility is {len(facility)} characters long; "
            f"at most {FACILITY_MAX_LENGTH} are allowed"
        )
    if not _FACILITY_RE.fullmatch(facility):
        raise InvalidName(
            f"facility {facility!r} is not allowed: use ASCII letters, digits, '.', '_' and '-' "
            "in segments that start with a letter or digit, separated by single '/'"
        )
    return facility


def validate_identity(audience: Audience, identity: str, naming: Naming = Naming.CLASSIC) -> str:
    """Return ``identity`` if it may name a user, session or group channel, else raise."""
    label = audience.value
    if not isinstance(identity, str):
        raise InvalidName(f"{label} name must be a str, got {type(identity).__name__}")
    if not identity:
        raise InvalidName(f"{label} name is empty")
    if len(identity) > IDENTITY_MAX_LENGTH:
        raise InvalidName(f"{label} name is longer than {IDENTITY_MAX_LENGTH} characters")
    if ":" in identity:
        raise InvalidName(
            f"{label} name {identity!r} contains ':', which would alias another channel"
        )
    if _CONTROL_RE.search(identity):
        raise InvalidName(f"{label} name {identity!r} contains control characters")
    if "{" in identity or "}" in identity:
        # Braces would make a Redis Cluster hash tag of part of a key name and
        # split a channel's keys over slots (see :func:`companion_key`).
        raise InvalidName(f"{label} name {identity!r} contains '{{' or '}}'")
    if audience is Audience.SESSION:
        if not _SESSION_KEY_RE.fullmatch(identity):
            raise InvalidName(
                "session key is not 32 lowercase letters and digits "
                "(as Django's server-side session backends create)"
            )
    elif audience is Audience.USER:
        if identity in _RESERVED_IDENTITIES:
            raise InvalidName(f"user name {identity!r} is reserved")
        if naming is Naming.CLASSIC and _SESSION_KEY_RE.fullmatch(identity):
            # Users and sessions share one namespace in the classic naming.
            raise InvalidName(
                f"user name {identity!r} looks like a session key, which the classic naming "
                "cannot tell apart; set WS4REDIS_NAMING = 'typed' to use such names"
            )
    elif audience is Audience.BROADCAST:
        raise InvalidName("broadcast channels have no identity")
    return identity


def channel_for(
    target: Target,
    *,
    prefix: str = "",
    naming: Naming = Naming.CLASSIC,
) -> str:
    """Return the Redis channel (and persistence key) of ``target``."""
    facility = validate_facility(target.facility)
    if "{" in prefix or "}" in prefix:
        raise InvalidName(f"prefix {prefix!r} contains '{{' or '}}'")
    head = f"{prefix}:" if prefix else ""
    audience = target.audience
    if audience is Audience.BROADCAST:
        if target.identity is not None:
            raise InvalidName("broadcast channels have no identity")
        mark = BROADCAST_MARK if naming is Naming.CLASSIC else "broadcast"
        return f"{head}{mark}:{facility}"
    if target.identity is None:
        raise InvalidName(f"a {audience.value} channel needs a {audience.value} name")
    identity = validate_identity(audience, target.identity, naming)
    if naming is Naming.TYPED:
        return f"{head}{audience.value}:{identity}:{facility}"
    if audience is Audience.GROUP:
        return f"{head}{GROUP_MARK}:{identity}:{facility}"
    return f"{head}{identity}:{facility}"


def companion_key(channel: str, kind: str) -> str:
    """Return the name of a key that belongs to ``channel``: ``{<channel>}:<kind>``.

    The whole channel name is the key's Redis Cluster hash tag, so every key of
    a channel lives in the slot of the channel's own key (which has no braces).
    """
    return f"{{{channel}}}:{kind}"


def channels_for(
    facility: str,
    *,
    broadcast: bool = False,
    users: Iterable[str] = (),
    sessions: Iterable[str] = (),
    groups: Iterable[str] = (),
    prefix: str = "",
    naming: Naming = Naming.CLASSIC,
) -> list[str]:
    """Return the channels of several audiences of one facility, without duplicates."""
    targets: list[Target] = []
    if broadcast:
        targets.append(Target(Audience.BROADCAST, facility))
    targets.extend(Target(Audience.USER, facility, u) for u in users)
    targets.extend(Target(Audience.SESSION, facility, s) for s in sessions)
    targets.extend(Target(Audience.GROUP, facility, g) for g in groups)
    return list(dict.fromkeys(channel_for(t, prefix=prefix, naming=naming) for t in targets))


def parse_channel(channel: str, *, prefix: str = "", naming: Naming = Naming.CLASSIC) -> Target:
    """Return the :class:`Target` a channel name stands for (the inverse of :func:`channel_for`)."""
    head = f"{prefix}:" if prefix else ""
    if not channel.startswith(head):
        raise InvalidName(f"channel {channel!r} does not start with the prefix {head!r}")
    parts = channel[len(head) :].split(":")
    target: Target
    if naming is Naming.TYPED:
        kind = parts[0]
        if kind == "broadcast" and len(parts) == 2:
            target = Target(Audience.BROADCAST, parts[1])
        elif kind in ("user", "session", "group") and len(parts) == 3:
            target = Target(Audience(kind), parts[2], parts[1])
        else:
            raise InvalidName(f"channel {channel!r} does not follow the typed naming")
    elif len(parts) == 2 and parts[0] == BROADCAST_MARK:
        target = Target(Audience.BROADCAST, parts[1])
    elif len(parts) == 3 and parts[0] == GROUP_MARK:
        target = Target(Audience.GROUP, parts[2], parts[1])
    elif len(parts) == 2:
        audience = Audience.SESSION if _SESSION_KEY_RE.fullmatch(parts[0]) else Audience.USER
        target = Target(audience, parts[1], parts[0])
    else:
        raise InvalidName(f"channel {channel!r} does not follow the classic naming")
    # Round-trip to apply every validation rule.
    if channel_for(target, prefix=prefix, naming=naming) != channel:
        raise InvalidName(f"channel {channel!r} is not a valid channel name")
    return target


def group_for(channel: str) -> str:
    """Return the Channels group name that stands for a Redis channel.

    ASCII letters, digits and '-' stay, ':' becomes '.', every other byte is
    written as '_' and two hex digits, after the prefix ``ws4redis.``. Names
    that would reach 100 characters become ``ws4redis-`` and a 40-digit hash.
    Both forms are collision-free.
    """
    out = [_GROUP_READABLE_PREFIX]
    for char in channel:
        if char in _GROUP_PLAIN:
            out.append(char)
        elif char == ":":
            out.append(".")
        else:
            out.extend(f"_{byte:02x}" for byte in char.encode("utf-8"))
    name = "".join(out)
    if len(name) <= GROUP_NAME_MAX_LENGTH:
        return name
    digest = hashlib.blake2b(channel.encode("utf-8"), digest_size=20).hexdigest()
    return f"{_GROUP_HASHED_PREFIX}{digest}"
