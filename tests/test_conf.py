"""Settings are read lazily and validated; system checks report wrong values with stable ids."""

from __future__ import annotations

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings

from ws4redis_channels.checks import SETTING_IDS, check_settings
from ws4redis_channels.conf import DEFAULTS, conf
from ws4redis_channels.connection import RedisTarget, parse_target
from ws4redis_channels.names import Naming


def test_defaults_apply_when_settings_are_absent():
    with override_settings():
        from django.conf import settings

        for name in ("WS4REDIS_EXPIRE", "WS4REDIS_HEARTBEAT", "WS4REDIS_OPEN_FACILITIES"):
            if hasattr(settings, name):
                delattr(settings, name)
        assert conf.WS4REDIS_EXPIRE == DEFAULTS["WS4REDIS_EXPIRE"] == 3600
        assert conf.WS4REDIS_HEARTBEAT is None
        assert frozenset() == conf.WS4REDIS_OPEN_FACILITIES


def test_settings_are_read_on_every_access():
    with override_settings(WS4REDIS_EXPIRE=5, WS4REDIS_NAMING="typed"):
        assert conf.WS4REDIS_EXPIRE == 5
        assert conf.WS4REDIS_NAMING is Naming.TYPED
    assert conf.WS4REDIS_NAMING is Naming.CLASSIC


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("WEBSOCKET_URL", "ws/", "must be a path that starts and ends with '/'"),
        ("WS4REDIS_CONNECTION", "http://x", "must be a redis://"),
        ("WS4REDIS_CONNECTION", 42, "must be a URL or a dict"),
        ("WS4REDIS_EXPIRE", "abc", "WS4REDIS_EXPIRE must be an int, got 'abc'"),
        ("WS4REDIS_EXPIRE", -1, "must be non-negative"),
        ("WS4REDIS_NAMING", "fancy", "must be 'classic' or 'typed'"),
        ("WS4REDIS_HEARTBEAT", "", "non-empty str"),
        ("WS4REDIS_ALLOWED_CHANNELS", "no.such.module.fn", "cannot be imported"),
        ("WS4REDIS_ALLOWED_CHANNELS", 3, "must be a callable"),
        ("WS4REDIS_PUBLISH_POLICY", "open", "'strict' or 'permissive'"),
        ("WS4REDIS_OPEN_FACILITIES", "chat", "must be a list"),
        ("WS4REDIS_OPEN_FACILITIES", ["a:b"], "WS4REDIS_OPEN_FACILITIES: facility"),
        ("WS4REDIS_MAX_MESSAGE_SIZE", 0, "must be positive"),
        ("WS4REDIS_PUBLISH_RATE", "fast", "must be a number"),
        ("WS4REDIS_MAX_BUFFER_SIZE", True, "must be an int"),
        ("WS4REDIS_OUTAGE_TIMEOUT", 0, "must be positive"),
        ("WS4REDIS_CHANNEL_LAYER", "nope", "not in CHANNEL_LAYERS"),
        ("WS4REDIS_ALLOWED_ORIGINS", "http://x", "must be a list"),
        ("WS4REDIS_ACCELERATIONS_OFF", "direct_writes", "must be a list"),
        ("WS4REDIS_ACCELERATIONS_OFF", ["direct_write"], "unknown acceleration direct_write"),
    ],
)
def test_wrong_values_raise_and_are_reported_by_the_checks(name, value, message):
    with override_settings(**{name: value}):
        with pytest.raises(ImproperlyConfigured, match=message.replace("(", r"\(")):
            getattr(conf, name)
        errors = check_settings()
    assert [e.id for e in errors] == [f"ws4redis_channels.{SETTING_IDS[name]}"]
    assert message in errors[0].msg


def test_the_checks_pass_for_the_testproject():
    assert check_settings() == []


def test_the_permissive_policy_is_warned_about():
    with override_settings(WS4REDIS_PUBLISH_POLICY="permissive"):
        assert [m.id for m in check_settings()] == ["ws4redis_channels.W001"]


@pytest.mark.parametrize(
    ("value", "target"),
    [
        ("redis://localhost:6380/2", RedisTarget(port=6380, db=2)),
        ("redis://:secret@h/0", RedisTarget(host="h", password="secret")),
        ("redis://u:p@h:1/?db=3", RedisTarget(host="h", port=1, db=3, username="u", password="p")),
        ("rediss://h", RedisTarget(host="h", ssl=True)),
        ("unix:///run/redis.sock?db=1", RedisTarget(path="/run/redis.sock", db=1)),
        (
            "redis+sentinel://:pw@s1:26379,s2:26380/mymaster/1",
            RedisTarget(
                db=1,
                password="pw",
                sentinels=(("s1", 26379), ("s2", 26380)),
                service_name="mymaster",
            ),
        ),
        (
            {"host": "h", "port": 6390, "db": 1, "password": None},
            RedisTarget(host="h", port=6390, db=1),
        ),
        ({"unix_socket_path": "/tmp/r.sock"}, RedisTarget(path="/tmp/r.sock")),
        (
            {"sentinels": [("s", 26379)], "service_name": "m", "sentinel_password": "x"},
            RedisTarget(sentinels=(("s", 26379),), service_name="m", sentinel_password="x"),
        ),
    ],
)
def test_connection_settings_in_every_form_are_parsed(value, target):
    assert parse_target(value) == target


def test_a_sentinel_url_without_a_service_is_an_error():
    with pytest.raises(ValueError, match="names no service"):
        parse_target("redis+sentinel://s1:26379")
