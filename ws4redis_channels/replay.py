"""What a joining socket gets from one channel: replayed messages, then held live ones.

The bridge subscribes first, then reads the channel (see
:data:`ws4redis_channels.store.READ_SCRIPT`), holding back the live messages
that arrive meanwhile. This module decides, without I/O, which of the read
and held messages the socket gets and in which order, so that nothing is
lost, nothing comes twice, and nothing older than what the socket (or its
channel) already delivered is sent:

* a socket with positions that presented one gets the history after it
  (status ``recovered``), or, when that is impossible (``lost``) or it
  presented none (``new``), the stored message if it is newer than what the
  socket has; then the held messages that are newer than all of that, and
  those without a position (bare ``PUBLISH``), in arrival order;
* a socket without positions gets the stored message first, unless a held
  message has its version (that copy stands for it) or, after a reconnect,
  its channel already delivered that version or a newer one; then every
  held message. Versions are compared, not bytes; bytes only for a stored
  message that has no version (stored by something else than the app).

The bridge knows nothing of Django requests; this module nothing of Redis.
"""

from __future__ import annotations

from collections.abc import Sequence

from .positions import Position, Status
from .store import Replay

__all__ = ["Held", "Planned", "plan"]

#: A live message held back while the socket joins: payload and position (None: bare PUBLISH).
Held = tuple[bytes, Position | None]


class Planned:
    """The messages one channel gives a joining socket, in order, and its status."""

    __slots__ = ("messages", "position", "status")

    def __init__(self, messages: list[Held], status: Status, position: Position | None) -> None:
        self.messages = messages
        self.status = status
        # Where the channel stands for the socket once these are delivered.
        self.position = position


def _newest(a: Position | None, b: Position | None) -> Position | None:
    if a is None:
        return b
    if b is None:
        return a
    return max(a, b)


def plan(
    replay: Replay,
    held: Sequence[Held],
    *,
    positioned: bool,
    since: Position | None = None,
    last: Position | None = None,
    last_payload: bytes | None = None,
) -> Planned:
    """Return what a socket joining one channel gets.

    ``since`` is the position the socket presented; ``last`` (and
    ``last_payload``) what the channel delivered before a reconnect of the
    bridge, for sockets that were already receiving.
    """
    has = _newest(since, last)
    out: list[Held] = []
    status = Status(replay.status) if since is not None else Status.NEW
    if positioned and status is Status.RECOVERED:
        out.extend((payload, position) for position, payload in replay.entries)
    elif replay.stored is not None and _stored_is_new(replay, held, has, last_payload):
        out.append((replay.stored, replay.version))
    mark = has
    for _, position in out:
        mark = _newest(mark, position)
    for payload, position in held:
        if position is None:
            out.append((payload, None))
        elif mark is None or position > mark:
            out.append((payload, position))
            mark = position
        # else: replayed above already, or older than what the socket has.
    return Planned(out, status, _newest(mark, replay.position))


def _stored_is_new(
    replay: Replay, held: Sequence[Held], has: Position | None, last_payload: bytes | None
) -> bool:
    version = replay.version
    if version is None:
        # Stored by something else than the app: the only clue is the bytes.
        return replay.stored != last_payload and all(replay.stored != p for p, _ in held)
    if has is not None and version <= has:
        return False
    return all(position != version for _, position in held)
