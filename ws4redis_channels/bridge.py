"""The per-process Redis subscriber that feeds every websocket of the process.

One :class:`Bridge` exists per event loop. It holds ONE pub/sub connection to
Redis, subscribes a channel while at least one local socket needs it and
unsubscribes it after the last one leaves. Each message read from Redis is
handed straight to the sinks (the sockets' outbound sides) that joined its
channel, in the order Redis sent it: no channel layer, no task per message.

Joining is ordered with replay: a socket's live messages are held back while
the bridge confirms the subscription, reads the stored messages (MGET) and
then waits for a PING sent on the subscriber connection to come back. Every
message published before the MGET has then arrived, so the stored message is
sent first and a live copy of it is not sent twice.

When the connection drops, the bridge reconnects with jittered exponential
backoff and resubscribes; sockets stay open. If Redis stays unreachable for
``WS4REDIS_OUTAGE_TIMEOUT`` seconds, every sink is told (``redis_lost``) so
its socket closes with 4503 and the client reconnects.

The bridge knows Redis, not Django requests.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import random
import weakref
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol, cast

from . import store
from .connection import RedisTarget, async_client, is_cluster, resolve_address, ssl_context
from .exceptions import RedisUnavailable
from .resp import Parser, ReplyError, Value, encode_command
from .slots import Node, key_slot
from .transport import encode_frame

__all__ = ["Batch", "Bridge", "Outbound", "Sink", "make_message"]

logger = logging.getLogger(__name__)

BACKOFF_FIRST = 0.1
BACKOFF_MAX = 1.0
HEALTH_INTERVAL = 15.0
HEALTH_TIMEOUT = 10.0
MAX_PENDING_ECHOES = 1000
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


class Outbound(dict):  # type: ignore[type-arg]
    """An ASGI ``websocket.send`` message shared by every socket of one fan-out.

    It also carries the encoded websocket frame: a fan-out encodes once.
    """

    __slots__ = ("frame",)

    def __init__(self, message: dict[str, Any]) -> None:
        super().__init__(message)
        self.frame = encode_frame(message)


class Batch:
    """The messages of one fan-out, in order, shared by every socket that gets them.

    Their frames, joined, are computed once for all of those sockets.
    """

    __slots__ = ("_data", "messages")

    def __init__(self, messages: list[Outbound]) -> None:
        self.messages = messages
        self._data: bytes | None = None

    @property
    def data(self) -> bytes:
        data = self._data
        if data is None:
            messages = self.messages
            if len(messages) == 1:
                data = messages[0].frame
            else:
                data = b"".join([message.frame for message in messages])
            self._data = data
        return data


def make_message(payload: bytes) -> Outbound:
    """Return the ASGI message for a payload: text if it is UTF-8, else bytes."""
    try:
        return Outbound({"type": "websocket.send", "text": payload.decode("utf-8")})
    except UnicodeDecodeError:
        return Outbound({"type": "websocket.send", "bytes": payload})


class _Channel:
    """The local state of one Redis channel."""

    __slots__ = (
        "echoes",
        "joining",
        "key",
        "last",
        "pending_subs",
        "requested",
        "sinks",
        "waiters",
    )

    def __init__(self, key: bytes) -> None:
        self.key = key
        # Each sink with its bound deliver method, looked up once.
        self.sinks: dict[Sink, Callable[[Batch], None]] = {}
        # Sinks still replaying, with the live payloads held back for them.
        self.joining: dict[Sink, list[bytes]] = {}
        self.requested = False  # SUBSCRIBE written and not followed by UNSUBSCRIBE
        self.pending_subs = 0  # SUBSCRIBE confirmations still to come
        self.waiters: list[asyncio.Future[None]] = []
        # The last payload the channel's sockets got: after a reconnect, the
        # stored message is caught up only if it is not this one.
        self.last: bytes | None = None
        # Publications of local sockets without echo, in publish order.
        self.echoes: collections.deque[tuple[Sink, bytes]] = collections.deque()

    @property
    def wanted(self) -> bool:
        return bool(self.sinks or self.joining)

    def take_echo(self, payload: bytes) -> Sink | None:
        for index, (sink, data) in enumerate(self.echoes):
            if data == payload:
                del self.echoes[index]
                return sink
        return None


class _Join:
    __slots__ = ("catch_up", "future", "keys", "sink")

    def __init__(
        self,
        sink: Sink,
        keys: list[bytes],
        future: asyncio.Future[None],
        *,
        catch_up: bool = False,
    ) -> None:
        self.sink = sink
        self.keys = keys
        self.future = future
        self.catch_up = catch_up  # a socket rejoining after a reconnect


def _consume_exception(future: asyncio.Future[None]) -> None:
    if not future.cancelled():
        future.exception()


class _SubscriberProtocol(asyncio.Protocol):
    def __init__(self, bridge: Bridge) -> None:
        self.bridge = bridge
        self.parser = Parser()
        self.transport: asyncio.Transport | None = None
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not inherit from asyncio.Transport.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        try:
            values = self.parser.feed(data)
        except ValueError:
            logger.exception("Unreadable data from Redis; reconnecting")
            assert self.transport is not None
            self.transport.abort()
            return
        self.bridge._on_values(values)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.lost.done():
            self.lost.set_result(None)


# (message, subscribe, unsubscribe) frames, and the commands, of classic and sharded pub/sub.
_CLASSIC_KINDS = (b"message", b"subscribe", b"unsubscribe", "SUBSCRIBE", "UNSUBSCRIBE")
_SHARDED_KINDS = (b"smessage", b"ssubscribe", b"sunsubscribe", "SSUBSCRIBE", "SUNSUBSCRIBE")
# Answers of a cluster node to an SSUBSCRIBE for a slot it does not serve (now).
_REDIRECTS = ("MOVED ", "ASK ")


class Bridge:
    """One Redis subscription per process, shared by all of its websockets."""

    _instances: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Bridge] = (
        weakref.WeakKeyDictionary()
    )

    def __init__(
        self,
        target: RedisTarget,
        *,
        connect_timeout: float = 5.0,
        outage_timeout: float = 30.0,
        node: Node | None = None,
        on_moved: Callable[[Bridge, list[bytes]], None] | None = None,
        on_down: Callable[[Bridge], None] | None = None,
    ) -> None:
        self.target = target
        # A shard bridge of a Redis Cluster (see router.py): one primary,
        # sharded pub/sub, and the router is told when channels leave the node.
        self.node = node
        self._sharded = node is not None
        self._kinds = _SHARDED_KINDS if self._sharded else _CLASSIC_KINDS
        self._message_kind = self._kinds[0]
        self._on_moved = on_moved
        self._on_down_hook = on_down
        self.connect_timeout = connect_timeout
        self.outage_timeout = outage_timeout
        # Told when a channel gains its first or loses its last local socket.
        self._on_watch: Callable[[str, bool], None] | None = None
        # Whatever feeds this bridge besides Redis (the channel layer relay).
        self.relay: Any = None
        self._loop = asyncio.get_running_loop()
        self._channels: dict[bytes, _Channel] = {}
        # Every sink between join() and leave(), subscribed to something or not.
        self._members: dict[Sink, None] = {}
        self._protocol: _SubscriberProtocol | None = None
        self._connected = asyncio.Event()
        self._replies: collections.deque[asyncio.Future[Value]] = collections.deque()
        self._outbox: list[bytes] = []
        self._joins: list[_Join] = []
        self._join_task: asyncio.Task[None] | None = None
        self._down_since: float | None = None
        self._give_up_handle: asyncio.TimerHandle | None = None
        self._closed = False
        self._ever_connected = False
        self._background: set[asyncio.Task[Any]] = set()
        self._runner = self._loop.create_task(self._run(), name="ws4redis-bridge")

    # -- construction -------------------------------------------------------

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
        return self._connected.is_set()

    def subscriptions(self) -> list[str]:
        """Return the channels the bridge is subscribed to (or subscribing)."""
        return sorted(ch.key.decode() for ch in self._channels.values() if ch.requested)

    def members(self) -> list[Sink]:
        """Return every sink that joined and has not left."""
        return list(self._members)

    def local_sinks(self, channel: str) -> int:
        """Return how many local sockets receive ``channel``."""
        ch = self._channels.get(channel.encode())
        return len(ch.sinks) if ch else 0

    async def join(self, sink: Sink, channels: Sequence[str]) -> None:
        """Subscribe ``sink`` to ``channels``, deliver their stored messages, then live ones.

        Raises :class:`RedisUnavailable` (and leaves nothing subscribed) if
        Redis is known to be down or does not answer within the timeout.
        """
        if self._down_since is not None:
            raise RedisUnavailable(f"Redis at {self._where()} is unreachable")
        self._members[sink] = None
        keys = list(dict.fromkeys(c.encode() for c in channels))
        if not keys:
            return
        future: asyncio.Future[None] = self._loop.create_future()
        for key in keys:
            ch = self._channels.get(key)
            if ch is None:
                ch = self._channels[key] = _Channel(key)
            was_wanted = ch.wanted
            ch.joining[sink] = []
            if not was_wanted:
                self._want(ch)
        self._joins.append(_Join(sink, keys, future))
        if self._join_task is None or self._join_task.done():
            self._join_task = self._loop.create_task(self._process_joins())
        try:
            await asyncio.wait_for(asyncio.shield(future), self.connect_timeout)
        except BaseException as exc:
            future.cancel()
            self.leave(sink, channels)
            if isinstance(exc, (asyncio.TimeoutError, ConnectionError, OSError, ReplyError)):
                raise RedisUnavailable(
                    f"Redis at {self._where()} did not answer in time: {exc!r}"
                ) from exc
            raise

    def leave(self, sink: Sink, channels: Iterable[str]) -> None:
        """Remove ``sink`` from all its ``channels``; unsubscribe channels nobody needs."""
        self._members.pop(sink, None)
        for channel in channels:
            ch = self._channels.get(channel.encode())
            if ch is None:
                continue
            ch.sinks.pop(sink, None)
            ch.joining.pop(sink, None)
            if ch.echoes:
                ch.echoes = collections.deque(e for e in ch.echoes if e[0] is not sink)
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
        marked: list[_Channel] = []
        if not echo and sink is not None:
            for channel in channels:
                ch = self._channels.get(channel.encode())
                if ch is not None and sink in ch.sinks:
                    if len(ch.echoes) >= MAX_PENDING_ECHOES:
                        ch.echoes.popleft()
                    ch.echoes.append((sink, payload))
                    marked.append(ch)
        try:
            return await store.apublish(async_client(self.target), channels, payload, expire)
        except BaseException:
            for ch in marked:
                try:
                    ch.echoes.remove((sink, payload))  # type: ignore[arg-type]
                except ValueError:
                    pass
            raise

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
        if self._give_up_handle is not None:
            self._give_up_handle.cancel()
        if self._join_task is not None:
            self._join_task.cancel()
        protocol = self._protocol
        if protocol is not None and protocol.transport is not None:
            if any(ch.requested for ch in self._channels.values()):
                protocol.transport.write(encode_command(self._kinds[4]))
            protocol.transport.close()
        self._runner.cancel()
        await asyncio.gather(self._runner, *self._background, return_exceptions=True)
        self._channels.clear()
        self._members.clear()

    # -- subscription bookkeeping -------------------------------------------

    def _want(self, ch: _Channel) -> None:
        if self._on_watch is not None:
            self._on_watch(ch.key.decode(), True)
        if self._connected.is_set() and not ch.requested:
            self._subscribe([ch])

    def _unwant(self, ch: _Channel) -> None:
        if self._on_watch is not None:
            self._on_watch(ch.key.decode(), False)
        if ch.requested:
            ch.requested = False
            if self._connected.is_set():
                self._write(encode_command(self._kinds[4], ch.key))
        if ch.pending_subs == 0:
            self._forget(ch)

    def _forget(self, ch: _Channel) -> None:
        if self._channels.get(ch.key) is ch:
            del self._channels[ch.key]
        for waiter in ch.waiters:
            if not waiter.done():
                waiter.set_result(None)
        ch.waiters.clear()

    def _subscribe(self, channels: list[_Channel]) -> None:
        if self._sharded:
            # SSUBSCRIBE takes the channels of one slot at a time.
            by_slot: dict[int, list[_Channel]] = {}
            for ch in channels:
                by_slot.setdefault(key_slot(ch.key), []).append(ch)
            for group in by_slot.values():
                for ch in group:
                    ch.requested = True
                    ch.pending_subs += 1
                self._write(encode_command("SSUBSCRIBE", *(ch.key for ch in group)))
            return
        for start in range(0, len(channels), SUBSCRIBE_CHUNK):
            chunk = channels[start : start + SUBSCRIBE_CHUNK]
            for ch in chunk:
                ch.requested = True
                ch.pending_subs += 1
            self._write(encode_command("SUBSCRIBE", *(ch.key for ch in chunk)))

    def _write(self, data: bytes) -> None:
        # Commands written in one loop iteration leave in one send() call.
        if not self._outbox:
            self._loop.call_soon(self._flush)
        self._outbox.append(data)

    def _flush(self) -> None:
        data = b"".join(self._outbox)
        self._outbox.clear()
        protocol = self._protocol
        if protocol is not None and protocol.transport is not None and self._connected.is_set():
            protocol.transport.write(data)

    async def _request(self, *command: str | bytes | int) -> Value:
        """Send a command whose reply is not a pub/sub frame (AUTH, PING...)."""
        if not self._connected.is_set():
            raise RedisUnavailable(f"Redis at {self._where()} is not connected")
        future: asyncio.Future[Value] = self._loop.create_future()
        self._replies.append(future)
        self._write(encode_command(*command))
        return await future

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

    # -- joining and replay -------------------------------------------------

    async def _process_joins(self) -> None:
        while self._joins:
            if not self._connected.is_set():
                await self._connected.wait()
            batch, self._joins = self._joins, []
            batch = [join for join in batch if not join.future.done()]
            if not batch:
                continue
            keys = list(dict.fromkeys(key for join in batch for key in join.keys))
            try:
                await self._confirmed(keys)
                values = await self._stored(keys)
                await self._request("PING")  # every message published before the MGET is here now
            except Exception as exc:
                for join in batch:
                    if not join.future.done():
                        join.future.set_exception(RedisUnavailable(repr(exc)))
                continue
            stored: dict[bytes, bytes | None] = dict(zip(keys, values, strict=True))
            for join in batch:
                if not join.future.done():
                    self._finish_join(join, stored)
                    join.future.set_result(None)

    async def _stored(self, keys: list[bytes]) -> list[Any]:
        if not keys:
            return []
        client = async_client(self.target)
        if is_cluster(client):
            # Channels of different slots: one GET per slot, pipelined per node.
            return await client.mget_nonatomic(keys)  # type: ignore[attr-defined, no-any-return]
        return await client.mget(keys)

    def _finish_join(self, join: _Join, stored: dict[bytes, bytes | None]) -> None:
        sink = join.sink
        for key in join.keys:
            ch = self._channels.get(key)
            if ch is None or sink not in ch.joining:
                continue
            held = ch.joining.pop(sink)
            value = stored.get(key)
            replay = [] if value is None or value in held else [value]
            if join.catch_up and value == ch.last:
                replay = []
            if replay or held:
                sink.deliver(Batch([make_message(payload) for payload in replay + held]))
            ch.sinks[sink] = sink.deliver

    # -- reading ------------------------------------------------------------

    def _on_value(self, value: Value) -> None:
        if type(value) is list and value:
            kind = value[0]
            kinds = self._kinds
            if kind == kinds[0]:
                self._fanout(value[1], [value[2]])  # type: ignore[list-item, arg-type]
                return
            if kind == kinds[1]:
                ch = self._channels.get(value[1])  # type: ignore[arg-type]
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
                return
            if kind == kinds[2]:
                if self._sharded:
                    self._unsubscribed(value[1])  # type: ignore[arg-type]
                return
        if self._sharded and isinstance(value, ReplyError) and self._redirected(value):
            return
        # PING replies ([b"pong", b""] when subscribed, b"PONG" otherwise),
        # AUTH and CLIENT SETNAME replies, errors.
        if self._replies:
            future = self._replies.popleft()
            if not future.done():
                if isinstance(value, ReplyError):
                    future.set_exception(value)
                else:
                    future.set_result(value)
        elif isinstance(value, ReplyError):
            logger.warning("Redis answered the subscriber connection with an error: %s", value)

    def _on_values(self, values: list[Value]) -> None:
        """Handle what one read from Redis brought; runs of messages on one
        channel are fanned out together."""
        run_key: bytes | None = None
        run: list[bytes] = []
        message_kind = self._message_kind
        for value in values:
            if type(value) is list and value and value[0] == message_kind:
                key = value[1]
                if key != run_key:
                    if run:
                        self._fanout(run_key, run)  # type: ignore[arg-type]
                    run_key, run = key, []  # type: ignore[assignment]
                run.append(value[2])  # type: ignore[arg-type]
                continue
            if run:
                self._fanout(run_key, run)  # type: ignore[arg-type]
                run_key, run = None, []
            self._on_value(value)
        if run:
            self._fanout(run_key, run)  # type: ignore[arg-type]

    def _fanout(
        self, key: bytes, payloads: list[bytes], messages: list[Outbound] | None = None
    ) -> None:
        ch = self._channels.get(key)
        if ch is None:
            return
        for held in ch.joining.values():
            held.extend(payloads)
        if not ch.sinks:
            return
        ch.last = payloads[-1]
        if messages is None:
            messages = [make_message(payload) for payload in payloads]
        if ch.echoes:
            # Some sender must not get its own publication back: message by message.
            for payload, message in zip(payloads, messages, strict=True):
                self._deliver(ch, Batch([message]), ch.take_echo(payload))
        else:
            self._deliver(ch, Batch(messages), None)

    def _deliver(self, ch: _Channel, batch: Batch, skip: Sink | None) -> None:
        # One list per fan-out (a sink may leave while we deliver), and no
        # other allocation per socket: a fan-out to thousands stays cheap.
        for deliver in list(ch.sinks.values()):
            if skip is None or deliver.__self__ is not skip:  # type: ignore[attr-defined]
                try:
                    deliver(batch)
                except Exception:
                    logger.exception("Delivering messages on %r failed", ch.key)

    # -- connection management ----------------------------------------------

    async def _run(self) -> None:
        backoff = BACKOFF_FIRST
        while not self._closed:
            try:
                protocol = await asyncio.wait_for(self._connect(), self.connect_timeout)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._on_down(f"cannot connect: {exc!r}")
            else:
                backoff = BACKOFF_FIRST
                self._on_up(protocol)
                await self._watch(protocol)
                self._on_down("connection lost")
            if self._closed:
                break
            await asyncio.sleep(random.uniform(0, backoff))
            backoff = min(backoff * 2, BACKOFF_MAX)

    async def _connect(self) -> _SubscriberProtocol:
        address = self.node if self.node is not None else await resolve_address(self.target)
        loop = self._loop
        if isinstance(address, str):
            _, protocol = await loop.create_unix_connection(
                lambda: _SubscriberProtocol(self), address
            )
        else:
            host, port = address
            _, protocol = await loop.create_connection(
                lambda: _SubscriberProtocol(self), host, port, ssl=ssl_context(self.target)
            )
        assert protocol.transport is not None
        try:
            self._protocol = protocol
            transport = protocol.transport
            commands: list[tuple[str | bytes | int, ...]] = []
            if self.target.password:
                if self.target.username:
                    commands.append(("AUTH", self.target.username, self.target.password))
                else:
                    commands.append(("AUTH", self.target.password))
            commands.append(("CLIENT", "SETNAME", f"ws4redis-bridge-{os.getpid()}"))
            futures = []
            for command in commands:
                future: asyncio.Future[Value] = loop.create_future()
                self._replies.append(future)
                futures.append(future)
                transport.write(encode_command(*command))
            for future in futures:
                await future
        except BaseException:
            protocol.transport.abort()
            self._protocol = None
            self._replies.clear()
            raise
        return protocol

    async def _watch(self, protocol: _SubscriberProtocol) -> None:
        """Wait until the connection is lost; ping it when idle to find dead peers."""
        while True:
            done, _ = await asyncio.wait({protocol.lost}, timeout=HEALTH_INTERVAL)
            if done:
                return
            try:
                await asyncio.wait_for(self._request("PING"), HEALTH_TIMEOUT)
            except (asyncio.TimeoutError, ReplyError):
                logger.warning("Redis did not answer a PING in %ss; reconnecting", HEALTH_TIMEOUT)
                assert protocol.transport is not None
                protocol.transport.abort()
                await protocol.lost
                return

    def _on_up(self, protocol: _SubscriberProtocol) -> None:
        reconnected = self._ever_connected
        self._ever_connected = True
        if self._down_since is not None:
            logger.warning(
                "Reconnected to Redis at %s after %.1fs; resubscribing %d channels",
                self._where(),
                self._loop.time() - self._down_since,
                len(self._channels),
            )
        self._down_since = None
        if self._give_up_handle is not None:
            self._give_up_handle.cancel()
            self._give_up_handle = None
        self._protocol = protocol
        self._connected.set()
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

    def _catch_up(self, channels: list[_Channel]) -> None:
        """After a reconnect, rejoin every socket: what was stored while the
        connection was down reaches them, in order, without a duplicate."""
        keys_of: dict[Sink, list[bytes]] = {}
        for ch in channels:
            for sink in [*ch.sinks, *ch.joining]:
                ch.joining[sink] = []
                keys_of.setdefault(sink, []).append(ch.key)
            ch.sinks.clear()
        for sink, keys in keys_of.items():
            future: asyncio.Future[None] = self._loop.create_future()
            # Nobody awaits a catch-up: the next reconnect catches up again.
            future.add_done_callback(_consume_exception)
            self._joins.append(_Join(sink, keys, future, catch_up=True))
        if self._join_task is None or self._join_task.done():
            self._join_task = self._loop.create_task(self._process_joins())

    def _background_done(self, task: asyncio.Task[Any]) -> None:
        self._background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.warning("Loading the ws4redis function failed: %r", task.exception())

    def _on_down(self, reason: str) -> None:
        was_up = self._connected.is_set()
        self._connected.clear()
        self._protocol = None
        self._outbox.clear()
        error = RedisUnavailable(f"Redis at {self._where()}: {reason}")
        while self._replies:
            future = self._replies.popleft()
            if not future.done():
                future.set_exception(error)
        for ch in list(self._channels.values()):
            ch.requested = False
            ch.pending_subs = 0
            ch.echoes.clear()
            for waiter in ch.waiters:
                if not waiter.done():
                    waiter.set_exception(error)
            ch.waiters.clear()
            if not ch.wanted:
                del self._channels[ch.key]
        # Joins in progress fail now: their handshakes answer 4503.
        for join in self._joins:
            if not join.future.done():
                join.future.set_exception(error)
        self._joins.clear()
        if self._closed:
            return
        if self._on_down_hook is not None:
            self._on_down_hook(self)
        if self._down_since is None:
            self._down_since = self._loop.time()
            level = logging.WARNING if was_up else logging.ERROR
            logger.log(
                level,
                "Redis at %s is unreachable (%s); retrying, sockets closed with 4503 after %ss",
                self._where(),
                reason,
                self.outage_timeout,
            )
            self._give_up_handle = self._loop.call_later(self.outage_timeout, self._give_up)

    def _give_up(self) -> None:
        self._give_up_handle = None
        sinks = self.members()
        logger.error(
            "Redis at %s unreachable for %ss; closing %d sockets with 4503",
            self._where(),
            self.outage_timeout,
            len(sinks),
        )
        for sink in sinks:
            try:
                sink.redis_lost()
            except Exception:
                logger.exception("Closing a socket after the Redis outage failed")

    # -- a shard bridge of a Redis Cluster (driven by router.ClusterBridge) --------

    def _where(self) -> str:
        if self.node is not None:
            return f"{self.node[0]}:{self.node[1]} (node of {self.target.describe()})"
        return self.target.describe()

    def _unsubscribed(self, key: bytes) -> None:
        """A ``sunsubscribe`` arrived: ours, or the node's after the slot moved away."""
        ch = self._channels.get(key)
        if ch is None or not ch.requested or ch.pending_subs:
            return  # the answer to our own SUNSUBSCRIBE
        ch.requested = False
        if self._on_moved is not None:
            self._on_moved(self, [key])

    def _redirected(self, error: ReplyError) -> bool:
        """Handle an error answering an SSUBSCRIBE; return False if it answers something else."""
        text = str(error)
        if text.startswith(_REDIRECTS):
            slot = int(text.split()[1])
            moved = []
            for ch in self._channels.values():
                if ch.pending_subs and key_slot(ch.key) == slot:
                    ch.pending_subs -= 1
                    ch.requested = False
                    moved.append(ch.key)
            if moved and self._on_moved is not None:
                self._on_moved(self, moved)
            return True
        if text.startswith(("CLUSTERDOWN", "TRYAGAIN", "CROSSSLOT")):
            # Which subscription failed is unknown: start over on a new connection.
            logger.warning("Redis refused a sharded subscription (%s); reconnecting", text)
            protocol = self._protocol
            if protocol is not None and protocol.transport is not None:
                protocol.transport.abort()
            return True
        return False

    def holds(self, key: bytes) -> bool:
        """Whether a local socket needs ``key`` here (joined or joining)."""
        ch = self._channels.get(key)
        return ch is not None and ch.wanted

    def channel_keys(self) -> list[bytes]:
        """Return every channel a local socket needs here."""
        return [key for key, ch in self._channels.items() if ch.wanted]

    def detach(self, key: bytes) -> tuple[list[Sink], bytes | None]:
        """Hand over ``key`` and its sockets (to another shard); return them and the
        last payload they got."""
        ch = self._channels.pop(key, None)
        if ch is None:
            return [], None
        sinks = list(dict.fromkeys([*ch.sinks, *ch.joining]))
        if ch.requested and self._connected.is_set():
            self._write(encode_command(self._kinds[4], key))
        ch.requested = False
        for waiter in ch.waiters:
            if not waiter.done():
                waiter.set_result(None)
        ch.waiters.clear()
        # A socket without channels left here is no longer this shard's to close.
        for sink in sinks:
            if not any(sink in c.sinks or sink in c.joining for c in self._channels.values()):
                self._members.pop(sink, None)
        return sinks, ch.last

    def adopt(self, key: bytes, sinks: list[Sink], last: bytes | None) -> None:
        """Take over ``key`` and its sockets from another shard, as after a reconnect:
        the stored message is caught up unless it is ``last``."""
        if not sinks:
            return
        ch = self._channels.get(key)
        if ch is None:
            ch = self._channels[key] = _Channel(key)
            ch.last = last
        for sink in sinks:
            ch.joining.setdefault(sink, [])
            self._members[sink] = None
        if not self._connected.is_set():
            # Everything wanted is subscribed and caught up once connected.
            self._ever_connected = True
            return
        if not ch.requested:
            self._subscribe([ch])
        for sink in sinks:
            future: asyncio.Future[None] = self._loop.create_future()
            future.add_done_callback(_consume_exception)
            self._joins.append(_Join(sink, [key], future, catch_up=True))
        if self._join_task is None or self._join_task.done():
            self._join_task = self._loop.create_task(self._process_joins())
