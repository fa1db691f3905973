"""Where every live server process is listed: a heartbeat key per process in Redis.

Each process's runtime refreshes a small JSON report (host, pid, sockets,
subscriptions, accelerations, state of its Redis connection) under its own
key, with a time to live of a few heartbeats, and adds the key to an index
(a sorted set scored by the time of the last report). ``manage.py
ws4redis_status`` reads the index and the reports: a process whose key
expired without a clean shutdown is listed as silent. A process that stops
cleanly removes its key.

The keys share the hash tag ``{status}``, so they live in one slot of a
Redis Cluster, and have three or more ``:``-separated parts under the prefix,
which no channel name of the classic or typed conventions can equal.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import redis
import redis.asyncio

__all__ = [
    "INTERVAL",
    "Heartbeat",
    "ProcessReport",
    "index_key",
    "list_processes",
    "process_key",
]

logger = logging.getLogger(__name__)

INTERVAL = 5.0  # seconds between reports (WS4REDIS_STATUS_INTERVAL)
FORGET_AFTER = 3600.0  # silent processes are listed for an hour, then dropped
STOP_TIMEOUT = 5.0  # how long a stopping process waits for Redis to take its last writes


def _base(prefix: str) -> str:
    return f"{prefix}:_ws4redis_:{{status}}" if prefix else "_ws4redis_:{status}"


def index_key(prefix: str = "") -> str:
    """Return the key of the sorted set that indexes the process reports."""
    return f"{_base(prefix)}:index"


def process_key(prefix: str, ident: str) -> str:
    """Return the key of one process's report."""
    return f"{_base(prefix)}:process:{ident}"


@dataclass
class ProcessReport:
    """What one process says about itself, or what is known of a silent one."""

    ident: str
    host: str = "?"
    pid: int = 0
    sockets: int = 0
    subscriptions: int = 0
    accelerations: dict[str, bool] = field(default_factory=dict)
    redis_connected: bool = False
    connected_since: float | None = None
    down_since: float | None = None
    redis_trouble: str | None = None
    reconnects: int = 0
    output_buffer_drops: int = 0
    started: float | None = None
    updated: float | None = None
    version: str = ""
    silent: bool = False  # no report within its time to live

    @property
    def trouble(self) -> str | None:
        """Return why this process needs attention, or None."""
        if self.silent:
            return "no heartbeat: the process is stuck, was killed, or cannot reach Redis"
        if self.redis_trouble:
            return self.redis_trouble
        if not self.redis_connected:
            return "not connected to Redis"
        return None

    @classmethod
    def from_json(cls, ident: str, data: bytes | str) -> ProcessReport:
        fields = json.loads(data)
        known = {name for name in cls.__dataclass_fields__ if name != "ident"}
        return cls(ident=ident, **{k: v for k, v in fields.items() if k in known})


def _new_ident() -> str:
    # One process may run several event loops (tests), each with a bridge.
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class Heartbeat:
    """Refreshes one process's report in Redis every :data:`INTERVAL` seconds."""

    def __init__(
        self,
        client: redis.asyncio.Redis,
        prefix: str,
        snapshot: Callable[[], Mapping[str, Any]],
        *,
        interval: float = INTERVAL,
        on_tick: Callable[[], None] | None = None,
        report: bool = True,
    ) -> None:
        self.client = client
        self.interval = interval
        self.ttl = 3 * interval  # a report outlives two missed heartbeats
        self.prefix = prefix
        self.ident = _new_ident()
        self.key = process_key(prefix, self.ident)
        self.started = time.time()
        self._snapshot = snapshot
        self._on_tick = on_tick
        self._report = report  # False: only call on_tick (WS4REDIS_STATUS_INTERVAL = 0)
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._stopping = False

    def start(self) -> None:
        if self._task is None:
            self._stopping = False
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name="ws4redis-heartbeat"
            )

    def refresh_soon(self) -> None:
        """Report now rather than at the next tick (e.g. after a reconnect)."""
        self._wake.set()

    def report(self) -> dict[str, Any]:
        from . import __version__

        host, pid, _ = self.ident.rsplit(":", 2)
        now = time.time()
        return {
            "host": host,
            "pid": int(pid),
            "started": self.started,
            "updated": now,
            "version": __version__,
            **self._snapshot(),
        }

    async def write(self) -> None:
        report = self.report()
        # Not a MULTI: redis-py before 6 has no transactions on a cluster, and the two
        # commands need none (a report without its index entry expires unseen).
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.set(self.key, json.dumps(report), px=max(1, int(self.ttl * 1000)))
            pipe.zadd(index_key(self.prefix), {self.ident: report["updated"]})
            await pipe.execute()

    async def _run(self) -> None:
        while not self._stopping:
            if self._on_tick is not None:
                try:
                    self._on_tick()
                except Exception:
                    logger.exception("Updating the ws4redis metrics failed")
            try:
                if self._report:
                    await self.write()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # The bridge reports Redis outages; a missed heartbeat is no news.
                logger.debug("Could not refresh the ws4redis status key: %r", exc)
            if self._stopping:
                break
            try:
                await asyncio.wait_for(self._wake.wait(), self.interval)
            except asyncio.TimeoutError:
                pass
            self._wake.clear()

    async def stop(self) -> None:
        """Stop reporting and remove the report: a clean exit is not a silent process."""
        task, self._task = self._task, None
        if task is not None:
            # Let a write in flight finish rather than cancel it: a cancelled write has
            # already been sent, and it could reach Redis after the removal below (on
            # another connection), bringing the report back until its TTL.
            self._stopping = True
            self._wake.set()
            try:
                await asyncio.wait_for(asyncio.shield(task), STOP_TIMEOUT)
            except asyncio.TimeoutError:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        if not self._report:
            return
        try:
            async with self.client.pipeline(transaction=False) as pipe:
                pipe.delete(self.key)
                pipe.zrem(index_key(self.prefix), self.ident)
                await asyncio.wait_for(pipe.execute(), STOP_TIMEOUT)
        except Exception as exc:
            logger.debug("Could not remove the ws4redis status key: %r", exc)


def list_processes(client: redis.Redis, prefix: str = "") -> list[ProcessReport]:
    """Return the reports of every process that reported within the last hour."""
    index = index_key(prefix)
    now = time.time()
    client.zremrangebyscore(index, "-inf", now - FORGET_AFTER)
    entries: list[tuple[bytes, float]] = client.zrange(  # type: ignore[assignment]
        index, 0, -1, withscores=True
    )
    if not entries:
        return []
    values = client.mget([process_key(prefix, ident.decode()) for ident, _ in entries])
    reports = []
    for (raw_ident, score), value in zip(entries, values, strict=True):
        ident = raw_ident.decode()
        if value is not None:
            reports.append(ProcessReport.from_json(ident, value))
            continue
        host, _, rest = ident.partition(":")
        pid = rest.partition(":")[0]
        reports.append(
            ProcessReport(
                ident=ident,
                host=host,
                pid=int(pid) if pid.isdigit() else 0,
                updated=score,
                silent=True,
            )
        )
    reports.sort(key=lambda r: (r.host, r.pid, r.ident))
    return reports
