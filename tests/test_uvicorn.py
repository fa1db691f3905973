"""The same application under uvicorn: no code changes, same contract."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator

import pytest

from testproject.redis_server import free_port
from tests.conftest import (
    close_code,
    connect,
    empty_messages_reach_no_socket,
    nothing_arrives,
    recv,
)
from tests.servers import ROOT, wait_for_port

pytest.importorskip("uvicorn")


class Uvicorn:
    """Just enough of tests.servers.Daphne's interface for the helpers."""

    def __init__(self) -> None:
        self.port = free_port()
        env = {**os.environ, "DJANGO_SETTINGS_MODULE": "testproject.settings"}
        env.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "--port",
                str(self.port),
                "--log-level",
                "warning",
                "testproject.asgi:application",
            ],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_port(self.port, process=self.process)

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url(self, path: str) -> str:
        return f"ws://127.0.0.1:{self.port}{path}"

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)


@pytest.fixture
def uvicorn(redis_server) -> Iterator[Uvicorn]:
    server = Uvicorn()
    yield server
    server.stop()


async def test_raw_publish_and_socket_publish_work_under_uvicorn(uvicorn, redis_client):
    listener = await connect(uvicorn, "/ws/chat?subscribe-broadcast")
    sender = await connect(uvicorn, "/ws/chat?subscribe-broadcast&publish-broadcast")
    redis_client.publish("_broadcast_:chat", "raw")
    assert await recv(listener) == "raw"
    assert await recv(sender) == "raw"
    await sender.send("from a socket")
    assert await recv(listener) == "from a socket"
    assert await nothing_arrives(sender)
    for i in range(300):
        redis_client.publish("_broadcast_:chat", str(i))
    for ws in (listener, sender):
        assert [await recv(ws) for _ in range(300)] == [str(i) for i in range(300)]
    await listener.close()
    await sender.close()


async def test_refusals_have_the_same_codes_under_uvicorn(uvicorn, redis_client):
    ws = await connect(uvicorn, "/ws/a:b?subscribe-broadcast")
    assert await close_code(ws) == 4400
    ws = await connect(uvicorn, "/ws/news?subscribe-user")
    assert await close_code(ws) == 4401


async def test_an_empty_message_reaches_no_socket_under_uvicorn(uvicorn, redis_client):
    # uvicorn could send an empty frame; daphne's ASGI path cannot: the same everywhere.
    await empty_messages_reach_no_socket(uvicorn, redis_client)
