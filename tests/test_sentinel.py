"""Following Sentinel, piece by piece, with real Redis and Sentinel processes: the
watcher, the fence of a publication (replicas that must confirm it), the role
check of the subscriber. tests/test_sentinel_failover.py runs them together."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest
import redis

from testproject.redis_server import RedisServer
from tests.conftest import TIMEOUT, Spy
from tests.sentinels import SERVICE, SentinelGroup
from ws4redis_channels import store
from ws4redis_channels.connection import async_client, parse_target, sync_client
from ws4redis_channels.exceptions import NotReplicated, RedisUnavailable
from ws4redis_channels.fence import Fence, fence
from ws4redis_channels.sentinel import Master, discover_master, stop_watchers, watcher
from ws4redis_channels.subscriber import Subscriber


@pytest.fixture
def sentinel_group(tmp_path: Any) -> Any:
    group = SentinelGroup(tmp_path).start()
    yield group
    stop_watchers()
    group.stop()


def _sentinels(group: SentinelGroup) -> list[tuple[str, int]]:
    return [("127.0.0.1", s.port) for s in group.sentinels]


# -- what a publication needs to count as published ------------------------------


def test_wait_options_come_from_the_url_or_the_dict() -> None:
    assert parse_target("redis://h:1/0").replicas == 0
    assert parse_target("redis+sentinel://h:1/svc").replicas == 1
    target = parse_target("redis+sentinel://h:1/svc/0?wait_replicas=2&wait_timeout=0.5")
    assert (target.replicas, target.wait_timeout) == (2, 0.5)
    assert parse_target("redis+sentinel://h:1/svc?wait_replicas=0").replicas == 0
    assert parse_target({"host": "h", "wait_replicas": 1}).replicas == 1
    for bad in ("wait_replicas=-1", "wait_timeout=0", "wait_replicas=many"):
        with pytest.raises(ValueError, match=bad.split("=")[0]):
            parse_target(f"redis://h:1/0?{bad}")


def test_a_publication_no_replica_confirms_raises_not_replicated(
    redis_server: RedisServer, redis_client: redis.Redis
) -> None:
    # The session's Redis has no replica: the master runs the publication
    # (subscribers may get it) but cannot say it survives a failover.
    spy = Spy(redis_client)
    target = parse_target(f"{redis_server.url}?wait_replicas=1&wait_timeout=0.1")
    with pytest.raises(NotReplicated, match="0 of 1 replica"):
        store.publish(
            sync_client(target), ["_broadcast_:fence"], b"unconfirmed", 60, fence=fence(target)
        )
    assert spy.messages() == [("_broadcast_:fence", b"unconfirmed")]
    assert isinstance(NotReplicated("x"), RedisUnavailable)


async def test_a_publication_a_replica_confirms_is_published(tmp_path: Any) -> None:
    master = RedisServer().start()
    replica = RedisServer(None, "--replicaof", "127.0.0.1", str(master.port))
    try:
        replica.start()
        probe = redis.Redis(port=replica.port)
        while probe.info("replication")["master_link_status"] != "up":
            await asyncio.sleep(0.05)  # a full sync has no event to await
        target = parse_target(f"{master.url}?wait_replicas=1")
        published = await store.apublish(
            async_client(target), ["_broadcast_:ok"], b"kept", 60, fence=fence(target)
        )
        assert published == 0
        assert probe.get("_broadcast_:ok") == b"kept"
        probe.close()
    finally:
        replica.stop()
        master.stop()


def test_a_publication_fails_when_the_master_moved_while_it_ran(
    redis_server: RedisServer,
) -> None:
    client = sync_client(parse_target(redis_server.url))
    # Taken at generation 0 of a watcher that has seen one switch since.
    taken = Fence(0, 1.0, SimpleNamespace(generation=1), 0)  # type: ignore[arg-type]
    with pytest.raises(NotReplicated, match="Sentinel moved the master"):
        store.publish(client, ["_broadcast_:moved"], b"x", 0, fence=taken)


# -- the watcher -------------------------------------------------------------------


async def test_discovery_names_the_master_and_its_healthy_replicas(
    sentinel_group: SentinelGroup,
) -> None:
    master = await discover_master(_sentinels(sentinel_group), SERVICE)
    assert (master.port, master.replicas) == (sentinel_group.master.port, 1)
    with pytest.raises(RedisUnavailable, match="no Sentinel names a master"):
        await discover_master(_sentinels(sentinel_group), "nosuchservice")


async def test_the_watcher_tells_its_listeners_at_a_manual_failover(
    sentinel_group: SentinelGroup,
) -> None:
    found = watcher(_sentinels(sentinel_group), SERVICE)
    assert found.wait_known(TIMEOUT) is not None
    loop = asyncio.get_running_loop()
    told: asyncio.Future[Master] = loop.create_future()
    found.add_listener(lambda master: loop.call_soon_threadsafe(told.set_result, master))
    target = parse_target(sentinel_group.url)
    before = fence(target)
    assert before.replicas == 1 and before.holds()

    switch = await sentinel_group.failover()
    try:
        new_port = await switch.switched(3 * TIMEOUT)
        master = await asyncio.wait_for(told, TIMEOUT)
    finally:
        await switch.close()
    assert master.port == new_port == sentinel_group.replica.port
    assert found.master == master
    # A publication that started before the switch does not count; the new
    # master has no healthy replica until the old one rejoins, so new ones
    # are not held up waiting for one.
    assert not before.holds()
    after = fence(target)
    assert after.holds() and after.replicas == 0


# -- the subscriber ---------------------------------------------------------------


async def test_the_subscriber_does_not_subscribe_on_a_replica_a_stale_answer_names(
    sentinel_group: SentinelGroup,
) -> None:
    target = parse_target(sentinel_group.url)
    found = watcher(target.sentinels, SERVICE)
    assert found.wait_known(TIMEOUT) is not None
    # As if Sentinel still named a server that is a replica by now.
    found._master = Master("127.0.0.1", sentinel_group.replica.port, found.generation + 99)
    downs: list[str] = []
    seen = asyncio.Event()

    def down(reason: str) -> None:
        downs.append(reason)
        seen.set()

    subscriber = Subscriber(target, on_values=lambda values: None, on_up=lambda: None, on_down=down)
    subscriber.start()
    try:
        await asyncio.wait_for(seen.wait(), TIMEOUT)
    finally:
        await subscriber.close()
    assert "is not a master" in downs[0]
    assert not subscriber.connected
