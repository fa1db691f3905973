"""Shutdown and close frames as clients see them: 1001 at SIGTERM for sockets open a while,
and close reasons that reach the client under daphne and uvicorn."""

from __future__ import annotations

import asyncio
import signal
import time

import pytest
import websockets

from tests.conftest import TIMEOUT, connect
from tests.test_uvicorn import uvicorn  # noqa: F401  (fixture)
from ws4redis_channels.codes import CLOSE_REASONS, CloseCode

pytestmark = pytest.mark.slow

SOCKETS = 500
OPEN_FOR = 3.0


async def closed_with(ws, timeout: float = TIMEOUT) -> tuple[int | None, str]:
    """Read until the server closes ``ws``; return the code and reason it sent."""
    try:
        while True:
            await asyncio.wait_for(ws.recv(), timeout)
    except websockets.ConnectionClosed as exc:
        return (exc.rcvd.code, exc.rcvd.reason) if exc.rcvd else (None, "")


async def open_many(server, path: str, count: int) -> list:
    sockets = []
    for start in range(0, count, 50):
        sockets += await asyncio.gather(
            *(connect(server, path) for _ in range(min(50, count - start)))
        )
    return sockets


@pytest.mark.parametrize("publishing", [False, True], ids=["idle", "steady-publish"])
async def test_sigterm_closes_500_sockets_open_3s_with_1001(
    daphne_factory, redis_client, publishing
):
    server = daphne_factory()
    sockets = await open_many(server, "/ws/bye500?subscribe-broadcast", SOCKETS)
    opened = time.monotonic()
    stop = asyncio.Event()

    async def publish_steadily() -> None:
        i = 0
        while not stop.is_set():
            redis_client.publish("_broadcast_:bye500", f"m{i}")
            i += 1
            await asyncio.sleep(0.01)

    publisher = asyncio.ensure_future(publish_steadily()) if publishing else None
    # The condition users meet: sockets that have been open for a while.
    await asyncio.sleep(max(0.0, OPEN_FOR - (time.monotonic() - opened)))
    server.process.send_signal(signal.SIGTERM)
    results = await asyncio.gather(*(closed_with(ws, 30) for ws in sockets))
    stop.set()
    if publisher is not None:
        await publisher
    codes = [code for code, _ in results]
    assert codes.count(1001) == SOCKETS, {c: codes.count(c) for c in set(codes)}
    assert {reason for _, reason in results} == {"server shutting down"}
    assert server.process.wait(TIMEOUT) == 0
    assert "Closed 500 websockets with 1001" in server.log()


REFUSALS = [
    ("/ws/a:b?subscribe-broadcast", CloseCode.BAD_REQUEST),
    ("/ws/news?subscribe-user", CloseCode.LOGIN_REQUIRED),
    ("/nowhere", CloseCode.NOT_FOUND),
]


@pytest.mark.parametrize(("path", "code"), REFUSALS, ids=[c.name for _, c in REFUSALS])
async def test_close_reasons_reach_the_client_under_daphne(daphne, path, code):
    ws = await connect(daphne, path)
    assert await closed_with(ws) == (code, CLOSE_REASONS[code])


async def test_the_reason_of_a_close_after_frames_reaches_the_client_under_daphne(daphne):
    ws = await connect(daphne, "/ws/news?subscribe-broadcast")
    await ws.send("not allowed to publish here")
    assert await closed_with(ws) == (CloseCode.FORBIDDEN, CLOSE_REASONS[CloseCode.FORBIDDEN])


@pytest.mark.parametrize(("path", "code"), REFUSALS, ids=[c.name for _, c in REFUSALS])
async def test_close_reasons_reach_the_client_under_uvicorn(uvicorn, path, code):  # noqa: F811
    ws = await connect(uvicorn, path)
    assert await closed_with(ws) == (code, CLOSE_REASONS[code])
