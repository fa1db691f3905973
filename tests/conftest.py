"""Fixtures: a private Redis for the session, daphne subprocesses, websocket helpers.

Before Django starts, a redis-server is started on a free port and a fresh
SQLite file is migrated; ``REDIS_URL`` and ``TESTPROJECT_DB`` point this
process and every daphne subprocess at them. Nothing touches the Redis on
6379 or the developer's database.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import redis
import websockets

from testproject.redis_server import RedisServer
from tests.servers import Daphne

_redis: RedisServer | None = None
_tmp = tempfile.mkdtemp(prefix="ws4redis-tests-")

# Generous timeouts: these machines are shared and have 2 cores.
TIMEOUT = float(os.environ.get("WS4REDIS_TEST_TIMEOUT", "10"))


def pytest_configure(config: pytest.Config) -> None:
    global _redis
    _redis = RedisServer().start()
    os.environ["REDIS_URL"] = _redis.url
    os.environ["TESTPROJECT_DB"] = os.path.join(_tmp, "db.sqlite3")
    os.environ["DJANGO_SETTINGS_MODULE"] = "tests.settings"
    # Test helpers create users and sessions with the ORM from async tests.
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "1"
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0)


def pytest_unconfigure(config: pytest.Config) -> None:
    if _redis is not None:
        _redis.stop()
    shutil.rmtree(_tmp, ignore_errors=True)


@pytest.fixture(scope="session")
def redis_server() -> RedisServer:
    assert _redis is not None
    return _redis


@pytest.fixture
def redis_client(redis_server: RedisServer) -> Iterator[redis.Redis]:
    client = redis.Redis(port=redis_server.port)
    client.flushall()
    yield client
    client.close()


@pytest.fixture(scope="session")
def daphne(redis_server: RedisServer) -> Iterator[Daphne]:
    """One daphne process shared by the tests that only read or publish."""
    server = Daphne({"DJANGO_SETTINGS_MODULE": "testproject.settings"}).start()
    yield server
    server.stop()


@pytest.fixture
def daphne_factory(redis_server: RedisServer) -> Iterator[Any]:
    """Start daphne processes with extra environment; all are stopped after the test."""
    started: list[Daphne] = []

    def start(env: dict[str, str] | None = None, *args: str) -> Daphne:
        server = Daphne(
            {"DJANGO_SETTINGS_MODULE": "testproject.settings", **(env or {})}, *args
        ).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture(autouse=True)
async def _close_bridge() -> AsyncIterator[None]:
    """Close the bridge of the test's event loop, if the test created one."""
    yield
    from ws4redis_channels.runtime import shutdown

    await shutdown()


class Spy:
    """A raw Redis subscriber on every channel: what really reaches Redis during a test."""

    def __init__(self, client: redis.Redis) -> None:
        self.pubsub = client.pubsub()
        self.pubsub.psubscribe("*")
        assert self.pubsub.get_message(timeout=TIMEOUT)["type"] == "psubscribe"

    def messages(self, within: float = 0.5) -> list[tuple[str, bytes]]:
        """Return (channel, data) of what was published, once nothing came for ``within`` s."""
        seen = []
        while (message := self.pubsub.get_message(timeout=within)) is not None:
            channel = message["channel"].decode()
            # The position that precedes each message on {<channel>}:pos.
            if not channel.startswith("{"):
                seen.append((channel, message["data"]))
        return seen

    def channels(self, within: float = 0.4) -> list[str]:
        return [channel for channel, _ in self.messages(within)]


def session_cookie(username: str | None = None) -> str:
    """Create a saved session (logged in as ``username`` if given); return its key."""
    from django.contrib.auth import (
        BACKEND_SESSION_KEY,
        HASH_SESSION_KEY,
        SESSION_KEY,
        get_user_model,
    )
    from django.contrib.sessions.backends.db import SessionStore

    store = SessionStore()
    if username is not None:
        user = get_user_model().objects.get_or_create(username=username)[0]
        store[SESSION_KEY] = str(user.pk)
        store[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
        store[HASH_SESSION_KEY] = user.get_session_auth_hash()
    else:
        store["visited"] = True
    store.save()
    assert store.session_key
    return store.session_key


async def connect(
    server: Daphne,
    path: str,
    *,
    session: str | None = None,
    origin: str | None = "default",
    **kwargs: Any,
) -> Any:
    """Open a websocket to ``server`` (with the server's own Origin unless told otherwise)."""
    headers = dict(kwargs.pop("additional_headers", None) or {})
    if session is not None:
        headers["Cookie"] = f"sessionid={session}"
    return await asyncio.wait_for(
        websockets.connect(
            server.url(path),
            origin=server.origin if origin == "default" else origin,  # type: ignore[arg-type]
            additional_headers=headers,
            open_timeout=TIMEOUT,
            **kwargs,
        ),
        TIMEOUT,
    )


async def recv(ws: Any, timeout: float = TIMEOUT) -> Any:
    return await asyncio.wait_for(ws.recv(), timeout)


async def nothing_arrives(ws: Any, within: float = 0.5) -> bool:
    try:
        message = await asyncio.wait_for(ws.recv(), within)
    except asyncio.TimeoutError:
        return True
    raise AssertionError(f"unexpected message {message!r}")


async def close_code(ws: Any, timeout: float = TIMEOUT) -> int | None:
    """Wait until the server closes ``ws``; return the close code it sent."""
    try:
        while True:
            await asyncio.wait_for(ws.recv(), timeout)
    except websockets.ConnectionClosed as exc:
        return exc.rcvd.code if exc.rcvd else None


async def empty_messages_reach_no_socket(server: Any, redis_client: Any) -> None:
    """Publish and store empty messages every way a client or backend can; no socket,
    with positions or without, gets one: the next frame is the marker sent after them.

    daphne's ASGI send drops empty frames, so the rule is the same on every path
    and server (see fanout.py)."""
    from tests.test_positions import parse, state

    # "chat": the facility where the demo lets anonymous sockets publish.
    redis_client.set("_broadcast_:chat", b"", ex=60)  # stored the way other backends store
    plain = await connect(server, "/ws/chat?subscribe-broadcast")
    positioned = await connect(server, "/ws/chat?subscribe-broadcast&positions")
    sender = await connect(server, "/ws/chat?subscribe-broadcast&publish-broadcast")
    assert set(state(await recv(positioned))) == {"broadcast"}
    redis_client.publish("_broadcast_:chat", b"")
    await sender.send("")
    await sender.send(b"")
    redis_client.publish("_broadcast_:chat", "after")
    assert await recv(plain) == "after"
    assert await recv(sender) == "after"
    assert parse(await recv(positioned))[2] == "after"
    await sender.send("from the sender")  # its empty frames did not end the socket
    assert await recv(plain) == "from the sender"
    for ws in (plain, positioned, sender):
        await ws.close()
    redis_client.delete("_broadcast_:chat")
