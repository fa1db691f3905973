"""What the metrics add to a fan-out, measured in one process: ``python -m tests.bench.metrics_cost``.

The burst benchmark (``--servers product,product-nometrics``) compares whole
daphne processes, but on a shared machine its noise is larger than what the
metrics cost. This measures the one code path that differs: a real bridge,
subscribed on a real Redis, hands reads of ``--messages`` messages to
``--sockets`` sinks, alternately with the metrics recorder and without it,
in blocks of fan-outs, many times, and reports the median time per fan-out
of each. With ``--sink none`` the sinks do nothing: the fan-out is as cheap
as it can be, and the metrics' share an upper bound. With ``--sink write``
(the default) each sink makes one ``write`` system call per read, to
``/dev/null``, as a socket under daphne costs one ``send`` per read (a TCP
``send`` costs more, so this share is still an upper bound).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
from typing import Any

__all__ = ["main"]


class _Sink:
    """A socket that takes its batch and does nothing with it."""

    __slots__ = ()

    def deliver(self, batch: Any) -> None:
        pass

    def redis_lost(self) -> None:
        pass

    def going_away(self) -> None:
        pass


class _WritingSink:
    """A socket that writes once per batch (to /dev/null)."""

    __slots__ = ("fd",)

    frame = b"\x81\x40" + b"x" * 64

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def deliver(self, batch: Any) -> None:
        os.write(self.fd, self.frame)

    def redis_lost(self) -> None:
        pass

    def going_away(self) -> None:
        pass


async def _measure(
    sockets: int, messages: int, blocks: int, per_block: int, sink: str
) -> dict[str, Any]:
    from testproject.redis_server import RedisServer
    from ws4redis_channels.bridge import Bridge
    from ws4redis_channels.connection import parse_target
    from ws4redis_channels.metrics import NullRecorder, Recorder

    with RedisServer() as redis_server:
        bridge = Bridge(parse_target(redis_server.url), outage_timeout=60)
        try:
            await asyncio.wait_for(bridge.subscriber.wait_connected(), 30)
            channel = "_broadcast_:metrics-cost"
            null = os.open(os.devnull, os.O_WRONLY)
            sinks: list[Any] = [
                _WritingSink(null) if sink == "write" else _Sink() for _ in range(sockets)
            ]
            await asyncio.wait_for(asyncio.gather(*(bridge.join(s, [channel]) for s in sinks)), 60)
            read = [[b"message", channel.encode(), b"x" * 64] for _ in range(messages)]
            recorders = {"metrics": Recorder(), "none": NullRecorder()}
            times: dict[str, list[float]] = {name: [] for name in recorders}
            for block in range(blocks):
                # Alternate the order too: neither side always runs first.
                order = list(recorders) if block % 2 == 0 else list(reversed(recorders))
                for name in order:
                    bridge._metrics = recorders[name]
                    began = time.perf_counter()
                    for _ in range(per_block):
                        bridge._on_values(read)
                        await asyncio.sleep(0)  # the fan-out's timing callback runs here
                    times[name].append((time.perf_counter() - began) / per_block)
            with_metrics = statistics.median(times["metrics"])
            without = statistics.median(times["none"])
            os.close(null)
            return {
                "sink": sink,
                "sockets": sockets,
                "messages": messages,
                "with_us": with_metrics * 1e6,
                "without_us": without * 1e6,
                "added_us": (with_metrics - without) * 1e6,
                "ratio": with_metrics / without,
            }
        finally:
            await bridge.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.metrics_cost", description=__doc__)
    parser.add_argument("--sockets", default="100,1000", help="comma-separated socket counts")
    parser.add_argument("--messages", default="1,50", help="messages per read, comma-separated")
    parser.add_argument("--blocks", type=int, default=40, help="blocks per side (median)")
    parser.add_argument("--per-block", type=int, default=50, help="fan-outs per block")
    parser.add_argument("--sink", choices=("write", "none"), default="write")
    args = parser.parse_args(argv)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "testproject.settings")
    os.environ.setdefault("WS4REDIS_EXPIRE", "0")
    import django

    django.setup()
    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"sinks: {args.sink}")
    print("sockets  messages  with metrics µs  without µs  added µs  ratio")
    for sockets in (int(n) for n in args.sockets.split(",")):
        for messages in (int(n) for n in args.messages.split(",")):
            row = asyncio.run(_measure(sockets, messages, args.blocks, args.per_block, args.sink))
            print(
                f"{row['sockets']:>7}  {row['messages']:>8}  {row['with_us']:>15.1f}  "
                f"{row['without_us']:>10.1f}  {row['added_us']:>8.2f}  {row['ratio']:>5.3f}"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
