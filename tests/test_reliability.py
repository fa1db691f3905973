"""Fault injection with real processes: Redis restarts and outages, Sentinel failover,
slow and dead clients, shutdown, and long uptimes."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import time

import pytest
import redis
from channels_redis.core import RedisChannelLayer

from testproject.redis_server import RedisServer, free_port
from tests.conftest import TIMEOUT, close_code, connect, recv
from tests.rawws import upgrade
from tests.sentinels import SentinelGroup
from tests.servers import Daphne
from ws4redis_channels.names import group_for

pytestmark = pytest.mark.slow


def env_for(server: RedisServer, **extra: str) -> dict[str, str]:
    return {"REDIS_URL": server.url, **extra}


async def wait_until(predicate, timeout: float = TIMEOUT, every: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(every)


def open_raw_socket(server: Daphne, path: str, rcvbuf: int | None = None) -> socket.socket:
    """A websocket client that completes the handshake and then never reads or answers."""
    sock = socket.socket()
    if rcvbuf:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.connect(("127.0.0.1", server.port))
    return upgrade(sock, server.port, server.origin, path, TIMEOUT)


# -- Redis restarts and outages ---------------------------------------------------


async def test_sockets_survive_a_3s_redis_restart_and_get_what_is_published_after(daphne_factory):
    with RedisServer() as redis_server:
        server = daphne_factory(env_for(redis_server))
        sockets = [await connect(server, "/ws/restart?subscribe-broadcast") for _ in range(20)]
        redis_server.stop()
        await asyncio.sleep(3)  # the outage itself
        redis_server.start()
        client = redis.Redis(port=redis_server.port)

        async def first_message(ws) -> list[str]:
            return [await recv(ws)]

        async def publish_until_stopped(stop: asyncio.Event) -> None:
            i = 0
            while not stop.is_set():
                client.publish("_broadcast_:restart", f"m{i}")
                i += 1
                await asyncio.sleep(0.05)

        stop = asyncio.Event()
        publisher = asyncio.ensure_future(publish_until_stopped(stop))
        await asyncio.gather(*(first_message(ws) for ws in sockets))
        stop.set()
        await publisher
        # How fast they recover is a figure of `make chaos` (redis-restart), not a test.
        for ws in sockets:
            # Still open, in order, nothing twice.
            seen = [int(m[1:]) for m in [*(await drain(ws))]]
            assert seen == sorted(set(seen))
            await ws.close()
        # channels-redis logs its own retries with tracebacks; ours are single lines.
        assert "/ws4redis_channels/" not in server.log()
        client.close()


async def drain(ws, within: float = 0.5) -> list[str]:
    messages = []
    try:
        while True:
            messages.append(await asyncio.wait_for(ws.recv(), within))
    except asyncio.TimeoutError:
        return messages


async def test_sockets_are_closed_with_4503_when_redis_stays_down(daphne_factory):
    with RedisServer() as redis_server:
        server = daphne_factory(env_for(redis_server, WS4REDIS_OUTAGE_TIMEOUT="2"))
        sockets = [await connect(server, "/ws/outage?subscribe-broadcast") for _ in range(5)]
        publisher_only = await connect(server, "/ws/chat?publish-broadcast")
        redis_server.stop()
        codes = await asyncio.gather(*(close_code(ws, 10) for ws in [*sockets, publisher_only]))
        assert codes == [4503] * 6
        # A handshake while Redis is down gets the same code.
        ws = await connect(server, "/ws/outage?subscribe-broadcast")
        assert await close_code(ws) == 4503
        assert "Redis at redis://127.0.0.1" in server.log()


# -- Sentinel -----------------------------------------------------------------------
# Manual failovers and killed masters under load: tests/test_sentinel_failover.py.


async def test_sentinel_failover_is_followed(daphne_factory, tmp_path):
    with SentinelGroup(tmp_path) as group:
        server = daphne_factory({"REDIS_URL": group.url})
        sockets = [await connect(server, "/ws/failover?subscribe-broadcast") for _ in range(5)]
        redis.Redis(port=group.master.port).publish("_broadcast_:failover", "before")
        assert [await recv(ws) for ws in sockets] == ["before"] * 5

        switch = await group.kill_master()
        try:
            new_port = await switch.switched(30)
        finally:
            await switch.close()
        assert new_port == group.replica.port
        promoted = redis.Redis(port=new_port)
        await wait_until(lambda: promoted.pubsub_numsub("_broadcast_:failover")[0][1] >= 1, 15, 0.1)
        promoted.publish("_broadcast_:failover", "after failover")
        assert [await recv(ws) for ws in sockets] == ["after failover"] * 5
        for ws in sockets:
            await ws.close()


async def test_a_catch_up_refused_by_a_read_only_master_is_tried_again(daphne_factory):
    # What a failover can do for a moment: the subscriber is back (on the new master)
    # while the catch-up's read is refused (the master is still read-only). The
    # sockets' messages are held until their catch-up succeeds: given up, the
    # sockets would stay open and mute until the next reconnect.
    with RedisServer() as redis_server:
        server = daphne_factory(env_for(redis_server))
        client = redis.Redis(port=redis_server.port)
        sockets = [await connect(server, "/ws/readonly?subscribe-broadcast") for _ in range(3)]
        client.publish("_broadcast_:readonly", "before")
        assert [await recv(ws) for ws in sockets] == ["before"] * 3
        # The channel's position is not on this node yet (as on a new master that
        # never saw the channel): the catch-up's read must write it, and cannot.
        client.delete("{_broadcast_:readonly}:pos")
        client.execute_command("REPLICAOF", "127.0.0.1", str(free_port()))  # read-only now
        client.client_kill_filter(_type="pubsub")
        await wait_until(lambda: "after a reconnect failed" in server.log(), 15, 0.05)
        assert "read only replica" in server.log()
        client.execute_command("REPLICAOF", "NO", "ONE")
        # The catch-up is tried again; once it has run, a live message arrives.
        await wait_until(lambda: client.pubsub_numsub("_broadcast_:readonly")[0][1] >= 1, 15, 0.05)
        client.publish("_broadcast_:readonly", "after")
        assert [await recv(ws) for ws in sockets] == ["after"] * 3
        for ws in sockets:
            await ws.close()


# -- slow and dead clients ----------------------------------------------------------


async def test_a_client_that_stops_reading_is_closed_and_hurts_nobody(daphne_factory, redis_client):
    # 8 MiB rather than the default 1 MiB: the ten readers share this test's process, and
    # on a loaded machine (or through the slower ASGI path) one falls 1 MiB behind at
    # 12 MB/s while reading all it can. The stalled client still passes 8 MiB 40 times over.
    server = daphne_factory({"WS4REDIS_MAX_BUFFER_SIZE": str(8 << 20)})
    stalled = open_raw_socket(server, "/ws/firehose?subscribe-broadcast", rcvbuf=4096)
    readers = [
        await connect(server, "/ws/firehose?subscribe-broadcast", max_size=None) for _ in range(10)
    ]
    baseline = server.rss_kb()
    peak = [baseline]
    count, size = 5000, 10_000  # 50 MB
    padding = "x" * size

    async def read(ws) -> int:
        got = 0
        while got < count:
            message = await asyncio.wait_for(ws.recv(), TIMEOUT)
            assert message.startswith(f"{got} ")  # in order
            got += 1
        return got

    async def publish() -> None:
        client = redis.asyncio.Redis(port=redis_client.connection_pool.connection_kwargs["port"])
        for i in range(count):
            await client.publish("_broadcast_:firehose", f"{i} {time.time()} {padding}")
            if i % 50 == 0:
                peak[0] = max(peak[0], server.rss_kb())
                await asyncio.sleep(0.04)  # about 1,250 messages (12 MB) per second
        await client.aclose()

    results = await asyncio.gather(publish(), *(read(ws) for ws in readers))
    assert results[1:] == [count] * 10
    # The readers' latency meanwhile is a figure of `make chaos` (slow-client), not a test.
    assert (peak[0] - baseline) < 100_000, f"RSS grew by {(peak[0] - baseline) / 1024:.0f} MB"
    await wait_until(lambda: "with 4507" in server.log())
    # The stalled connection is gone: reading what is left ends in EOF or a reset.
    stalled.settimeout(TIMEOUT)
    try:
        while stalled.recv(1 << 20):
            pass
    except (ConnectionResetError, TimeoutError):
        pass
    stalled.close()
    for ws in readers:
        await ws.close()


async def test_dead_peers_are_reaped_by_server_pings(daphne_factory, redis_client):
    server = daphne_factory({}, "--ping-interval", "1", "--ping-timeout", "1")
    dead = open_raw_socket(server, "/ws/pings?subscribe-broadcast")
    await wait_until(lambda: redis_client.pubsub_numsub("_broadcast_:pings")[0][1] == 1)
    await wait_until(lambda: redis_client.pubsub_numsub("_broadcast_:pings")[0][1] == 0, 15)
    dead.close()


async def test_group_membership_outlives_the_layers_group_expiry(daphne_factory, redis_client):
    layers = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": [os.environ["REDIS_URL"]], "group_expiry": 2},
        }
    }
    server = daphne_factory(
        {
            "DJANGO_SETTINGS_MODULE": "tests.e2e_settings",
            "WS4REDIS_TEST_SETTINGS": json.dumps({"CHANNEL_LAYERS": layers}),
        }
    )
    ws = await connect(server, "/ws/longlived?subscribe-broadcast")
    await asyncio.sleep(4)  # twice the group expiry
    sender = RedisChannelLayer(hosts=[os.environ["REDIS_URL"]], group_expiry=2)
    await sender.group_send(
        group_for("_broadcast_:longlived"), {"type": "ws4redis.message", "text": "still here"}
    )
    assert await recv(ws) == "still here"
    await sender.flush()
    await ws.close()


# -- shutdown and long uptimes --------------------------------------------------------


async def test_sigterm_closes_sockets_with_1001_and_the_bridge_cleanly(
    daphne_factory, redis_client
):
    server = daphne_factory()
    sockets = [await connect(server, "/ws/bye?subscribe-broadcast") for _ in range(5)]
    sockets.append(await connect(server, "/ws/chat?publish-broadcast"))
    pid = server.process.pid
    bridges = [c for c in redis_client.client_list() if c["name"] == f"ws4redis-bridge-{pid}"]
    assert len(bridges) == 1
    server.process.send_signal(signal.SIGTERM)
    codes = await asyncio.gather(*(close_code(ws) for ws in sockets))
    assert codes == [1001] * 6
    assert server.process.wait(TIMEOUT) == 0
    assert redis_client.pubsub_numsub("_broadcast_:bye")[0][1] == 0
    assert not [c for c in redis_client.client_list() if c["name"] == f"ws4redis-bridge-{pid}"]
    assert "Traceback" not in server.log()


async def test_10000_connect_cycles_leave_nothing_behind(daphne_factory, redis_client):
    server = daphne_factory()

    async def cycle(i: int) -> None:
        ws = await connect(server, f"/ws/cycle{i % 50}?subscribe-broadcast")
        await ws.close()

    async def cycles(n: int, concurrency: int = 25) -> None:
        for start in range(0, n, concurrency):
            await asyncio.gather(*(cycle(i) for i in range(start, start + concurrency)))

    await cycles(2000)  # warm-up: caches, pools, allocator arenas
    await asyncio.sleep(1)
    warm = server.rss_kb()
    await cycles(10_000)
    await asyncio.sleep(1)
    after = server.rss_kb()
    assert after <= warm * 1.10, f"RSS {warm} KB -> {after} KB"

    def leftovers() -> list[bytes]:
        # The bridge's own channels and the layer's group channels.
        return [
            *redis_client.pubsub_channels("_broadcast_:cycle*"),
            *redis_client.pubsub_channels("*__group__*"),
        ]

    try:
        await wait_until(lambda: not leftovers(), 5)
    except AssertionError:
        pytest.fail(f"still subscribed after the last close: {leftovers()}")
    assert "Traceback" not in server.log()
