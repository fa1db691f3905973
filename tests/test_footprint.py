"""What an open socket keeps in a real daphne process, found by a census of its live objects.

Sockets that have been open a while (a ping answered, messages both ways)
must keep nothing of the HTTP request they were upgraded from (Twisted's
channel, daphne's request, the handshake's headers), hold their queues in
lists rather than 760-byte deques, and leave four suspended frames: channels'
protocol router, the websocket application, the consumer and its wait for the
next frame. ``make bench`` measures what that saves (``idle``); this test
keeps it from coming back unnoticed. The census is taken in the server
process on SIGUSR2 (``tests/shims/sitecustomize.py``).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
from pathlib import Path
from typing import Any

import redis

from tests.conftest import TIMEOUT, connect, recv
from tests.servers import Daphne
from tests.test_accelerator import SHIMS

STATE_OPEN = 3  # autobahn's


def census_env(path: Path, **extra: str) -> dict[str, str]:
    pythonpath = os.environ.get("PYTHONPATH", "")
    return {
        "PYTHONPATH": f"{SHIMS}{os.pathsep}{pythonpath}" if pythonpath else SHIMS,
        "WS4REDIS_TEST_CENSUS": str(path),
        **extra,
    }


def _read(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.exists() else None


async def take_census(server: Daphne, path: Path) -> dict[str, Any]:
    await asyncio.to_thread(path.unlink, missing_ok=True)
    server.process.send_signal(signal.SIGUSR2)
    for _ in range(int(TIMEOUT / 0.05)):
        census = await asyncio.to_thread(_read, path)
        if census is not None:
            return census
        await asyncio.sleep(0.05)
    raise AssertionError(f"no census from the server: {server.log()[-2000:]}")


async def used_sockets(server: Daphne, redis_client: redis.Redis, facility: str) -> list[Any]:
    """Open 20 sockets and use them: a ping each, a message from Redis and one from a client."""
    path = f"/ws/{facility}?subscribe-broadcast&publish-broadcast&echo"
    sockets = [await connect(server, path) for _ in range(20)]
    for ws in sockets:
        await asyncio.wait_for(await ws.ping(), TIMEOUT)
    redis_client.publish(f"_broadcast_:{facility}", "from redis")
    await sockets[0].send("from a client")
    for ws in sockets:
        assert {await recv(ws), await recv(ws)} == {"from redis", "from a client"}
    return sockets


async def settled_census(server: Daphne, path: Path) -> dict[str, Any]:
    """A census once daphne has forgotten the upgraded HTTP requests: it keeps each in its
    table of connections until its next check, within a second."""
    census = await take_census(server, path)
    for _ in range(int(TIMEOUT / 0.2)):
        if not any(census["counts"].values()):
            break
        await asyncio.sleep(0.2)
        census = await take_census(server, path)
    return census


def assert_lean(census: dict[str, Any], sockets: int, *, producer: str | None = "NoneType") -> None:
    """Check a census of ``sockets`` open sockets; ``producer``: the type registered with
    the transport (None: not checked)."""
    opened = [s for s in census["sockets"] if s["state"] == STATE_OPEN]
    assert len(opened) == sockets, census["sockets"]
    for entry in opened:
        assert entry["queue"] == dict.fromkeys(("_queue", "_getters", "_putters"), "SmallQueue")
        assert entry["join_waiters"] == "SmallQueue"
        assert entry["send_queue"] == "SmallQueue"
        if producer is not None:
            assert entry["producer"] == producer  # not Twisted's HTTPChannel
        assert entry["on_ping"] == "method"  # the pong bound, without a closure per socket
        assert entry["headers"] == {}
        assert entry["origin"] is None
    assert census["counts"] == {
        "twisted.web.http.HTTPChannel": 0,
        "daphne.http_protocol.WebRequest": 0,
    }
    depths = census["task_depths"]
    assert len(depths) == sockets
    assert set(depths) == {4}, depths


async def test_an_open_socket_keeps_nothing_of_its_upgrade_and_few_objects(
    daphne_factory, redis_server, redis_client, tmp_path
):
    path = tmp_path / "census.json"
    server = daphne_factory(census_env(path, REDIS_URL=redis_server.url))
    sockets = await used_sockets(server, redis_client, "chat")  # clients may publish on chat
    assert_lean(await settled_census(server, path), len(sockets))
    # Still a working socket: the next message, a ping, a clean close.
    redis_client.publish("_broadcast_:chat", "later")
    for ws in sockets:
        assert await recv(ws) == "later"
        await asyncio.wait_for(await ws.ping(), TIMEOUT)
        await ws.close()
    assert "Traceback" not in server.log()


async def test_a_socket_on_a_custom_router_keeps_its_router(redis_server, redis_client, tmp_path):
    # websocket_application(inner) with the project's own URLRouter: awaited as it is.
    path = tmp_path / "census.json"
    server = Daphne(
        census_env(path, REDIS_URL=redis_server.url), app="tests.custom_router_asgi:application"
    ).start()
    try:
        ws = await connect(server, "/ws/custom?subscribe-broadcast")
        redis_client.publish("_broadcast_:custom", "routed")
        assert await recv(ws) == "routed"
        census = await take_census(server, path)
        # channels' URLRouter and the as_asgi wrapper stay suspended too.
        assert census["task_depths"] == [6]
        await ws.close()
    finally:
        server.stop()
