"""How long Redis has been unreachable, and ending the wait when it is too long.

Sockets stay open while the subscriber reconnects. If Redis is not back
within the bound (``WS4REDIS_OUTAGE_TIMEOUT``), the owner gives up on it
(closes every socket with 4503) so clients reconnect, possibly to a healthier
process, instead of waiting on a connection that receives nothing.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

__all__ = ["Outage"]

logger = logging.getLogger("ws4redis_channels.bridge")


class Outage:
    """Tracks one outage at a time: when it began, and the timer that ends the wait."""

    __slots__ = ("_give_up", "_handle", "_loop", "_where", "since", "timeout")

    def __init__(self, where: str, timeout: float, give_up: Callable[[], None]) -> None:
        self._where = where
        self.timeout = timeout
        self._give_up = give_up
        self._loop = asyncio.get_running_loop()
        self._handle: asyncio.TimerHandle | None = None
        self.since: float | None = None  # loop time the outage began, None while up

    @property
    def ongoing(self) -> bool:
        return self.since is not None

    def begin(self, reason: str, *, was_up: bool) -> None:
        """Redis is unreachable: log it once and start the timer (later calls do nothing)."""
        if self.since is not None:
            return
        self.since = self._loop.time()
        logger.log(
            logging.WARNING if was_up else logging.ERROR,
            "Redis at %s is unreachable (%s); retrying, sockets closed with 4503 after %ss",
            self._where,
            reason,
            self.timeout,
        )
        self._handle = self._loop.call_later(self.timeout, self._expired)

    def end(self, channels: int) -> None:
        """Redis is back: log how long it was away."""
        if self.since is not None:
            logger.warning(
                "Reconnected to Redis at %s after %.1fs; resubscribing %d channels",
                self._where,
                self._loop.time() - self.since,
                channels,
            )
        self.since = None
        self.cancel()

    def cancel(self) -> None:
        """Stop the timer (the owner closes)."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _expired(self) -> None:
        self._handle = None
        logger.error(
            "Redis at %s unreachable for %ss; closing its sockets with 4503",
            self._where,
            self.timeout,
        )
        self._give_up()
