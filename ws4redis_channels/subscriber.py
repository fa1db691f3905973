"""The process's pub/sub connection to Redis: connect, authenticate, keep alive, reconnect.

A :class:`Subscriber` owns one RESP connection (an :class:`asyncio.Protocol`
fed to :class:`~ws4redis_channels.resp.Parser`) and knows nothing of
channels: it hands every pub/sub frame (``message``, ``subscribe``...) to
its owner, the bridge, in the order Redis sent them, answers the replies of
its own requests (AUTH, PING), and tells the owner when the connection comes
up or goes down. It pings an idle connection to find a Redis that silently
disappeared, and reconnects with :class:`Backoff` until it is closed.

A lost connection is noticed at once: every pending request fails the moment
the transport reports the loss, not when its timeout expires.

When Redis itself closes the connection while it is up, the usual cause is
``client-output-buffer-limit pubsub``: the process read too slowly, and what
Redis held for it is gone. The subscriber names that in the log and counts it
(:attr:`Subscriber.dropped_by_redis`, and :attr:`Subscriber.output_buffer_drops`
for the drops it takes for the output buffer limit). Redis 7.4 and later
confirm such a drop in ``INFO stats``; with older ones the subscriber judges
from what it read last: Redis drops a subscriber for its output buffer only
when the socket's buffers are full, so the reads before the close come back
full (:data:`BEHIND_READ` bytes or more). A ``CLIENT KILL`` of a subscriber
that keeps up is not taken for one.

With Sentinel, :meth:`Subscriber.follow_master` moves the connection to a new
master the moment Sentinel names it (the old one can stay up and writable for
seconds after a manual failover), and a connection is used only once ``ROLE``
says its server is a master.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import random
from collections.abc import Callable
from typing import Any, cast

from . import patience
from .connection import RedisTarget, resolve_address, ssl_context
from .exceptions import RedisUnavailable
from .resp import ReplyError, Value, encode_command, new_parser

__all__ = ["Backoff", "Subscriber"]

logger = logging.getLogger(__name__)

HEALTH_INTERVAL = 15.0
# INFO stats field (Redis 7.4+) counting clients dropped for their output buffer.
OUTPUT_BUFFER_FIELD = b"client_output_buffer_limit_disconnections"
HEALTH_TIMEOUT = 10.0
# A read this large found more waiting than the loop takes at once: the process
# was behind. Redis only drops a subscriber for its output buffer when it is.
BEHIND_READ = 64 * 1024
# Frames that belong to the subscription, not to a request's reply.
PUSH_KINDS = frozenset(
    {
        *(b"message", b"subscribe", b"unsubscribe"),
        *(b"pmessage", b"psubscribe", b"punsubscribe"),
        *(b"smessage", b"ssubscribe", b"sunsubscribe"),
    }
)


def _output_buffer_drops(info: Value) -> int | None:
    """Return Redis's count of clients dropped for their output buffer, if it has one."""
    if isinstance(info, bytes):
        for line in info.splitlines():
            if line.startswith(OUTPUT_BUFFER_FIELD + b":"):
                return int(line.split(b":", 1)[1])
    return None


class Backoff:
    """Jittered exponential delays between attempts: uniform in [0, d], d doubling to a cap.

    The jitter keeps many processes that lost Redis together from coming back
    in lockstep. Every part of the app that retries uses this one helper.
    """

    __slots__ = ("_current", "first", "maximum")

    def __init__(self, first: float = 0.1, maximum: float = 1.0) -> None:
        self.first = first
        self.maximum = maximum
        self._current = first

    def next(self) -> float:
        """Return the delay before the next attempt, and lengthen the following one."""
        delay = random.uniform(0, self._current)
        self._current = min(self._current * 2, self.maximum)
        return delay

    def reset(self) -> None:
        """Start again from the first delay (after a success)."""
        self._current = self.first

    async def sleep(self) -> None:
        """Wait :meth:`next` seconds."""
        await asyncio.sleep(self.next())


class _Protocol(asyncio.Protocol):
    def __init__(self, subscriber: Subscriber) -> None:
        self.subscriber = subscriber
        self.parser = new_parser()
        self.transport: asyncio.Transport | None = None
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        # 2 after a read of BEHIND_READ bytes or more, one less per smaller read:
        # non-zero when one of the last two reads was full (the last may be the
        # rest of a backlog).
        self.behind = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not inherit from asyncio.Transport.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        if len(data) >= BEHIND_READ:
            self.behind = 2
        elif self.behind:
            self.behind -= 1
        try:
            values = self.parser.feed(data)
        except ValueError:
            logger.exception("Unreadable data from Redis; reconnecting")
            assert self.transport is not None
            self.subscriber._aborting = True
            self.transport.abort()
            return
        self.subscriber._received(values)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.lost.done():
            self.lost.set_result(None)
        self.subscriber._lost(self, exc)


class Subscriber:
    """One pub/sub connection to ``target``, kept up until :meth:`close`.

    ``on_values(values)`` gets the pub/sub frames of one read, in order;
    ``on_up()`` runs when a connection is ready (authenticated, named, nothing
    subscribed yet); ``on_down(reason)`` when a connection is lost or an
    attempt fails. Pending requests have failed when ``on_down`` runs.
    """

    def __init__(
        self,
        target: RedisTarget,
        *,
        on_values: Callable[[list[list[Any]]], None],
        on_up: Callable[[], None],
        on_down: Callable[[str], None],
        connect_timeout: float = 5.0,
        name: str | None = None,
        on_error: Callable[[ReplyError], bool] | None = None,
    ) -> None:
        self.target = target
        # Offered every error reply first; True means it answered no request of
        # ours (a cluster node refusing an SSUBSCRIBE with -MOVED).
        self._on_error = on_error
        self.connect_timeout = connect_timeout
        self.name = name or f"ws4redis-bridge-{os.getpid()}"
        self.backoff = Backoff()
        self._on_values = on_values
        self._on_up = on_up
        self._on_down = on_down
        self._loop = asyncio.get_running_loop()
        self._protocol: _Protocol | None = None
        self._connected = asyncio.Event()
        self._replies: collections.deque[asyncio.Future[Value]] = collections.deque()
        self._outbox: list[bytes] = []
        self._closed = False
        self._runner: asyncio.Task[None] | None = None
        self._aborting = False  # we are closing the connection ourselves
        self._closed_by_peer = False  # the last connection ended with a clean EOF
        self._behind_at_close = False  # ...right after full reads (see BEHIND_READ)
        self._drop_count: int | None = None  # OUTPUT_BUFFER_FIELD at the last connect
        #: How often Redis closed the connection while it was up (see module doc).
        self.dropped_by_redis = 0
        #: Of those, how many Redis confirmed were for the pub/sub output buffer limit.
        self.output_buffer_drops = 0
        # Why the last attempt failed (None after a lost connection): the owner
        # explains it to users (a wrong password is not a timeout).
        self.last_error: BaseException | None = None
        # Where the current connection goes; set to cut a backoff short.
        self._address: tuple[str, int] | str | None = None
        self._hurry = asyncio.Event()

    # -- interface for the bridge ---------------------------------------------

    def start(self) -> None:
        """Connect in the background, and reconnect whenever the connection drops."""
        if self._runner is None:
            self._runner = self._loop.create_task(self._run(), name="ws4redis-subscriber")

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    async def wait_connected(self) -> None:
        """Wait until a connection is up (returns at once if it is)."""
        await self._connected.wait()

    def write(self, data: bytes) -> None:
        """Send an encoded command; what is written in one loop iteration leaves in one send().

        Dropped while disconnected: the owner resubscribes in ``on_up``.
        """
        if not self._connected.is_set():
            return
        if not self._outbox:
            self._loop.call_soon(self._flush)
        self._outbox.append(data)

    async def request(self, *command: str | bytes | int) -> Value:
        """Send a command whose reply is not a pub/sub frame (PING...) and return the reply.

        Raises :class:`RedisUnavailable` when not connected or when the
        connection is lost before the reply, and
        :class:`~ws4redis_channels.resp.ReplyError` on an error reply.
        """
        if not self._connected.is_set():
            raise RedisUnavailable(f"Redis at {self.target.describe()} is not connected")
        future: asyncio.Future[Value] = self._loop.create_future()
        self._replies.append(future)
        self.write(encode_command(*command))
        return await future

    def abort(self) -> None:
        """Drop the connection now (it is re-established as after a loss)."""
        protocol = self._protocol
        if protocol is not None and protocol.transport is not None:
            protocol.transport.abort()

    def follow_master(self, address: tuple[str, int]) -> None:
        """Sentinel moved the master to ``address``: leave the old one now, connect at once.

        Staying subscribed to the old master would hear publications the
        failover discards and miss those made on the new one.
        """
        if self._closed:
            return
        self._hurry.set()
        protocol = self._protocol
        if protocol is not None and protocol.transport is not None and self._address != address:
            logger.warning(
                "Sentinel moved the master to %s:%d; moving the subscriber there", *address
            )
            self._aborting = True
            protocol.transport.abort()

    async def close(self, farewell: bytes | None = None) -> None:
        """Send ``farewell`` (e.g. UNSUBSCRIBE), close the connection, stop reconnecting."""
        if self._closed:
            return
        self._closed = True
        protocol = self._protocol
        if protocol is not None and protocol.transport is not None:
            if farewell:
                protocol.transport.write(farewell)
            protocol.transport.close()
        if self._runner is not None:
            self._runner.cancel()
            await asyncio.gather(self._runner, return_exceptions=True)

    # -- reading --------------------------------------------------------------

    def _received(self, values: list[Value]) -> None:
        pushes: list[list[Any]] = []
        for value in values:
            if type(value) is list and value and value[0] in PUSH_KINDS:
                pushes.append(value)
                continue
            # The frames before a reply are handled before its waiter is woken:
            # a PING reply means "everything published before it is delivered".
            if pushes:
                self._on_values(pushes)
                pushes = []
            on_error = self._on_error
            if on_error is not None and isinstance(value, ReplyError) and on_error(value):
                continue
            self._reply(value)
        if pushes:
            self._on_values(pushes)

    def _reply(self, value: Value) -> None:
        if self._replies:
            future = self._replies.popleft()
            if not future.done():
                if isinstance(value, ReplyError):
                    future.set_exception(value)
                else:
                    future.set_result(value)
        elif isinstance(value, ReplyError):
            logger.warning("Redis answered the subscriber connection with an error: %s", value)

    def _flush(self) -> None:
        data = b"".join(self._outbox)
        self._outbox.clear()
        protocol = self._protocol
        if protocol is not None and protocol.transport is not None and self._connected.is_set():
            protocol.transport.write(data)

    def _lost(self, protocol: _Protocol, exc: Exception | None) -> None:
        if protocol is not self._protocol:
            return
        # Fail what waits for a reply now: no request may wait out its timeout
        # on a connection that is gone.
        self._closed_by_peer = exc is None and not self._aborting and not self._closed
        self._behind_at_close = protocol.behind > 0
        self._connected.clear()
        self._outbox.clear()
        self._fail_replies(f"connection lost ({exc!r})" if exc else "connection lost")

    def _fail_replies(self, reason: str) -> None:
        error = RedisUnavailable(f"Redis at {self.target.describe()}: {reason}")
        while self._replies:
            future = self._replies.popleft()
            if not future.done():
                future.set_exception(error)

    # -- connection management ------------------------------------------------

    async def _run(self) -> None:
        while not self._closed:
            try:
                protocol, drops = await patience.wait_for(self._connect(), self.connect_timeout)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.last_error = exc
                self._down(f"cannot connect: {exc!r}")
            else:
                self.last_error = None
                self.backoff.reset()
                self._connected.set()
                if self._closed_by_peer:
                    self._closed_by_peer = False
                    self._explain_drop(drops)
                self._drop_count = drops
                self._on_up()
                await self._watch(protocol)
                self._down("connection lost")
            if self._closed:
                break
            await self._pause()

    async def _pause(self) -> None:
        """Wait out the backoff, unless Sentinel named a new master meanwhile."""
        if not self._hurry.is_set():
            try:
                await asyncio.wait_for(self._hurry.wait(), self.backoff.next())
            except asyncio.TimeoutError:
                return
        self._hurry.clear()
        self.backoff.reset()

    def _down(self, reason: str) -> None:
        self._connected.clear()
        self._protocol = None
        self._outbox.clear()
        self._fail_replies(reason)
        self._on_down(reason)

    def _explain_drop(self, now: int | None) -> None:
        """Redis closed the last connection while up: say why, as far as Redis tells."""
        self.dropped_by_redis += 1
        before = self._drop_count
        if now is not None and before is not None and now > before:
            self.output_buffer_drops += 1
            logger.error(
                "Redis at %s dropped the subscriber for its client-output-buffer-limit "
                "pubsub: this process read too slowly, and the messages Redis held for it "
                "on all its channels were lost (sockets got the stored ones again); raise "
                "the limit, or run more processes",
                self.target.describe(),
            )
        elif now is None and self._behind_at_close:
            self.output_buffer_drops += 1
            logger.error(
                "Redis at %s dropped the subscriber while this process was behind reading "
                "it: most likely for its client-output-buffer-limit pubsub (Redis before 7.4 "
                "does not confirm it). This process read too slowly, and the messages Redis "
                "held for it on all its channels were lost (sockets got the stored ones "
                "again); raise the limit, or run more processes",
                self.target.describe(),
            )
        elif now is None:
            logger.warning(
                "Redis at %s closed the subscriber connection while up, while this process "
                "kept up reading it: a CLIENT KILL, a proxy or a timeout; reconnected. "
                "Messages published meanwhile were lost (sockets got the stored ones again)",
                self.target.describe(),
            )
        else:
            logger.warning(
                "Redis at %s closed the subscriber connection while up (not for its "
                "output buffer: CLIENT KILL, or a proxy); reconnected",
                self.target.describe(),
            )

    async def _connect(self) -> tuple[_Protocol, int | None]:
        self._aborting = False
        self._hurry.clear()
        address = await resolve_address(self.target)
        self._address = address
        loop = self._loop
        if isinstance(address, str):
            _, protocol = await loop.create_unix_connection(lambda: _Protocol(self), address)
        else:
            host, port = address
            _, protocol = await loop.create_connection(
                lambda: _Protocol(self), host, port, ssl=ssl_context(self.target)
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
            commands.append(("CLIENT", "SETNAME", self.name))
            if self.target.sentinels:
                # Sentinel's answer may be stale: subscribe on a master only.
                commands.append(("ROLE",))
            commands.append(("INFO", "stats"))  # before SUBSCRIBE: not allowed after
            futures = []
            for command in commands:
                future: asyncio.Future[Value] = loop.create_future()
                self._replies.append(future)
                futures.append(future)
                transport.write(encode_command(*command))
            for future in futures:
                await future
            info = futures[-1].result()
            if self.target.sentinels:
                role = futures[-2].result()
                if not isinstance(role, list) or not role or role[0] != b"master":
                    raise RedisUnavailable(f"{address} is not a master (ROLE says {role!r})")
        except BaseException:
            protocol.transport.abort()
            self._protocol = None
            self._replies.clear()
            raise
        return protocol, _output_buffer_drops(info)

    async def _watch(self, protocol: _Protocol) -> None:
        """Wait until the connection is lost; ping it when idle to find dead peers."""
        while True:
            done, _ = await asyncio.wait({protocol.lost}, timeout=HEALTH_INTERVAL)
            if done:
                return
            try:
                await patience.wait_for(self.request("PING"), HEALTH_TIMEOUT)
            except RedisUnavailable:
                return  # lost while the PING was pending: noticed at once
            except (asyncio.TimeoutError, ReplyError):
                logger.warning("Redis did not answer a PING in %ss; reconnecting", HEALTH_TIMEOUT)
                assert protocol.transport is not None
                self._aborting = True
                protocol.transport.abort()
                await protocol.lost
                return
