"""End to end on a Redis Cluster: sharded pub/sub reaches real daphne processes.

A cluster of three primaries with a replica each runs on free loopback
ports; daphne processes serve the demo project with ``REDIS_URL`` set to a
``redis+cluster://`` URL. The tests publish the ways users do (``redis-cli
-c SPUBLISH``, the Python API, ``redis-cli -c FCALL``) and do to the cluster
what operators and crashes do (kill a primary, move slots).
"""

from __future__ import annotations

import asyncio
import collections
import re
import shlex
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.test import override_settings

from tests.cluster import RedisCluster, redis_connections
from tests.conftest import TIMEOUT, close_code, connect, recv
from ws4redis_channels import store
from ws4redis_channels.connection import async_client, parse_target, sync_client
from ws4redis_channels.publisher import apublish, publish
from ws4redis_channels.slots import SLOTS, key_slot

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def cluster() -> Iterator[RedisCluster]:
    with RedisCluster() as running:
        yield running


@pytest.fixture
def fresh_cluster() -> Iterator[RedisCluster]:
    """A cluster of its own, for tests that kill or reshard it."""
    with RedisCluster() as running:
        yield running


def spread_facilities(count: int) -> list[str]:
    """Return ``count`` facilities whose broadcast channels fall in ``count`` slot ranges."""
    tag = uuid.uuid4().hex[:6]
    width = SLOTS // count + 1
    chosen: dict[int, str] = {}
    n = 0
    while len(chosen) < count:
        facility = f"f{n}-{tag}"
        chosen.setdefault(key_slot(f"_broadcast_:{facility}") // width, facility)
        n += 1
    return [chosen[bucket] for bucket in sorted(chosen)]


def bridge_connections(cluster: RedisCluster, pid: int) -> dict[int, int]:
    """Return, per live node, how many subscriber connections process ``pid`` holds there."""
    name = f"ws4redis-bridge-{pid}"
    found = {}
    for node in cluster.alive():
        clients = cluster.client(node.port).client_list()
        found[node.port] = sum(1 for c in clients if c.get("name") == name)
    return found


async def receive(ws: Any, count: int) -> list[str]:
    return [await recv(ws) for _ in range(count)]


async def test_spublish_cli_api_and_function_reach_every_socket_once_in_order(
    cluster: RedisCluster, daphne_factory: Any
) -> None:
    env = {"REDIS_URL": cluster.url}
    servers = [daphne_factory(env), daphne_factory(env)]
    facilities = spread_facilities(30)
    shards = {cluster.port_of_key(f"_broadcast_:{f}") for f in facilities}
    assert len(shards) == 3
    per_facility = 3
    sockets: list[tuple[str, Any]] = []
    for server in servers:
        for facility in facilities:
            for _ in range(per_facility):
                ws = await connect(server, f"/ws/{facility}?subscribe-broadcast")
                sockets.append((facility, ws))
    port = cluster.ports[0]
    for facility in facilities:
        out = cluster.redis_cli(
            "-c", "-p", str(port), "SPUBLISH", f"_broadcast_:{facility}", f"cli {facility}"
        )
        assert out.strip() == "2"  # one subscriber per daphne process
    with override_settings(WS4REDIS_CONNECTION=cluster.url):
        for facility in facilities:
            assert publish(facility, f"api {facility}", broadcast=True, expire=0) == 2
        for facility in facilities:
            assert await apublish(facility, f"async {facility}", broadcast=True, expire=0) == 2
        for facility in facilities:
            call_command("ws4redis_publish", facility, f"cmd {facility}", "--expire", "0")
    for facility in facilities:
        out = cluster.redis_cli(
            "-c",
            "-p",
            str(port),
            "FCALL",
            "ws4redis_publish",
            "1",
            f"_broadcast_:{facility}",
            f"fcall {facility}",
            "0",
        )
        assert out.strip() == "2"
    for facility in facilities:  # a marker after everything: nothing else came in between
        cluster.redis_cli("-c", "-p", str(port), "SPUBLISH", f"_broadcast_:{facility}", "end")
    got = await asyncio.gather(*(receive(ws, 6) for _, ws in sockets))
    for (facility, _), messages in zip(sockets, got, strict=True):
        assert messages == [
            f"cli {facility}",
            f"api {facility}",
            f"async {facility}",
            f"cmd {facility}",
            f"fcall {facility}",
            "end",
        ]
    for server in servers:
        assert server.process is not None
        pid = server.process.pid
        # One subscriber connection per shard, whatever the number of sockets.
        assert sorted(bridge_connections(cluster, pid).values()) == [0, 0, 0, 1, 1, 1]
        connections = redis_connections(pid, cluster.ports)
        # The subscribers, and the command client's connections (a few per
        # primary: joins' reads, the function, publications, the status report).
        assert 3 <= connections <= 3 + 4 * 3, connections
        print(f"Redis connections of process {pid}: {connections}")
    for _, ws in sockets:
        await ws.close()


async def test_stored_messages_are_replayed_from_the_channels_shard(
    cluster: RedisCluster, daphne_factory: Any
) -> None:
    server = daphne_factory({"REDIS_URL": cluster.url})
    facilities = spread_facilities(9)
    with override_settings(WS4REDIS_CONNECTION=cluster.url):
        for facility in facilities:
            publish(facility, f"stored {facility}", broadcast=True, expire=60)
    sockets = [(f, await connect(server, f"/ws/{f}?subscribe-broadcast")) for f in facilities]
    for facility, ws in sockets:
        assert await recv(ws) == f"stored {facility}"
    for facility, ws in sockets:
        cluster.redis_cli(
            "-p",
            str(cluster.port_of_key(f"_broadcast_:{facility}")),
            "SPUBLISH",
            f"_broadcast_:{facility}",
            "live",
        )
        assert await recv(ws) == "live"
        await ws.close()


class Traffic:
    """Publishes numbered messages on every facility until stopped; records what happened."""

    def __init__(self, url: str, facilities: list[str], interval: float = 0.02) -> None:
        self.target = parse_target(url)
        self.facilities = facilities
        self.interval = interval
        # seq -> time the publish started, per facility, for the publishes Redis confirmed.
        self.confirmed: dict[str, dict[int, float]] = {f: {} for f in facilities}
        self.uncertain: dict[str, set[int]] = {f: set() for f in facilities}
        self.failures = 0
        # (exception, seconds since the traffic began) -> how many, for failure messages.
        self.errors: collections.Counter[tuple[str, int]] = collections.Counter()
        self.began = time.monotonic()
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        self._stop.set()
        assert self._task is not None
        await asyncio.wait_for(self._task, TIMEOUT * 2)

    async def _one(self, client: Any, facility: str, seq: int) -> None:
        started = time.monotonic()
        try:
            await asyncio.wait_for(
                store.apublish(client, [f"_broadcast_:{facility}"], str(seq).encode(), 60), 2.0
            )
        except Exception as exc:
            self.failures += 1
            self.errors[(f"{type(exc).__name__}: {exc}"[:100], int(started - self.began))] += 1
            self.uncertain[facility].add(seq)  # a failed publish may still have run
        else:
            self.confirmed[facility][seq] = started

    async def _run(self) -> None:
        client = async_client(self.target)
        seq = 0
        while not self._stop.is_set():
            seq += 1
            await asyncio.gather(*(self._one(client, f, seq) for f in self.facilities))
            await asyncio.sleep(self.interval)
        self.last_seq = seq


class Listener:
    """Reads one socket until told to stop, with the arrival time of every message."""

    def __init__(self, facility: str, ws: Any) -> None:
        self.facility = facility
        self.ws = ws
        self.received: list[tuple[int, float]] = []
        self.task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while True:
            message = await self.ws.recv()
            if message == "end":
                return
            self.received.append((int(message), time.monotonic()))

    def seqs(self) -> list[int]:
        return [seq for seq, _ in self.received]


async def _finish(cluster: RedisCluster, traffic: Traffic, listeners: list[Listener]) -> None:
    await traffic.stop()
    with override_settings(WS4REDIS_CONNECTION=cluster.url):
        for facility in traffic.facilities:
            publish(facility, "end", broadcast=True, expire=0)
    await asyncio.wait_for(asyncio.gather(*(x.task for x in listeners)), TIMEOUT * 2)


def _assert_once_in_order(listener: Listener) -> None:
    seqs = listener.seqs()
    assert seqs == sorted(set(seqs)), f"{listener.facility}: duplicated or out of order: {seqs}"


async def _listen(server: Any, facilities: list[str], per_facility: int) -> list[Listener]:
    listeners = []
    for facility in facilities:
        for _ in range(per_facility):
            ws = await connect(server, f"/ws/{facility}?subscribe-broadcast")
            listeners.append(Listener(facility, ws))
    return listeners


async def test_a_killed_primary_is_replaced_and_delivery_resumes_without_duplicates(
    fresh_cluster: RedisCluster, daphne_factory: Any
) -> None:
    cluster = fresh_cluster
    server = daphne_factory({"REDIS_URL": cluster.url, "WS4REDIS_OUTAGE_TIMEOUT": "30"})
    facilities = spread_facilities(30)
    owner = {f: cluster.port_of_key(f"_broadcast_:{f}") for f in facilities}
    listeners = await _listen(server, facilities, 4)
    traffic = Traffic(cluster.url, facilities)
    traffic.start()
    await asyncio.sleep(1.0)  # traffic flows on every shard before the crash
    victim = owner[facilities[0]]
    killed_at = time.monotonic()
    await asyncio.to_thread(cluster.kill_primary, victim)
    promoted_at = time.monotonic()
    # A publish that started before the node had exited may still have been answered
    # by it; one that started later can only have been answered by the new primary.
    dead_at = cluster.dead_since[victim]
    await asyncio.sleep(2.0)  # traffic continues on the new primary
    # Delivery on the victim's channels resumes within 10 s of the crash. The cluster's
    # own promotion is not ours to bound: on a loaded machine it alone can take seconds,
    # so the app gets TIMEOUT from the promotion when that is later.
    hit = [x for x in listeners if owner[x.facility] == victim]
    deadline = max(killed_at + 10.0, promoted_at + TIMEOUT)

    async def resumed(listener: Listener) -> None:
        while not any(
            traffic.confirmed[listener.facility].get(seq, 0.0) > dead_at
            for seq, _ in listener.received
        ):
            await asyncio.sleep(0.05)

    try:
        await asyncio.wait_for(
            asyncio.gather(*(resumed(x) for x in hit)), max(0.1, deadline - time.monotonic())
        )
    except asyncio.TimeoutError:
        after_kill = {
            f: sum(1 for t in traffic.confirmed[f].values() if t > dead_at)
            for f in facilities
            if owner[f] == victim
        }
        errors = sorted(traffic.errors.items(), key=lambda kv: kv[0][1])
        raise AssertionError(
            f"delivery did not resume within {deadline - killed_at:.1f} s; confirmed after "
            f"the node exited: {after_kill}; killed {killed_at - traffic.began:.1f} s after "
            f"the traffic began; publish errors (error, second): {errors}; "
            f"daphne log:\n{server.log()[-3000:]}"
        ) from None
    await _finish(cluster, traffic, listeners)
    assert traffic.failures > 0, "the crash did not disturb the publisher: nothing tested"
    for listener in listeners:
        _assert_once_in_order(listener)
        confirmed = traffic.confirmed[listener.facility]
        received = set(listener.seqs())
        assert received <= set(confirmed) | traffic.uncertain[listener.facility]
        if owner[listener.facility] != victim:
            # The other shards were not interrupted: nothing confirmed is missing.
            missing = sorted(set(confirmed) - received)
            assert not missing, (
                f"{listener.facility} (shard not killed) lost {missing}; "
                f"received {listener.seqs()}; daphne log:\n{server.log()[-3000:]}"
            )
        else:
            # After the first message of the new primary reached any socket of the
            # facility, nothing is missing on any of them: the sockets of one channel
            # are caught up one after another when the first read fails, and those
            # still catching up hold what the first ones already get live.
            first = min(
                t
                for other in listeners
                if other.facility == listener.facility
                for seq, t in other.received
                if confirmed.get(seq, 0.0) > dead_at
            )
            after = {seq for seq, started in confirmed.items() if started > first}
            missing = sorted(after - received)
            assert not missing, (
                f"{listener.facility} (killed shard) lost {missing} after its first message "
                f"from the new primary, {first - killed_at:.2f} s after the kill; received "
                f"{listener.seqs()}; daphne log:\n{server.log()[-3000:]}"
            )
    for listener in listeners:
        await listener.ws.close()


async def test_a_cluster_client_that_lost_every_node_to_ask_connects_again(
    cluster: RedisCluster,
) -> None:
    # redis-py before 7.2 forgets a node to ask for the layout on each connection error;
    # a failover under load emptied the list of the test above's publisher, which then
    # failed every publish for good. Here the list is emptied as redis-py would, on
    # whatever redis-py is installed: the clients must ask the configured nodes again.
    target = parse_target(cluster.url)
    sync = sync_client(target)
    sync.set("seeds:sync", "1")
    sync.nodes_manager.startup_nodes.clear()  # type: ignore[attr-defined]
    sync.nodes_manager.initialize()  # type: ignore[attr-defined]
    assert sync.get("seeds:sync") == b"1"
    assert sync.nodes_manager.startup_nodes  # type: ignore[attr-defined]

    client = async_client(target)
    await client.set("seeds:async", "1")
    client.nodes_manager.startup_nodes.clear()  # type: ignore[attr-defined]
    await client.aclose()  # the next command asks for the layout again
    assert await client.get("seeds:async") == b"1"
    assert client.nodes_manager.startup_nodes  # type: ignore[attr-defined]


async def test_moving_slots_while_publishing_loses_nothing_the_guarantees_promise(
    fresh_cluster: RedisCluster, daphne_factory: Any
) -> None:
    cluster = fresh_cluster
    env = {"REDIS_URL": cluster.url}
    servers = [daphne_factory(env), daphne_factory(env)]
    facilities = spread_facilities(30)
    before = {f: cluster.port_of_key(f"_broadcast_:{f}") for f in facilities}
    listeners = [x for server in servers for x in await _listen(server, facilities, 2)]
    traffic = Traffic(cluster.url, facilities)
    traffic.start()
    await asyncio.sleep(0.5)
    source, target = before[facilities[0]], before[facilities[-1]]
    assert source != target
    await asyncio.to_thread(cluster.reshard, source, target, 2000)
    after = {f: cluster.port_of_key(f"_broadcast_:{f}") for f in facilities}
    moved = {f for f in facilities if before[f] != after[f]}
    assert moved, "the reshard moved none of the channels: nothing tested"
    await asyncio.sleep(1.0)  # traffic continues on the new owner
    await traffic.stop()
    # The newest message of every channel reaches every socket (live, or caught
    # up from the store when it was published while the channel moved).
    last = {f: max(traffic.confirmed[f]) for f in facilities}

    async def caught_up(listener: Listener) -> None:
        while not listener.received or listener.received[-1][0] < last[listener.facility]:
            await asyncio.sleep(0.05)

    await asyncio.wait_for(asyncio.gather(*(caught_up(x) for x in listeners)), TIMEOUT)
    with override_settings(WS4REDIS_CONNECTION=cluster.url):
        for facility in facilities:
            publish(facility, "end", broadcast=True, expire=0)
    await asyncio.wait_for(asyncio.gather(*(x.task for x in listeners)), TIMEOUT * 2)
    for listener in listeners:
        _assert_once_in_order(listener)
        confirmed = set(traffic.confirmed[listener.facility])
        received = set(listener.seqs())
        assert received <= confirmed | traffic.uncertain[listener.facility]
        if listener.facility not in moved:
            assert confirmed <= received, listener.facility
    for listener in listeners:
        await listener.ws.close()


async def test_plain_publish_does_not_reach_sockets_by_default(
    cluster: RedisCluster, daphne_factory: Any
) -> None:
    server = daphne_factory({"REDIS_URL": cluster.url})
    (facility,) = spread_facilities(1)
    channel = f"_broadcast_:{facility}"
    ws = await connect(server, f"/ws/{facility}?subscribe-broadcast")
    port = str(cluster.ports[0])
    cluster.redis_cli("-c", "-p", port, "PUBLISH", channel, "plain")
    cluster.redis_cli("-c", "-p", port, "SPUBLISH", channel, "sharded")
    assert await recv(ws) == "sharded"
    await ws.close()


async def test_plain_publish_reaches_sockets_once_when_enabled(
    cluster: RedisCluster, daphne_factory: Any
) -> None:
    env = {"REDIS_URL": cluster.url, "WS4REDIS_CLUSTER_PLAIN_PUBLISH": "1"}
    server = daphne_factory(env)
    facilities = spread_facilities(6)
    with override_settings(WS4REDIS_CONNECTION=cluster.url):
        for facility in facilities:
            publish(facility, "stored", broadcast=True, expire=60)
    sockets = [(f, await connect(server, f"/ws/{f}?subscribe-broadcast")) for f in facilities]
    port = str(cluster.ports[0])
    for facility, ws in sockets:
        channel = f"_broadcast_:{facility}"
        assert await recv(ws) == "stored"  # replayed once, by the channel's shard
        cluster.redis_cli("-c", "-p", port, "PUBLISH", channel, "plain")
        assert await recv(ws) == "plain"
        cluster.redis_cli("-c", "-p", port, "SPUBLISH", channel, "sharded")
        assert await recv(ws) == "sharded"
    assert server.process is not None
    # Three shard subscribers and one plain listener.
    assert sum(bridge_connections(cluster, server.process.pid).values()) == 4
    for _, ws in sockets:
        await ws.close()


async def test_a_socket_on_a_slot_that_moved_unseen_follows_it(
    fresh_cluster: RedisCluster, daphne_factory: Any
) -> None:
    """The process's slot map is stale (the slot moved while it had no socket on it):
    the SSUBSCRIBE answers -MOVED, and the socket gets its channel from the new owner."""
    cluster = fresh_cluster
    server = daphne_factory({"REDIS_URL": cluster.url})
    facilities = spread_facilities(30)
    first = await connect(server, f"/ws/{facilities[0]}?subscribe-broadcast")  # map fetched
    source = cluster.port_of_key(f"_broadcast_:{facilities[0]}")
    target = next(p for p in cluster.primary_ports() if p != source)
    await asyncio.to_thread(cluster.reshard, source, target, 2000)
    moved = [f for f in facilities[1:] if cluster.port_of_key(f"_broadcast_:{f}") == target]
    moved = [f for f in moved if f not in facilities[:1]]
    assert moved
    with override_settings(WS4REDIS_CONNECTION=cluster.url):
        publish(moved[0], "stored", broadcast=True, expire=60)
        ws = await connect(server, f"/ws/{moved[0]}?subscribe-broadcast")
        assert await recv(ws) == "stored"
        for n in range(3):
            publish(moved[0], f"live {n}", broadcast=True, expire=60)
        assert await receive(ws, 3) == ["live 0", "live 1", "live 2"]
    # The subscription was refused with -MOVED and followed (not a lucky fresh map).
    assert "moved 1 channels away" in server.log()
    await ws.close()
    await first.close()


async def test_a_shard_without_a_primary_closes_only_its_sockets_with_4503(
    daphne_factory: Any,
) -> None:
    # Without full coverage the other shards keep serving while one has no primary.
    with RedisCluster(3, 1, "--cluster-require-full-coverage", "no") as cluster:
        server = daphne_factory({"REDIS_URL": cluster.url, "WS4REDIS_OUTAGE_TIMEOUT": "3"})
        facilities = spread_facilities(9)
        owner = {f: cluster.port_of_key(f"_broadcast_:{f}") for f in facilities}
        sockets = [(f, await connect(server, f"/ws/{f}?subscribe-broadcast")) for f in facilities]
        victim = owner[facilities[0]]
        for replica in cluster.replicas_of(victim):
            cluster.kill(replica)
        cluster.kill(victim)
        for facility, ws in sockets:
            if owner[facility] == victim:
                assert await close_code(ws, timeout=TIMEOUT + 3) == 4503
        for facility, ws in sockets:
            if owner[facility] != victim:
                client = cluster.client(owner[facility])
                client.execute_command("SPUBLISH", f"_broadcast_:{facility}", "still here")
                assert await recv(ws) == "still here"
                await ws.close()


def cluster_examples() -> list[str]:
    """The ``redis-cli -c`` command lines of the docs (Redis reference, cluster how-to)."""
    found = []
    for page in ("reference/redis.rst", "howto/cluster.rst"):
        text = (Path(__file__).parent.parent / "docs" / page).read_text()
        found += re.findall(r"^\s+\$ redis-cli -c (.+)$", text, re.MULTILINE)
    return found


async def test_the_cluster_examples_of_the_docs_reach_sockets(
    cluster: RedisCluster, daphne_factory: Any
) -> None:
    server = daphne_factory({"REDIS_URL": cluster.url})
    ws = await connect(server, "/ws/foobar?subscribe-broadcast")
    examples = cluster_examples()
    assert len(examples) >= 4, examples
    for example in examples:
        args = shlex.split(example.replace("-p 7000", f"-p {cluster.ports[0]}"))
        cluster.redis_cli("-c", *args)
        assert await recv(ws) == "Hello", example
    await ws.close()


async def test_a_sockets_frames_reach_sockets_of_another_process_but_not_itself(
    cluster: RedisCluster, daphne_factory: Any
) -> None:
    env = {"REDIS_URL": cluster.url}
    one, two = daphne_factory(env), daphne_factory(env)
    sender = await connect(one, "/ws/chat?subscribe-broadcast&publish-broadcast")
    here = await connect(one, "/ws/chat?subscribe-broadcast")
    there = await connect(two, "/ws/chat?subscribe-broadcast")
    await sender.send("hello from a socket")
    assert await recv(here) == "hello from a socket"
    assert await recv(there) == "hello from a socket"
    # Without echo the sender does not get it back: the next message it gets is this one.
    cluster.redis_cli("-c", "-p", str(cluster.ports[0]), "SPUBLISH", "_broadcast_:chat", "next")
    assert await recv(sender) == "next"
    for ws in (sender, here, there):
        await ws.close()


async def test_positions_on_a_cluster_resume_exactly(
    cluster: RedisCluster, daphne_factory: Any
) -> None:
    from tests.test_positions import parse, state

    server = daphne_factory({"REDIS_URL": cluster.url})
    facilities = spread_facilities(3)
    with override_settings(WS4REDIS_CONNECTION=cluster.url):
        for facility in facilities:
            url = f"/ws/{facility}?subscribe-broadcast&positions"
            ws = await connect(server, url)
            assert state(await recv(ws))["broadcast"][1] == "new"
            publish(facility, "seen", broadcast=True)
            _, seen, payload = parse(await recv(ws))
            assert payload == "seen"
            await ws.close()
            for i in range(3):
                publish(facility, f"missed {i}", broadcast=True)
            ws = await connect(server, f"{url}&since=broadcast:{seen}")
            assert state(await recv(ws))["broadcast"][1] == "recovered"
            assert [parse(await recv(ws))[2] for _ in range(3)] == [f"missed {i}" for i in range(3)]
            publish(facility, "live", broadcast=True)
            assert parse(await recv(ws))[2] == "live"
            await ws.close()
