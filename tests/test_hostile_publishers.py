"""Hostile publishers against a real daphne: reconnect loops, byte floods, bursts that
would push the process past Redis's pub/sub output buffer, and storage floods. Each
attack comes from one identity (user, else session, else client address) and must hurt
only that identity."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
import redis
import websockets

from testproject.redis_server import RedisServer
from tests.conftest import TIMEOUT, Spy, close_code, connect, recv, session_cookie
from tests.servers import Daphne

pytestmark = pytest.mark.slow

E2E = "tests.e2e_settings"
KIB = 1024


def server_with(daphne_factory, redis_url: str | None = None, **settings) -> Daphne:
    env = {"DJANGO_SETTINGS_MODULE": E2E, "WS4REDIS_TEST_SETTINGS": json.dumps(settings)}
    if redis_url is not None:
        env["REDIS_URL"] = redis_url
    return daphne_factory(env)


async def send_until_closed(ws, frames) -> int:
    """Send ``frames`` until the server closes the socket; return how many were sent."""
    sent = 0
    for frame in frames:
        try:
            await asyncio.wait_for(ws.send(frame), TIMEOUT)
        except websockets.ConnectionClosed:
            break
        sent += 1
    return sent


async def until(predicate, timeout: float = TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


async def published_count(spy: Spy) -> int:
    return len(await asyncio.to_thread(spy.messages, 1.0))


# -- 1. frames and bytes per identity, across connections and reconnects ----------


async def test_a_reconnect_loop_gets_no_fresh_burst(daphne_factory, redis_client):
    server = server_with(daphne_factory, WS4REDIS_PUBLISH_RATE=1.0, WS4REDIS_PUBLISH_BURST=5)
    spy = Spy(redis_client)
    start = time.monotonic()
    codes = []
    for i in range(40):
        ws = await connect(server, "/ws/chat?publish-broadcast")
        await send_until_closed(ws, [f"{i}-{j}" for j in range(3)])
        await ws.close()
        codes.append(ws.close_code)
    elapsed = time.monotonic() - start
    published = await published_count(spy)
    # 40 connections x 3 frames = 120 on a per-connection limit.
    assert published <= 5 + 1.0 * elapsed + 1, (published, elapsed)
    assert "4429" in server.log()
    assert "address:127.0.0.1" in server.log()


async def test_sockets_of_one_user_share_one_limit(daphne_factory, redis_client):
    server = server_with(daphne_factory, WS4REDIS_PUBLISH_RATE=0.5, WS4REDIS_PUBLISH_BURST=10)
    cookie = session_cookie("flooder")
    sockets = [await connect(server, "/ws/news?publish-user", session=cookie) for _ in range(5)]
    spy = Spy(redis_client)
    for n, ws in enumerate(sockets):
        await send_until_closed(ws, [f"{n}-{j}" for j in range(4)])
    codes = [await close_code(ws) for ws in sockets[2:]]
    assert 4429 in codes
    assert await published_count(spy) <= 12  # 20 on per-socket limits
    # Another user keeps the full burst.
    other = await connect(server, "/ws/news?publish-user", session=session_cookie("calm"))
    spy = Spy(redis_client)
    assert await send_until_closed(other, [str(j) for j in range(10)]) == 10
    assert await published_count(spy) == 10
    await other.close()


async def test_bytes_are_limited_per_identity_as_well_as_frames(daphne_factory, redis_client):
    server = server_with(
        daphne_factory,
        WS4REDIS_PUBLISH_BYTES_RATE=1 * KIB,
        WS4REDIS_PUBLISH_BYTES_BURST=200 * KIB,
        WS4REDIS_MAX_MESSAGE_SIZE=64 * KIB,
    )
    spy = Spy(redis_client)
    ws = await connect(server, "/ws/chat?publish-broadcast")
    await send_until_closed(ws, ["x" * (60 * KIB)] * 10)
    assert await close_code(ws) == 4429
    assert await published_count(spy) == 3  # 180 KiB of the 200 KiB burst
    # Reconnecting does not refill the bucket.
    again = await connect(server, "/ws/chat?publish-broadcast")
    await send_until_closed(again, ["x" * (60 * KIB)])
    assert await close_code(again) == 4429
    assert "bytes" in server.log()


async def test_a_forged_x_forwarded_for_does_not_make_a_new_identity(daphne_factory, redis_client):
    server = server_with(daphne_factory, WS4REDIS_PUBLISH_RATE=0.5, WS4REDIS_PUBLISH_BURST=4)
    spy = Spy(redis_client)
    for i in range(6):
        ws = await connect(
            server,
            "/ws/chat?publish-broadcast",
            additional_headers={"X-Forwarded-For": f"10.0.0.{i}"},
        )
        await send_until_closed(ws, [f"{i}-a", f"{i}-b"])
        await ws.close()
    assert await published_count(spy) <= 6


# -- 2. no identity makes the process fall behind Redis's pub/sub output buffer ----


async def victim_loss_under_burst(
    server: Daphne,
    redis_port: int,
    path: str,
    reader_path: str,
    session: str | None = None,
    sessions: list[str | None] | None = None,
) -> int:
    """Return how many of a steady numbered stream a victim on another facility lost
    while 50 sockets (of one identity, or of ``sessions``) each send a full burst of
    64 KiB frames."""
    victim = await connect(server, "/ws/victim?subscribe-broadcast", max_size=None)
    # Someone reads the attacked channel, so the process subscribes to it.
    reader = await connect(server, reader_path, max_size=None, session=session)
    attackers = [
        await connect(server, path, max_size=None, session=s)
        for s in (sessions if sessions is not None else [session] * 50)
    ]
    count = 3000
    publisher = redis.asyncio.Redis(port=redis_port)
    frame = "x" * (64 * KIB)

    async def stream() -> None:
        for i in range(count):
            await publisher.publish("_broadcast_:victim", str(i))
            await asyncio.sleep(0.002)
        await publisher.publish("_broadcast_:victim", "end")

    async def drain(ws) -> None:
        try:
            while True:
                await asyncio.wait_for(ws.recv(), TIMEOUT)
        except (websockets.ConnectionClosed, asyncio.TimeoutError):
            pass

    async def received() -> list[int]:
        got = []
        while (message := await recv(victim, 60)) != "end":
            got.append(int(message))
        return got

    drainer = asyncio.ensure_future(drain(reader))
    task = asyncio.ensure_future(received())
    streaming = asyncio.ensure_future(stream())
    await asyncio.sleep(0.2)  # the stream is flowing when the burst starts
    await asyncio.gather(*(send_until_closed(ws, [frame] * 40) for ws in attackers))
    await streaming
    got = await task
    drainer.cancel()
    await publisher.aclose()
    assert got == sorted(got)
    for ws in [*attackers, reader, victim]:
        await ws.close()
    return count - len(set(got))


@pytest.fixture
def default_redis():
    """A private Redis with the default client-output-buffer-limit (32 MB pubsub)."""
    with RedisServer() as server:
        client = redis.Redis(port=server.port)
        assert client.config_get("client-output-buffer-limit")["client-output-buffer-limit"] == (
            "normal 0 0 0 slave 268435456 67108864 60 pubsub 33554432 8388608 60"
        )
        client.close()
        yield server


async def test_an_anonymous_burst_does_not_make_another_facility_lose_messages(
    daphne_factory, default_redis
):
    server = server_with(daphne_factory, redis_url=default_redis.url)
    lost = await victim_loss_under_burst(
        server, default_redis.port, "/ws/chat?publish-broadcast", "/ws/chat?subscribe-broadcast"
    )
    assert lost == 0
    assert "output buffer" not in server.log()


async def test_a_logged_in_burst_on_its_own_channel_does_not_make_others_lose_messages(
    daphne_factory, default_redis
):
    server = server_with(daphne_factory, redis_url=default_redis.url)
    cookie = session_cookie("burster")
    lost = await victim_loss_under_burst(
        server,
        default_redis.port,
        "/ws/mine?publish-user",
        "/ws/mine?subscribe-user",
        session=cookie,
    )
    assert lost == 0


async def test_fifty_users_bursting_at_once_do_not_make_others_lose_messages(
    daphne_factory, default_redis
):
    server = server_with(daphne_factory, redis_url=default_redis.url)
    cookies: list[str | None] = [session_cookie(f"burster{i}") for i in range(50)]
    lost = await victim_loss_under_burst(
        server,
        default_redis.port,
        "/ws/mine?subscribe-user&publish-user",
        "/ws/victim?subscribe-broadcast",
        sessions=cookies,
    )
    print("lost", lost)
    assert lost == 0


# -- 3. what one identity can store ---------------------------------------------------


async def test_one_user_cannot_store_on_unbounded_facilities(daphne_factory, redis_client):
    server = server_with(daphne_factory, WS4REDIS_MAX_STORED_CHANNELS=10)
    cookie = session_cookie("hoarder")
    codes = []
    for i in range(30):
        ws = await connect(server, f"/ws/f{i}?publish-user", session=cookie)
        await ws.send("x" * 1000)
        await ws.send("again")  # the same channel again costs nothing more
        await ws.close()
        codes.append(ws.close_code)
    # The server answers a close before its consumer has published the frames before it.
    await until(lambda: "1 more would exceed 10" in server.log())
    await until(lambda: len(redis_client.keys("hoarder:*")) >= 10)
    assert "stored messages on 10 channels within 3600 s; 1 more would exceed 10" in server.log()
    assert "user:hoarder" in server.log()
    # Storing on a channel it already stored on still works, and others are unaffected.
    again = await connect(server, "/ws/f3?publish-user", session=cookie)
    await again.send("update")
    await again.close()
    await until(lambda: redis_client.get("hoarder:f3") == b"update")
    other = await connect(server, "/ws/f20?publish-user", session=session_cookie("modest"))
    await other.send("mine")
    await other.close()
    await until(lambda: redis_client.get("modest:f20") == b"mine")
    assert len(redis_client.keys("hoarder:*")) == 10
