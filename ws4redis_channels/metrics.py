"""Prometheus metrics of the websocket server: sockets, handshakes, deliveries, Redis health.

The metrics are ``prometheus_client`` objects created on first use (nothing
happens at import). Code on the delivery path calls a :class:`Recorder`,
once per *fan-out*, never per socket, and even that only adds to plain
integers: ``prometheus_client`` takes a lock (and, in multiprocess mode,
writes a memory-mapped file) per update, which cost 12-36 µs per fan-out
when measured, too much next to a fan-out to a few hundred sockets. The sums
reach the metrics when they are read (:func:`render`) and every few seconds
(:meth:`Recorder.flush`, from the runtime). With ``WS4REDIS_METRICS = False``
the recorder is a :class:`NullRecorder` that does nothing.

When the environment variable ``PROMETHEUS_MULTIPROC_DIR`` names a directory
(set it before the server starts; ``prometheus_client`` reads it once, at
import), every process of a host writes its values there and a scrape of any
of them (:func:`ws4redis_channels.views.metrics`) reports the host's totals:
counters summed over all processes that ever ran since the directory was
emptied, gauges over the live ones. Give all daphne processes of one host
the same directory, a different one per host, and empty it when the service
starts (``ExecStartPre=`` in systemd, or a tmpfs).
"""

from __future__ import annotations

import bisect
import contextlib
import contextvars
import glob
import logging
import os
import re
import time
from collections.abc import Iterator, Mapping
from typing import Any

__all__ = [
    "METRICS",
    "NullRecorder",
    "Recorder",
    "multiprocess_dir",
    "publishing_as",
    "recorder",
    "render",
]

logger = logging.getLogger(__name__)

# The names, their kind and help text; the docs' table is checked against it.
METRICS: dict[str, tuple[str, str]] = {
    "ws4redis_sockets_open": ("gauge", "Websockets open now (accepted and not closed)."),
    "ws4redis_handshakes_total": (
        "counter",
        "Websocket handshakes by outcome (accepted or refused) and the close code or "
        "HTTP status of a refusal.",
    ),
    "ws4redis_accept_pauses_total": (
        "counter",
        "Times daphne stopped accepting connections while WS4REDIS_MAX_HANDSHAKES "
        "handshakes were in progress (a reconnect storm).",
    ),
    "ws4redis_deliveries_total": ("counter", "Messages written to websockets."),
    "ws4redis_delivered_bytes_total": (
        "counter",
        "Payload bytes of the messages written to websockets (without framing).",
    ),
    "ws4redis_fanout_seconds": (
        "histogram",
        "Time from reading messages from Redis until they are handed to every local socket.",
    ),
    "ws4redis_published_messages_total": (
        "counter",
        "Messages published through the app, per Redis channel, by source "
        "(socket, python, command).",
    ),
    "ws4redis_closes_total": (
        "counter",
        "Open websockets closed by the server, by close code (4429 rate limit, "
        "4507 slow client, 4503 Redis, 1001 shutdown...).",
    ),
    "ws4redis_redis_connected": (
        "gauge",
        "1 while the subscriber connection to Redis is up (per host: 0 if any process is down).",
    ),
    "ws4redis_redis_reconnects_total": (
        "counter",
        "Times the subscriber connection to Redis was re-established after a loss.",
    ),
    "ws4redis_redis_down_seconds_total": (
        "counter",
        "Seconds the subscriber connection to Redis was down.",
    ),
    "ws4redis_redis_output_buffer_drops_total": (
        "counter",
        "Times Redis dropped the subscriber connection for exceeding "
        "client-output-buffer-limit pubsub (messages in flight were lost).",
    ),
    "ws4redis_subscriptions": ("gauge", "Redis channels the bridges are subscribed to."),
    "ws4redis_acceleration_enabled": (
        "gauge",
        "1 if an acceleration is on (per host: in every live process), by name.",
    ),
}

# Fan-outs take from microseconds (a few sockets) to tens of milliseconds.
FANOUT_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
)

SOURCES = ("socket", "python", "command")
_source: contextvars.ContextVar[str] = contextvars.ContextVar("ws4redis_source", default="python")


def multiprocess_dir() -> str | None:
    """Return the directory shared by the processes of this host, if one is set."""
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


@contextlib.contextmanager
def publishing_as(source: str) -> Iterator[None]:
    """Count the publications made inside the block under ``source`` (e.g. "command")."""
    token = _source.set(source)
    try:
        yield
    finally:
        _source.reset(token)


_LIVE_FILE = re.compile(r"gauge_live\w+?_(\d+)\.db$")


def _forget_dead_processes(path: str) -> None:
    """Drop the live-gauge files of processes of this host that no longer run.

    ``prometheus_client`` keeps a dead process's gauges until told; a process
    killed with SIGKILL would otherwise count its sockets forever.
    """
    from prometheus_client import multiprocess

    pids = set()
    for name in glob.glob(os.path.join(path, "gauge_live*_*.db")):
        match = _LIVE_FILE.search(name)
        if match:
            pids.add(int(match.group(1)))
    for pid in pids:
        if pid == os.getpid():
            continue
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            multiprocess.mark_process_dead(pid, path)  # type: ignore[no-untyped-call]
        except PermissionError:
            pass  # alive, another user's


class _Metrics:
    """The prometheus_client objects, created once per process."""

    def __init__(self) -> None:
        from prometheus_client import Counter, Gauge, Histogram

        def help_of(name: str) -> str:
            return METRICS[name][1]

        self.sockets_open = Gauge(
            "ws4redis_sockets_open", help_of("ws4redis_sockets_open"), multiprocess_mode="livesum"
        )
        self.handshakes = Counter(
            "ws4redis_handshakes",
            help_of("ws4redis_handshakes_total"),
            ["outcome", "code"],
        )
        self.accept_pauses = Counter(
            "ws4redis_accept_pauses", help_of("ws4redis_accept_pauses_total")
        )
        self.deliveries = Counter("ws4redis_deliveries", help_of("ws4redis_deliveries_total"))
        self.delivered_bytes = Counter(
            "ws4redis_delivered_bytes", help_of("ws4redis_delivered_bytes_total")
        )
        self.fanout = Histogram(
            "ws4redis_fanout_seconds", help_of("ws4redis_fanout_seconds"), buckets=FANOUT_BUCKETS
        )
        self.published = Counter(
            "ws4redis_published_messages",
            help_of("ws4redis_published_messages_total"),
            ["source"],
        )
        self.closes = Counter("ws4redis_closes", help_of("ws4redis_closes_total"), ["code"])
        self.redis_connected = Gauge(
            "ws4redis_redis_connected",
            help_of("ws4redis_redis_connected"),
            multiprocess_mode="livemin",
        )
        self.reconnects = Counter(
            "ws4redis_redis_reconnects", help_of("ws4redis_redis_reconnects_total")
        )
        self.down_seconds = Counter(
            "ws4redis_redis_down_seconds", help_of("ws4redis_redis_down_seconds_total")
        )
        self.buffer_drops = Counter(
            "ws4redis_redis_output_buffer_drops",
            help_of("ws4redis_redis_output_buffer_drops_total"),
        )
        self.subscriptions = Gauge(
            "ws4redis_subscriptions", help_of("ws4redis_subscriptions"), multiprocess_mode="livesum"
        )
        self.accelerations = Gauge(
            "ws4redis_acceleration_enabled",
            help_of("ws4redis_acceleration_enabled"),
            ["name"],
            multiprocess_mode="livemin",
        )
        # Children looked up once: labels() costs a dict lookup and a lock.
        self.published_by = {source: self.published.labels(source) for source in SOURCES}
        for source in SOURCES:
            self.published_by[source].inc(0)  # every source shows up, at 0
        self.handshakes.labels("accepted", "").inc(0)

    _instance: _Metrics | None = None

    @classmethod
    def get(cls) -> _Metrics:
        if cls._instance is None:
            path = multiprocess_dir()
            if path:
                _forget_dead_processes(path)
            cls._instance = cls()
        return cls._instance


class NullRecorder:
    """Records nothing: ``WS4REDIS_METRICS = False``."""

    enabled = False

    def socket_opened(self) -> None:
        pass

    def socket_closed(self) -> None:
        pass

    def handshake(self, code: int | None) -> None:
        pass

    def accept_paused(self) -> None:
        pass

    def delivered(self, messages: int, size: int) -> None:
        pass

    def fanout_took(self, seconds: float) -> None:
        pass

    def fanout_took_since(self, start: float) -> None:
        pass

    def published(self, channels: int, source: str | None = None) -> None:
        pass

    def closed(self, code: int, count: int = 1) -> None:
        pass

    def redis_up(self, reconnected: bool) -> None:
        pass

    def redis_down(self) -> None:
        pass

    def redis_down_for(self, seconds: float) -> None:
        pass

    def output_buffer_drop(self) -> None:
        pass

    def subscriptions(self, count: int) -> None:
        pass

    def accelerations(self, states: Mapping[str, bool]) -> None:
        pass

    def process_exits(self) -> None:
        pass

    def flush(self) -> None:
        pass


class Recorder(NullRecorder):
    """Records into the process's (or the host's, in multiprocess mode) metrics."""

    enabled = True

    def __init__(self) -> None:
        self._m = _Metrics.get()
        # What the fan-outs added since the last flush.
        self._deliveries = 0
        self._bytes = 0
        self._fanouts = [0] * (len(FANOUT_BUCKETS) + 1)  # per bucket, the last is +Inf
        self._fanout_sum = 0.0

    def socket_opened(self) -> None:
        self._m.sockets_open.inc()

    def socket_closed(self) -> None:
        self._m.sockets_open.dec()

    def handshake(self, code: int | None) -> None:
        """Count a handshake: accepted (``code`` None) or refused with a close code/status."""
        if code is None:
            self._m.handshakes.labels("accepted", "").inc()
        else:
            self._m.handshakes.labels("refused", str(int(code))).inc()

    def delivered(self, messages: int, size: int) -> None:
        """Count ``messages`` writes to sockets carrying ``size`` payload bytes in all."""
        self._deliveries += messages
        self._bytes += size

    def fanout_took(self, seconds: float) -> None:
        self._fanouts[bisect.bisect_left(FANOUT_BUCKETS, seconds)] += 1
        self._fanout_sum += seconds

    def fanout_took_since(self, start: float) -> None:
        """Observe the time since ``start`` (``time.perf_counter()``)."""
        self.fanout_took(time.perf_counter() - start)

    def flush(self) -> None:
        """Hand what the fan-outs added since the last flush to ``prometheus_client``."""
        m = self._m
        deliveries, self._deliveries = self._deliveries, 0
        size, self._bytes = self._bytes, 0
        if deliveries:
            m.deliveries.inc(deliveries)
        if size:
            m.delivered_bytes.inc(size)
        counts, self._fanouts = self._fanouts, [0] * len(self._fanouts)
        total, self._fanout_sum = self._fanout_sum, 0.0
        if not any(counts):
            return
        histogram: Any = m.fanout
        buckets, sum_value = getattr(histogram, "_buckets", None), getattr(histogram, "_sum", None)
        if isinstance(buckets, list) and len(buckets) == len(counts) and sum_value is not None:
            # prometheus_client observes one value at a time; add the counts at once.
            for bucket, count in zip(buckets, counts, strict=True):
                if count:
                    bucket.inc(count)
            sum_value.inc(total)
            return
        # Another layout of its internals: observe each fan-out at its bucket's bound.
        bounds = (*FANOUT_BUCKETS, FANOUT_BUCKETS[-1] * 2)
        for bound, count in zip(bounds, counts, strict=True):
            for _ in range(count):
                histogram.observe(bound)

    def published(self, channels: int, source: str | None = None) -> None:
        """Count one message published on ``channels`` channels."""
        child = self._m.published_by.get(source or _source.get())
        if child is None:
            child = self._m.published.labels(source or _source.get())
        child.inc(channels)

    def closed(self, code: int, count: int = 1) -> None:
        """Count ``count`` open sockets closed by the server with ``code``."""
        self._m.closes.labels(str(int(code))).inc(count)

    def redis_up(self, reconnected: bool) -> None:
        self._m.redis_connected.set(1)
        if reconnected:
            self._m.reconnects.inc()

    def redis_down(self) -> None:
        self._m.redis_connected.set(0)

    def redis_down_for(self, seconds: float) -> None:
        if seconds > 0:
            self._m.down_seconds.inc(seconds)

    def output_buffer_drop(self) -> None:
        self._m.buffer_drops.inc()

    def accept_paused(self) -> None:
        self._m.accept_pauses.inc()

    def subscriptions(self, count: int) -> None:
        self._m.subscriptions.set(count)

    def accelerations(self, states: Mapping[str, bool]) -> None:
        for name, on in states.items():
            self._m.accelerations.labels(name).set(1 if on else 0)

    def process_exits(self) -> None:
        """The process stops serving: its live gauges leave the host's totals."""
        self.flush()
        m = self._m
        m.sockets_open.set(0)
        m.subscriptions.set(0)
        path = multiprocess_dir()
        if path:
            from prometheus_client import multiprocess

            multiprocess.mark_process_dead(os.getpid(), path)  # type: ignore[no-untyped-call]


_NULL = NullRecorder()
_recorder: Recorder | None = None


def recorder() -> NullRecorder:
    """Return the recorder the settings ask for (``WS4REDIS_METRICS``)."""
    global _recorder
    from .conf import conf

    if not conf.WS4REDIS_METRICS:
        return _NULL
    if _recorder is None:
        _recorder = Recorder()
    return _recorder


def render(accept: str = "") -> tuple[bytes, str]:
    """Return the exposition text of this process (or host) and its content type."""
    from prometheus_client import REGISTRY, CollectorRegistry, exposition

    registry: Any = REGISTRY
    path = multiprocess_dir()
    if path:
        from prometheus_client import multiprocess

        _forget_dead_processes(path)  # e.g. a process killed with SIGKILL since
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path)  # type: ignore[no-untyped-call]
    _Metrics.get()  # every metric is listed, even before the first websocket
    if _recorder is not None:
        _recorder.flush()  # this process's numbers are exact; others' flush every few seconds
    encoder, content_type = exposition.choose_encoder(accept)
    return encoder(registry), content_type
