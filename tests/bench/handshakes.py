"""The handshake scenarios: connect rates, a reconnect storm, and a channel per socket.

They open their sockets from several client processes (:mod:`.workers`), so
a fast server is not measured against a saturated client:

``connect``       1,000 anonymous broadcast sockets, 100 handshakes in flight
``connect-user``  the same with a session cookie of a logged-in user (the product
                  subscribes user + session + broadcast; nchan the cookie's channel +
                  broadcast)
``storm``         5,000 sockets; the server restarts (its sockets drop); as soon as it
                  listens again, all reconnect at once; probes every 50 ms tell when each
                  is subscribed again
``channels``      5,000 logged-in sockets, each on its own channel plus broadcast; one
                  message per own channel, all published in one write
"""

from __future__ import annotations

import asyncio
import math
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

from .client import make_payload
from .measure import listen_overflows
from .scenarios import CHANNEL, FACILITY, HOST, PATH, Bench, Publisher, _latency_ms, _Session
from .workers import Workers

__all__ = ["HANDSHAKE_SCENARIOS"]

PROBE_EVERY = 0.05


def _skip(bench: Bench) -> dict[str, Any] | None:
    spec = bench.server.spec
    if spec is None or spec.user_path is None:
        return {"skipped": "no sockets with an identity on this server"}
    if not bench.users:
        return {"skipped": "no users in the bench database"}
    return None


def _cookies(bench: Bench, count: int) -> list[str]:
    assert bench.users is not None
    return [f"sessionid={key}" for _, key in bench.users[:count]]


def _own_channels(bench: Bench, count: int) -> list[bytes]:
    assert bench.users is not None and bench.server.spec is not None
    which = 1 if bench.server.spec.own_channel == "session" else 0
    return [f"{pair[which]}:{FACILITY}".encode() for pair in bench.users[:count]]


async def _open(
    workers: Workers,
    path: str,
    count: int,
    concurrency: int,
    timeout: float,
    cookies: list[str] | None,
) -> dict[str, Any]:
    """Open ``count`` sockets from all workers; connects/s over the whole span."""
    if cookies:
        shares: list[Any] = workers.split(cookies)
    else:
        shares = [len(part) for part in workers.split(list(range(count)))]
    per = max(1, concurrency // workers.count)
    commands = [
        {
            "op": "open",
            "path": path,
            "count": share if isinstance(share, int) else len(share),
            "cookies": share if isinstance(share, list) else None,
            "concurrency": per,
            "timeout": timeout,
        }
        for share in shares
    ]
    replies = await workers.ask(commands, timeout * 4 + 30)
    return _merge(replies)


def _merge(replies: list[dict[str, Any]]) -> dict[str, Any]:
    opened = sum(r["opened"] for r in replies)
    began = min(r["began_ns"] for r in replies)
    ended = max(r["ended_ns"] for r in replies)
    failures: dict[str, int] = {}
    for reply in replies:
        for key, n in reply["failures"].items():
            failures[key] = failures.get(key, 0) + n
    handshakes = sorted(int(ms * 1e6) for r in replies for ms in r["handshake_ms"])
    return {
        "opened": opened,
        "began_ns": began,
        "ended_ns": ended,
        "seconds": (ended - began) / 1e9,
        "handshake": _latency_ms(handshakes),
        "failed_handshakes": failures,
        "not_dropped": sum(r.get("not_dropped", 0) for r in replies),
        "retried": sum(r.get("retried", 0) for r in replies),
        "max_attempt": max(r.get("max_attempt", 0) for r in replies),
    }


def _cpu_ms(cpu: dict[str, float], seconds: float, sockets: int) -> float:
    """Server CPU milliseconds per socket over a window: a cost that the load barely moves."""
    busy = sum(pct for role, pct in cpu.items() if role not in ("redis", "client", "others"))
    return busy / 100 * seconds * 1000 / max(1, sockets)


async def _until_probed(
    bench: Bench,
    workers: Workers,
    publisher: Publisher,
    *,
    since_ns: int = 0,
    expected: int | None = None,
    timeout: float,
) -> dict[str, Any]:
    """Publish a probe every 50 ms until every live socket received one after ``since_ns``."""
    deadline = time.monotonic() + timeout
    probe = 0
    while True:
        publisher.publish(CHANNEL, b"P%d" % probe)
        probe += 1
        await asyncio.sleep(PROBE_EVERY)
        statuses = await workers.all({"op": "status", "since_ns": since_ns}, 30)
        live = sum(s["live"] for s in statuses)
        probed = sum(s["probed"] for s in statuses)
        if probed >= (expected if expected is not None else live) and live:
            return {
                "live": live,
                "last_probed_ns": max(s["last_probed_ns"] for s in statuses),
                "closes": [s["closes"] for s in statuses if s["closes"]],
                "dropped": sum(s["dropped"] for s in statuses),
            }
        if time.monotonic() > deadline:
            raise TimeoutError(f"{live - probed} of {live} sockets received no probe")


async def _connect(bench: Bench, path: str, cookies: list[str] | None, count: int) -> Any:
    sizes = bench.sizes
    warm = cookies[-sizes.warmup_sockets :] if cookies else None
    async with (
        _Session(bench, path, warm) as session,
        Workers(sizes.clients, HOST, bench.server.port) as workers,
    ):
        assert session.publisher is not None
        bench.client_pids = tuple(workers.pids())
        try:
            others = await bench.wait_idle()
            window = bench.window()
            overflows = listen_overflows()
            bench.profile_start("connect-user" if cookies else "connect")
            opened = await _open(
                workers, path, count, sizes.concurrency, sizes.open_timeout, cookies
            )
            cpu = window.close()
            overflows = listen_overflows() - overflows
            bench.profile_stop()
            began = time.monotonic_ns()
            probed = await _until_probed(
                bench, workers, session.publisher, timeout=sizes.ready_timeout
            )
        finally:
            bench.client_pids = ()
        return {
            "sockets": count,
            "concurrency": sizes.concurrency,
            "client_processes": sizes.clients,
            "connects_per_s": opened["opened"] / opened["seconds"],
            "server_cpu_ms_per_handshake": _cpu_ms(cpu, opened["seconds"], opened["opened"]),
            "handshake": opened["handshake"],
            "listen_overflows": overflows,
            "all_receiving_after_s": opened["seconds"] + (time.monotonic_ns() - began) / 1e9,
            "cpu_percent": cpu,
            "others_cpu_before": others,
            "redis_connections": bench.redis_connections(),
            "failed_handshakes": opened["failed_handshakes"],
            "closed_by_server": probed["closes"],
            "dropped": probed["dropped"],
        }


async def connect(bench: Bench) -> dict[str, Any]:
    return await _connect(bench, PATH, None, bench.sizes.connect_sockets)


async def connect_user(bench: Bench) -> dict[str, Any]:
    skipped = _skip(bench)
    if skipped:
        return skipped
    assert bench.server.spec is not None and bench.server.spec.user_path is not None
    count = bench.sizes.user_sockets
    return await _connect(bench, bench.server.spec.user_path, _cookies(bench, count), count)


def _progress(text: str) -> None:
    print(f"  {time.strftime('%H:%M:%S')} {text}", file=sys.stderr, flush=True)


async def storm(bench: Bench) -> dict[str, Any]:
    sizes = bench.sizes
    count = sizes.storm_sockets
    async with (
        _Session(bench) as session,
        Workers(sizes.clients, HOST, bench.server.port) as workers,
    ):
        assert session.publisher is not None
        bench.client_pids = tuple(workers.pids())
        try:
            first = await _open(workers, PATH, count, sizes.concurrency, sizes.open_timeout, None)
            _progress(f"storm: {first['opened']} sockets open")
            await _until_probed(bench, workers, session.publisher, timeout=sizes.ready_timeout)
            await workers.all({"op": "reset"}, 30)
            others = await bench.wait_idle()
            _progress("storm: restarting the server")
            stop_s, start_s = await asyncio.to_thread(bench.server.restart)
            _progress(
                f"storm: old server gone after {stop_s:.1f}s, new one listens after {start_s:.1f}s"
            )
            # The publisher of an HTTP server lost its connection with it.
            session.publisher.close()
            from .scenarios import connect_publisher

            session.publisher = await connect_publisher(bench)
            window = bench.window()
            go = time.monotonic_ns()
            overflows = listen_overflows()
            bench.profile_start("storm")
            reopen = asyncio.ensure_future(
                workers.all(
                    {
                        "op": "reopen",
                        "timeout": sizes.storm_timeout,
                        "jitter_ms": sizes.storm_jitter_ms,
                    },
                    sizes.budget,
                )
            )
            probe = 0
            while not reopen.done():
                session.publisher.publish(CHANNEL, b"P%d" % probe)
                probe += 1
                await asyncio.wait({reopen}, timeout=PROBE_EVERY)
            opened = _merge(reopen.result())
            _progress(
                f"storm: {opened['opened']} reopened after {(opened['ended_ns'] - go) / 1e9:.1f}s"
            )
            probed = await _until_probed(
                bench,
                workers,
                session.publisher,
                since_ns=go,
                expected=opened["opened"],
                timeout=sizes.ready_timeout,
            )
            cpu = window.close()
            wall = (time.monotonic_ns() - go) / 1e9
            bench.profile_stop()
            overflows = listen_overflows() - overflows
        finally:
            bench.client_pids = ()
        return {
            "sockets": count,
            "opened_before": first["opened"],
            "reopened": opened["opened"],
            "client_processes": sizes.clients,
            "old_server_exit_s": stop_s,
            "new_server_listening_s": start_s,
            "all_open_s": (opened["ended_ns"] - go) / 1e9,
            "all_subscribed_s": (probed["last_probed_ns"] - go) / 1e9,
            "connects_per_s": opened["opened"] / max(1e-9, (opened["ended_ns"] - go) / 1e9),
            "server_cpu_ms_per_socket": _cpu_ms(cpu, wall, opened["opened"]),
            "handshake": opened["handshake"],
            "listen_overflows": overflows,
            "not_dropped": opened["not_dropped"],
            "retried": opened["retried"],
            "max_attempt": opened["max_attempt"],
            "jitter_ms": sizes.storm_jitter_ms,
            "cpu_percent": cpu,
            "others_cpu_before": others,
            "failed_handshakes": opened["failed_handshakes"],
            "closed_by_server": probed["closes"],
            "redis_connections": bench.redis_connections(),
        }


async def channels(bench: Bench) -> dict[str, Any]:
    skipped = _skip(bench)
    if skipped:
        return skipped
    assert bench.server.spec is not None and bench.server.spec.user_path is not None
    sizes = bench.sizes
    count = min(sizes.channels_sockets, len(bench.users or ()))
    cookies = _cookies(bench, count)
    own = _own_channels(bench, count)
    path = bench.server.spec.user_path
    async with (
        _Session(bench, path, cookies[-sizes.warmup_sockets :]) as session,
        Workers(sizes.clients, HOST, bench.server.port) as workers,
    ):
        assert session.publisher is not None
        bench.client_pids = tuple(workers.pids())
        try:
            opened = await _open(
                workers, path, count, sizes.concurrency, sizes.open_timeout, cookies
            )
            await _until_probed(bench, workers, session.publisher, timeout=sizes.ready_timeout)
            await asyncio.sleep(0.5)  # late probes
            await workers.all({"op": "reset"}, 30)
            connections = bench.redis_connections()
            others = await bench.wait_idle()
            window = bench.window()
            bench.profile_start("channels")
            began = time.monotonic_ns()
            session.publisher.write(
                b"".join(
                    session.publisher.command(channel, make_payload(i, sizes.payload))
                    for i, channel in enumerate(own)
                )
            )
            deadline = time.monotonic() + sizes.round_timeout
            outcome = "deadline"
            last = 0
            while time.monotonic() < deadline:
                await asyncio.sleep(0.02)
                statuses = await workers.all({"op": "status"}, 30)
                received = sum(s["received"] for s in statuses)
                last = max(s["last_ns"] for s in statuses)
                if received >= opened["opened"]:
                    outcome = "complete"
                    break
            cpu = window.close()
            bench.profile_stop()
            tallies = await workers.all({"op": "tally"}, 60)
        finally:
            bench.client_pids = ()
        counts = [n for t in tallies for n in t["counts"]]
        latencies = sorted(n for t in tallies for n in t["latencies_ns"])
        delivered = sum(counts)
        seconds = (last - began) / 1e9 if last else math.nan
        return {
            "sockets": opened["opened"],
            "messages": len(own),
            "outcome": outcome,
            "seconds": seconds,
            "deliveries_per_s": delivered / seconds if seconds else math.nan,
            "delivered": delivered,
            "lost": sum(1 for n in counts if n == 0),
            "duplicated": sum(n - 1 for n in counts if n > 1),
            **_latency_ms(latencies),
            "cpu_percent": cpu,
            "others_cpu_before": others,
            "redis_connections": connections,
            "failed_handshakes": opened["failed_handshakes"],
        }


HANDSHAKE_SCENARIOS: dict[str, Callable[[Bench], Awaitable[dict[str, Any]]]] = {
    "connect": connect,
    "connect-user": connect_user,
    "storm": storm,
    "channels": channels,
}
