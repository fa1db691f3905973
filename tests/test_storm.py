"""A reconnect storm is load, not a Redis outage: every queued handshake is served.

After a restart, every socket of a process comes back at once. The new
process's event loop then runs long iterations, and any timeout measured on
it expires on work that was never given a chance to run. None of that may be
taken for Redis being down: no socket of the storm is refused with 4503, and
every one of them is subscribed again.
"""

from __future__ import annotations

import asyncio
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
