"""Naming a Redis Cluster in WS4REDIS_CONNECTION, and the checks that explain mistakes."""

from __future__ import annotations

import pytest
from django.test import override_settings

from ws4redis_channels.checks import check_settings
from ws4redis_channels.connection import RedisTarget, parse_target


def _cluster(*nodes: tuple[str, int], **kwargs: object) -> RedisTarget:
    return RedisTarget(
        host=nodes[0][0], port=nodes[0][1], cluster=True, startup_nodes=nodes, **kwargs
    )  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("value", "target"),
    [
        ("redis+cluster://h1:7000/", _cluster(("h1", 7000))),
        (
            "redis+cluster://:secret@h1:7000,h2:7001,h3/",
            _cluster(("h1", 7000), ("h2", 7001), ("h3", 6379), password="secret"),
        ),
        (
            "rediss+cluster://user:pw@[::1]:7000/",
            _cluster(("::1", 7000), username="user", password="pw", ssl=True),
        ),
        ("redis+cluster://h1:7000/0", _cluster(("h1", 7000))),
        ({"cluster": True, "host": "h", "port": 7000}, _cluster(("h", 7000))),
        (
            {"cluster": True, "startup_nodes": [("a", 1), "b:2", {"host": "c", "port": 3}]},
            _cluster(("a", 1), ("b", 2), ("c", 3)),
        ),
        (
            {"cluster": True, "startup_nodes": [("a", 1)], "password": "p", "db": 0},
            _cluster(("a", 1), password="p"),
        ),
    ],
)
def test_a_cluster_is_named_by_url_or_dict(value: object, target: RedisTarget) -> None:
    assert parse_target(value) == target  # type: ignore[arg-type]


def test_a_cluster_target_describes_itself_without_credentials() -> None:
    target = parse_target("redis+cluster://:secret@h1:7000,h2:7001/")
    assert target.describe() == "cluster h1:7000,h2:7001"
    assert target.node("h2", 7001) == RedisTarget(host="h2", port=7001, password="secret")


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("redis+cluster://h1:7000/3", "only database 0"),
        ("redis+cluster://h1:7000/?db=1", "only database 0"),
        ({"cluster": True, "host": "h", "db": 2}, "only database 0"),
        ("redis+cluster:///", "names no node"),
        ({"cluster": True, "sentinels": [("s", 26379)]}, "remove 'sentinels'"),
        ({"cluster": True, "unix_socket_path": "/tmp/r.sock"}, "over TCP"),
        ({"cluster": True, "startup_nodes": "h1:7000,h2:7001"}, "must be a list"),
        ("redis+cluster://h1:7000/?wait_replicas=1", "not supported on a Redis Cluster"),
        ({"cluster": True, "host": "h", "wait_replicas": 1}, "not supported on a Redis Cluster"),
        ("redis+clusters://h1:7000/", "must be a redis://"),
    ],
)
def test_cluster_mistakes_are_reported_by_the_system_checks(value: object, message: str) -> None:
    with override_settings(WS4REDIS_CONNECTION=value):
        errors = check_settings()
    assert [e.id for e in errors] == ["ws4redis_channels.E002"], errors
    assert message in errors[0].msg
