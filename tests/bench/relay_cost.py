"""What the channel layer relay costs per new channel: ``python -m tests.bench.relay_cost``.

A logged-in socket brings channels of its own (user, session), and the relay
joins a channel layer group for each before the socket is accepted. This
watches ``--channels`` new channels in one pass, as a reconnect storm would,
on each of channels-redis's layers (core and pub/sub) against a private
Redis, waits until the relay is in every group, and reports the CPU and wall
time per channel, the relay's warnings (a failed join is one), and what the
relay and the layer keep in memory per channel (tracemalloc, a round apart).
``--at-once 100000`` lifts the relay's bound on joins at once.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import time
import tracemalloc
from typing import Any

__all__ = ["main"]


async def _measure(
    layer: Any, count: int, round_: int, memory: bool = False
) -> tuple[float, float, float]:
    """(wall s, CPU s, traced bytes kept) for ``count`` new channels."""
    from ws4redis_channels.relay import LayerRelay

    relay = LayerRelay(layer, lambda channel, event: None)
    channels = [f"u{round_}-{i}:bench" for i in range(count)]
    try:
        relay.watch("warm:bench", True)
        await relay.ready(["warm:bench"])
        if memory:
            tracemalloc.start()
        wall, cpu = time.perf_counter(), time.process_time()
        for channel in channels:
            relay.watch(channel, True)
        await asyncio.wait_for(relay.ready(channels), 120)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        kept = float(tracemalloc.get_traced_memory()[0]) if memory else 0.0
        tracemalloc.stop()
        return wall, cpu, kept
    finally:
        await relay.close()
        await layer.flush()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--channels", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--at-once",
        type=int,
        help="joins at once (the relay's JOINING_AT_ONCE; 100000 gives the relay before the bound)",
    )
    args = parser.parse_args()
    if args.at_once:
        from ws4redis_channels import relay

        relay.JOINING_AT_ONCE = args.at_once
    from channels_redis.core import RedisChannelLayer
    from channels_redis.pubsub import RedisPubSubChannelLayer

    from testproject.redis_server import RedisServer

    warnings: list[str] = []

    class Count(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            warnings.append(record.getMessage())

    logging.getLogger("ws4redis_channels.relay").addHandler(Count(logging.WARNING))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "testproject.settings")
    redis = RedisServer().start()
    try:
        for name, kind in (("core", RedisChannelLayer), ("pubsub", RedisPubSubChannelLayer)):
            print(f"{name} layer, {args.channels} new channels at once:")
            for n in range(args.rounds):
                warnings.clear()
                layer = kind(hosts=[redis.url], prefix=f"relaycost{n}")
                wall, cpu, _ = asyncio.run(_measure(layer, args.channels, n))
                print(
                    f"  round {n + 1}: {cpu / args.channels * 1e3:.3f} ms CPU and "
                    f"{wall / args.channels * 1e3:.3f} ms wall per channel, "
                    f"{len(warnings)} warnings"
                )
            layer = kind(hosts=[redis.url], prefix="relaycostmem")
            kept = asyncio.run(_measure(layer, args.channels, args.rounds, memory=True))[2]
            print(
                f"  memory the relay and the layer keep: {kept / args.channels / 1024:.1f} KB per channel"
            )
    finally:
        redis.stop()


if __name__ == "__main__":
    main()
