"""Timeouts that do not count the time the event loop was too busy to run anything.

A reconnect storm (thousands of sockets opening at once after a restart)
keeps a process's event loop in long iterations, each full of other sockets'
handshakes. A plain ``asyncio.wait_for`` then times out work that was never
given a chance to run: the first connection to Redis "fails", the bridge
declares Redis down, and every socket of the storm is refused with 4503 for
as long as the storm lasts. :func:`wait_for` measures its timeout in loop
time minus the loop's lag: how late a 10 ms ticker wakes up. Any lateness
counts, however short: a saturated loop then advances the clock by one tick
per iteration, so work that needs a few iterations (a connect, a round trip)
cannot time out while the loop is busy with others, while a Redis that does
not answer still times out when the loop runs freely. (Counting only
lateness beyond 50 ms, as this module first did, let a storm of iterations of
40 ms each run the clock at almost full speed.)

``alive``, when given, is asked at the deadline whether there is evidence
that the other side is answering after all (a reply to something else came
in meanwhile): then the wait goes on for another ``timeout``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

__all__ = ["LoopLag", "wait_for"]

T = TypeVar("T")

TICK = 0.01
# Lateness that still counts as time: a free loop's timer jitter, no more.
SLACK = 0.002


class LoopLag:
    """Cumulative starvation of one event loop, measured while anyone waits."""

    _by_loop: dict[asyncio.AbstractEventLoop, LoopLag] = {}

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.lag = 0.0
        self.waiters = 0
        self._task: asyncio.Task[None] | None = None

    @classmethod
    def of(cls, loop: asyncio.AbstractEventLoop) -> LoopLag:
        lag = cls._by_loop.get(loop)
        if lag is None or lag.loop.is_closed():
            lag = cls._by_loop[loop] = cls(loop)
            for old in [k for k in cls._by_loop if k.is_closed()]:
                del cls._by_loop[old]
        return lag

    def enter(self) -> None:
        self.waiters += 1
        if self._task is None or self._task.done():
            self._task = self.loop.create_task(self._tick())

    def leave(self) -> None:
        self.waiters -= 1

    def effective(self) -> float:
        """Loop time that counts: the loop's clock minus its lag so far."""
        return self.loop.time() - self.lag

    async def _tick(self) -> None:
        while self.waiters > 0:
            began = self.loop.time()
            await asyncio.sleep(TICK)
            late = self.loop.time() - began - TICK
            if late > SLACK:
                self.lag += late


async def wait_for(
    aw: Awaitable[T], timeout: float, *, alive: Callable[[], bool] | None = None
) -> T:
    """``asyncio.wait_for``, with the loop's starvation not counted against ``timeout``.

    At the deadline, if ``alive()`` says the peer is answering, wait another
    ``timeout`` (asked again at the next deadline).
    """
    loop = asyncio.get_running_loop()
    task = asyncio.ensure_future(aw)
    lag = LoopLag.of(loop)
    lag.enter()
    try:
        deadline = lag.effective() + timeout
        while True:
            remaining = deadline - lag.effective()
            if remaining <= 0:
                if alive is not None and not task.done() and alive():
                    deadline = lag.effective() + timeout
                    continue
                break
            started, counted = loop.time(), lag.lag
            done, _ = await asyncio.wait({task}, timeout=remaining)
            if done:
                return task.result()
            # The ticker's wake-up from the same long iteration may run after
            # ours: let it count first, then add what it did not see.
            await asyncio.sleep(0)
            missed = loop.time() - started - remaining - (lag.lag - counted)
            if missed > SLACK:
                deadline += missed
    except BaseException:
        task.cancel()
        raise
    finally:
        lag.leave()
    if task.done():
        return task.result()
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        pass
    except Exception:  # it failed while being cancelled: still a timeout
        pass
    raise asyncio.TimeoutError(f"no result in {timeout}s of loop time")
