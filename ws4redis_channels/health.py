"""What a process knows about its Redis connection: up since when, down since when and why.

The bridge tells :class:`RedisHealth` when its subscriber connection comes
up or goes down; the health record turns the cause into one sentence
(:func:`~ws4redis_channels.diagnostics.explain_redis_error`: "refused the
password (WRONGPASS)", not a repr), counts reconnects and seconds without
Redis for the metrics, and feeds the status report of
:mod:`ws4redis_channels.registry`.

It also tells apart one cause Redis does not announce: a subscriber dropped
for exceeding ``client-output-buffer-limit pubsub``. After such a loss, the
``client_output_buffer_limit_disconnections`` counter of ``INFO stats`` has
grown; the messages that were in flight to this process are lost.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from .diagnostics import explain_redis_error
from .metrics import NullRecorder

__all__ = ["RedisHealth"]

logger = logging.getLogger("ws4redis_channels.bridge")

_DROPS_FIELD = "client_output_buffer_limit_disconnections"


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
        self._lost_while_up = False
        self._down_mark: float | None = None  # monotonic: start of unaccounted downtime
        self._drops_seen: int | None = None

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
        was_up = self.connected_since is not None
        self._lost_while_up = was_up
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

    async def check_output_buffer_drop(self, client: Any) -> None:
        """After (re)connecting: find out whether Redis dropped us for our output buffer."""
        try:
            info = await asyncio.wait_for(client.info("stats"), 5.0)
        except Exception as exc:
            logger.debug("INFO stats failed: %r", exc)
            return
        drops = info.get(_DROPS_FIELD) if isinstance(info, dict) else None
        if not isinstance(drops, int):
            return  # Redis < 7 does not count them
        seen, self._drops_seen = self._drops_seen, drops
        if seen is None or drops <= seen or not self._lost_while_up:
            return
        self.output_buffer_drops += 1
        self.metrics.output_buffer_drop()
        logger.error(
            "Redis at %s dropped this process's subscriber connection because its output "
            "buffer exceeded client-output-buffer-limit pubsub (%s went from %d to %d): the "
            "messages in flight to this process were lost. The process reads too slowly "
            "for the publish rate: add processes, or raise the limit in redis.conf",
            self.where,
            _DROPS_FIELD,
            seen,
            drops,
        )
