"""Positions on against off, in one run: ``python -m tests.bench.positions``.

For each mode a fresh Redis and a fresh daphne (history on: 1,000 messages
per channel) serve ``--sockets`` sockets, with the ``positions`` flag or
without; the same three measurements are made:

* burst: ``--burst`` messages published in one pipeline (``FCALL
  ws4redis_publish``, the app's publish function); deliveries/s from the
  write until every socket has every message;
* steady: ``--rate`` messages/s for ``--seconds``; p50/p99 latency from the
  publisher's timestamp in the payload to the client's read;
* reconnect (positions only): every socket drops, ``--missed`` messages are
  published, every socket reconnects with its position; seconds until all
  have caught up.

It prints one JSON document. The clients are :class:`tests.rawws.Wire`
connections in this process, so the numbers include this process's own
reading; run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import statistics
import sys
import threading
import time
from typing import Any

from testproject.redis_server import RedisServer
from tests.rawws import Wire
from tests.servers import Daphne

FACILITY = "benchpos"
PATH = f"/ws/{FACILITY}?subscribe-broadcast"


class Reader:
    """One socket: counts messages, keeps latencies and the last position.

    Per frame of a burst it does as little with positions as without (a
    look at the first byte, a count): the readers share this process with
    the publisher, and a costlier reader would slow the publishing down.
    """

    def __init__(self, positioned: bool) -> None:
        self.positioned = positioned
        self.count = 0
        self.stamped = False  # frames carry a timestamp (steady): measure latencies
        self.latencies: list[float] = []
        self.state_position: bytes | None = None
        self.last: bytes | None = None  # the last message frame (positions)
        self.ready = asyncio.Event()
        self.wire: Wire | None = None

    @property
    def position(self) -> bytes | None:
        """The position of the last message, else the one of the state frame."""
        last = self.last
        if last is None:
            return self.state_position
        end = last.index(b"\n")
        return last[last.rindex(b" ", 0, end) + 1 : end]

    def on_frame(self, frame: bytes) -> None:
        if self.positioned:
            if frame[0] == 0x70:  # b"p": the state frame
                self.state_position = self.state_position or frame.split(b" ")[2]
                self.ready.set()
                return
            self.last = frame
            if not self.stamped:
                self.count += 1
                return
            frame = frame[frame.index(b"\n") + 1 :]
        if frame == b"probe":
            self.ready.set()
            return
        self.count += 1
        if self.stamped and frame[:1] == b"t":
            self.latencies.append(time.time() - float(frame[1:]))


async def _open(port: int, readers: list[Reader], since: bool = False) -> None:
    loop = asyncio.get_running_loop()
    flag = "&positions" if readers[0].positioned else ""

    async def one(reader: Reader) -> None:
        path = PATH + flag
        if since and reader.position:
            path += f"&since=broadcast:{reader.position.decode()}"
        _, wire = await loop.create_connection(
            functools.partial(Wire, reader.on_frame, path, port), "127.0.0.1", port
        )
        reader.wire = wire

    for start in range(0, len(readers), 100):
        await asyncio.gather(*(one(r) for r in readers[start : start + 100]))


async def _until(predicate: Any, timeout: float) -> float:
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            raise TimeoutError("not all sockets got everything in time")
        await asyncio.sleep(0.005)
    return time.monotonic() - start


def _publish(count: int, rate: float | None, stamp: bool) -> None:
    from ws4redis_channels import publisher

    start = time.monotonic()
    for i in range(count):
        payload = f"t{time.time()!r}" if stamp else f"m{i}"
        publisher.publish(FACILITY, payload, broadcast=True, expire=0)
        if rate:
            delay = start + (i + 1) / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)


async def _mode(positioned: bool, args: argparse.Namespace) -> dict[str, Any]:
    with RedisServer() as redis:
        os.environ["REDIS_URL"] = redis.url
        env = {"REDIS_URL": redis.url, "WS4REDIS_HISTORY_SIZE": "1000"}
        with Daphne({"DJANGO_SETTINGS_MODULE": "testproject.settings", **env}) as daphne:
            from django.test import override_settings

            with override_settings(WS4REDIS_CONNECTION=redis.url, WS4REDIS_HISTORY_SIZE=1000):
                readers = [Reader(positioned) for _ in range(args.sockets)]
                await _open(daphne.port, readers)
                if not positioned:
                    # Subscribed means a probe arrived (plain sockets get no state frame).
                    async def probe() -> None:
                        while not all(r.ready.is_set() for r in readers):
                            await asyncio.to_thread(_publish_probe)
                            await asyncio.sleep(0.2)

                    await asyncio.wait_for(probe(), 60)
                else:
                    await asyncio.wait_for(asyncio.gather(*(r.ready.wait() for r in readers)), 60)
                for r in readers:
                    r.count, r.latencies = 0, []
                result: dict[str, Any] = {"positions": positioned, "sockets": args.sockets}
                # Burst.
                started = time.monotonic()
                thread = threading.Thread(target=_publish_burst, args=(redis.url, args.burst))
                thread.start()
                await _until(lambda: all(r.count >= args.burst for r in readers), 120)
                elapsed = time.monotonic() - started
                thread.join()
                result["burst_deliveries_per_s"] = round(args.sockets * args.burst / elapsed)
                # Steady.
                for r in readers:
                    r.count, r.latencies, r.stamped = 0, [], True
                total = int(args.rate * args.seconds)
                await asyncio.to_thread(_publish, total, args.rate, True)
                await _until(lambda: all(r.count >= total for r in readers), 60)
                latencies = sorted(lat for r in readers for lat in r.latencies)
                result["steady_p50_ms"] = round(statistics.median(latencies) * 1000, 1)
                result["steady_p99_ms"] = round(latencies[int(len(latencies) * 0.99)] * 1000, 1)
                # Reconnect after missing messages.
                if positioned:
                    for r in readers:
                        r.stamped = False
                        assert r.wire is not None and r.wire.transport is not None
                        r.wire.transport.abort()
                    await asyncio.sleep(0.5)
                    await asyncio.to_thread(_publish, args.missed, None, False)
                    for r in readers:
                        r.count = 0
                    started = time.monotonic()
                    await _open(daphne.port, readers, since=True)
                    await _until(lambda: all(r.count >= args.missed for r in readers), 120)
                    result["reconnect_caught_up_s"] = round(time.monotonic() - started, 2)
                for r in readers:
                    if r.wire is not None and r.wire.transport is not None:
                        r.wire.transport.abort()
                return result


def _publish_burst(url: str, count: int) -> None:
    """Publish ``count`` messages through the app's Redis function, in one pipeline."""
    import redis

    channel = f"_broadcast_:{FACILITY}"  # the demo project has no WS4REDIS_PREFIX
    client = redis.Redis.from_url(url)
    try:
        with client.pipeline(transaction=False) as pipe:
            for i in range(count):
                pipe.execute_command("FCALL", "ws4redis_publish", 1, channel, f"m{i}", 0)
            pipe.execute()
    finally:
        client.close()


def _publish_probe() -> None:
    from ws4redis_channels import publisher

    publisher.publish(FACILITY, "probe", broadcast=True, expire=0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sockets", type=int, default=1000)
    parser.add_argument("--burst", type=int, default=200)
    parser.add_argument("--rate", type=float, default=20.0)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--missed", type=int, default=50)
    args = parser.parse_args(argv)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "testproject.settings")
    os.environ.setdefault("TESTPROJECT_DB", ":memory:")
    import django

    django.setup()
    off = asyncio.run(_mode(False, args))
    on = asyncio.run(_mode(True, args))
    report = {
        "off": off,
        "on": on,
        "burst_ratio_on_off": round(
            on["burst_deliveries_per_s"] / off["burst_deliveries_per_s"], 2
        ),
        "steady_p99_ratio_on_off": round(on["steady_p99_ms"] / max(off["steady_p99_ms"], 0.1), 2),
    }
    json.dump(report, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
