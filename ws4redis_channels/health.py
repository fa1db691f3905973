"""What a process knows about its Redis connection: up since when, down since when and why.

The bridge tells :class:`RedisHealth` when its subscriber connection comes
up or goes down; the health record turns the cause into one sentence
(:func:`~ws4redis_channels.diagnostics.explain_redis_error`: "refused the
password (WRONGPASS)", not a repr), counts reconnects and seconds without
Redis for the metrics, and feeds the status report of
:mod:`ws4redis_channels.registry`.

It also counts one cause Redis does not announce: a subscriber dropped for
exceeding ``client-output-buffer-limit pubsub`` (the subscriber tells it
apart, :mod:`ws4redis_channels.subscriber`); the messages that were in
flight to this process are lost.
"""

from __future__ import annotations

import time

from .diagnostics import explain_redis_error
from .metrics import NullRecorder

__all__ = ["RedisHealth"]


class RedisHealth:
    """The state of one bridge's Redis connection, for logs, metrics and status."""

    def __init__(self, where: str, metrics: NullRecorder) -> None:
        self.where = where
        self.metrics = metrics
        self.connected_since: float | None = None  # wall-clock time
        self.down_since: float | None = None  # wall-clock time
        self.trouble: str | None = None  # why Redis is unusable now, in one sentence
        self.reconnects = 0
        self.output_buffer_drops = 0
        self._ever_up = False
        self._down_mark: float | None = None  # monotonic: start of unaccounted downtime

    def up(self) -> None:
        """The subscriber connection is ready."""
        reconnected = self._ever_up
        self._ever_up = True
        if reconnected:
            self.reconnects += 1
        self._account_downtime()
        self._down_mark = None
        self.connected_since = time.time()
        self.down_since = None
        self.trouble = None
        self.metrics.redis_up(reconnected)

    def down(self, reason: str, error: BaseException | None) -> str:
        """The connection was lost or could not be made; return why, in one sentence."""
        if error is not None:
            sentence = explain_redis_error(error, self.where)
        else:
            sentence = f"Redis at {self.where}: {reason}"
        self.trouble = sentence
        self.connected_since = None
        if self.down_since is None:
            self.down_since = time.time()
            self._down_mark = time.monotonic()
        self.metrics.redis_down()
        return sentence

    def tick(self) -> None:
        """Called every few seconds: count the seconds of an outage that goes on."""
        if self._down_mark is not None:
            self._account_downtime()
            self._down_mark = time.monotonic()

    def _account_downtime(self) -> None:
        if self._down_mark is not None:
            self.metrics.redis_down_for(time.monotonic() - self._down_mark)

    def output_buffer_drops_seen(self, total: int) -> None:
        """The subscriber has taken ``total`` losses for the output buffer limit so far.

        The subscriber names each in the log (it knows what it read before
        the close, and what ``INFO stats`` says); this counts the new ones.
        """
        new = total - self.output_buffer_drops
        if new > 0:
            self.output_buffer_drops = total
            for _ in range(new):
                self.metrics.output_buffer_drop()
