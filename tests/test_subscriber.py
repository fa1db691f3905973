"""The subscriber connection: backoff, and a lost connection noticed at once even while a
request (the health PING) waits for its reply."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time

import pytest
import redis

from testproject.redis_server import RedisServer
from tests.conftest import TIMEOUT
from ws4redis_channels import subscriber
from ws4redis_channels.bridge import Bridge
from ws4redis_channels.connection import parse_target
from ws4redis_channels.exceptions import RedisUnavailable
from ws4redis_channels.frames import Batch
from ws4redis_channels.subscriber import Backoff

# How much sooner than the health PING's own timeout the loss must be noticed.
NOTICED_WITHIN = 2.0


class Proxy:
    """A TCP proxy to Redis that can hold what clients send (a stalled network) and cut
    every connection (the network comes back with a reset)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.holding = False
        self.pipes: list[asyncio.StreamWriter] = []
        self.server: asyncio.Server | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.port)
        self.pipes += [writer, up_writer]

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter, hold: bool) -> None:
            with contextlib.suppress(OSError):
                while data := await src.read(65536):
                    if not (hold and self.holding):
                        dst.write(data)
            # One side closed (e.g. Redis killed the client): close the other too.
            for w in (writer, up_writer):
                w.transport.abort()

        await asyncio.gather(
            pump(reader, up_writer, True), pump(up_reader, writer, False), return_exceptions=True
        )

    def cut(self) -> None:
        for writer in self.pipes:
            writer.transport.abort()
        self.pipes.clear()

    async def close(self) -> None:
        self.cut()
        if self.server is not None:
            self.server.close()


class Sink:
    def __init__(self) -> None:
        self.messages: list[object] = []

    def deliver(self, batch: Batch) -> None:
        self.messages.extend(batch.messages)

    def redis_lost(self) -> None:
        pass

    def going_away(self) -> None:
        pass


async def wait_connected(bridge: Bridge) -> None:
    await asyncio.wait_for(bridge.subscriber.wait_connected(), TIMEOUT)


async def until(predicate, timeout: float) -> None:
    async def poll() -> None:
        while not predicate():
            await asyncio.sleep(0.01)

    await asyncio.wait_for(poll(), timeout)


@pytest.mark.parametrize("how", ["stalled-then-reset", "client-kill"])
async def test_a_lost_connection_is_noticed_at_once_while_the_health_ping_waits(
    redis_server, redis_client, monkeypatch, how
):
    monkeypatch.setattr(subscriber, "HEALTH_INTERVAL", 0.2)
    proxy = Proxy(redis_server.port)
    port = await proxy.start()
    bridge = Bridge(parse_target(f"redis://127.0.0.1:{port}/0"), outage_timeout=60)
    try:
        await wait_connected(bridge)
        await asyncio.wait_for(bridge.join(Sink(), ["_broadcast_:deaf"]), TIMEOUT)
        proxy.holding = True  # the next health PING leaves; its reply never comes
        await until(lambda: bool(bridge.subscriber._replies), TIMEOUT)
        if how == "client-kill":
            redis_client.client_kill_filter(_type="pubsub")
        else:
            proxy.cut()
        # Long before the PING's own timeout (HEALTH_TIMEOUT, 10 s):
        await until(lambda: not bridge.connected, NOTICED_WITHIN)
        with pytest.raises(RedisUnavailable):
            await asyncio.wait_for(bridge.join(Sink(), ["_broadcast_:other"]), NOTICED_WITHIN)
        proxy.holding = False
        # ...and it comes back by itself, subscribed again.
        await wait_connected(bridge)
        await until(lambda: redis_client.pubsub_numsub("_broadcast_:deaf")[0][1] == 1, TIMEOUT)
    finally:
        await bridge.close()
        await proxy.close()


def test_backoff_is_jittered_doubling_and_capped():
    backoff = Backoff(0.1, 1.0)
    delays = [backoff.next() for _ in range(20)]
    assert all(0 <= d <= 1.0 for d in delays)
    assert delays[0] <= 0.1 and delays[1] <= 0.2
    assert len(set(delays)) > 10  # jittered, not lockstep
    backoff.reset()
    assert backoff.next() <= 0.1


async def test_redis_dropping_a_slow_subscriber_is_named_and_counted(caplog):
    # Redis closes a pub/sub client whose unread output passes the hard limit.
    with RedisServer(None, "--client-output-buffer-limit", "pubsub 64kb 32kb 1") as server:
        bridge = Bridge(parse_target(server.url), outage_timeout=60)
        try:
            await wait_connected(bridge)
            sink = Sink()
            await asyncio.wait_for(bridge.join(sink, ["_broadcast_:burst"]), TIMEOUT)
            client = redis.Redis(port=server.port)
            pipe = client.pipeline(transaction=False)
            for _ in range(20_000):
                pipe.publish("_broadcast_:burst", b"x" * 1024)
            # The process is busy (its loop blocked) while 20 MB arrive for it.
            threading.Thread(target=pipe.execute).start()
            time.sleep(3)
            await until(lambda: bridge.subscriber.dropped_by_redis == 1, TIMEOUT)
            await wait_connected(bridge)
            # Redis 7.0 does not confirm it: the full reads before the close tell.
            assert bridge.subscriber.output_buffer_drops == 1
            assert bridge.health.output_buffer_drops == 1
            assert "client-output-buffer-limit pubsub" in caplog.text
            assert "were lost" in caplog.text
            client.close()
        finally:
            await bridge.close()


async def test_a_client_kill_is_not_taken_for_an_output_buffer_drop(redis_server, redis_client):
    bridge = Bridge(parse_target(redis_server.url), outage_timeout=60)
    try:
        await wait_connected(bridge)
        await asyncio.wait_for(bridge.join(Sink(), ["_broadcast_:killed"]), TIMEOUT)
        redis_client.client_kill_filter(_type="pubsub")
        await until(lambda: bridge.subscriber.dropped_by_redis == 1, TIMEOUT)
        assert bridge.subscriber.output_buffer_drops == 0
    finally:
        await bridge.close()
