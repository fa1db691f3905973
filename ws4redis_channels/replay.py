"""Joining a socket in order: subscribed, then the stored message, then live traffic.

A joining socket's live messages are held back (``ChannelState.joining``)
while its subscriptions are confirmed, the stored messages are read with one
``MGET``, and a ``PING`` sent on the subscriber connection comes back. Redis
answers in order, so by then every message published before the ``MGET`` is
among the held ones: the stored message is delivered first, unless a held
live copy stands for it, then the held messages, then live traffic. Joins
that happen together share the round trips.

After a reconnect every socket joins again (``catch_up``), and a stored
message equal to the last one its channel delivered is not sent twice.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from .connection import RedisTarget, async_client, is_cluster, redis_errors
from .exceptions import RedisUnavailable
from .frames import Batch, make_message
from .subscriber import Subscriber

if TYPE_CHECKING:
    from .bridge import ChannelState, Sink

__all__ = ["Join", "Joiner", "replay_payloads"]


def replay_payloads(
    stored: bytes | None, held: list[bytes], last: bytes | None, *, catch_up: bool
) -> list[bytes]:
    """Return what a joining socket gets, in order: the stored message if it is news, then
    the live messages held back while it joined."""
    if stored is None or stored in held or (catch_up and stored == last):
        return held
    return [stored, *held]


class Join:
    """One socket waiting to join some channels."""

    __slots__ = ("catch_up", "future", "keys", "sink")

    def __init__(
        self, sink: Sink, keys: list[bytes], future: asyncio.Future[None], *, catch_up: bool
    ) -> None:
        self.sink = sink
        self.keys = keys
        self.future = future
        self.catch_up = catch_up  # a socket rejoining after a reconnect


def _consume_exception(future: asyncio.Future[None]) -> None:
    if not future.cancelled():
        future.exception()


class Joiner:
    """Runs the joins of one bridge, a batch at a time, in one task."""

    def __init__(
        self,
        channels: dict[bytes, ChannelState],
        subscriber: Subscriber,
        target: RedisTarget,
        *,
        replay: bool = True,
    ) -> None:
        # Without replay, a join only waits for its subscriptions and the PING:
        # another bridge of the same sockets delivers their stored messages.
        self._replay = replay
        self._channels = channels
        self._subscriber = subscriber
        self._target = target
        self._loop = asyncio.get_running_loop()
        self._joins: list[Join] = []
        self._task: asyncio.Task[None] | None = None

    def add(self, sink: Sink, keys: list[bytes], *, catch_up: bool = False) -> asyncio.Future[None]:
        """Queue a join; the future is done once the socket gets live traffic."""
        future: asyncio.Future[None] = self._loop.create_future()
        if catch_up:
            # Nobody awaits a catch-up: the next reconnect catches up again.
            future.add_done_callback(_consume_exception)
        self._joins.append(Join(sink, keys, future, catch_up=catch_up))
        if self._task is None or self._task.done():
            self._task = self._loop.create_task(self._run())
        return future

    def fail(self, error: Exception) -> None:
        """Fail every queued join (the connection was lost): their handshakes answer 4503."""
        for join in self._joins:
            if not join.future.done():
                join.future.set_exception(error)
        self._joins.clear()

    def cancel(self) -> None:
        """Stop (the bridge closes)."""
        if self._task is not None:
            self._task.cancel()

    async def _run(self) -> None:
        while self._joins:
            await self._subscriber.wait_connected()
            batch, self._joins = self._joins, []
            batch = [join for join in batch if not join.future.done()]
            if not batch:
                continue
            keys = list(dict.fromkeys(key for join in batch for key in join.keys))
            try:
                await self._confirmed(keys)
                with redis_errors(self._target):
                    client = async_client(self._target)
                    if not self._replay:
                        values: list[Any] = [None] * len(keys)
                    elif is_cluster(client):
                        # The channels of a shard span slots: one GET per slot.
                        values = await client.mget_nonatomic(keys)  # type: ignore[attr-defined]
                    else:
                        values = await client.mget(keys)
                # When the PONG is here, so is every message published before the MGET.
                await self._subscriber.request("PING")
            except Exception as exc:
                for join in batch:
                    if not join.future.done():
                        join.future.set_exception(RedisUnavailable(repr(exc)))
                continue
            stored: dict[bytes, bytes | None] = dict(zip(keys, values, strict=True))
            for join in batch:
                if not join.future.done():
                    self._finish(join, stored)
                    join.future.set_result(None)

    async def _confirmed(self, keys: Iterable[bytes]) -> None:
        waiters = []
        for key in keys:
            ch = self._channels.get(key)
            if ch is not None and ch.pending_subs:
                waiter: asyncio.Future[None] = self._loop.create_future()
                ch.waiters.append(waiter)
                waiters.append(waiter)
        if waiters:
            await asyncio.gather(*waiters)

    def _finish(self, join: Join, stored: dict[bytes, bytes | None]) -> None:
        sink = join.sink
        for key in join.keys:
            ch = self._channels.get(key)
            if ch is None or sink not in ch.joining:
                continue
            held = ch.joining.pop(sink)
            payloads = replay_payloads(stored.get(key), held, ch.last, catch_up=join.catch_up)
            if payloads:
                sink.deliver(Batch([make_message(payload) for payload in payloads]))
            ch.sinks[sink] = sink.deliver
