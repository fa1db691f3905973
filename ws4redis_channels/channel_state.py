"""The bridge's record of one Redis channel, and the sinks it delivers to.

A :class:`ChannelState` exists while at least one local socket needs its
channel: the sockets that get it (with or without positions), those still
joining with the live messages held back for them (:mod:`ws4redis_channels.replay`),
the subscription's state, the newest position delivered, what each socket
catching up after a reconnect had, and the echoes to skip
(:mod:`ws4redis_channels.echoes`). A :class:`Sink` is what the bridge
delivers to: the outbound side of one websocket (:mod:`ws4redis_channels.outlet`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Protocol

from .echoes import Echoes
from .frames import Batch
from .positions import Position, position_channel
from .replay import Held

__all__ = ["ChannelState", "Had", "Sink"]

#: What a socket had when it stopped getting live messages: position and payload.
Had = tuple[Position | None, bytes | None]


class Sink(Protocol):
    """What the bridge delivers to: the outbound side of one websocket."""

    def deliver(self, batch: Batch) -> None:
        """Send a batch of ASGI ``websocket.send`` messages, in order; must not block.

        A burst on one channel comes as one batch: a fan-out costs a call per
        socket, not per socket and message.
        """

    def redis_lost(self) -> None:
        """Redis stayed unreachable past the bound: close the socket."""

    def going_away(self) -> None:
        """The server shuts down: close the socket with 1001."""


class ChannelState:
    """The local state of one Redis channel."""

    __slots__ = (
        "companion",
        "echoes",
        "had",
        "joining",
        "key",
        "label",
        "last",
        "next_position",
        "pending_subs",
        "position",
        "psinks",
        "requested",
        "sinks",
        "waiters",
    )

    def __init__(self, key: bytes) -> None:
        self.key = key
        # The pub/sub channel on which each message's position precedes it.
        self.companion = position_channel(key.decode()).encode()
        # Each sink with its bound deliver method, looked up once; psinks get
        # positions ("m <label> <position>\n<payload>"), sinks raw payloads.
        self.sinks: dict[Sink, Callable[[Batch], None]] = {}
        self.psinks: dict[Sink, Callable[[Batch], None]] = {}
        self.label = ""
        # Sinks still replaying, with the live messages held back for them.
        self.joining: dict[Sink, list[Held]] = {}
        # Of those catching up after a reconnect, what each one had: the
        # sockets of a channel are caught up one by one when a read fails and
        # is tried again, so the channel's position (what its live sockets
        # got) can be ahead of, or behind, what a socket still catching up has.
        self.had: dict[Sink, Had] = {}
        # The newest position the channel's live sockets got (live messages
        # older than it are never delivered), and the position read from
        # {<channel>}:pos for the message that follows.
        self.position: Position | None = None
        self.next_position: bytes | None = None
        self.requested = False  # SUBSCRIBE written and not followed by UNSUBSCRIBE
        self.pending_subs = 0  # SUBSCRIBE confirmations still to come
        self.waiters: list[asyncio.Future[None]] = []
        # The last payload the channel's sockets got: after a reconnect, the
        # stored message is caught up only if it is not this one.
        self.last: bytes | None = None
        self.echoes = Echoes()

    @property
    def wanted(self) -> bool:
        return bool(self.sinks or self.psinks or self.joining)

    def had_by(self, sink: Sink) -> Had:
        """What ``sink`` has of the channel: what the live sockets got, or, while it
        catches up, what it had when it stopped getting live messages."""
        if sink in self.sinks or sink in self.psinks:
            return self.position, self.last
        return self.had.get(sink, (None, None))
