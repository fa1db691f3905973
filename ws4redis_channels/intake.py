"""How fast one process publishes what its clients send: never faster than it reads Redis.

Redis closes a pub/sub connection whose unread output passes
``client-output-buffer-limit pubsub`` (32 MB by default), and then every socket
of the process loses what was in flight. A process reads its subscriber
connection once per event-loop iteration (at most 256 KiB per read with
asyncio), but it can read and publish the frames of hundreds of clients in that
same iteration; a burst of large frames from many clients (50 sockets x 16 x
64 KiB) once made Redis drop the subscriber. So the frames a process publishes
are admitted against a budget of :data:`BUDGET` bytes (times the channels they
go to) per loop iteration, in arrival order; a publisher over the budget waits
for a later iteration, and its client is not read from meanwhile (see
:func:`~ws4redis_channels.accelerator.pause_reading`). Each iteration admits at
least one frame, so a frame larger than the budget waits at most its turn.
"""

from __future__ import annotations

import asyncio
import collections
import weakref

__all__ = ["BUDGET", "Intake", "current_intake"]

#: Bytes of client frames (payload x channels) published per event-loop iteration.
BUDGET = 128 * 1024


class Intake:
    """Admits client frames for publishing, at most ``budget`` bytes per loop iteration."""

    def __init__(self, budget: int = BUDGET) -> None:
        self.budget = budget
        self._loop = asyncio.get_running_loop()
        self._used = 0
        self._waiters: collections.deque[tuple[asyncio.Future[None], int]] = collections.deque()
        self._scheduled = False
        self.waited = 0  # frames that had to wait: how often the budget was reached

    def try_admit(self, size: int) -> bool:
        """Count ``size`` bytes against this iteration's budget if there is room (no queue)."""
        if self._waiters or (self._used and self._used + size > self.budget):
            return False
        self._used += size
        self._schedule()
        return True

    async def admit(self, size: int) -> None:
        """Return once ``size`` bytes may be published, in this iteration or a later one."""
        if self.try_admit(size):
            return
        self.waited += 1
        future: asyncio.Future[None] = self._loop.create_future()
        self._waiters.append((future, size))
        self._schedule()
        try:
            await future
        except asyncio.CancelledError:
            if not future.cancelled():
                self._used -= size
            raise

    def _schedule(self) -> None:
        if not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self._next_iteration)

    def _next_iteration(self) -> None:
        self._scheduled = False
        self._used = 0
        waiters = self._waiters
        while waiters:
            future, size = waiters[0]
            if future.done():  # cancelled
                waiters.popleft()
                continue
            if self._used and self._used + size > self.budget:
                break
            waiters.popleft()
            self._used += size
            future.set_result(None)
        if self._used or waiters:
            self._schedule()


_intakes: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Intake] = weakref.WeakKeyDictionary()


def current_intake() -> Intake:
    """Return the intake of the running event loop, creating it on first use."""
    loop = asyncio.get_running_loop()
    intake = _intakes.get(loop)
    if intake is None:
        intake = _intakes[loop] = Intake()
    return intake
