"""Slot hashing and the slot map agree with a real Redis Cluster."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.cluster import RedisCluster
from ws4redis_channels.slots import SLOTS, SlotMap, key_slot


@pytest.fixture(scope="module")
def cluster() -> Iterator[RedisCluster]:
    with RedisCluster() as running:
        yield running


KEYS = [
    "",
    "a",
    "_broadcast_:foobar",
    "john:chat",
    "p:_group_:admins:news",
    "{_broadcast_:foobar}:history",
    "{_broadcast_:foobar}:positions",
    "{}",
    "{}x",
    "x{}",
    "a{b}c{d}",
    "{{x}}",
    "}{x}",
    "ünïcödé:facility",
    *(f"_broadcast_:facility-{n}" for n in range(200)),
]


def test_key_slot_is_what_redis_computes(cluster: RedisCluster) -> None:
    client = cluster.client(cluster.ports[0])
    for key in KEYS:
        assert key_slot(key) == int(client.execute_command("CLUSTER KEYSLOT", key)), key


def test_companion_keys_share_their_channels_slot() -> None:
    channel = "_broadcast_:foobar"
    assert key_slot("{" + channel + "}:history") == key_slot(channel)
    assert key_slot(channel.encode()) == key_slot(channel)


def test_slot_map_finds_the_primary_of_every_key(cluster: RedisCluster) -> None:
    client = cluster.client(cluster.ports[0])
    slots = SlotMap.from_cluster_slots(client.execute_command("CLUSTER SLOTS"))
    assert slots.complete
    assert len(slots.primaries()) == 3
    for key in KEYS[:20]:
        assert slots.node_for(key) == ("127.0.0.1", cluster.port_of_key(key)), key


def test_slot_map_says_when_a_slot_is_not_served() -> None:
    partial = SlotMap.from_ranges([(0, 99, ("a", 1)), (200, SLOTS - 1, ("b", 2))])
    assert not partial.complete
    assert partial.node_for_slot(50) == ("a", 1)
    assert partial.node_for_slot(150) is None
    assert partial.node_for_slot(SLOTS - 1) == ("b", 2)
    assert SlotMap().node_for_slot(0) is None


def test_an_unknown_ip_means_the_node_that_answered() -> None:
    slots = SlotMap.from_cluster_slots([[0, SLOTS - 1, [b"", 7000, b"id"]]], default_host="h")
    assert slots.node_for_slot(0) == ("h", 7000)
