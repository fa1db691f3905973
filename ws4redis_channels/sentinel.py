"""Follow a Sentinel-monitored master: learn within moments that Sentinel moved it.

Reacting only to a dropped connection is not enough: after ``SENTINEL
FAILOVER`` the old master stays up and writable for about ten seconds, until
Sentinel demotes it and its writes are discarded. A :class:`SentinelWatcher`
therefore subscribes to ``+switch-master`` on every Sentinel and, as a
fallback for events it missed, asks all Sentinels for the master every
:data:`CHECK_INTERVAL` seconds and whenever one of its connections comes back.
When the answer with the highest configuration epoch names another master,
it calls its listeners (the bridge reconnects its subscriber, the redis-py
clients of :mod:`ws4redis_channels.connection` drop their connections).

One watcher runs per service and process, in a daemon thread with its own
event loop, so synchronous code (views, workers, ``manage.py``) is followed
as well as every event loop. Listeners are called in that thread: they must
only hand the news over (``loop.call_soon_threadsafe``, a thread-safe pool
reset).

This module knows Sentinel's protocol, not Django and not the rest of the app.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import random
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from .exceptions import RedisUnavailable
from .resp import Parser, ReplyError, Value, encode_command

__all__ = [
    "CHECK_INTERVAL",
    "Master",
    "SentinelWatcher",
    "discover_master",
    "stop_watchers",
    "watcher",
]

logger = logging.getLogger(__name__)

#: Seconds between two checks of the master when no event came.
CHECK_INTERVAL = 5.0
#: Seconds a Sentinel has to answer (connect and reply).
QUERY_TIMEOUT = 2.0
BACKOFF_FIRST = 0.1
BACKOFF_MAX = 2.0

Address = tuple[str, int]


@dataclass(frozen=True)
class Master:
    """Where Sentinel says the master is, the configuration epoch that says so, and how
    many healthy replicas (link up, not down) Sentinel sees it with."""

    host: str
    port: int
    epoch: int
    replicas: int = 0

    @property
    def address(self) -> Address:
        return self.host, self.port


class _Link:
    """One connection to a Sentinel, read value by value."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.parser = Parser()
        self.values: collections.deque[Value] = collections.deque()

    @classmethod
    async def open(cls, address: Address, password: str | None, timeout: float) -> _Link:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(*address), timeout)
        link = cls(reader, writer)
        if password:
            reply = await link.command(timeout, "AUTH", password)
            if isinstance(reply, ReplyError):
                link.close()
                raise RedisUnavailable(f"Sentinel {address[0]}:{address[1]} refused AUTH: {reply}")
        return link

    async def command(self, timeout: float, *args: str) -> Value:
        self.writer.write(encode_command(*args))
        return await self.read(timeout)

    async def read(self, timeout: float | None) -> Value:
        while not self.values:
            data = await asyncio.wait_for(self.reader.read(65536), timeout)
            if not data:
                raise ConnectionResetError("the Sentinel closed the connection")
            self.values.extend(self.parser.feed(data))
        return self.values.popleft()

    def close(self) -> None:
        self.writer.close()


def _fields(reply: Value) -> dict[bytes, bytes]:
    if not isinstance(reply, list):
        return {}
    items = [item for item in reply if isinstance(item, bytes)]
    return dict(zip(items[0::2], items[1::2], strict=False))


async def _ask(address: Address, service: str, password: str | None, timeout: float) -> Master:
    link = await _Link.open(address, password, timeout)
    try:
        link.writer.write(encode_command("SENTINEL", "MASTER", service))
        reply = await link.command(timeout, "SENTINEL", "REPLICAS", service)
        replicas = await link.read(timeout)
    finally:
        link.close()
    if isinstance(reply, ReplyError):
        raise RedisUnavailable(f"Sentinel {address[0]}:{address[1]}: {reply}")
    state = _fields(reply)
    flags = set(state.get(b"flags", b"").decode().split(","))
    if "master" not in flags or flags & {"s_down", "o_down"}:
        raise RedisUnavailable(f"Sentinel {address[0]}:{address[1]} sees no healthy master")
    healthy = 0
    for replica in replicas if isinstance(replicas, list) else []:
        fields = _fields(replica)
        replica_flags = set(fields.get(b"flags", b"").decode().split(","))
        if fields.get(b"master-link-status") == b"ok" and not replica_flags & _UNHEALTHY:
            healthy += 1
    return Master(
        state[b"ip"].decode(),
        int(state[b"port"]),
        int(state.get(b"config-epoch", b"0")),
        healthy,
    )


_UNHEALTHY = {"s_down", "o_down", "disconnected"}


async def discover_master(
    sentinels: Sequence[Address],
    service: str,
    *,
    password: str | None = None,
    timeout: float = QUERY_TIMEOUT,
) -> Master:
    """Ask every Sentinel at once; return the master of the highest configuration epoch.

    Right after a failover some Sentinels still name the old master (they
    learn the new configuration from the leader a moment later); the epoch
    tells who is right. Raises :class:`RedisUnavailable` if none answers.
    """
    results = await asyncio.gather(
        *(_ask(address, service, password, timeout) for address in sentinels),
        return_exceptions=True,
    )
    masters = [result for result in results if isinstance(result, Master)]
    if not masters:
        errors = "; ".join(repr(result) for result in results)
        raise RedisUnavailable(f"no Sentinel names a master for {service!r}: {errors}")
    return max(masters, key=lambda master: master.epoch)


class SentinelWatcher:
    """Knows the current master of one service and tells listeners when it moves."""

    def __init__(
        self, sentinels: Sequence[Address], service: str, *, password: str | None = None
    ) -> None:
        self.sentinels = tuple(sentinels)
        self.service = service
        self.password = password
        self.pid = os.getpid()
        self._master: Master | None = None
        #: How many times the master moved since the watcher started.
        self.generation = 0
        self._listeners: dict[int, Callable[[Master], None]] = {}
        self._next_id = 0
        self._lock = threading.Lock()
        self._known = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._main: asyncio.Task[None] | None = None
        self._thread = threading.Thread(
            target=self._run_thread, name=f"ws4redis-sentinel-{service}", daemon=True
        )
        self._started = threading.Event()

    @property
    def master(self) -> Master | None:
        """The master the watcher knows of, None before the first answer."""
        return self._master

    def add_listener(self, listener: Callable[[Master], None]) -> Callable[[], None]:
        """Call ``listener(master)`` (in the watcher's thread) when the master moves.

        Returns the function that removes the listener again.
        """
        with self._lock:
            key = self._next_id
            self._next_id += 1
            self._listeners[key] = listener

        def remove() -> None:
            with self._lock:
                self._listeners.pop(key, None)

        return remove

    def start(self) -> SentinelWatcher:
        self._thread.start()
        self._started.wait(5)
        return self

    def wait_known(self, timeout: float) -> Master | None:
        """Block until the first answer of the Sentinels (or ``timeout``); return the master."""
        self._known.wait(timeout)
        return self._master

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the thread and close the Sentinel connections."""
        loop, main = self._loop, self._main
        if loop is not None and main is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(main.cancel)
            except RuntimeError:
                pass
        if self._thread.is_alive():
            self._thread.join(timeout)

    # -- the watcher's own thread ------------------------------------------

    def _run_thread(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._main = loop.create_task(self._run())
        self._started.set()
        try:
            loop.run_until_complete(self._main)
        except asyncio.CancelledError:
            pass
        finally:
            loop.close()

    async def _run(self) -> None:
        tasks = [asyncio.ensure_future(self._follow(address)) for address in self.sentinels]
        tasks.append(asyncio.ensure_future(self._poll()))
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _poll(self) -> None:
        while True:
            await self._check()
            await asyncio.sleep(CHECK_INTERVAL)

    async def _check(self) -> None:
        try:
            master = await discover_master(self.sentinels, self.service, password=self.password)
        except RedisUnavailable as exc:
            logger.debug("Asking the Sentinels for %r failed: %s", self.service, exc)
            return
        self._adopt(master)

    async def _switched(self, sentinel: Address, new: Address) -> None:
        """A Sentinel announced ``+switch-master`` to ``new``: adopt it now.

        That Sentinel has the new configuration by definition, so it alone is
        asked for the epoch (waiting for all could wait for a slow one).
        """
        try:
            master: Master | None = await _ask(sentinel, self.service, self.password, QUERY_TIMEOUT)
        except (RedisUnavailable, OSError, asyncio.TimeoutError, ValueError):
            master = None
        if master is None or master.address != new:
            # The event itself is news enough: its Sentinel won the election.
            epoch = self._master.epoch + 1 if self._master is not None else 0
            master = Master(new[0], new[1], epoch)
        self._adopt(master)

    def _adopt(self, master: Master) -> None:
        previous = self._master
        if previous is not None and master.epoch < previous.epoch:
            return  # a Sentinel that has not heard of the last failover yet
        if previous is not None and master.address == previous.address:
            self._master = master  # the same master; its replicas may have changed
            return
        # The master first, then the generation: a publisher that reads the new
        # generation can only connect to the new master.
        self._master = master
        if previous is not None:
            self.generation += 1
        self._known.set()
        if previous is None:
            return
        logger.warning(
            "Sentinel moved the master of %r from %s:%d to %s:%d (epoch %d); following",
            self.service,
            previous.host,
            previous.port,
            master.host,
            master.port,
            master.epoch,
        )
        with self._lock:
            listeners = list(self._listeners.values())
        for listener in listeners:
            try:
                listener(master)
            except Exception:
                logger.exception("A listener of the Sentinel watcher failed")

    async def _follow(self, address: Address) -> None:
        """Read ``+switch-master`` from one Sentinel; reconnect with backoff."""
        backoff = BACKOFF_FIRST
        while True:
            link: _Link | None = None
            try:
                link = await _Link.open(address, self.password, QUERY_TIMEOUT)
                await link.command(QUERY_TIMEOUT, "SUBSCRIBE", "+switch-master")
                backoff = BACKOFF_FIRST
                # Whatever happened while this connection was down.
                await self._check()
                while True:
                    value = await link.read(None)
                    if isinstance(value, list) and len(value) == 3 and value[0] == b"message":
                        data = value[2]
                        words = data.decode().split() if isinstance(data, bytes) else []
                        if len(words) == 5 and words[0] == self.service:
                            await self._switched(address, (words[3], int(words[4])))
            except asyncio.CancelledError:
                raise
            except (OSError, asyncio.TimeoutError, RedisUnavailable, ValueError) as exc:
                logger.debug("Sentinel %s:%d: %r; reconnecting", *address, exc)
            finally:
                if link is not None:
                    link.close()
            await asyncio.sleep(random.uniform(backoff / 2, backoff))
            backoff = min(backoff * 2, BACKOFF_MAX)


_watchers: dict[tuple[tuple[Address, ...], str, str | None], SentinelWatcher] = {}
_watchers_lock = threading.Lock()


def watcher(
    sentinels: Sequence[Address], service: str, *, password: str | None = None
) -> SentinelWatcher:
    """Return the running watcher of ``service`` for this process, starting it on first use."""
    key = (tuple(sentinels), service, password)
    with _watchers_lock:
        found = _watchers.get(key)
        # A forked child inherits the dict but not the thread.
        if found is None or found.pid != os.getpid():
            found = _watchers[key] = SentinelWatcher(sentinels, service, password=password).start()
    return found


def stop_watchers() -> None:
    """Stop every watcher of this process (tests, and processes that end)."""
    with _watchers_lock:
        found = list(_watchers.values())
        _watchers.clear()
    for item in found:
        if item.pid == os.getpid():
            item.stop()
