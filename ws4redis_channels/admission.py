"""What a handshake admits: the request's size, the identity flags need, channels, positions.

The consumer (:mod:`ws4redis_channels.consumer`) runs these checks while it
handles a websocket's handshake. Each refusal is a :class:`Refusal` with the
close code (:mod:`ws4redis_channels.codes`) and a sentence that says why; the
consumer closes the socket with both. The channel names come from
:mod:`ws4redis_channels.names`; nothing here touches Redis.
"""

from __future__ import annotations

from typing import Any

from .access import MAX_QUERY_FIELDS, MAX_QUERY_LENGTH, PUBLISH_FLAGS, SUBSCRIBE_FLAGS, Identity
from .codes import CloseCode
from .conf import conf
from .exceptions import InvalidName
from .names import Audience, Target, channel_for
from .positions import Position, channel_label, parse_since, wants_positions

__all__ = ["Refusal", "channels_for", "check_identity", "check_request", "presented_positions"]


class Refusal(Exception):
    """A handshake refused with ``code``; the message says why."""

    def __init__(self, code: CloseCode, detail: str) -> None:
        super().__init__(detail)
        self.code = code


def check_request(scope: dict[str, Any]) -> None:
    """Refuse a query string too long or with too many parameters to parse."""
    query = scope.get("query_string", b"")
    if len(query) > MAX_QUERY_LENGTH:
        raise Refusal(
            CloseCode.BAD_REQUEST,
            f"query string of {len(query)} bytes; at most {MAX_QUERY_LENGTH} are accepted",
        )
    fields = query.count(b"&" if isinstance(query, bytes) else "&") + 1
    if fields > MAX_QUERY_FIELDS:
        raise Refusal(
            CloseCode.BAD_REQUEST,
            f"query string with {fields} parameters; at most {MAX_QUERY_FIELDS} are accepted",
        )


def check_identity(flags: list[str], identity: Identity) -> None:
    """Refuse flags whose audience the connecting identity does not have."""
    for flag in flags:
        audience = SUBSCRIBE_FLAGS.get(flag) or PUBLISH_FLAGS.get(flag)
        if audience in (Audience.USER, Audience.GROUP) and identity.user is None:
            raise Refusal(CloseCode.LOGIN_REQUIRED, f"{flag} needs a logged-in user")
        if audience is Audience.SESSION and identity.session is None:
            raise Refusal(CloseCode.SESSION_REQUIRED, f"{flag} needs a saved session")


def channels_for(
    facility: str,
    flags: list[str],
    table: dict[str, Audience],
    identity: Identity,
    labels: dict[str, str],
) -> list[str]:
    """Return the Redis channels of the ``flags`` found in ``table``, each once, in order;
    their labels (see positions.py) are added to ``labels``."""
    targets: list[Target] = []
    for flag in flags:
        audience = table.get(flag)
        if audience is Audience.BROADCAST:
            targets.append(Target(audience, facility))
        elif audience is Audience.USER:
            targets.append(Target(audience, facility, identity.user))
        elif audience is Audience.SESSION:
            targets.append(Target(audience, facility, identity.session))
        elif audience is Audience.GROUP:
            targets.extend(Target(audience, facility, g) for g in identity.groups)
    prefix, naming = conf.WS4REDIS_PREFIX, conf.WS4REDIS_NAMING
    channels: dict[str, None] = {}
    for target in targets:
        try:
            channel = channel_for(target, prefix=prefix, naming=naming)
            channels[channel] = None
            labels[channel] = channel_label(target)
        except InvalidName as exc:
            # e.g. a user named "_broadcast_": never alias another audience.
            code = (
                CloseCode.LOGIN_REQUIRED
                if target.audience is Audience.USER
                else CloseCode.BAD_REQUEST
            )
            raise Refusal(code, f"cannot name a {target.audience.value} channel: {exc}") from None
    return list(channels)


def presented_positions(
    query_string: bytes, channels: list[str], labels: dict[str, str]
) -> tuple[dict[str, str] | None, dict[str, Position] | None]:
    """The labels of the subscribed ``channels`` and the positions presented, if the
    socket asked for positions (see positions.py)."""
    if not wants_positions(query_string):
        return None, None
    try:
        presented = parse_since(query_string)
    except ValueError as exc:
        raise Refusal(CloseCode.BAD_REQUEST, str(exc)) from None
    chosen = {c: labels[c] for c in channels}
    since = {c: presented[label] for c, label in chosen.items() if label in presented}
    return chosen, since
