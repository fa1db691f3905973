"""Echo suppression: a socket that publishes without ``echo`` does not get its own message back.

Payloads alone cannot tell whose message came back ("ok" and "+1" are sent
by many), so each channel keeps the publications of its local sockets
without echo, in publish order. When a message arrives, the oldest entry
with the same bytes is taken and *that* socket skips this one message: the
sender misses exactly one copy per publication of its own, and everyone
else gets every copy.
"""

from __future__ import annotations

import collections

__all__ = ["MAX_PENDING_ECHOES", "Echoes"]

# Beyond this, the oldest entries are dropped: a flood cannot grow the list.
MAX_PENDING_ECHOES = 1000


class Echoes:
    """The pending publications without echo of one channel, oldest first."""

    __slots__ = ("_entries",)

    def __init__(self) -> None:
        self._entries: collections.deque[tuple[object, bytes]] = collections.deque()

    def __bool__(self) -> bool:
        return bool(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def add(self, sink: object, payload: bytes) -> None:
        """Record that ``sink`` publishes ``payload`` (before the PUBLISH is sent)."""
        if len(self._entries) >= MAX_PENDING_ECHOES:
            self._entries.popleft()
        self._entries.append((sink, payload))

    def discard(self, sink: object, payload: bytes) -> None:
        """Forget one publication that failed."""
        try:
            self._entries.remove((sink, payload))
        except ValueError:
            pass

    def take(self, payload: bytes) -> object | None:
        """Return (and forget) the sink whose publication ``payload`` is, if any."""
        for index, (sink, data) in enumerate(self._entries):
            if data == payload:
                del self._entries[index]
                return sink
        return None

    def forget(self, sink: object) -> None:
        """Drop every entry of ``sink`` (it left)."""
        self._entries = collections.deque(e for e in self._entries if e[0] is not sink)

    def clear(self) -> None:
        """Drop everything (the connection to Redis was lost)."""
        self._entries.clear()
