"""The bridge process of the "groups" reference: Redis ``PUBLISH`` -> ``group_send``.

One process for the whole site subscribes to ``_broadcast_:*`` and turns
every message into a ``group_send`` to the group of its facility, so every
daphne process's consumers receive it through the channel layer.
Run as ``python -m tests.bench.group_bridge`` with the reference settings.
"""

from __future__ import annotations

import asyncio
import os

import django

__all__ = ["main"]


async def bridge() -> None:
    import redis.asyncio
    from channels.layers import get_channel_layer
    from django.conf import settings

    from tests.bench.reference import group_name

    layer = get_channel_layer()
    client = redis.asyncio.Redis.from_url(settings.REDIS_URL, socket_timeout=None)
    pubsub = client.pubsub()
    await pubsub.psubscribe("_broadcast_:*")
    print("bridge subscribed", flush=True)
    async for message in pubsub.listen():
        if message["type"] != "pmessage":
            continue
        facility = message["channel"].decode().split(":", 1)[1]
        data: bytes = message["data"]
        event: dict[str, str | bytes] = {"type": "broadcast.message"}
        try:
            event["text"] = data.decode()
        except UnicodeDecodeError:
            event["bytes"] = data
        await layer.group_send(group_name(facility), event)


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.bench.reference_settings")
    os.environ.setdefault("BENCH_REFERENCE", "groups")
    django.setup()
    asyncio.run(bridge())


if __name__ == "__main__":
    main()
