"""The catch-up: after a reconnect, every socket gets what it missed, then live traffic.

:class:`CatchUp` is the part of the :class:`~ws4redis_channels.bridge.Bridge`
that rejoins the sockets of a connection that came back: each socket's
channels are read again (the stored message, or history from its position)
by the :class:`~ws4redis_channels.replay.Joiner`, while live messages are
held for it, so it gets everything once and in order. Each socket is caught up
from what it had itself when it stopped getting live messages
(``ChannelState.had``), not from what its channel delivered last: when the
sockets of one channel are caught up one after another, the first ones get
live messages while the others still wait. A catch-up whose read
fails while the subscriber stays connected (right after a failover, the
command client can still reach the old master, or one still read-only) is
tried again with backoff: the socket's messages are held until it succeeds,
and giving up would leave it open and mute until the next reconnect.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random

from .channel_state import ChannelState, Sink
from .positions import Position
from .replay import Joiner
from .subscriber import Subscriber

__all__ = ["REJOIN_FIRST_DELAY", "REJOIN_MAX_DELAY", "CatchUp"]

# The bridge's log lines, as before the catch-up had a module of its own.
logger = logging.getLogger("ws4redis_channels.bridge")

# A failed catch-up is tried again after about this long, doubling up to the maximum.
REJOIN_FIRST_DELAY = 0.4
REJOIN_MAX_DELAY = 5.0
REJOIN_WARN_EVERY = 5.0  # seconds between the log lines of a bridge's failed catch-ups


class CatchUp:
    """Rejoining sockets after a reconnect; mixed into :class:`~ws4redis_channels.bridge.Bridge`."""

    # Set by the bridge.
    _channels: dict[bytes, ChannelState]
    _positioned: set[Sink]
    _joiner: Joiner
    _closed: bool
    _loop: asyncio.AbstractEventLoop
    subscriber: Subscriber
    _rejoin_warned = float("-inf")

    def _catch_up(self, channels: list[ChannelState]) -> None:
        """After a reconnect, rejoin every socket: what was stored while the
        connection was down reaches them, in order, without a duplicate."""
        keys_of: dict[Sink, list[bytes]] = {}
        since_of: dict[Sink, dict[bytes, Position]] = {}
        for ch in channels:
            for sink in [*ch.sinks, *ch.psinks, *ch.joining]:
                # What each socket has, not what the channel delivered last: a
                # socket still catching up from before did not get it.
                had = ch.had[sink] = ch.had_by(sink)
                ch.joining[sink] = []
                keys_of.setdefault(sink, []).append(ch.key)
                # Sockets with positions resume from what they have.
                if sink in self._positioned and had[0] is not None:
                    since_of.setdefault(sink, {})[ch.key] = had[0]
            ch.sinks.clear()
            ch.psinks.clear()
            ch.next_position = None
        for sink, keys in keys_of.items():
            self._rejoin(sink, keys, since_of.get(sink))

    def _rejoin(
        self,
        sink: Sink,
        keys: list[bytes],
        since: dict[bytes, Position] | None,
        attempt: int = 0,
    ) -> asyncio.Future[None]:
        """Catch ``sink`` up on ``keys``; try again if the read fails while connected.

        Right after a failover the subscriber can be on the new master (or
        primary) while the command client still reaches the old one, or one
        that is still read-only: the catch-up's read fails. The socket's
        messages are held until its catch-up succeeds, so giving up would leave
        it open and mute until the next reconnect.
        """
        future = self._joiner.add(
            sink, keys, catch_up=True, positioned=sink in self._positioned, since=since
        )
        future.add_done_callback(functools.partial(self._rejoined, sink, keys, since, attempt))
        self._rejoining(sink, keys, future)
        return future

    def _rejoining(self, sink: Sink, keys: list[bytes], future: asyncio.Future[None]) -> None:
        """A catch-up of ``sink`` on ``keys`` started (a shard bridge tracks adoptions)."""

    def _rejoined(
        self,
        sink: Sink,
        keys: list[bytes],
        since: dict[bytes, Position] | None,
        attempt: int,
        future: asyncio.Future[None],
    ) -> None:
        if future.cancelled() or future.exception() is None or self._closed:
            return
        if self.subscriber.connected:
            # Backing off to REJOIN_MAX_DELAY: a read that keeps failing costs little.
            delay = min(REJOIN_FIRST_DELAY * 2**attempt, REJOIN_MAX_DELAY)
            now = self._loop.time()
            if now - self._rejoin_warned >= REJOIN_WARN_EVERY:  # one line, not one per socket
                self._rejoin_warned = now
                logger.warning(
                    "Catching sockets up after a reconnect failed (%s); trying again",
                    future.exception(),
                )
            self._loop.call_later(
                random.uniform(delay / 2, delay), self._retry_rejoin, sink, keys, since, attempt + 1
            )
        # Otherwise the next connection catches everything up.

    def _retry_rejoin(
        self, sink: Sink, keys: list[bytes], since: dict[bytes, Position] | None, attempt: int
    ) -> None:
        if self._closed or not self.subscriber.connected:
            return
        waiting = [k for k in keys if (ch := self._channels.get(k)) and sink in ch.joining]
        if waiting:
            self._rejoin(sink, waiting, since, attempt)
