"""A throw-away Redis Cluster for the tests: three primaries, each with one replica.

Six ``redis-server --cluster-enabled yes`` processes on free loopback ports,
joined with ``redis-cli --cluster create ... --cluster-replicas 1``. The
helpers do to it what operators do: kill a primary and wait for its replica
to take over, move slots with ``redis-cli --cluster reshard``.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import redis

from testproject.redis_server import RedisServer, find_redis_server, free_port
from tests.bench.measure import socket_inodes

__all__ = ["RedisCluster", "find_redis_cli", "redis_connections"]

# Small enough that a killed primary is replaced within a few seconds.
NODE_TIMEOUT_MS = 1000


def find_redis_cli() -> str:
    """Return the path of redis-cli next to redis-server, or on PATH."""
    sibling = Path(find_redis_server()).with_name("redis-cli")
    if sibling.exists():
        return str(sibling)
    found = shutil.which("redis-cli")
    if not found:
        raise RuntimeError("no redis-cli found: install Redis")
    return found


class RedisCluster:
    """Three primaries with a replica each, on 127.0.0.1."""

    def __init__(self, primaries: int = 3, replicas: int = 1, *extra: str) -> None:
        self.primaries = primaries
        self.replicas = replicas
        self.extra = extra  # more redis-server arguments
        self.nodes: list[RedisServer] = []
        self.dead_since: dict[int, float] = {}  # port -> when kill() saw the node exit
        self.cli = find_redis_cli()

    @property
    def ports(self) -> list[int]:
        return [node.port for node in self.nodes]

    @property
    def url(self) -> str:
        alive = [n.port for n in self.nodes if n.process is not None]
        return "redis+cluster://" + ",".join(f"127.0.0.1:{p}" for p in alive) + "/"

    def client(self, port: int) -> redis.Redis:
        return redis.Redis(port=port, socket_timeout=5, protocol=2)

    def start(self, timeout: float = 30.0) -> RedisCluster:
        for _ in range(self.primaries * (1 + self.replicas)):
            node = RedisServer(None)
            node.extra = (
                "--cluster-enabled",
                "yes",
                # The bus port defaults to port + 10000, which may be taken or
                # past 65535: pick a free one.
                "--cluster-port",
                str(free_port()),
                "--cluster-config-file",
                os.path.join(node.dir, "nodes.conf"),
                "--cluster-node-timeout",
                str(NODE_TIMEOUT_MS),
                "--cluster-replica-validity-factor",
                "0",
                *self.extra,
            )
            self.nodes.append(node.start())
        if self.primaries >= 3:
            self.redis_cli(
                "--cluster",
                "create",
                *(f"127.0.0.1:{port}" for port in self.ports),
                "--cluster-replicas",
                str(self.replicas),
                "--cluster-yes",
            )
        else:
            # redis-cli creates clusters of three primaries or more; the
            # benchmark's one-shard baseline is assigned by hand.
            if self.primaries != 1 or self.replicas:
                raise ValueError("use one primary without replicas, or three primaries or more")
            self.client(self.ports[0]).execute_command("CLUSTER ADDSLOTSRANGE", 0, 16383)
        self.wait_until_ok(timeout)
        return self

    def redis_cli(self, *args: str, timeout: float = 60.0) -> str:
        done = subprocess.run(
            [self.cli, *args], capture_output=True, timeout=timeout, check=False, text=True
        )
        if done.returncode != 0:
            raise RuntimeError(f"redis-cli {' '.join(args)} failed:\n{done.stdout}{done.stderr}")
        return done.stdout

    def alive(self) -> list[RedisServer]:
        return [n for n in self.nodes if n.process is not None and n.process.poll() is None]

    def primary_ports(self) -> list[int]:
        """Ports of the primaries that serve slots, as a live node sees them."""
        return sorted({port for _, _, port, _ in self.slot_ranges()})

    def slot_ranges(self) -> list[tuple[int, int, int, str]]:
        """(first, last, port, node id) of each slot range, from a live node."""
        for node in self.alive():
            try:
                reply = self.client(node.port).execute_command("CLUSTER SLOTS")
            except redis.RedisError:
                continue
            return sorted((int(e[0]), int(e[1]), int(e[2][1]), e[2][2].decode()) for e in reply)
        raise RuntimeError("no live cluster node answers CLUSTER SLOTS")

    def node_id(self, port: int) -> str:
        return self.client(port).execute_command("CLUSTER MYID").decode()  # type: ignore[no-any-return]

    def port_of_key(self, key: str) -> int:
        slot = int(self.client(self.alive()[0].port).execute_command("CLUSTER KEYSLOT", key))
        for first, last, port, _ in self.slot_ranges():
            if first <= slot <= last:
                return port
        raise RuntimeError(f"slot {slot} is not served")

    def wait_until_ok(self, timeout: float = 30.0) -> None:
        """Wait until every live node says the cluster is ok and agrees on the slots."""
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            try:
                views = set()
                for node in self.alive():
                    info = self.client(node.port).execute_command("CLUSTER INFO")
                    if info.get("cluster_state") != "ok":
                        raise RuntimeError(f"{node.port}: {info}")
                    reply = self.client(node.port).execute_command("CLUSTER SLOTS")
                    views.add(tuple(sorted((int(e[0]), int(e[1]), int(e[2][1])) for e in reply)))
                if len(views) == 1:
                    return
                last = f"nodes disagree: {views}"
            except (redis.RedisError, RuntimeError) as exc:
                last = str(exc)
            time.sleep(0.1)
        raise RuntimeError(f"cluster not ok after {timeout}s: {last}")

    def kill(self, port: int) -> None:
        """SIGKILL the node on ``port`` (a crash: no goodbye to clients or peers)."""
        node = next((n for n in self.nodes if n.port == port and n.process is not None), None)
        if node is None or node.process is None:
            raise ValueError(f"no running node on port {port}")
        node.process.send_signal(signal.SIGKILL)
        node.process.wait()
        node.process = None
        # From here on, no command can have been answered by this node.
        self.dead_since[port] = time.monotonic()

    def wait_for_promotion(self, dead_port: int, first_slot: int, timeout: float = 30.0) -> int:
        """Wait until another node serves ``first_slot`` of ``dead_port``; return its port."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                ranges = self.slot_ranges()
            except RuntimeError:
                ranges = []
            owners = [port for first, last, port, _ in ranges if first <= first_slot <= last]
            if owners and owners[0] != dead_port:
                try:
                    self.wait_until_ok(max(1.0, deadline - time.monotonic()))
                except RuntimeError:
                    continue
                return owners[0]
            time.sleep(0.1)
        raise RuntimeError(f"no replica took over the slots of {dead_port} in {timeout}s")

    def replicas_of(self, port: int) -> list[int]:
        """Ports of the live replicas of the primary on ``port``."""
        found = []
        for node in self.alive():
            info = self.client(node.port).info("replication")
            if info.get("role") == "slave" and int(info.get("master_port", 0)) == port:
                found.append(node.port)
        return found

    def kill_primary(self, port: int) -> int:
        """Kill the primary on ``port``, wait until its replica serves its slots; return that."""
        slots = [first for first, _, owner, _ in self.slot_ranges() if owner == port]
        if not slots:
            raise ValueError(f"{port} is not a primary that serves slots")
        self.kill(port)
        return self.wait_for_promotion(port, slots[0])

    def reshard(self, source_port: int, target_port: int, slots: int) -> None:
        """Move ``slots`` slots (and their keys) from one primary to another."""
        self.redis_cli(
            "--cluster",
            "reshard",
            f"127.0.0.1:{target_port}",
            "--cluster-from",
            self.node_id(source_port),
            "--cluster-to",
            self.node_id(target_port),
            "--cluster-slots",
            str(slots),
            "--cluster-yes",
        )
        self.wait_until_ok()

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
            shutil.rmtree(node.dir, ignore_errors=True)
        self.nodes.clear()

    def __enter__(self) -> RedisCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def redis_connections(pid: int, ports: list[int]) -> int:
    """Count the TCP connections process ``pid`` holds to any of ``ports``."""
    inodes = socket_inodes(pid)
    wanted = {f"{port:04X}" for port in ports}
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            remote_port = fields[2].rsplit(":", 1)[1]
            # 01: ESTABLISHED
            if fields[3] == "01" and remote_port in wanted and fields[9] in inodes:
                count += 1
    return count
