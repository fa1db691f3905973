"""The daphne floor: what daphne itself allows, with nothing of Django or of the product.

``daphne tests.bench.daphne_floor:application`` serves a plain ASGI app that
accepts every websocket at once, keeps one Redis subscription per process on
the benchmark's channel and sends each message to every open socket through
daphne's ASGI ``send``. No middleware, session, routing, consumer, join or
catch-up: its connects per second are the most that any application served
by daphne (Twisted's HTTP, autobahn's handshake, daphne's application
instance) makes on the machine, the ceiling of the product's own figure.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from typing import Any

from tests.bench.scenarios import CHANNEL

Send = Callable[[dict[str, Any]], Awaitable[None]]

_sockets: set[Send] = set()
_pump: asyncio.Task[None] | None = None


async def _relay() -> None:
    import redis.asyncio

    client = redis.asyncio.Redis.from_url(os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
    pubsub = client.pubsub()
    await pubsub.subscribe(CHANNEL)
    async for message in pubsub.listen():
        if message["type"] != "message":
            continue
        data = message["data"]
        event = {"type": "websocket.send", "text": data.decode("utf-8", "replace")}
        for send in list(_sockets):
            await send(event)  # daphne's send hands the frame to Twisted: it never waits


async def application(scope: dict[str, Any], receive: Any, send: Send) -> None:
    global _pump
    if scope["type"] != "websocket":
        return
    if _pump is None:
        _pump = asyncio.ensure_future(_relay())
    if (await receive())["type"] != "websocket.connect":
        return
    await send({"type": "websocket.accept"})
    _sockets.add(send)
    try:
        while (await receive())["type"] != "websocket.disconnect":
            pass
    finally:
        _sockets.discard(send)
