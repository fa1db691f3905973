"""Channel bookkeeping and fan-out: what the process's sockets need from Redis, and delivery.

One :class:`Bridge` exists per event loop. Through ONE pub/sub connection to
Redis (:class:`~ws4redis_channels.subscriber.Subscriber`), it subscribes a
channel while at least one local socket needs it and unsubscribes it after
the last one leaves. Each message read from Redis is handed straight to the
sinks (the sockets' outbound sides) that joined its channel, in the order
Redis sent it: no channel layer, no task per message (the fan-out,
:mod:`ws4redis_channels.fanout`). What the bridge knows of each channel is a
:class:`~ws4redis_channels.channel_state.ChannelState`.

Joining is ordered with replay (:mod:`ws4redis_channels.replay`): the stored
message (or, for sockets with positions, the history after their position)
first, a live copy of it not twice, nothing published meanwhile lost. Each
channel is subscribed together with ``{<channel>}:pos``, on which the app's
publish script sends a message's position right before the message: the
bridge pairs the two and gives sockets with positions
``m <label> <position>\n<payload>``, the others the raw payload.
A socket publishing without ``echo`` does not get its own message back
(:mod:`ws4redis_channels.echoes`).

When the connection drops, the subscriber reconnects and the bridge
resubscribes and catches every socket up; sockets stay open. If Redis stays
unreachable for ``WS4REDIS_OUTAGE_TIMEOUT`` seconds, every sink is told
(``redis_lost``) so its socket closes with 4503 and the client reconnects.

The bridge knows Redis data, not Django requests nor websocket frames.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from . import patience, store
from .catchup import CatchUp
from .channel_state import ChannelState, Sink
from .connection import RedisTarget, async_client
from .exceptions import RedisError, RedisUnavailable
from .fanout import FanOut
from .fence import fence
from .health import RedisHealth
from .metrics import recorder
from .outage import Outage
from .positions import Position
from .replay import Joiner
from .resp import encode_command
from .subscriber import Subscriber

__all__ = ["Bridge", "ChannelState", "Sink"]

logger = logging.getLogger(__name__)

SUBSCRIBE_CHUNK = 500


class Bridge(FanOut, CatchUp):
    """One Redis subscription per process, shared by all of its websockets."""

    # Classic pub/sub; a shard bridge of a Redis Cluster (shard.py) uses the
    # sharded names.
    _SUBSCRIBE = "SUBSCRIBE"
    _UNSUBSCRIBE = "UNSUBSCRIBE"
    _MESSAGE = b"message"
    _SUBSCRIBED = b"subscribe"
    _UNSUBSCRIBED = b"unsubscribe"

    _instances: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Bridge] = (
        weakref.WeakKeyDictionary()
    )

    def __init__(
        self,
        target: RedisTarget,
        *,
        connect_timeout: float = 5.0,
        outage_timeout: float = 30.0,
        history_ttl: int = 300,
    ) -> None:
        self.target = target
        self.connect_timeout = connect_timeout
        self.outage_timeout = outage_timeout
        # Told when a channel gains its first or loses its last local socket.
        self._on_watch: Callable[[str, bool], None] | None = None
        # Whatever feeds this bridge besides Redis (the channel layer relay).
        self.relay: Any = None
        # The runtime's status report to Redis (registry.Heartbeat).
        self.heartbeat: Any = None
        self._metrics = recorder()
        self.health = RedisHealth(target.describe(), self._metrics)
        self._subscribed = 0  # channels with ch.requested, for the metrics
        self._timing = False  # a fan-out's duration is being measured
        self._loop = asyncio.get_running_loop()
        self._channels: dict[bytes, ChannelState] = {}
        self._companions: dict[bytes, ChannelState] = {}
        # Every sink between join() and leave(), subscribed to something or not.
        self._members: dict[Sink, None] = {}
        # The members that get positions.
        self._positioned: set[Sink] = set()
        self.subscriber = self._make_subscriber()
        self._joiner = self._make_joiner(history_ttl)
        self._outage = Outage(self.subscriber.target.describe(), outage_timeout, self._give_up)
        self._closed = False
        self._ever_connected = False
        self._up = False
        self._background: set[asyncio.Task[Any]] = set()
        self.subscriber.start()

    # -- construction -------------------------------------------------------

    def _make_subscriber(self) -> Subscriber:
        return Subscriber(
            self.target,
            on_values=self._on_values,
            on_up=self._on_up,
            on_down=self._on_down,
            connect_timeout=self.connect_timeout,
        )

    #: The class of the joins' reader (a shard of a cluster has its own).
    _joiner_class: type[Joiner] = Joiner

    def _make_joiner(self, history_ttl: int) -> Joiner:
        return self._joiner_class(
            self._channels,
            self.subscriber,
            self.target,
            history_ttl=history_ttl,
            timeout=self.connect_timeout,
        )

    @classmethod
    def current(cls, factory: Callable[[], Bridge]) -> Bridge:
        """Return the bridge of the running loop, creating it with ``factory``."""
        loop = asyncio.get_running_loop()
        bridge = cls._instances.get(loop)
        if bridge is None or bridge._closed:
            bridge = factory()
            cls._instances[loop] = bridge
        return bridge

    @classmethod
    def existing(cls) -> Bridge | None:
        """Return the bridge of the running loop, if one was created."""
        return cls._instances.get(asyncio.get_running_loop())

    # -- public API ---------------------------------------------------------

    def set_watcher(self, on_watch: Callable[[str, bool], None] | None) -> None:
        """Call ``on_watch(channel, on)`` when a channel gains its first or loses its last
        local socket."""
        self._on_watch = on_watch

    @property
    def connected(self) -> bool:
        return self.subscriber.connected

    def subscriptions(self) -> list[str]:
        """Return the channels the bridge is subscribed to (or subscribing)."""
        return sorted(ch.key.decode() for ch in self._channels.values() if ch.requested)

    def members(self) -> list[Sink]:
        """Return every sink that joined and has not left."""
        return list(self._members)

    def local_sinks(self, channel: str) -> int:
        """Return how many local sockets receive ``channel``."""
        ch = self._channels.get(channel.encode())
        return len(ch.sinks) + len(ch.psinks) if ch else 0

    async def join(
        self,
        sink: Sink,
        channels: Sequence[str],
        *,
        labels: Mapping[str, str] | None = None,
        since: Mapping[str, Position] | None = None,
    ) -> None:
        """Subscribe ``sink`` to ``channels``, deliver their stored messages, then live ones.

        With ``labels`` (channel -> label), the sink gets positions: first a
        state frame, then what it missed after the positions ``since``
        (channel -> position), then live messages (see positions.py).
        Raises :class:`RedisUnavailable` (and leaves nothing subscribed) if
        Redis is known to be down or does not answer within the timeout.
        """
        if self._outage.ongoing:
            raise RedisUnavailable(
                self.health.trouble or f"Redis at {self.target.describe()} is unreachable"
            )
        self._members[sink] = None
        if labels is not None:
            self._positioned.add(sink)
        keys = list(dict.fromkeys(c.encode() for c in channels))
        if not keys:
            return
        for key in keys:
            ch = self._channels.get(key)
            if ch is None:
                ch = self._channels[key] = ChannelState(key)
                self._companions[ch.companion] = ch
            if labels is not None:
                ch.label = labels[key.decode()]
            was_wanted = ch.wanted
            ch.joining[sink] = []
            if not was_wanted:
                self._want(ch)
        future = self._joiner.add(
            sink,
            keys,
            positioned=labels is not None,
            since={c.encode(): p for c, p in (since or {}).items()},
        )
        try:
            await patience.wait_for(
                asyncio.shield(future), self.connect_timeout, alive=self._answering()
            )
        except BaseException as exc:
            future.cancel()
            self.leave(sink, channels)
            if isinstance(exc, RedisUnavailable):
                raise  # it says why (a wrong password is not a timeout)
            if isinstance(exc, (asyncio.TimeoutError, RedisError, OSError)):
                raise RedisUnavailable(
                    f"Redis at {self.target.describe()} did not answer in time: {exc!r}"
                ) from exc
            raise

    def _answering(self) -> Callable[[], bool]:
        """Whether Redis answered anything since now: a join that waits while it
        does waits on the process's own work (a reconnect storm), not on Redis."""
        subscriber, joiner = self.subscriber, self._joiner
        reads, answers = subscriber.reads, joiner.answers
        # While connecting, the attempt's own timeout decides (and fails the joins).
        return lambda: (
            not subscriber.connected or subscriber.reads != reads or joiner.answers != answers
        )

    def leave(self, sink: Sink, channels: Iterable[str]) -> None:
        """Remove ``sink`` from all its ``channels``; unsubscribe channels nobody needs."""
        self._members.pop(sink, None)
        self._positioned.discard(sink)
        for channel in channels:
            ch = self._channels.get(channel.encode())
            if ch is None:
                continue
            ch.sinks.pop(sink, None)
            ch.psinks.pop(sink, None)
            ch.joining.pop(sink, None)
            ch.had.pop(sink, None)
            if ch.echoes:
                ch.echoes.forget(sink)
            if not ch.wanted:
                self._unwant(ch)

    async def publish(
        self,
        sink: Sink | None,
        channels: Sequence[str],
        payload: bytes,
        expire: int,
        *,
        echo: bool = True,
    ) -> int:
        """Publish (and store, if ``expire`` > 0) ``payload`` on ``channels``.

        Without ``echo``, ``sink`` does not receive this publication back.
        """
        marked: list[ChannelState] = []
        if not echo and sink is not None:
            for channel in channels:
                ch = self._channels.get(channel.encode())
                if ch is not None and (sink in ch.sinks or sink in ch.psinks):
                    ch.echoes.add(sink, payload)
                    marked.append(ch)
        taken = fence(self.target)  # before the publication starts
        try:
            return await store.apublish(
                async_client(self.target), channels, payload, expire, fence=taken
            )
        except BaseException:
            for ch in marked:
                ch.echoes.discard(sink, payload)
            raise

    def follow_master(self, address: tuple[str, int]) -> None:
        """Sentinel moved the master to ``address``: resubscribe there at once."""
        self.subscriber.follow_master(address)

    async def close(self) -> None:
        """Unsubscribe, close the connection and stop every task of the bridge."""
        if self._closed:
            return
        self._closed = True
        if self._instances.get(self._loop) is self:
            del self._instances[self._loop]  # the bridge refers to its loop: free both
        self._outage.cancel()
        self._joiner.cancel()
        subscribed = any(ch.requested for ch in self._channels.values())
        await self.subscriber.close(encode_command(self._UNSUBSCRIBE) if subscribed else None)
        for task in self._background:
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        self._channels.clear()
        self._companions.clear()
        self._members.clear()
        self._positioned.clear()

    # -- subscription bookkeeping -------------------------------------------

    def _want(self, ch: ChannelState) -> None:
        if self._on_watch is not None:
            self._on_watch(ch.key.decode(), True)
        if self.subscriber.connected and not ch.requested:
            self._subscribe([ch])

    def _unwant(self, ch: ChannelState) -> None:
        if self._on_watch is not None:
            self._on_watch(ch.key.decode(), False)
        if ch.requested:
            ch.requested = False
            self._subscribed -= 1
            self._metrics.subscriptions(self._subscribed)
            self.subscriber.write(encode_command(self._UNSUBSCRIBE, ch.key, ch.companion))
        if ch.pending_subs == 0:
            self._forget(ch)

    def _forget(self, ch: ChannelState) -> None:
        if self._channels.get(ch.key) is ch:
            del self._channels[ch.key]
        if self._companions.get(ch.companion) is ch:
            del self._companions[ch.companion]
        for waiter in ch.waiters:
            if not waiter.done():
                waiter.set_result(None)
        ch.waiters.clear()

    def _subscribe(self, channels: list[ChannelState]) -> None:
        for start in range(0, len(channels), SUBSCRIBE_CHUNK):
            chunk = channels[start : start + SUBSCRIBE_CHUNK]
            for ch in chunk:
                if not ch.requested:
                    self._subscribed += 1
                ch.requested = True
                ch.pending_subs += 1
            # A channel and its positions in one command: subscribed together.
            keys = [key for ch in chunk for key in (ch.key, ch.companion)]
            self.subscriber.write(encode_command(self._SUBSCRIBE, *keys))
        self._metrics.subscriptions(self._subscribed)

    # -- confirmations ------------------------------------------------------

    def _on_push(self, value: list[Any]) -> None:
        """Handle a pub/sub frame other than a message (confirmations)."""
        kind = value[0]
        if kind == self._UNSUBSCRIBED:
            self._unsubscribed(value[1])
        elif kind == self._SUBSCRIBED:
            ch = self._channels.get(value[1])
            if ch is not None and ch.pending_subs:
                ch.pending_subs -= 1
                if ch.pending_subs == 0:
                    if not ch.wanted and not ch.requested:
                        self._forget(ch)
                    else:
                        for waiter in ch.waiters:
                            if not waiter.done():
                                waiter.set_result(None)
                        ch.waiters.clear()

    def _unsubscribed(self, key: bytes) -> None:
        """An unsubscribe confirmation: nothing to do (a shard bridge overrides it)."""

    # -- connection management ----------------------------------------------

    def _on_up(self) -> None:
        reconnected = self._ever_connected
        self._ever_connected = self._up = True
        self._outage.end(len(self._channels))
        self.health.up()
        self.health.output_buffer_drops_seen(self.subscriber.output_buffer_drops)
        if self.heartbeat is not None:
            self.heartbeat.refresh_soon()
        # Other languages publish with persistence through this function; it
        # is gone after a restart of a Redis that keeps nothing on disk.
        task = self._loop.create_task(store.aload_function(async_client(self.target)))
        self._background.add(task)
        task.add_done_callback(self._background_done)
        wanted = [ch for ch in self._channels.values() if ch.wanted]
        if wanted:
            self._subscribe(wanted)
            if reconnected:
                self._catch_up(wanted)

    def _background_done(self, task: asyncio.Task[Any]) -> None:
        self._background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.warning("Loading the ws4redis function failed: %r", task.exception())

    def _on_down(self, reason: str) -> None:
        was_up, self._up = self._up, False
        sentence = self.health.down(reason, self.subscriber.last_error)
        error = RedisUnavailable(sentence)
        self._subscribed = 0
        self._metrics.subscriptions(0)
        for ch in list(self._channels.values()):
            ch.requested = False
            ch.pending_subs = 0
            ch.echoes.clear()
            for waiter in ch.waiters:
                if not waiter.done():
                    waiter.set_exception(error)
            ch.waiters.clear()
            ch.next_position = None
            if not ch.wanted:
                self._forget(ch)
        self._joiner.fail(error)
        if not self._closed:
            self._outage.begin(sentence, was_up=was_up)

    def _give_up(self) -> None:
        for sink in self.members():
            try:
                sink.redis_lost()
            except Exception:
                logger.exception("Closing a socket after the Redis outage failed")
