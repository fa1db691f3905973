"""The reference designs the product is measured against, as a newcomer would write them.

* :class:`NaiveConsumer` — django-websocket-redis's design ported to
  Channels: every socket opens its own Redis pub/sub subscription and a
  reader task that forwards each message to the socket.
* :class:`GroupConsumer` — the Channels way: a socket joins the group of its
  facility; a separate bridge process (:mod:`tests.bench.group_bridge`)
  subscribes to Redis and calls ``group_send`` for each message.

Both sit behind the same middleware as the product (the origin check and
auth/session layer of ``ws4redis_channels.routing.websocket_application``),
so the comparison is between delivery designs, under daphne:
``daphne tests.bench.reference:application`` with ``BENCH_REFERENCE=naive``
or ``groups``.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.bench.reference_settings")
django_asgi = get_asgi_application()  # sets Django up before the imports below

import redis.asyncio  # noqa: E402
from channels.generic.websocket import AsyncWebsocketConsumer  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.conf import settings  # noqa: E402
from django.urls import re_path  # noqa: E402

from ws4redis_channels.routing import websocket_application  # noqa: E402

__all__ = ["GroupConsumer", "NaiveConsumer", "application", "group_name"]

_pool: redis.asyncio.ConnectionPool | None = None


def _redis() -> redis.asyncio.Redis:
    # One pool for the process; every subscription still holds its own
    # connection. No socket timeout: a pub/sub reader waits for as long as it likes.
    global _pool
    if _pool is None:
        _pool = redis.asyncio.ConnectionPool.from_url(
            settings.REDIS_URL, socket_timeout=None, max_connections=100_000
        )
    return redis.asyncio.Redis(connection_pool=_pool)


def group_name(facility: str) -> str:
    return f"broadcast.{facility}"


class NaiveConsumer(AsyncWebsocketConsumer):  # type: ignore[misc]
    """Subscribes to ``_broadcast_:<facility>`` on a connection of its own."""

    reader: asyncio.Task[None] | None = None
    pubsub: Any = None

    async def connect(self) -> None:
        facility = self.scope["url_route"]["kwargs"]["facility"]
        self.pubsub = _redis().pubsub()
        # Subscribe before accepting, so nothing published after the open is missed.
        await self.pubsub.subscribe(f"_broadcast_:{facility}")
        await self.accept()
        self.reader = asyncio.create_task(self.forward())

    async def forward(self) -> None:
        async for message in self.pubsub.listen():
            if message["type"] != "message":
                continue
            data: bytes = message["data"]
            try:
                await self.send(text_data=data.decode())
            except UnicodeDecodeError:
                await self.send(bytes_data=data)

    async def disconnect(self, code: int) -> None:
        if self.reader is not None:
            self.reader.cancel()
            await asyncio.gather(self.reader, return_exceptions=True)
        if self.pubsub is not None:
            await self.pubsub.aclose()


class GroupConsumer(AsyncWebsocketConsumer):  # type: ignore[misc]
    """Joins the Channels group of its facility; the bridge process does the rest."""

    group = ""

    async def connect(self) -> None:
        self.group = group_name(self.scope["url_route"]["kwargs"]["facility"])
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()

    async def disconnect(self, code: int) -> None:
        if self.group:
            await self.channel_layer.group_discard(self.group, self.channel_name)

    async def broadcast_message(self, event: dict[str, Any]) -> None:
        if "text" in event:
            await self.send(text_data=event["text"])
        else:
            await self.send(bytes_data=event["bytes"])


_consumer: type[AsyncWebsocketConsumer] = {"naive": NaiveConsumer, "groups": GroupConsumer}[
    os.environ.get("BENCH_REFERENCE", "naive")
]

application = ProtocolTypeRouter(
    {
        "http": django_asgi,
        "websocket": websocket_application(
            URLRouter([re_path(r"^ws/(?P<facility>[^/?]+)$", _consumer.as_asgi())])
        ),
    }
)
