"""1,000 sockets with positions on two daphne processes under a steady publish, while
things break: every socket ends with every message exactly once, in order, or is told.

The publisher publishes ``n0``, ``n1``... through the Python API at about 200/s,
with a message id per message and a retry after an error, as a careful
application would. The clients are real websocket clients: each keeps the
last position of its channel and, when its connection ends, reconnects to
one of the two processes (as behind a load balancer) presenting it.
"""

from __future__ import annotations

import asyncio
import functools
import os
import random
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from django.test import override_settings

from testproject.redis_server import RedisServer
from tests.conftest import TIMEOUT
from tests.rawws import Wire
from tests.servers import Daphne
from ws4redis_channels import publisher
from ws4redis_channels.exceptions import RedisError

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

SOCKETS = int(os.environ.get("WS4REDIS_TEST_POSITION_SOCKETS", "1000"))
RATE = 200.0
HISTORY = 5000
FACILITY = "load"
PATH = f"/ws/{FACILITY}?subscribe-broadcast&positions"


class Client:
    """One websocket client that resumes by position, reconnecting until told to stop."""

    def __init__(self, ports: list[int], index: int) -> None:
        self.ports = ports
        self.index = index
        self.position: bytes | None = None
        self.payloads: list[bytes] = []
        self.statuses: list[str] = []
        self.connects = 0
        self.open = asyncio.Event()
        self.stopping = False
        self.task: asyncio.Task[None] | None = None
        self.wire: Wire | None = None

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while not self.stopping:
            port = self.ports[(self.index + self.connects) % len(self.ports)]
            since = f"&since=broadcast:{self.position.decode()}" if self.position else ""
            try:
                _, wire = await asyncio.wait_for(
                    loop.create_connection(
                        functools.partial(Wire, self.handle, PATH + since, port), "127.0.0.1", port
                    ),
                    TIMEOUT,
                )
                self.wire = wire
                self.connects += 1
                await wire.lost
            except (OSError, asyncio.TimeoutError):
                pass
            self.open.clear()
            if not self.stopping:
                await asyncio.sleep(random.uniform(0.05, 0.5))

    def close(self) -> None:
        self.stopping = True
        if self.wire is not None and self.wire.transport is not None:
            self.wire.transport.abort()

    def handle(self, frame: bytes) -> None:
        if frame[:2] == b"p ":
            _, _, position, status = frame.split(b" ")
            self.statuses.append(status.decode())
            if self.position is None or status == b"lost":
                self.position = position
            self.open.set()
            return
        end = frame.index(b"\n")
        position = frame[frame.rindex(b" ", 0, end) + 1 : end]
        if position != b"-":
            self.position = position
        self.payloads.append(frame[end + 1 :])


class Stream:
    """Publishes n0, n1, ... at a steady rate from a thread, with an id and retries."""

    def __init__(self, rate: float = RATE) -> None:
        self.rate = rate
        self.sent = 0
        self.errors = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        start = time.monotonic()
        while not self.stop.is_set():
            i = self.sent
            try:
                publisher.publish(FACILITY, f"n{i}", broadcast=True, message_id=f"n{i}")
            except RedisError:
                self.errors += 1
                self.stop.wait(0.05)
                continue  # the same id again: published once, whatever happened
            self.sent += 1
            self.stop.wait(max(0.0, start + self.sent / self.rate - time.monotonic()))

    def __enter__(self) -> Stream:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(30)

    async def wait_sent(self, count: int, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while self.sent < count:
            assert time.monotonic() < deadline, f"only {self.sent} published"
            await asyncio.sleep(0.05)


async def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"not in time: {what}")
        await asyncio.sleep(0.1)


async def open_clients(ports: list[int]) -> list[Client]:
    clients = [Client(ports, i) for i in range(SOCKETS)]
    for start in range(0, SOCKETS, 100):
        for client in clients[start : start + 100]:
            client.task = asyncio.ensure_future(client.run())
        await asyncio.wait_for(
            asyncio.gather(*(c.open.wait() for c in clients[start : start + 100])), TIMEOUT * 3
        )
    return clients


async def finish(clients: list[Client], total: int) -> None:
    """Wait until every client has ``total`` messages, then stop them."""
    try:
        await wait_until(
            lambda: all(len(c.payloads) >= total for c in clients),
            TIMEOUT * 6,
            f"every client has the {total} messages",
        )
    except AssertionError:
        short = [c for c in clients if len(c.payloads) < total]
        example = short[0]
        raise AssertionError(
            f"{len(short)} clients have fewer than {total} messages; e.g. client "
            f"{example.index}: {len(example.payloads)}, statuses {example.statuses}, "
            f"connects {example.connects}, position {example.position}, "
            f"last {example.payloads[-3:]}"
        ) from None
    for client in clients:
        client.close()
    await asyncio.gather(*(c.task for c in clients if c.task), return_exceptions=True)


def assert_exactly_once_in_order(clients: list[Client], total: int) -> None:
    expected = [f"n{i}".encode() for i in range(total)]
    bad = [c.index for c in clients if c.payloads != expected]
    assert not bad, (
        f"{len(bad)} of {len(clients)} clients differ; e.g. client {bad[0]}: "
        f"{len(clients[bad[0]].payloads)} messages, "
        f"{len(set(clients[bad[0]].payloads))} distinct"
    )


def servers(redis: RedisServer, daphne_factory: Any) -> list[Daphne]:
    env = {"REDIS_URL": redis.url, "WS4REDIS_HISTORY_SIZE": str(HISTORY)}
    return [daphne_factory(env), daphne_factory(env)]


@pytest.fixture
def history_settings(redis_server):
    with override_settings(WS4REDIS_HISTORY_SIZE=HISTORY):
        yield


async def test_every_socket_gets_every_message_once_in_order_across_a_daphne_kill(
    daphne_factory, redis_server, redis_client, history_settings
):
    first, second = servers(redis_server, daphne_factory)
    clients = await open_clients([first.port, second.port])
    with Stream() as stream:
        await stream.wait_sent(100)
        await asyncio.to_thread(first.stop, signal.SIGKILL)
        await stream.wait_sent(stream.sent + 100)
        await asyncio.to_thread(first.start)
        await stream.wait_sent(stream.sent + 200)
    await finish(clients, stream.sent)
    assert_exactly_once_in_order(clients, stream.sent)
    reconnected = [c for c in clients if c.connects > 1]
    assert len(reconnected) >= SOCKETS // 2 - 5  # the killed process's half
    assert all(c.statuses[1:] == ["recovered"] * (len(c.statuses) - 1) for c in clients)


async def test_every_socket_gets_every_message_once_in_order_after_client_kill_pubsub(
    daphne_factory, redis_server, redis_client, history_settings
):
    first, second = servers(redis_server, daphne_factory)
    clients = await open_clients([first.port, second.port])
    with Stream() as stream:
        await stream.wait_sent(100)
        killed = redis_client.client_kill_filter(_type="pubsub")
        assert killed >= 2  # both bridges
        await stream.wait_sent(stream.sent + 300)
    await finish(clients, stream.sent)
    assert_exactly_once_in_order(clients, stream.sent)
    # The sockets stayed open; each bridge caught them up and said so.
    assert sorted({c.connects for c in clients}) == [1], {c.connects for c in clients}
    statuses = {tuple(c.statuses) for c in clients}
    assert statuses == {("new", "recovered")}, statuses


async def test_a_redis_restart_with_aof_loses_nothing(daphne_factory, redis_client):
    aof = RedisServer(None, "--appendonly", "yes", "--appendfsync", "always")
    with (
        aof as redis,
        override_settings(WS4REDIS_HISTORY_SIZE=HISTORY, WS4REDIS_CONNECTION=redis.url),
    ):
        first, second = servers(redis, daphne_factory)
        clients = await open_clients([first.port, second.port])
        with Stream() as stream:
            await stream.wait_sent(100)
            await asyncio.to_thread(redis.stop)
            await asyncio.sleep(0.5)  # the outage: publishing fails and is retried
            await asyncio.to_thread(redis.start)
            await stream.wait_sent(stream.sent + 300)
        await finish(clients, stream.sent)
    assert stream.errors > 0  # the publisher did meet the outage
    assert_exactly_once_in_order(clients, stream.sent)
    assert all(c.statuses[-1] == "recovered" for c in clients)


async def test_a_redis_restart_without_persistence_is_reported_as_lost(
    daphne_factory, redis_client
):
    with (
        RedisServer() as redis,
        override_settings(WS4REDIS_HISTORY_SIZE=HISTORY, WS4REDIS_CONNECTION=redis.url),
    ):
        first, second = servers(redis, daphne_factory)
        clients = await open_clients([first.port, second.port])
        with Stream() as stream:
            await stream.wait_sent(100)
            before = stream.sent
            await asyncio.to_thread(redis.stop)
            await asyncio.to_thread(redis.start)
            await stream.wait_sent(stream.sent + 200)
        await wait_until(
            lambda: all("lost" in c.statuses for c in clients),
            TIMEOUT * 6,
            "every client is told that recovery failed",
        )
        await finish(clients, 0)
    for client in clients:
        # Nothing twice, and what arrived is in publish order.
        numbers = [int(p[1:]) for p in client.payloads]
        assert numbers == sorted(set(numbers)), client.index
        assert numbers[:before] == list(range(before))[: len(numbers[:before])]
