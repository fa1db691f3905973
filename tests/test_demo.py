"""The demo project's server side: who may publish what, stored messages, shell lines, /metrics."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from html import unescape
from typing import Any

import pytest
import redis
from django.contrib.auth import get_user_model
from django.test import Client

from tests.conftest import Spy
from tests.servers import ROOT


@pytest.fixture
def visitor() -> Client:
    return Client(HTTP_HOST="localhost")


def _as(username: str) -> Client:
    client = Client(HTTP_HOST="localhost")
    client.force_login(get_user_model().objects.get(username=username))
    return client


def _publish(client: Client, audience: str, target: str = "", **extra: str) -> Any:
    data = {"facility": "demo", "message": "Hi", "audience": audience, "target": target, **extra}
    return client.post("/publish/", data)


def _config(client: Client, path: str = "/") -> dict[str, Any]:
    page = client.get(path).content.decode()
    raw = re.search(r'<script id="demo-config" type="application/json">(.*?)</script>', page, re.S)
    assert raw is not None
    return json.loads(raw.group(1))  # type: ignore[no-any-return]


def test_anonymous_visitors_cannot_publish_into_a_users_channel(
    visitor: Client, redis_client: redis.Redis
) -> None:
    spy = Spy(redis_client)
    answer = _publish(visitor, "users", "john")
    assert answer.status_code == 403
    assert b"log in to publish to a user" in answer.content
    assert _publish(visitor, "groups", "staff").status_code == 403
    assert spy.channels() == []


def test_a_session_target_is_always_the_visitors_own_session(
    visitor: Client, redis_client: redis.Redis
) -> None:
    spy = Spy(redis_client)
    johns = _as("john")
    johns.get("/session/")
    john_key = johns.session.session_key
    answer = _publish(visitor, "sessions", john_key)
    assert answer.status_code == 200
    own = visitor.session.session_key
    assert own != john_key
    assert spy.channels() == [f"{own}:demo"]


def test_logged_in_users_publish_to_themselves_and_their_groups_only(
    redis_client: redis.Redis,
) -> None:
    spy = Spy(redis_client)
    john = _as("john")
    assert _publish(john, "users", "mary").status_code == 403
    assert _publish(john, "users", "john").status_code == 200
    assert _publish(john, "groups", "staff").status_code == 200
    assert _publish(_as("mary"), "groups", "staff").status_code == 403
    assert _publish(john, "broadcast").status_code == 200
    assert spy.channels() == ["john:demo", "_group_:staff:demo", "_broadcast_:demo"]


def test_the_binary_demo_publishes_bytes_that_are_not_utf8(
    visitor: Client, redis_client: redis.Redis
) -> None:
    spy = Spy(redis_client)
    answer = _publish(visitor, "broadcast", binary="1")
    assert b"7 binary bytes" in answer.content
    [(channel, data)] = spy.messages()
    assert channel == "_broadcast_:demo"
    assert data == b"\x00\x01\x02\xfe\xffHi"


def test_stored_messages_are_listed_with_their_expiry(
    visitor: Client, redis_client: redis.Redis
) -> None:
    _publish(visitor, "broadcast")
    _publish(visitor, "sessions", binary="1")
    answer = visitor.get("/stored/", {"facility": "demo"}).json()
    assert answer["expire"] == 3600
    by_audience = {item["audience"]: item for item in answer["stored"]}
    assert by_audience["broadcast"]["message"] == "Hi"
    assert 3590 <= by_audience["broadcast"]["expires_in"] <= 3600
    assert by_audience["session"]["binary"] is True
    assert by_audience["session"]["message"] == "00 01 02 fe ff 48 69"
    assert visitor.get("/stored/", {"facility": "a:b"}).status_code == 400


def test_pages_show_shell_lines_for_the_redis_in_use(visitor: Client) -> None:
    shell = _config(visitor)["shell"]
    url = os.environ["REDIS_URL"]
    assert shell["redisCli"] == f"redis-cli -u {url}"
    assert shell["manage"].endswith(".venv/bin/python -m django")
    assert f"REDIS_URL={url}" in shell["manage"]
    chat = unescape(visitor.get("/chat/").content.decode())
    assert f'redis-cli -u {url} PUBLISH _broadcast_:chat "Hello from redis-cli"' in chat


def _paste(line: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DJANGO_SETTINGS_MODULE")}
    return subprocess.run(
        ["bash", "-c", line], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )


@pytest.mark.skipif(not os.path.exists(ROOT / ".venv/bin/python"), reason="needs make install")
def test_the_management_command_line_works_when_pasted(
    visitor: Client, redis_client: redis.Redis
) -> None:
    spy = Spy(redis_client)
    page = unescape(_as("john").get("/notifications/").content.decode())
    line = next(x for x in page.splitlines() if "ws4redis_publish" in x).removeprefix("<pre>")
    result = _paste(line)
    assert result.returncode == 0, result.stderr
    assert spy.messages() == [("john:notifications", b"Build finished")]


@pytest.mark.skipif(not os.path.exists(ROOT / ".venv/bin/python"), reason="needs make install")
def test_the_python_line_works_when_pasted(visitor: Client, redis_client: redis.Redis) -> None:
    spy = Spy(redis_client)
    shell = _config(visitor)["shell"]
    result = _paste(shell["python"] + ".publish('_broadcast_:foobar', 'Hello')\"")
    assert result.returncode == 0, result.stderr
    assert spy.messages() == [("_broadcast_:foobar", b"Hello")]


@pytest.mark.skipif(shutil.which("redis-cli") is None, reason="no redis-cli installed")
def test_the_redis_cli_line_works_when_pasted(visitor: Client, redis_client: redis.Redis) -> None:
    spy = Spy(redis_client)
    shell = _config(visitor)["shell"]
    assert _paste(shell["redisCli"] + ' PUBLISH _broadcast_:foobar "Hello"').returncode == 0
    assert spy.messages() == [("_broadcast_:foobar", b"Hello")]


def test_the_demo_serves_metrics_and_links_docs(visitor: Client) -> None:
    metrics = visitor.get("/metrics")
    assert metrics.status_code == 200
    assert b"ws4redis_sockets_open" in metrics.content
    home = visitor.get("/").content.decode()
    assert 'href="/docs/"' in home and 'href="/metrics"' in home
    assert "A <strong>facility</strong> is the name of a stream" in home
    docs = visitor.get("/docs/")
    if docs.status_code == 404:
        assert b"make docs" in docs.content
    else:
        assert docs.status_code == 200
