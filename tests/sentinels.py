"""A real Sentinel deployment for the tests: one master, one replica, three Sentinels.

:class:`SentinelGroup` starts them on free loopback ports (nothing on disk but
the Sentinels' own config files), waits until every Sentinel knows the
replica and the two other Sentinels, and offers the two faults users meet:
:meth:`SentinelGroup.failover` (``SENTINEL FAILOVER``: the old master stays
up and writable until Sentinel demotes it) and :meth:`SentinelGroup.kill_master`
(``kill -9``). Both return a :class:`Switch` whose awaitables are Sentinel's
own events, so tests wait for what happens instead of sleeping.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis
import redis.asyncio

from testproject.redis_server import RedisServer, find_redis_server, free_port

__all__ = ["SERVICE", "SentinelGroup", "SentinelProcess", "Switch"]

SERVICE = "mymaster"


class SentinelProcess:
    """One ``redis-server --sentinel`` watching ``SERVICE``."""

    def __init__(self, master_port: int, directory: Path) -> None:
        self.port = free_port()
        self.conf = directory / f"sentinel-{self.port}.conf"
        self.conf.write_text(
            f"port {self.port}\nbind 127.0.0.1\ndir {directory}\n"
            f"sentinel monitor {SERVICE} 127.0.0.1 {master_port} 2\n"
            f"sentinel down-after-milliseconds {SERVICE} 1000\n"
            f"sentinel failover-timeout {SERVICE} 5000\n"
        )
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> SentinelProcess:
        self.process = subprocess.Popen(
            [find_redis_server(), str(self.conf), "--sentinel"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        return self

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, socket_timeout=5, protocol=2)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None


@dataclass
class Switch:
    """A failover in progress, seen through every Sentinel's event channels."""

    old_port: int
    started: float = field(default_factory=time.monotonic)
    # Monotonic time of the first ``+switch-master`` and the new master's port.
    switched_at: float | None = None
    new_port: int | None = None
    # Monotonic time of ``+convert-to-slave`` for the old master (manual failover).
    demoted_at: float | None = None
    _switched: asyncio.Event = field(default_factory=asyncio.Event)
    _demoted: asyncio.Event = field(default_factory=asyncio.Event)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _clients: list[Any] = field(default_factory=list)

    async def switched(self, timeout: float) -> int:
        """Wait for the first ``+switch-master``; return the new master's port."""
        await asyncio.wait_for(self._switched.wait(), timeout)
        assert self.new_port is not None
        return self.new_port

    async def demoted(self, timeout: float) -> None:
        """Wait until a Sentinel turned the old master into a replica (``+convert-to-slave``)."""
        await asyncio.wait_for(self._demoted.wait(), timeout)

    def _on_event(self, channel: bytes, data: bytes) -> None:
        words = data.decode().split()
        if channel == b"+switch-master" and words[0] == SERVICE and not self._switched.is_set():
            self.switched_at = time.monotonic()
            self.new_port = int(words[4])
            self._switched.set()
        elif channel == b"+convert-to-slave" and words[3] == str(self.old_port):
            if not self._demoted.is_set():
                self.demoted_at = time.monotonic()
            self._demoted.set()

    async def _listen(self, port: int, ready: asyncio.Future[None]) -> None:
        client = redis.asyncio.Redis(port=port, protocol=2)
        self._clients.append(client)
        pubsub = client.pubsub()
        await pubsub.subscribe("+switch-master", "+convert-to-slave")
        ready.set_result(None)
        while True:
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=None)
            if message is not None:
                self._on_event(message["channel"], message["data"])

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for client in self._clients:
            await client.aclose()


class SentinelGroup:
    """A master, a replica and three Sentinels on loopback, ready for a failover."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.master = RedisServer()
        self.replica = RedisServer()
        self.sentinels: list[SentinelProcess] = []

    @property
    def url(self) -> str:
        """The ``redis+sentinel://`` URL of the service."""
        hosts = ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)
        return f"redis+sentinel://{hosts}/{SERVICE}/0"

    def servers(self) -> list[RedisServer]:
        return [self.master, self.replica]

    def start(self, timeout: float = 30.0) -> SentinelGroup:
        self.master.start()
        self.replica.extra = ("--replicaof", "127.0.0.1", str(self.master.port))
        self.replica.start()
        self.sentinels = [SentinelProcess(self.master.port, self.directory) for _ in range(3)]
        for sentinel in self.sentinels:
            sentinel.start()
        self._wait_ready(timeout)
        return self

    def _wait_ready(self, timeout: float) -> None:
        """Wait until every Sentinel sees the replica as healthy and knows the others.

        Sentinel discovers replicas and peers through INFO and hello messages
        it exchanges every second or so; there is no event to await from
        outside, so this polls, with a bound.
        """
        deadline = time.monotonic() + timeout
        pending = list(self.sentinels)
        while pending:
            if time.monotonic() > deadline:
                raise RuntimeError("the Sentinels did not discover the replica and each other")
            sentinel = pending[0]
            try:
                client = sentinel.client()
                replicas = client.sentinel_slaves(SERVICE)
                peers = client.sentinel_sentinels(SERVICE)
                client.close()
            except redis.RedisError:
                replicas, peers = [], []
            healthy = [
                r
                for r in replicas
                if r["port"] == self.replica.port
                and r.get("master-link-status") == "ok"
                and not r["is_sdown"]
            ]
            if healthy and len(peers) == len(self.sentinels) - 1:
                pending.pop(0)
            else:
                time.sleep(0.1)

    def master_port(self) -> int:
        """The master's port as the first Sentinel reports it."""
        client = self.sentinels[0].client()
        try:
            return int(client.sentinel_get_master_addr_by_name(SERVICE)[1])
        finally:
            client.close()

    def server(self, port: int) -> RedisServer:
        return next(s for s in self.servers() if s.port == port)

    async def _watch(self) -> Switch:
        switch = Switch(old_port=self.master_port())
        loop = asyncio.get_running_loop()
        readies = []
        for sentinel in self.sentinels:
            ready: asyncio.Future[None] = loop.create_future()
            readies.append(ready)
            switch._tasks.append(asyncio.ensure_future(switch._listen(sentinel.port, ready)))
        await asyncio.wait_for(asyncio.gather(*readies), 10)
        return switch

    async def failover(self) -> Switch:
        """Run ``SENTINEL FAILOVER``; the old master stays up until Sentinel demotes it."""
        switch = await self._watch()
        client = self.sentinels[0].client()
        try:
            assert client.execute_command("SENTINEL", "FAILOVER", SERVICE) in (True, b"OK")
        finally:
            client.close()
        switch.started = time.monotonic()
        return switch

    async def kill_master(self) -> Switch:
        """Kill the master with SIGKILL, as a crashed host would leave it."""
        switch = await self._watch()
        server = self.server(switch.old_port)
        assert server.process is not None
        server.process.send_signal(signal.SIGKILL)
        server.process.wait(5)
        server.process = None
        switch.started = time.monotonic()
        return switch

    def stop(self) -> None:
        for sentinel in self.sentinels:
            sentinel.stop()
        for server in self.servers():
            server.stop()

    def __enter__(self) -> SentinelGroup:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
