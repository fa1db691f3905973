"""The scenarios: what the client does to a freshly started server and what it measures.

Every scenario warms the server up (a few sockets open, receive a probe and
close), opens its sockets, waits until each of them receives a probe
message (so "subscribed" means the same for every design), and only then
opens the measured window. Waiting is always bounded: what has not arrived
by a round's deadline, or once no frame arrived for ``quiet`` seconds while
the server sat idle, is counted as lost.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import math
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from typing import Any

from .client import (
    HttpPublisher,
    Meter,
    Publisher,
    Socket,
    close_all,
    make_payload,
    open_sockets,
    payload_seq,
    payload_stamp,
    probe_ready,
)
from .measure import (
    cpu_ns,
    cpu_seconds,
    machine_busy_seconds,
    own_cpu_seconds,
    redis_connections,
    rss_kb,
)
from .profile import Profiler
from .servers import Running

__all__ = [
    "FULL",
    "QUICK",
    "SCENARIOS",
    "SCENARIO_ENV",
    "Bench",
    "Sizes",
    "connect_publisher",
]

FACILITY = "bench"
CHANNEL = b"_broadcast_:" + FACILITY.encode()
PATH = f"/ws/{FACILITY}?subscribe-broadcast"
POSITIONS_PATH = PATH + "&positions"
# The product with a history: what the burst1k-app, burst1k-pos and steady-pos scenarios need.
HISTORY_ENV = {"WS4REDIS_HISTORY_SIZE": "1000", "WS4REDIS_HISTORY_TTL": "300"}
HOST = "127.0.0.1"


@dataclass(frozen=True)
class Sizes:
    connect_sockets: int
    concurrency: int
    burst1k_sockets: int
    burst1k_messages: int
    burst5k_sockets: int
    burst5k_messages: int
    rounds: int
    steady_sockets: int
    steady_rate: float
    steady_seconds: float
    idle_sockets: int
    user_sockets: int = 1000  # connect-user
    storm_sockets: int = 5000
    storm_jitter_ms: float = 0.0  # attempt 0 of a reconnect waits up to this long
    storm_timeout: float = 120.0  # every socket must be open again by then
    channels_sockets: int = 5000
    clients: int = 2  # client processes for the handshake scenarios
    payload: int = 64
    round_timeout: float = 90.0  # per burst round
    drain_timeout: float = 20.0  # after the last steady publish
    quiet: float = 5.0  # no frame this long and the server idle: the rest is lost
    wait_idle: float = 30.0  # wait at most this long for other processes to calm down
    ready_timeout: float = 60.0
    open_timeout: float = 30.0
    budget: float = 300.0  # per scenario, everything included
    warmup_sockets: int = 10


FULL = Sizes(
    connect_sockets=1000,
    concurrency=100,
    burst1k_sockets=1000,
    burst1k_messages=200,
    burst5k_sockets=5000,
    burst5k_messages=20,
    rounds=3,
    steady_sockets=1000,
    steady_rate=20.0,
    steady_seconds=10.0,
    idle_sockets=5000,
)
QUICK = Sizes(
    connect_sockets=200,
    concurrency=50,
    burst1k_sockets=200,
    burst1k_messages=50,
    burst5k_sockets=1000,
    burst5k_messages=10,
    rounds=1,
    steady_sockets=200,
    steady_rate=20.0,
    steady_seconds=3.0,
    idle_sockets=1000,
    user_sockets=200,
    storm_sockets=1000,
    channels_sockets=1000,
    round_timeout=20.0,
    drain_timeout=5.0,
    quiet=3.0,
    ready_timeout=20.0,
    open_timeout=15.0,
    budget=60.0,
    wait_idle=0.0,
)


def _cpu_or_zero(pid: int) -> float:
    try:
        return cpu_seconds(pid)
    except OSError:
        return 0.0


@dataclass
class Bench:
    """What a scenario works with: the running server, Redis, sizes, an optional profiler."""

    server: Running
    redis_port: int
    redis_pid: int
    sizes: Sizes
    profiler: Profiler | None = None
    client_pids: tuple[int, ...] = ()  # client processes (workers.py) of the scenario
    # (username, session key) of the logged-in users in the bench's database
    users: list[tuple[str, str]] | None = None

    def profile_start(self, label: str) -> None:
        if self.profiler is not None:
            self.profiler.start(self.server.server_pid, f"{self.server.name}-{label}")

    def profile_stop(self) -> None:
        if self.profiler is not None:
            self.profiler.stop()

    def cpu(self) -> dict[str, float]:
        """CPU seconds so far of each server process, Redis, this client and the whole machine."""
        out = {role: cpu_seconds(pid) for role, pid in self.server.pids().items()}
        out["redis"] = cpu_seconds(self.redis_pid)
        out["client"] = own_cpu_seconds() + sum(_cpu_or_zero(p) for p in self.client_pids)
        out["machine"] = machine_busy_seconds()
        return out

    def window(self) -> Window:
        return Window(self)

    async def wait_idle(self) -> float:
        """Wait (at most ``sizes.wait_idle`` s) until other processes use < 15% of a core.

        Returns the share of a core they used in the last second sampled. This
        machine is shared; a test suite running beside the benchmark skews it.
        """
        deadline = time.monotonic() + self.sizes.wait_idle
        while True:
            window = self.window()
            await asyncio.sleep(1.0)
            others = window.close()["others"]
            if others < 15 or time.monotonic() > deadline:
                return others

    def redis_connections(self) -> dict[str, int]:
        return {
            role: redis_connections(pid, self.redis_port)
            for role, pid in self.server.pids().items()
        }


class Window:
    """CPU use over a measured window, in percent of one core."""

    def __init__(self, bench: Bench) -> None:
        self.bench = bench
        self.began = time.monotonic()
        self.before = bench.cpu()

    def close(self) -> dict[str, float]:
        after = self.bench.cpu()
        wall = max(1e-9, time.monotonic() - self.began)
        used = {role: 100 * (after[role] - self.before[role]) / wall for role in after}
        machine = used.pop("machine")
        used["others"] = max(0.0, machine - sum(used.values()))
        return used


def _server_cpu(bench: Bench) -> float:
    """CPU seconds so far of the processes that serve the sockets (to the nanosecond)."""
    total = 0
    for role, pid in bench.server.pids().items():
        if _serving(role):
            try:
                total += cpu_ns(pid)
            except OSError:
                pass
    return total / 1e9


def _percentile(sorted_values: list[int], fraction: float) -> float:
    if not sorted_values:
        return math.nan
    index = min(len(sorted_values) - 1, max(0, math.ceil(fraction * len(sorted_values)) - 1))
    return float(sorted_values[index])


def _latency_ms(latencies_ns: list[int]) -> dict[str, float]:
    values = sorted(latencies_ns)
    return {
        "p50_ms": _percentile(values, 0.50) / 1e6,
        "p99_ms": _percentile(values, 0.99) / 1e6,
        "max_ms": (values[-1] / 1e6) if values else math.nan,
    }


def tally(sockets: list[Socket], first: int, count: int) -> dict[str, Any]:
    """Count what each socket received of sequence numbers ``first .. first+count-1``."""
    expected = range(first, first + count)
    lost = duplicated = reordered = foreign = delivered = 0
    latencies: list[int] = []
    for sock in sockets:
        seqs = []
        for payload, at in sock.received():
            seq = payload_seq(payload)
            if seq not in expected:
                foreign += 1
                continue
            seqs.append(seq)
            latencies.append(at - payload_stamp(payload))
        delivered += len(seqs)
        if seqs == list(expected):
            continue
        distinct = set(seqs)
        lost += count - len(distinct)
        duplicated += len(seqs) - len(distinct)
        reordered += sum(1 for a, b in itertools.pairwise(seqs) if b < a)
    return {
        "delivered": delivered,
        "lost": lost,
        "duplicated": duplicated,
        "reordered": reordered,
        "foreign": foreign,
        **_latency_ms(latencies),
    }


async def _wait_deliveries(
    bench: Bench, meter: Meter, done: asyncio.Future[None], timeout: float, quiet: float
) -> str:
    """Wait until everything arrived, the deadline passed, or the server gave up.

    "Stalled" needs both: no frame for ``quiet`` seconds AND the server's
    processes idle (under 10% of a core) meanwhile. A design that does a whole
    burst in one event loop iteration sends nothing for seconds while busy.
    """
    deadline = time.monotonic() + timeout
    roles = list(bench.server.pids())
    sample_at, sample = time.monotonic(), bench.cpu()
    while not done.done():
        now = time.monotonic()
        if now > deadline:
            return "deadline"
        if now - sample_at >= quiet:
            cpu = bench.cpu()
            busy = sum(cpu[r] - sample[r] for r in roles) / (now - sample_at)
            silent = time.monotonic_ns() - meter.frames_ns > quiet * 1e9
            if silent and busy < 0.10:
                return "stalled"
            sample_at, sample = now, cpu
        await asyncio.wait({done}, timeout=0.05)
    return "complete"


async def connect_publisher(bench: Bench) -> Publisher:
    """PUBLISH on the bench's Redis, or nchan's ``POST /pub/<channel>`` on the server."""
    spec = bench.server.spec
    if spec is not None and spec.publish == "http":
        return await HttpPublisher.connect(HOST, bench.server.port)
    return await Publisher.connect(HOST, bench.redis_port)


class _Session:
    """Sockets, meter and publisher of one scenario, cleaned up on exit."""

    def __init__(
        self,
        bench: Bench,
        path: str = PATH,
        cookies: list[str] | None = None,
        *,
        positioned: bool = False,
    ) -> None:
        self.bench = bench
        self.path = path
        self.positioned = positioned
        self.cookies = cookies  # for the warm-up sockets
        self.meter = Meter()
        self.sockets: list[Socket] = []
        self.publisher: Publisher | None = None
        self.failures: collections.Counter[str] = collections.Counter()

    async def __aenter__(self) -> _Session:
        self.publisher = await connect_publisher(self.bench)
        await self.warm_up()
        return self

    async def __aexit__(self, *exc: object) -> None:
        close_all(self.sockets)
        if self.publisher is not None:
            self.publisher.close()

    async def open(self, count: int) -> float:
        sizes = self.bench.sizes
        opened = await open_sockets(
            HOST,
            self.bench.server.port,
            self.path,
            count,
            self.meter,
            concurrency=sizes.concurrency,
            timeout=sizes.open_timeout,
            cookies=self.cookies[:count] if self.cookies else None,
            positioned=self.positioned,
        )
        self.sockets.extend(opened.sockets)
        self.failures.update(opened.failures)
        return opened.seconds

    async def ready(self) -> float:
        assert self.publisher is not None
        return await probe_ready(
            self.sockets,
            self.meter,
            self.publisher,
            CHANNEL,
            timeout=self.bench.sizes.ready_timeout,
        )

    async def warm_up(self, count: int | None = None) -> None:
        """Open, probe and close a few sockets: lazy set-up happens outside the window."""
        count = count or self.bench.sizes.warmup_sockets
        await self.open(count)
        await self.ready()
        close_all(self.sockets)
        self.sockets.clear()
        self.failures.clear()
        self.meter.closes.clear()
        self.meter.dropped = 0
        await asyncio.sleep(0.5)

    def health(self) -> dict[str, Any]:
        return {
            "sockets": len(self.sockets),
            "failed_handshakes": dict(self.failures),
            "closed_by_server": {str(k): v for k, v in self.meter.closes.items()},
            "dropped": self.meter.dropped,
        }


async def _burst(
    bench: Bench,
    sockets: int,
    messages: int,
    label: str,
    *,
    app: bool = False,
    positioned: bool = False,
) -> dict[str, Any]:
    """``app``: publish through the app (``FCALL ws4redis_publish``: history, positions);
    ``positioned``: the sockets opt into positions."""
    sizes = bench.sizes
    path = POSITIONS_PATH if positioned else PATH
    async with _Session(bench, path, positioned=positioned) as session:
        assert session.publisher is not None
        await session.open(sockets)
        await session.ready()
        connections = bench.redis_connections()
        others = await bench.wait_idle()
        rounds: list[dict[str, Any]] = []
        bench.profile_start(label)
        for number in range(sizes.rounds):
            for sock in session.sockets:
                sock.clear()
            live = [s for s in session.sockets if not s.gone]
            done = session.meter.expect(messages * len(live))
            first = number * messages
            window = bench.window()
            server_cpu = _server_cpu(bench)
            began = time.monotonic_ns()
            command = session.publisher.app_command if app else session.publisher.command
            session.publisher.write(
                b"".join(
                    command(CHANNEL, make_payload(first + i, sizes.payload))
                    for i in range(messages)
                )
            )
            outcome = await _wait_deliveries(
                bench, session.meter, done, sizes.round_timeout, sizes.quiet
            )
            seconds = (session.meter.last_ns - began) / 1e9 if session.meter.last_ns else math.nan
            server_cpu = _server_cpu(bench) - server_cpu
            cpu = window.close()
            counted = tally(live, first, messages)
            if positioned:
                # Every message published through the app carries a position.
                counted["unpositioned"] = sum(s.positions().count(b"-") for s in live)
            firsts = [s.chunks[0][1] for s in live if s.chunks]
            rounds.append(
                {
                    "outcome": outcome,
                    "seconds": seconds,
                    "first_delivery_ms": (min(firsts) - began) / 1e6 if firsts else math.nan,
                    "deliveries_per_s": counted["delivered"] / seconds if seconds else math.nan,
                    # What a delivery costs the server, whatever else runs on the machine.
                    "server_cpu_s": server_cpu,
                    "server_cpu_ns_per_delivery": server_cpu * 1e9 / counted["delivered"]
                    if counted["delivered"]
                    else math.nan,
                    "cpu_percent": cpu,
                    **counted,
                }
            )
            if outcome != "complete" or seconds > 20:
                break  # a slow or lossy design gets one round: the budget is bounded
        bench.profile_stop()
        rates = [r["deliveries_per_s"] for r in rounds]
        return {
            "published": "FCALL ws4redis_publish" if app else "PUBLISH",
            "positions": positioned,
            "sockets": sockets,
            "messages": messages,
            "deliveries_per_s": statistics.median(rates),
            "server_cpu_ns_per_delivery": sum(r["server_cpu_s"] for r in rounds)
            * 1e9
            / max(1, sum(r["delivered"] for r in rounds)),
            "lost": sum(r["lost"] for r in rounds),
            "duplicated": sum(r["duplicated"] for r in rounds),
            "reordered": sum(r["reordered"] for r in rounds),
            "rounds": rounds,
            "others_cpu_before": others,
            "redis_connections": connections,
            **session.health(),
        }


async def burst1k(bench: Bench) -> dict[str, Any]:
    sizes = bench.sizes
    return await _burst(bench, sizes.burst1k_sockets, sizes.burst1k_messages, "burst1k")


async def burst1k_app(bench: Bench) -> dict[str, Any]:
    """burst1k published through the app with a history; sockets without positions."""
    if not bench.server.spec or not bench.server.spec.positions:
        return {"skipped": "no positions on this server"}
    sizes = bench.sizes
    return await _burst(
        bench, sizes.burst1k_sockets, sizes.burst1k_messages, "burst1k-app", app=True
    )


async def burst1k_pos(bench: Bench) -> dict[str, Any]:
    """burst1k published through the app with a history; sockets with positions."""
    if not bench.server.spec or not bench.server.spec.positions:
        return {"skipped": "no positions on this server"}
    sizes = bench.sizes
    return await _burst(
        bench,
        sizes.burst1k_sockets,
        sizes.burst1k_messages,
        "burst1k-pos",
        app=True,
        positioned=True,
    )


async def burst5k(bench: Bench) -> dict[str, Any]:
    sizes = bench.sizes
    return await _burst(bench, sizes.burst5k_sockets, sizes.burst5k_messages, "burst5k")


async def steady(bench: Bench) -> dict[str, Any]:
    return await _steady(bench, "steady")


async def steady_pos(bench: Bench) -> dict[str, Any]:
    """steady published through the app with a history, to sockets with positions."""
    if not bench.server.spec or not bench.server.spec.positions:
        return {"skipped": "no positions on this server"}
    return await _steady(bench, "steady-pos", app=True, positioned=True)


async def _steady(
    bench: Bench, label: str, *, app: bool = False, positioned: bool = False
) -> dict[str, Any]:
    sizes = bench.sizes
    messages = round(sizes.steady_rate * sizes.steady_seconds)
    path = POSITIONS_PATH if positioned else PATH
    async with _Session(bench, path, positioned=positioned) as session:
        assert session.publisher is not None
        await session.open(sizes.steady_sockets)
        await session.ready()
        connections = bench.redis_connections()
        for sock in session.sockets:
            sock.clear()
        live = [s for s in session.sockets if not s.gone]
        others = await bench.wait_idle()
        done = session.meter.expect(messages * len(live))
        bench.profile_start(label)
        window = bench.window()
        # time.monotonic(), not loop.time(): uvloop's clock is cached per iteration.
        start = time.monotonic() + 0.05
        late = 0.0
        for i in range(messages):
            target = start + i / sizes.steady_rate
            await asyncio.sleep(max(0.0, target - time.monotonic()))
            late = max(late, time.monotonic() - target)
            command = session.publisher.app_command if app else session.publisher.command
            session.publisher.write(command(CHANNEL, make_payload(i, sizes.payload)))
        outcome = await _wait_deliveries(
            bench, session.meter, done, sizes.drain_timeout, sizes.quiet
        )
        cpu = window.close()
        bench.profile_stop()
        counted = tally(live, 0, messages)
        if positioned:
            counted["unpositioned"] = sum(s.positions().count(b"-") for s in live)
        return {
            "published": "FCALL ws4redis_publish" if app else "PUBLISH",
            "positions": positioned,
            "sockets": sizes.steady_sockets,
            "rate": sizes.steady_rate,
            "messages": messages,
            "outcome": outcome,
            "publisher_max_late_ms": late * 1000,
            "cpu_percent": cpu,
            "others_cpu_before": others,
            "redis_connections": connections,
            **counted,
            **session.health(),
        }


async def idle(bench: Bench) -> dict[str, Any]:
    sizes = bench.sizes
    async with _Session(bench) as session:
        await asyncio.sleep(1.0)
        before = {role: rss_kb(pid) for role, pid in bench.server.pids().items()}
        await session.open(sizes.idle_sockets)
        await session.ready()
        await asyncio.sleep(2.0)
        after = {role: rss_kb(pid) for role, pid in bench.server.pids().items()}
        sockets = len([s for s in session.sockets if not s.gone])
        return {
            "sockets": sockets,
            "rss_kb_before": before,
            "rss_kb_after": after,
            "kb_per_socket": sum(after[r] - before.get(r, after[r]) for r in after if _serving(r))
            / max(1, sockets),
            "redis_connections": bench.redis_connections(),
            **session.health(),
        }


def _serving(role: str) -> bool:
    return role == "server" or role.startswith("worker")


SCENARIOS: dict[str, Callable[[Bench], Awaitable[dict[str, Any]]]] = {
    "burst1k": burst1k,
    "burst1k-app": burst1k_app,
    "burst1k-pos": burst1k_pos,
    "burst5k": burst5k,
    "steady": steady,
    "steady-pos": steady_pos,
    "idle": idle,
}


# What a scenario adds to the environment of a server that can serve positions.
SCENARIO_ENV: dict[str, dict[str, str]] = {
    "burst1k-app": HISTORY_ENV,
    "burst1k-pos": HISTORY_ENV,
    "steady-pos": HISTORY_ENV,
}


def sizes_dict(sizes: Sizes) -> dict[str, Any]:
    return asdict(sizes)
