"""The per-socket queues of daphne and autobahn, and channels-redis's queue per channel of
the relay, kept in lists instead of deques.

An empty ``collections.deque`` costs 760 bytes (its first block of 64
slots), and every daphne socket keeps five of them for as long as it is
open: the three of daphne's ``asyncio.Queue`` (items, getters, putters), the
waiters of that queue's ``join()`` event, and autobahn's ``send_queue``.
They hold nothing or one item almost all the time; a list does the same for
56 bytes. Part of the accelerator: it touches asyncio's and autobahn's
internals, so it is used only after a self-test of asyncio's queue with the
lists in place has passed in this process (:func:`self_test`, run by the
probe), and only on deques it finds where it expects them.
"""

from __future__ import annotations

import asyncio
import collections
import threading
from typing import Any

from .probe import disable, enabled

__all__ = ["SmallQueue", "self_test", "shrink_layer_queues", "shrink_queues"]

_QUEUE_PARTS = ("_queue", "_getters", "_putters")


class SmallQueue(list):  # type: ignore[type-arg]
    """A list with the one method of a deque that asyncio's queue and autobahn use besides
    a list's own (``popleft``): for queues of a few items, 56 bytes instead of 760.

    ``popleft`` moves the items behind the first: draining 1,000 items costs
    0.24 µs an item against a deque's 0.15, and 11,000 items (about what one
    64 KiB read of the smallest frames puts into daphne's queue) 1.4 against
    0.12 µs. A longer queue needs a client whose frames are not handled as
    they come, and the consumer pauses reading from such a client.
    """

    __slots__ = ()

    def popleft(self) -> Any:
        return self.pop(0)


def _shrink_queue(queue: asyncio.Queue[Any]) -> bool:
    """Put ``queue``'s deques into lists, items and waiters kept in order; False if its
    parts are not the deques asyncio's queue was checked with."""
    parts = vars(queue)
    event = parts.get("_finished")
    waiters = vars(event).get("_waiters") if isinstance(event, asyncio.Event) else None
    found: list[Any] = [parts.get(name) for name in _QUEUE_PARTS]
    if not all(type(part) is collections.deque for part in [*found, waiters]):
        return False
    for name, part in zip(_QUEUE_PARTS, found, strict=True):
        parts[name] = SmallQueue(part)
    vars(event)["_waiters"] = SmallQueue(waiters)  # type: ignore[arg-type]
    return True


async def _exercise() -> None:
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[int] = asyncio.Queue()
    queue.put_nowait(1)
    if not _shrink_queue(queue):
        raise TypeError("asyncio.Queue does not keep its items and waiters in deques")
    queue.put_nowait(2)
    if queue.qsize() != 2 or queue.empty() or await queue.get() != 1:
        raise AssertionError("items out of order")
    if queue.get_nowait() != 2 or not queue.empty():
        raise AssertionError("items out of order")
    # A waiting get, woken by a put; a cancelled get leaves nothing behind.
    waiting = loop.create_task(queue.get())
    cancelled = loop.create_task(queue.get())
    await asyncio.sleep(0)
    cancelled.cancel()
    await asyncio.sleep(0)
    queue.put_nowait(3)
    if await asyncio.wait_for(waiting, 1) != 3 or not cancelled.cancelled():
        raise AssertionError("a waiting get was not woken")
    joined = loop.create_task(queue.join())
    queue.put_nowait(4)
    queue.get_nowait()
    queue.task_done()
    queue.task_done()
    queue.task_done()
    queue.task_done()
    await asyncio.wait_for(joined, 1)
    if [type(vars(queue)[name]) for name in _QUEUE_PARTS] != [SmallQueue] * 3:
        raise AssertionError("asyncio.Queue replaced its lists")


_failure: str | None = None
_tested = False


def self_test() -> str | None:
    """Run asyncio's queue with lists in place, once per process, in a thread of its own
    (a loop runs here already); return what went wrong, or None."""
    global _tested, _failure
    if not _tested:
        _tested = True
        failure: list[BaseException] = []

        def run() -> None:
            try:
                asyncio.run(_exercise())
            except BaseException as exc:
                failure.append(exc)

        thread = threading.Thread(target=run, name="ws4redis-queue-self-test", daemon=True)
        thread.start()
        thread.join(5)
        if thread.is_alive():
            failure.append(TimeoutError("it did not finish within 5 s"))
        _failure = f"{type(failure[0]).__name__}: {failure[0]}" if failure else None
    return _failure


def shrink_queues(protocol: Any) -> bool:
    """Keep the queues of an open daphne socket in lists; False if nothing was changed."""
    if not enabled("small_queues"):
        return False
    failure = self_test()  # the probe ran it already, unless it skipped this process's sockets
    if failure is not None:
        disable("small_queues", AssertionError(f"asyncio.Queue self-test: {failure}"))
        return False
    try:
        changed = False
        queue = getattr(protocol, "application_queue", None)
        if type(queue) is asyncio.Queue:  # daphne's own, not a subclass
            changed = _shrink_queue(queue)
        send_queue = vars(protocol).get("send_queue")
        if type(send_queue) is collections.deque:
            protocol.send_queue = SmallQueue(send_queue)
            changed = True
    except Exception as exc:
        disable("small_queues", exc)
        return False
    return changed


class _SmallQueues:
    """The core layer's factory of receive queues, with each new queue's deques in lists."""

    __slots__ = ("make",)

    def __init__(self, make: Any) -> None:
        self.make = make

    def __call__(self) -> Any:
        queue = self.make()
        _shrink_queue(queue)
        return queue


def shrink_layer_queues(layer: Any, channel: str) -> bool:
    """Keep the queues channels-redis receives ``channel``'s messages in (and, on the core
    layer, every later one) in lists; False if nothing was changed.

    The relay receives on one layer channel per Redis channel it watches, a
    logged-in socket's own channels included, and both of channels-redis's
    layers keep an ``asyncio.Queue`` per channel being received: 3 KB of empty
    deques each. The core ``RedisChannelLayer`` makes them on demand from its
    ``receive_buffer``'s factory, which is wrapped once per layer; the pub/sub
    layer makes one per subscribed channel (``channels``).
    """
    if not enabled("layer_queues") or self_test() is not None:
        return False
    try:
        buffer = vars(layer).get("receive_buffer")
        if type(buffer) is collections.defaultdict:
            if type(buffer.default_factory) is not _SmallQueues:
                buffer.default_factory = _SmallQueues(buffer.default_factory)
            return True
        channels = getattr(layer, "channels", None)
        queue = channels.get(channel) if type(channels) is dict else None
        return isinstance(queue, asyncio.Queue) and _shrink_queue(queue)
    except Exception as exc:
        disable("layer_queues", exc)
        return False


def reset() -> None:
    """Forget the self-test (tests)."""
    global _tested, _failure
    _tested, _failure = False, None
