"""The outbound side of one websocket: deliver messages fast, in order, and bounded.

The bridge fans a message out to many sockets from one loop over their
:class:`Outlet` objects, without a task per socket. Two ways out exist:

* Under daphne, frames go past its ASGI ``send``
  (:class:`~ws4redis_channels.accelerator.DaphneSocket`): on a plain TCP
  connection written straight to the socket, under TLS as autobahn's prepared
  messages. Messages
  delivered while the loop runs one callback (e.g. every message of one read
  from Redis) are gathered per socket and written with one ``send`` when the
  callback is over: a burst costs one system call per socket, not one per
  message, and a lone message goes out right after its fan-out.
* Anywhere else, through the ASGI ``send``. It is a coroutine, but daphne's
  never suspends, so :meth:`Outlet.deliver` steps it by hand; only a server
  whose ``send`` really waits (back-pressure) makes the outlet start a task,
  and further messages queue behind it.

Either way the bytes waiting for a client are bounded: the queue here and,
under daphne, Twisted's write buffer for the socket (pongs included). Past
``max_buffer`` bytes the socket is reported as too slow (closed with 4507), so
a client that stops reading costs the server a bounded amount of memory.

Never mute: if the fast path fails, the socket's messages go through ASGI.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import weakref
from collections.abc import Callable, Coroutine
from typing import Any

from .accelerator import Send, attach, raw_send
from .frames import Batch, Outbound

__all__ = ["Outlet"]

logger = logging.getLogger(__name__)


def _size(message: dict[str, Any]) -> int:
    data = message.get("text")
    if data is None:
        data = message.get("bytes") or b""
    return len(data)


async def _resume(coroutine: Coroutine[Any, Any, Any], yielded: Any) -> None:
    """Run a coroutine that was stepped by hand and suspended on ``yielded`` to its end."""
    while True:
        try:
            if yielded is None:
                await asyncio.sleep(0)
            else:
                await asyncio.wait((yielded,))
        except BaseException as exc:
            # Cancelled while waiting: pass it on, so the send can clean up.
            try:
                coroutine.throw(exc)
            except BaseException:
                pass
            else:
                coroutine.close()
            raise
        try:
            yielded = coroutine.send(None)
        except StopIteration:
            return


class _FlushQueue:
    """The outlets of one event loop with frames waiting for the end of the callback."""

    _queues: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _FlushQueue] = (
        weakref.WeakKeyDictionary()
    )

    def __init__(self) -> None:
        # No reference to the loop: it is this queue's key in a weak mapping.
        self.outlets: list[Outlet] = []

    @classmethod
    def current(cls) -> _FlushQueue:
        loop = asyncio.get_running_loop()
        queue = cls._queues.get(loop)
        if queue is None:
            queue = cls._queues[loop] = cls()
        return queue

    def add(self, outlet: Outlet) -> None:
        if not self.outlets:
            asyncio.get_running_loop().call_soon(self.flush)
        self.outlets.append(outlet)

    def flush(self) -> None:
        outlets, self.outlets = self.outlets, []
        for outlet in outlets:
            try:
                outlet._flush()
            except Exception:
                # Never mute: this socket goes on through ASGI.
                logger.exception("Writing to a websocket failed; it uses ASGI from now on")
                outlet._use_asgi()


class Outlet:
    """Delivers ASGI messages to one socket and keeps what waits for it bounded."""

    __slots__ = (
        "__weakref__",
        "_backlog",
        "_backlog_bytes",
        "_flush_queue",
        "_max_buffer",
        "_on_overflow",
        "_on_redis_lost",
        "_pending",
        "_send",
        "_socket",
        "_task",
        "closed",
    )

    def __init__(
        self,
        send: Send,
        *,
        max_buffer: int,
        on_overflow: Callable[[], None],
        on_redis_lost: Callable[[], None],
        direct_writes: bool = True,
    ) -> None:
        self._send = raw_send(send)
        sock = self._socket = attach(self._send)
        if sock is not None:
            sock.prefer_close_frames()
            sock.count_pongs(self._check_bound)
            if not direct_writes:
                sock.use_asgi()
        self._flush_queue = _FlushQueue.current()
        # Messages gathered for the next flush; None unless frames go past ASGI,
        # the socket is released and not closed (then deliver() is short).
        self._pending: list[Batch] | None = None
        self._max_buffer = max_buffer
        self._on_overflow = on_overflow
        self._on_redis_lost = on_redis_lost
        # Messages are held until release(): the socket is not accepted yet.
        self._backlog: collections.deque[Outbound] | None = collections.deque()
        self._backlog_bytes = 0
        self._task: asyncio.Task[None] | None = None
        self.closed = False

    def release(self) -> None:
        """Start sending: deliver what was held back since the outlet was made."""
        held = self._backlog
        if held is None or self._task is not None:
            return
        self._backlog = None
        self._backlog_bytes = 0
        sock = self._socket
        if sock is not None:
            sock.opened()
            if sock.fast and not self.closed:
                self._pending = []
        if held:
            self.deliver(Batch(list(held)))

    def buffered(self) -> int:
        """Return how many bytes wait to be written to this socket (as far as known)."""
        queued = self._backlog_bytes + sum(len(batch.data) for batch in self._pending or ())
        if self._socket is not None:
            queued += self._socket.queued()
        return queued

    def _check_bound(self) -> None:
        """Close the socket as too slow if what waits for it is over the bound."""
        sock = self._socket
        if not self.closed and sock is not None and sock.queued() > self._max_buffer:
            self._overflow()

    def _use_asgi(self) -> None:
        pending, self._pending = self._pending, None
        if self._socket is not None:
            self._socket.use_asgi()
        for batch in pending or ():
            for message in batch.messages:
                self._send_now(message)

    def deliver(self, batch: Batch) -> None:
        """Send a batch of messages soon (direct writes) or now (ASGI), else queue them."""
        pending = self._pending
        if pending is not None:
            # The fast path: gather it; the flush queue writes at the end of the callback.
            if not pending:
                self._flush_queue.add(self)
            pending.append(batch)
            return
        for message in batch.messages:
            if self.closed:
                return
            if self._backlog is not None:
                self._backlog.append(message)
                self._backlog_bytes += _size(message)
                if self._backlog_bytes > self._max_buffer:
                    self._overflow()
                continue
            self._send_now(message)

    def _flush(self) -> None:
        pending = self._pending
        if not pending:
            return
        self._pending = []
        sock = self._socket
        assert sock is not None
        if sock.write(pending):
            if sock.queued() > self._max_buffer:
                self._overflow()
            return
        # Not an open plain connection between messages (any more): use ASGI.
        self._pending = None
        for batch in pending:
            for message in batch.messages:
                self._send_now(message)

    def _send_now(self, message: Outbound) -> None:
        if self._backlog is not None:
            self._backlog.append(message)
            self._backlog_bytes += _size(message)
            return
        coroutine = self._send(message)
        if not isinstance(coroutine, Coroutine):
            # Not a coroutine we can step (another server's awaitable): a task.
            self._backlog = collections.deque()
            self._task = asyncio.ensure_future(self._drain(None, coroutine))
            return
        try:
            yielded = coroutine.send(None)
        except StopIteration:
            sock = self._socket
            if sock is not None and sock.sent(_size(message)) > self._max_buffer:
                self._overflow()
            return
        except Exception:
            logger.debug("Sending to a websocket failed", exc_info=True)
            return
        self._backlog = collections.deque()
        self._task = asyncio.ensure_future(self._drain(coroutine, yielded))

    async def _drain(self, coroutine: Any, yielded: Any) -> None:
        try:
            if coroutine is None:
                await yielded
            else:
                await _resume(coroutine, yielded)
            backlog = self._backlog
            while backlog:
                message = backlog.popleft()
                self._backlog_bytes -= _size(message)
                await self._send(message)
        except Exception:
            logger.debug("Sending to a websocket failed", exc_info=True)
        finally:
            self._backlog = None
            self._backlog_bytes = 0

    def stop(self) -> None:
        """Deliver nothing more (the socket is closing)."""
        self.closed = True
        self._pending = None

    def _overflow(self) -> None:
        self.closed = True
        self._pending = None
        if self._backlog is not None:
            self._backlog.clear()
            self._backlog_bytes = 0
        self._on_overflow()

    def redis_lost(self) -> None:
        """Called by the bridge when Redis stayed unreachable past the bound."""
        if not self.closed:
            self._on_redis_lost()

    def going_away(self) -> None:
        """Called at server shutdown: close the socket with 1001 (under daphne)."""
        self._flush()
        self.closed = True
        self._pending = None
        if self._socket is not None:
            # ASGI apps may only close with 1000 or 3000-4999 under daphne;
            # 1001 "going away" is sent on the protocol itself.
            self._socket.going_away()

    def close_frame(self, code: int, reason: str) -> bool:
        """Close with ``code`` and ``reason`` past ASGI (daphne drops reasons); False if the
        caller must close through ASGI."""
        sock = self._socket
        return sock is not None and sock.close(code, reason)

    async def aclose(self) -> None:
        """Stop delivering and wait for a send in progress."""
        self.closed = True
        self._pending = None
        task = self._task
        if task is not None and not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
