"""A reconnect storm is load, not a Redis outage: every queued handshake is served.

After a restart, every socket of a process comes back at once. The new
process's event loop then runs long iterations, and any timeout measured on
it expires on work that was never given a chance to run. None of that may be
taken for Redis being down: no socket of the storm is refused with 4503, and
every one of them is subscribed again.
"""

from __future__ import annotations

import asyncio
import collections
import re
import signal

import redis.asyncio

from tests.chaos.wire import Client, open_clients
from tests.conftest import TIMEOUT

SOCKETS = 600
PATH = "/ws/storm?subscribe-broadcast"


async def _reconnect(port: int) -> Client:
    """One browser coming back: retry until the server takes the connection."""
    while True:
        try:
            (client,) = await open_clients(port, [PATH], timeout=TIMEOUT * 30)
            return client
        except (OSError, asyncio.TimeoutError):
            await asyncio.sleep(0.05)  # not listening yet, or a dropped SYN


async def _all_receive(publisher: redis.asyncio.Redis, clients: list[Client]) -> None:
    """Publish markers until every client got one: a socket still joining when a
    marker went out gets the next one (waits for events, not time)."""
    missing = list(clients)
    marker = 0
    while missing:
        marker += 1
        payload = b"marker %d" % marker
        await publisher.publish("_broadcast_:storm", payload)
        arrived = await asyncio.gather(*(c.wait_for(payload, TIMEOUT) for c in missing))
        missing = [c for c, ok in zip(missing, arrived, strict=True) if not ok]
        assert not any(c.closed.done() for c in missing), "a socket of the storm was closed"


async def test_a_reconnect_storm_is_served_not_refused_with_4503(daphne_factory, redis_server):
    # A handshake timeout far below what the storm takes: the process is
    # busy for longer than it, and Redis answers all along.
    server = daphne_factory(
        {"WS4REDIS_CONNECT_TIMEOUT": "0.3", "WS4REDIS_LOG_LEVEL": "WARNING"},
        "--websocket_connect_timeout",
        "600",
    )
    publisher = redis.asyncio.Redis(port=redis_server.port)
    try:
        first = await open_clients(server.port, [PATH] * SOCKETS, timeout=TIMEOUT * 3)
        await _all_receive(publisher, first)
        assert server.process is not None
        server.stop(signal.SIGKILL)
        await asyncio.wait_for(asyncio.gather(*(c.closed for c in first)), TIMEOUT)
        server.start()
        again = await asyncio.gather(*(_reconnect(server.port) for _ in range(SOCKETS)))
        refused = [c.close_code for c in again if c.close_code is not None]
        assert refused == []
        await _all_receive(publisher, again)
        assert all(not c.closed.done() for c in again)
        log = server.log()
        assert "with 4503" not in log and "unreachable" not in log
        for client in again:
            client.abort()
    finally:
        await publisher.aclose()


STORM = 1000


async def _open_counting(port: int, path: str, rejected: collections.Counter[str]) -> Client:
    """One browser: retry until its socket is open; count the handshakes refused over HTTP."""
    while True:
        try:
            (client,) = await open_clients(port, [path], timeout=TIMEOUT * 30)
            return client
        except ConnectionError as exc:
            if str(exc).startswith("HTTP"):
                rejected[str(exc)] += 1
            await asyncio.sleep(0.05)
        except (OSError, asyncio.TimeoutError):
            await asyncio.sleep(0.05)


async def test_a_storm_longer_than_daphnes_handshake_timeout_is_taken_in_turns(
    daphne_factory, redis_server
):
    # daphne rejects (403) a handshake that is not accepted within its
    # --websocket_connect_timeout, after the work on it was done: 1 s here, so
    # that a storm of 1,000 at once outlasts it as 5,000 outlast the default
    # 5 s in production. Taking them all on at once, each waits for all the
    # others. The process takes 50 at a time; the others wait in the listen
    # queue, which daphne's -p leaves at Twisted's 50 and the product
    # lengthens to 4,096 (WS4REDIS_LISTEN_BACKLOG).
    server = daphne_factory(
        {"WS4REDIS_MAX_HANDSHAKES": "50", "WS4REDIS_LOG_LEVEL": "INFO"},
        "--websocket_connect_timeout",
        "1",
    )
    publisher = redis.asyncio.Redis(port=redis_server.port)
    rejected: collections.Counter[str] = collections.Counter()
    try:
        clients = await asyncio.gather(
            *(_open_counting(server.port, PATH, rejected) for _ in range(STORM))
        )
        assert rejected == {}, f"handshakes rejected and retried: {dict(rejected)}"
        await _all_receive(publisher, clients)
        log = server.log()
        assert f"Listen queue of 127.0.0.1:{server.port}: 4096 connections instead of 50" in log
        assert "not accepting connections until 25 are left" in log
        # Accepting again: a plain request is answered once the storm is over.
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"GET /metrics HTTP/1.0\r\n\r\n")
        page = await asyncio.wait_for(reader.read(), TIMEOUT)
        writer.close()
        assert page.startswith(b"HTTP/1.")
        pauses = re.search(rb"^ws4redis_accept_pauses_total ([0-9.]+)$", page, re.MULTILINE)
        assert pauses and float(pauses.group(1)) >= 1, page[-2000:]
        for client in clients:
            client.abort()
    finally:
        await publisher.aclose()
