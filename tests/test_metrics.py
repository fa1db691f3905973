"""Each Prometheus metric moves as expected, scraped from /metrics of real daphne processes."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis
import websockets
from prometheus_client.parser import text_string_to_metric_families

from testproject.redis_server import RedisServer
from tests.conftest import TIMEOUT, close_code, connect, recv
from tests.servers import ROOT, Daphne
from tests.test_reliability import open_raw_socket

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(server: Daphne) -> Samples:
    with urllib.request.urlopen(server.http("/metrics"), timeout=TIMEOUT) as response:
        text = response.read().decode()
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def until(
    server: Daphne, check: Callable[[Samples], bool], timeout: float = TIMEOUT
) -> Samples:
    """Scrape until ``check`` holds (metrics of other processes land asynchronously)."""
    deadline = time.monotonic() + timeout
    while True:
        samples = await asyncio.to_thread(scrape, server)
        if check(samples):
            return samples
        if time.monotonic() > deadline:
            interesting = {k: v for k, v in samples.items() if k[0].startswith("ws4redis")}
            raise AssertionError(f"metrics never matched: {interesting}")
        await asyncio.sleep(0.1)


async def test_connect_publish_and_close_move_sockets_deliveries_and_subscriptions(
    daphne_factory: Any, redis_client: redis.Redis
) -> None:
    server = daphne_factory()
    sockets = [await connect(server, "/ws/metrics1?subscribe-broadcast") for _ in range(3)]
    samples = await until(server, lambda s: value(s, "ws4redis_sockets_open") == 3)
    assert value(samples, "ws4redis_handshakes_total", outcome="accepted", code="") == 3
    assert value(samples, "ws4redis_subscriptions") == 1
    assert value(samples, "ws4redis_redis_connected") == 1
    assert redis_client.publish("_broadcast_:metrics1", "hello") == 1
    assert redis_client.publish("_broadcast_:metrics1", "world!") == 1
    for ws in sockets:
        assert [await recv(ws), await recv(ws)] == ["hello", "world!"]
    samples = await until(server, lambda s: value(s, "ws4redis_deliveries_total") == 6)
    assert value(samples, "ws4redis_delivered_bytes_total") == 3 * (5 + 6)
    assert 1 <= value(samples, "ws4redis_fanout_seconds_count") <= 2
    for ws in sockets:
        await ws.close()
    samples = await until(server, lambda s: value(s, "ws4redis_sockets_open") == 0)
    assert value(samples, "ws4redis_subscriptions") == 0


async def test_publications_are_counted_by_source(
    daphne_factory: Any, redis_client: redis.Redis, tmp_path: Path
) -> None:
    shared = {"PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    server = daphne_factory(shared)
    ws = await connect(server, "/ws/chat?subscribe-broadcast&publish-broadcast&echo")
    await ws.send("through the socket")
    assert await recv(ws) == "through the socket"
    # The demo's publish form calls publish() in the daphne process: the Python API.
    cookie = await asyncio.to_thread(_csrf_cookie, server)
    await asyncio.to_thread(_post_publish, server, cookie)
    assert await recv(ws) == "from Django"
    # The management command, in its own process, writes into the host's directory.
    env = {**os.environ, **shared, "DJANGO_SETTINGS_MODULE": "testproject.settings"}
    env.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
    subprocess.run(
        [sys.executable, "-m", "django", "ws4redis_publish", "chat", "from the shell"],
        cwd=ROOT,
        env=env,
        check=True,
        timeout=60,
        capture_output=True,
    )
    assert await recv(ws) == "from the shell"
    samples = await until(
        server,
        lambda s: value(s, "ws4redis_published_messages_total", source="command") == 1,
    )
    assert value(samples, "ws4redis_published_messages_total", source="socket") == 1
    assert value(samples, "ws4redis_published_messages_total", source="python") == 1
    await ws.close()


def _csrf_cookie(server: Daphne) -> str:
    with urllib.request.urlopen(server.http("/"), timeout=TIMEOUT) as page:
        cookies = page.headers.get_all("Set-Cookie")
    return next(c.split(";")[0] for c in cookies if c.startswith("csrftoken="))


def _post_publish(server: Daphne, cookie: str) -> None:
    token = cookie.split("=", 1)[1]
    data = f"facility=chat&audience=broadcast&message=from+Django&csrfmiddlewaretoken={token}"
    request = urllib.request.Request(
        server.http("/publish/"),
        data=data.encode(),
        headers={"Cookie": cookie, "Referer": server.http("/")},
    )
    with urllib.request.urlopen(request, timeout=TIMEOUT) as answer:
        assert answer.status == 200


async def test_refused_handshakes_are_counted_by_close_code_or_status(
    daphne_factory: Any,
) -> None:
    server = daphne_factory()
    assert await close_code(await connect(server, "/ws/a:b?subscribe-broadcast")) == 4400
    assert await close_code(await connect(server, "/ws/notes?subscribe-user")) == 4401
    assert await close_code(await connect(server, "/elsewhere")) == 4404
    with pytest.raises(websockets.InvalidStatus):
        await connect(server, "/ws/notes?subscribe-broadcast", origin="http://evil.example")
    samples = await until(
        server, lambda s: value(s, "ws4redis_handshakes_total", outcome="refused", code="403") == 1
    )
    for code in ("4400", "4401", "4404"):
        assert value(samples, "ws4redis_handshakes_total", outcome="refused", code=code) == 1
    assert value(samples, "ws4redis_handshakes_total", outcome="accepted", code="") == 0
    assert value(samples, "ws4redis_sockets_open") == 0


async def test_rate_limited_and_slow_clients_are_counted_as_closes(
    daphne_factory: Any, redis_client: redis.Redis
) -> None:
    server = daphne_factory({"WS4REDIS_MAX_BUFFER_SIZE": "65536"})
    flooder = await connect(server, "/ws/chat?publish-broadcast")
    for i in range(45):  # the burst is 40
        await flooder.send(f"flood {i}")
    assert await close_code(flooder) == 4429
    stalled = await asyncio.to_thread(open_raw_socket, server, "/ws/slow?subscribe-broadcast", 4096)
    try:
        await until(server, lambda s: value(s, "ws4redis_sockets_open") == 1)
        payload = "x" * 16384
        for _ in range(200):  # 3 MB for a client that reads nothing
            redis_client.publish("_broadcast_:slow", payload)
        samples = await until(server, lambda s: value(s, "ws4redis_closes_total", code="4507") == 1)
    finally:
        stalled.close()
    assert value(samples, "ws4redis_closes_total", code="4429") == 1
    assert value(samples, "ws4redis_sockets_open") == 0


async def test_a_redis_restart_counts_a_reconnect_and_the_seconds_without_redis(
    daphne_factory: Any,
) -> None:
    with RedisServer() as redis_server:
        server = daphne_factory({"REDIS_URL": redis_server.url})
        ws = await connect(server, "/ws/restart?subscribe-broadcast")
        await until(server, lambda s: value(s, "ws4redis_redis_connected") == 1)
        redis_server.stop()
        await until(server, lambda s: value(s, "ws4redis_redis_connected") == 0)
        redis_server.start()
        samples = await until(
            server,
            lambda s: (
                value(s, "ws4redis_redis_connected") == 1
                and value(s, "ws4redis_redis_reconnects_total") == 1
            ),
        )
        assert value(samples, "ws4redis_redis_down_seconds_total") > 0
        assert value(samples, "ws4redis_sockets_open") == 1
        await ws.close()


async def test_redis_dropping_the_subscriber_for_its_output_buffer_is_logged_and_counted(
    daphne_factory: Any,
) -> None:
    # The real condition: a daphne process that does not read while publications
    # for it pile up in Redis, past a small client-output-buffer-limit pubsub.
    with RedisServer() as redis_server:
        admin = redis.Redis(port=redis_server.port)
        admin.config_set("client-output-buffer-limit", "pubsub 64kb 32kb 1")
        server = daphne_factory(
            {"REDIS_URL": redis_server.url, "WS4REDIS_MAX_BUFFER_SIZE": str(64 << 20)}
        )
        ws = await connect(server, "/ws/obl?subscribe-broadcast")
        await until(server, lambda s: value(s, "ws4redis_redis_connected") == 1)
        received: list[str] = []
        reader = asyncio.create_task(_read_until(ws, "after the drop", received))
        assert server.process is not None
        server.process.send_signal(signal.SIGSTOP)
        try:
            # Redis counts a receiver until it drops the stopped process's subscriber.
            for sent in range(100_000):
                if not admin.publish("_broadcast_:obl", f"{sent:06d}" + "x" * 16384):
                    break
            else:
                raise AssertionError("Redis never dropped the subscriber")
        finally:
            server.process.send_signal(signal.SIGCONT)
        samples = await until(
            server,
            lambda s: (
                value(s, "ws4redis_redis_output_buffer_drops_total") == 1
                and value(s, "ws4redis_redis_reconnects_total") == 1
            ),
        )
        assert value(samples, "ws4redis_sockets_open") == 1
        assert "client-output-buffer-limit pubsub" in server.log()
        assert "were lost" in server.log()
        # Delivery resumes once the process has subscribed again.
        await until(server, lambda s: admin.pubsub_numsub("_broadcast_:obl")[0][1] == 1)
        admin.publish("_broadcast_:obl", "after the drop")
        await asyncio.wait_for(reader, TIMEOUT)
        # What reached the socket before the drop came in order, then the new message.
        assert received[-1] == "after the drop"
        numbers = [int(m[:6]) for m in received[:-1]]
        assert numbers == sorted(numbers) and len(numbers) < sent
        admin.close()
        await ws.close()


async def _read_until(ws: Any, last: str, received: list[str]) -> None:
    while not received or received[-1] != last:
        received.append(await ws.recv())


async def test_a_scrape_of_any_process_reports_the_hosts_totals(
    daphne_factory: Any, tmp_path: Path
) -> None:
    shared = {"PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    first, second = daphne_factory(shared), daphne_factory(shared)
    on_first = [await connect(first, "/ws/host?subscribe-broadcast") for _ in range(2)]
    on_second = [await connect(second, "/ws/host?subscribe-broadcast") for _ in range(3)]
    for server in (first, second):
        samples = await until(server, lambda s: value(s, "ws4redis_sockets_open") == 5)
        assert value(samples, "ws4redis_handshakes_total", outcome="accepted", code="") == 5
        assert value(samples, "ws4redis_subscriptions") == 2  # one per process
    # A process killed without a chance to clean up leaves the live gauges.
    assert second.process is not None
    second.process.send_signal(signal.SIGKILL)
    second.process.wait(TIMEOUT)
    samples = await until(first, lambda s: value(s, "ws4redis_sockets_open") == 2)
    # Its counters stay part of the host's history.
    assert value(samples, "ws4redis_handshakes_total", outcome="accepted", code="") == 5
    for ws in on_first + on_second:
        ws.transport.abort()


def test_metrics_can_be_switched_off() -> None:
    from django.test import override_settings

    from ws4redis_channels.metrics import NullRecorder, Recorder, recorder

    assert isinstance(recorder(), Recorder)
    with override_settings(WS4REDIS_METRICS=False):
        assert type(recorder()) is NullRecorder
