"""``manage.py ws4redis_naming`` and the deploy check tell which naming the names in Redis use."""

from __future__ import annotations

import io

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import override_settings

from testproject.redis_server import free_port
from ws4redis.publisher import RedisPublisher
from ws4redis_channels.checks import check_naming_in_redis
from ws4redis_channels.names import Naming
from ws4redis_channels.naming_detection import Mark, classify

TYPED = {"WS4REDIS_NAMING": "typed", "WS4REDIS_PREFIX": "demo"}


@pytest.mark.parametrize(
    ("name", "mark"),
    [
        ("demo:broadcast:foobar", Mark(Naming.TYPED, "demo", "broadcast")),
        ("broadcast:foobar", Mark(Naming.TYPED, "", "broadcast")),
        ("demo:user:john:foobar", Mark(Naming.TYPED, "demo", "user")),
        ("a:b:group:chatters:foobar", Mark(Naming.TYPED, "a:b", "group")),
        ("demo:session:" + "k" * 32 + ":foobar", Mark(Naming.TYPED, "demo", "session")),
        ("_broadcast_:foobar", Mark(Naming.CLASSIC, "", "broadcast")),
        ("ws:_group_:staff:inbox", Mark(Naming.CLASSIC, "ws", "group")),
        # Not ws4redis names: sessions of django-redis-sessions, other apps' keys.
        ("session:" + "k" * 32, None),
        ("demo:session:short:foobar", None),
        ("celery-task-meta-1", None),
        ("john:foobar", None),
        ("broadcast:", None),
    ],
)
def test_each_name_is_read_by_its_mark(name, mark):
    assert classify(name) == mark


def run(*args: str) -> str:
    out = io.StringIO()
    call_command("ws4redis_naming", *args, stdout=out)
    return out.getvalue()


def test_a_redis_of_a_0_6_project_is_recognised_as_typed_with_its_prefix(redis_client):
    with override_settings(**TYPED):
        RedisPublisher(facility="foobar", broadcast=True, users=["john"]).publish_message("x")
    redis_client.set("session:" + "k" * 32, b"a redis session")  # not counted
    report = run()
    assert "2 typed" in report and "prefix 'demo'" in report
    assert "MISMATCH" in report
    assert 'WS4REDIS_NAMING = "typed"\nWS4REDIS_PREFIX = "demo"' in report
    with pytest.raises(CommandError, match="do not match"):
        run("--check")
    with override_settings(**TYPED):
        assert "OK: the settings match" in run("--check")


def test_channels_that_sockets_listen_on_count_too(redis_client):
    pubsub = redis_client.pubsub()
    pubsub.subscribe("demo:broadcast:live")
    assert pubsub.get_message(timeout=10)["type"] == "subscribe"
    report = run()
    assert "1 subscribed channels" in report
    assert "demo:broadcast:live" in report
    pubsub.close()


def test_a_classic_redis_matches_the_default_settings(redis_client):
    RedisPublisher(facility="foobar", broadcast=True).publish_message("x")
    report = run("--check")
    assert "classic" in report and "OK" in report


def test_an_empty_redis_says_that_0_3_to_0_6_projects_need_typed(redis_client):
    report = run("--check")
    assert "No ws4redis channel names found" in report
    assert 'WS4REDIS_NAMING = "typed"' in report


def test_mixed_namings_are_reported(redis_client):
    redis_client.set("_broadcast_:a", b"1")
    redis_client.set("demo:broadcast:b", b"2")
    redis_client.set("demo:broadcast:c", b"3")
    report = run()
    assert "Several namings or prefixes" in report
    assert "Found: typed naming, prefix 'demo'" in report


def test_the_scan_stops_at_the_limit(redis_client):
    for n in range(50):
        redis_client.set(f"demo:broadcast:f{n}", b"x")
    report = run("--limit", "10")
    assert "(stopped after" in report


def test_an_unreachable_redis_is_a_clear_error():
    with override_settings(WS4REDIS_CONNECTION=f"redis://127.0.0.1:{free_port()}/0"):
        with pytest.raises(CommandError, match="could not inspect Redis"):
            run()
        assert check_naming_in_redis() == []


def test_the_deploy_check_warns_about_a_naming_mismatch(redis_client):
    redis_client.set("demo:user:john:foobar", b"x")
    (warning,) = check_naming_in_redis()
    assert warning.id == "ws4redis_channels.W030"
    assert "'typed'" in warning.msg and 'WS4REDIS_PREFIX = "demo"' in warning.hint
    with override_settings(**TYPED):
        assert check_naming_in_redis() == []
