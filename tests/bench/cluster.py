"""Fan-out on one Redis against a Redis Cluster of 1 and 3 shards (``make bench-cluster``).

One daphne process serves ``--sockets`` websockets spread over
``--facilities`` broadcast channels whose slots cover the whole key space. For
each topology it measures:

* burst: every channel gets ``--burst`` messages at once; deliveries per
  second until the last socket has them all (median of ``--rounds``);
* steady: ``--rate`` deliveries per second for ``--seconds``; latency from
  publish to arrival (p50, p99);
* the TCP connections the daphne process holds to Redis.

Topologies: ``redis`` (one server, classic ``PUBLISH``), ``cluster-1`` (a
cluster with one primary: sharded pub/sub, one subscriber connection) and
``cluster-3`` (three primaries: three subscriber connections). No replicas:
they do not take part in delivery. Everything runs on this machine, so a
cluster's extra servers compete with daphne and the client for the same cores:
the figures show what sharding costs the app, not what it gains on separate
hosts.

    python -m tests.bench.cluster [--quick] [--topologies redis,cluster-1,cluster-3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from testproject.redis_server import RedisServer
from tests.bench.client import Meter, Socket, close_all, make_payload, open_sockets, payload_stamp
from tests.bench.measure import raise_open_files
from tests.cluster import RedisCluster, redis_connections
from tests.servers import ROOT, Daphne
from ws4redis_channels.resp import encode_command
from ws4redis_channels.slots import SLOTS, key_slot

TOPOLOGIES = ("redis", "cluster-1", "cluster-3")


def spread_channels(count: int) -> list[bytes]:
    """Broadcast channels of ``count`` facilities whose slots cover the key space evenly."""
    tag = uuid.uuid4().hex[:6]
    width = SLOTS // count + 1
    chosen: dict[int, bytes] = {}
    n = 0
    while len(chosen) < count:
        channel = f"_broadcast_:b{n}-{tag}".encode()
        chosen.setdefault(key_slot(channel) // width, channel)
        n += 1
    return [chosen[k] for k in sorted(chosen)]


class Router:
    """Raw publisher connections, one per primary; each message goes to its slot's owner."""

    def __init__(self, owners: dict[bytes, int], sharded: bool) -> None:
        self.owners = owners
        self.command = "SPUBLISH" if sharded else "PUBLISH"
        self.writers: dict[int, asyncio.StreamWriter] = {}
        self.readers: list[asyncio.Task[None]] = []

    async def connect(self) -> None:
        for port in set(self.owners.values()):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            self.writers[port] = writer
            self.readers.append(asyncio.create_task(self._drain(reader)))

    @staticmethod
    async def _drain(reader: asyncio.StreamReader) -> None:
        while await reader.read(65536):
            pass

    def publish(self, channel: bytes, payload: bytes) -> None:
        self.writers[self.owners[channel]].write(encode_command(self.command, channel, payload))

    def close(self) -> None:
        for writer in self.writers.values():
            writer.close()
        for task in self.readers:
            task.cancel()


async def _ready(sockets: list[Socket], router: Router, channels: list[bytes]) -> None:
    deadline = time.monotonic() + 60
    probe = 0
    while not all(s.probed for s in sockets):
        if time.monotonic() > deadline:
            raise TimeoutError("some sockets never received a probe")
        for channel in channels:
            router.publish(channel, b"P%d" % probe)
        probe += 1
        await asyncio.sleep(0.5)
    await asyncio.sleep(0.5)
    for s in sockets:
        s.clear()


async def _measure(
    port: int,
    args: argparse.Namespace,
    router: Router,
    pid: int,
    node_ports: list[int],
    channels: list[bytes],
) -> dict[str, Any]:
    meter = Meter()
    per_channel = max(1, args.sockets // len(channels))
    sockets: list[Socket] = []
    for channel in channels:
        facility = channel.decode().split(":", 1)[1]
        opened = await open_sockets(
            "127.0.0.1",
            port,
            f"/ws/{facility}?subscribe-broadcast",
            per_channel,
            meter,
            concurrency=50,
            timeout=30,
        )
        sockets.extend(opened.sockets)
    await router.connect()
    await _ready(sockets, router, channels)
    result: dict[str, Any] = {
        "sockets": len(sockets),
        "redis_connections": redis_connections(pid, node_ports),
    }
    rates = []
    seq = 0
    for _ in range(args.rounds):
        expected = len(sockets) * args.burst
        done = meter.expect(expected)
        began = time.monotonic()
        for _ in range(args.burst):
            seq += 1
            payload = make_payload(seq, 64)
            for channel in channels:
                router.publish(channel, payload)
        await asyncio.wait_for(done, 120)
        rates.append(expected / (time.monotonic() - began))
        await asyncio.sleep(0.3)
    result["burst_deliveries_per_s"] = round(statistics.median(rates))
    for s in sockets:
        s.clear()
    # Steady: ``rate`` deliveries per second, in ticks of 10 ms.
    messages_per_s = args.rate / per_channel
    tick = 0.01
    sent = 0
    began = time.monotonic()
    while time.monotonic() - began < args.seconds:
        due = int((time.monotonic() - began) * messages_per_s)
        while sent < due:
            seq += 1
            router.publish(channels[sent % len(channels)], make_payload(seq, 64))
            sent += 1
        await asyncio.sleep(tick)
    await asyncio.sleep(1.0)
    latencies = sorted(
        (at - payload_stamp(payload)) / 1e6 for s in sockets for payload, at in s.received()
    )
    expected_steady = sent * per_channel
    result["steady_deliveries"] = f"{len(latencies)}/{expected_steady}"
    if latencies:
        result["steady_p50_ms"] = round(latencies[len(latencies) // 2], 1)
        result["steady_p99_ms"] = round(latencies[int(len(latencies) * 0.99)], 1)
    result["redis_connections_after"] = redis_connections(pid, node_ports)
    router.close()
    close_all(sockets)
    return result


def _migrate(env: dict[str, str]) -> None:
    subprocess.run(
        [sys.executable, "-m", "django", "migrate", "--noinput", "-v", "0"],
        cwd=ROOT,
        env=env,
        check=True,
    )


def run(topology: str, args: argparse.Namespace, db_path: str) -> dict[str, Any]:
    channels = spread_channels(args.facilities)
    if topology == "redis":
        server: Any = RedisServer().start()
        url, ports, owners = server.url, [server.port], {c: server.port for c in channels}
    else:
        server = RedisCluster(int(topology.split("-")[1]), 0).start()
        url, ports = server.url, server.ports
        owners = {c: server.port_of_key(c.decode()) for c in channels}
    env = {
        "REDIS_URL": url,
        "TESTPROJECT_DB": db_path,
        "DJANGO_SETTINGS_MODULE": "testproject.settings",
        "WS4REDIS_EXPIRE": "0",
        "WS4REDIS_PUBLISH_RATE": "0",
        "WS4REDIS_MAX_BUFFER_SIZE": str(64 * 1024 * 1024),
        "DJANGO_DEBUG": "0",
        "WS4REDIS_LOG_LEVEL": "WARNING",
    }
    daphne = Daphne(env).start()
    try:
        assert daphne.process is not None
        router = Router(owners, sharded=topology != "redis")
        result = asyncio.run(
            _measure(daphne.port, args, router, daphne.process.pid, ports, channels)
        )
    finally:
        daphne.stop()
        server.stop()
    return {"topology": topology, "shards": len(set(owners.values())), **result}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--topologies", default=",".join(TOPOLOGIES))
    parser.add_argument("--sockets", type=int, default=1000)
    parser.add_argument("--facilities", type=int, default=30)
    parser.add_argument("--burst", type=int, default=50, help="messages per channel per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--rate", type=int, default=20000, help="steady deliveries per second")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--quick", action="store_true", help="small counts: a smoke run")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if args.quick:
        args.sockets, args.burst, args.rounds, args.rate, args.seconds = 150, 10, 1, 2000, 2.0
    raise_open_files(args.sockets * 2 + 256)
    tmp = tempfile.mkdtemp(prefix="ws4redis-bench-cluster-")
    db_path = os.path.join(tmp, "db.sqlite3")
    _migrate(
        {**os.environ, "TESTPROJECT_DB": db_path, "DJANGO_SETTINGS_MODULE": "testproject.settings"}
    )
    results = [run(t, args, db_path) for t in args.topologies.split(",")]
    columns = [
        "topology",
        "shards",
        "sockets",
        "burst_deliveries_per_s",
        "steady_deliveries",
        "steady_p50_ms",
        "steady_p99_ms",
        "redis_connections",
        "redis_connections_after",
    ]
    print(" | ".join(columns))
    for r in results:
        print(" | ".join(str(r.get(c, "")) for c in columns))
    if args.json:
        args.json.write_text(
            json.dumps(
                {"args": vars(args) | {"json": str(args.json)}, "results": results}, indent=2
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
