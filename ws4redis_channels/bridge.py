"""Channel bookkeeping and fan-out: what the process's sockets need from Redis, and delivery.

One :class:`Bridge` exists per event loop. Through ONE pub/sub connection to
Redis (:class:`~ws4redis_channels.subscriber.Subscriber`), it subscribes a
channel while at least one local socket needs it and unsubscribes it after
the last one leaves. Each message read from Redis is handed straight to the
sinks (the sockets' outbound sides) that joined its channel, in the order
Redis sent it: no channel layer, no task per message.

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
import time
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol

from . import patience, store
from .connection import RedisTarget, async_client
from .echoes import Echoes
from .exceptions import RedisError, RedisUnavailable
from .fence import fence
from .frames import Batch, Outbound, make_message
from .health import RedisHealth
from .metrics import recorder
from .outage import Outage
from .positions import Position, message_frame, position_channel
from .replay import Held, Joiner
from .resp import encode_command
from .subscriber import Subscriber

__all__ = ["Bridge", "ChannelState", "Sink"]

logger = logging.getLogger(__name__)

SUBSCRIBE_CHUNK = 500


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
        # The newest position the channel's sockets got (live messages older
        # than it are never delivered), and the position read from
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


class Bridge:
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

    def _make_joiner(self, history_ttl: int) -> Joiner:
        return Joiner(self._channels, self.subscriber, self.target, history_ttl=history_ttl)

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
            await patience.wait_for(asyncio.shield(future), self.connect_timeout)
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

    def deliver_local(self, channel: str, message: dict[str, Any]) -> None:
        """Deliver an ASGI ``websocket.send`` message to the local sockets of ``channel``.

        This is the channel layer path: the event says whether it is text or bytes.
        """
        payload = message["bytes"] if "bytes" in message else message["text"].encode("utf-8")
        self._fanout(channel.encode(), [payload], [Outbound(message)])

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

    # -- reading ------------------------------------------------------------

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

    def _on_values(self, values: list[list[Any]]) -> None:
        """Handle the pub/sub frames of one read from Redis; runs of messages on
        one channel are fanned out together."""
        run_key: Any = None
        run: list[bytes] = []
        run_positions: list[Position | None] = []
        run_ch: ChannelState | None = None
        companions = self._companions
        message = self._MESSAGE
        for value in values:
            if value[0] == message:
                key = value[1]
                owner = companions.get(key)
                if owner is not None:
                    # The position of the message that follows on the channel.
                    owner.next_position = value[2]
                    continue
                if key != run_key:
                    if run:
                        self._fanout(run_key, run, positions=run_positions)
                    run_key, run, run_positions = key, [], []
                    run_ch = self._channels.get(key)
                run.append(value[2])
                if run_ch is not None and run_ch.next_position is not None:
                    try:
                        run_positions.append(Position.parse(run_ch.next_position))
                    except ValueError:
                        run_positions.append(None)
                    run_ch.next_position = None
                else:
                    run_positions.append(None)
                continue
            if run:
                self._fanout(run_key, run, positions=run_positions)
                run_key, run, run_positions = None, [], []
            self._on_push(value)
        if run:
            self._fanout(run_key, run, positions=run_positions)

    def _fanout(
        self,
        key: bytes,
        payloads: list[bytes],
        messages: list[Outbound] | None = None,
        *,
        positions: list[Position | None] | None = None,
    ) -> None:
        ch = self._channels.get(key)
        if ch is None:
            return
        if positions is None:
            positions = [None] * len(payloads)
        elif ch.position is not None:
            newest = ch.position
            if any(p is not None and p <= newest for p in positions):
                # Older than what the channel delivered (a Redis that lags
                # behind after a failover): never deliver it.
                kept = []
                for i, p in enumerate(positions):
                    if p is None or p > newest:
                        kept.append(i)
                        newest = p or newest
                payloads = [payloads[i] for i in kept]
                positions = [positions[i] for i in kept]
                messages = None if messages is None else [messages[i] for i in kept]
                if not payloads:
                    return
        for held in ch.joining.values():
            held.extend(zip(payloads, positions, strict=True))
        if not ch.sinks and not ch.psinks:
            return
        timed = self._metrics.enabled and not self._timing
        start = time.perf_counter() if timed else 0.0
        ch.last = payloads[-1]
        for position in reversed(positions):
            if position is not None:
                ch.position = position
                break
        if ch.echoes:
            # Some sender must not get its own publication back: message by message.
            for i, payload in enumerate(payloads):
                skip: Any = ch.echoes.take(payload)
                sent = 0
                if ch.sinks:
                    message = messages[i] if messages is not None else make_message(payload)
                    sent += self._deliver(ch.sinks, ch, Batch([message]), skip)
                if ch.psinks:
                    framed = make_message(message_frame(ch.label, positions[i], payload))
                    sent += self._deliver(ch.psinks, ch, Batch([framed]), skip)
                self._metrics.delivered(sent, sent * len(payload))
        else:
            sent = 0
            if ch.sinks:
                if messages is None:
                    messages = [make_message(payload) for payload in payloads]
                sent += self._deliver(ch.sinks, ch, Batch(messages), None)
            if ch.psinks:
                label = ch.label
                framed_messages = [
                    make_message(message_frame(label, position, payload))
                    for payload, position in zip(payloads, positions, strict=True)
                ]
                sent += self._deliver(ch.psinks, ch, Batch(framed_messages), None)
            # Counted per fan-out, not per socket: the metrics stay off the hot loop.
            self._metrics.delivered(sent * len(payloads), sent * sum(map(len, payloads)))
        if timed:
            # The outlets' flush was queued during the delivery: this callback runs
            # after the frames of this read went out to every socket.
            self._timing = True
            self._loop.call_soon(self._fanout_done, start)

    def _fanout_done(self, start: float) -> None:
        self._timing = False
        self._metrics.fanout_took_since(start)

    def _deliver(
        self,
        sinks: dict[Sink, Callable[[Batch], None]],
        ch: ChannelState,
        batch: Batch,
        skip: Sink | None,
    ) -> int:
        """Hand ``batch`` to every sink in ``sinks`` but ``skip``; return how many got it."""
        # One list per fan-out (a sink may leave while we deliver), and no
        # other allocation per socket: a fan-out to thousands stays cheap.
        delivers = list(sinks.values())
        for deliver in delivers:
            if skip is None or deliver.__self__ is not skip:  # type: ignore[attr-defined]
                try:
                    deliver(batch)
                except Exception:
                    logger.exception("Delivering messages on %r failed", ch.key)
        return len(delivers) - (1 if skip is not None and skip in sinks else 0)

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

    def _catch_up(self, channels: list[ChannelState]) -> None:
        """After a reconnect, rejoin every socket: what was stored while the
        connection was down reaches them, in order, without a duplicate."""
        keys_of: dict[Sink, list[bytes]] = {}
        since_of: dict[Sink, dict[bytes, Position]] = {}
        for ch in channels:
            for sink in [*ch.sinks, *ch.psinks, *ch.joining]:
                ch.joining[sink] = []
                keys_of.setdefault(sink, []).append(ch.key)
                # Sockets with positions resume from what their channel delivered.
                if sink in self._positioned and ch.position is not None:
                    since_of.setdefault(sink, {})[ch.key] = ch.position
            ch.sinks.clear()
            ch.psinks.clear()
            ch.next_position = None
        for sink, keys in keys_of.items():
            self._rejoin(sink, keys, since_of.get(sink))

    def _rejoin(self, sink: Sink, keys: list[bytes], since: dict[bytes, Position] | None) -> None:
        """Catch ``sink`` up on ``keys`` (a shard bridge also retries a failed catch-up)."""
        self._joiner.add(
            sink, keys, catch_up=True, positioned=sink in self._positioned, since=since
        )

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
