"""``manage.py ws4redis_status``: every live process of every host, found through Redis."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from typing import Any

import redis
import redis.asyncio

from testproject.redis_server import RedisServer, free_port
from tests.conftest import TIMEOUT, connect
from tests.servers import ROOT
from ws4redis_channels.bridge import Bridge
from ws4redis_channels.connection import parse_target
from ws4redis_channels.registry import Heartbeat, index_key, list_processes
from ws4redis_channels.runtime import status_of

FAST = {
    "DJANGO_SETTINGS_MODULE": "tests.e2e_settings",
    "WS4REDIS_TEST_SETTINGS": json.dumps({"WS4REDIS_STATUS_INTERVAL": 0.3}),
}


def status(redis_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "REDIS_URL": redis_url, "DJANGO_SETTINGS_MODULE": "testproject.settings"}
    env.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
    return subprocess.run(
        [sys.executable, "-m", "django", "ws4redis_status", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


async def until(check: Any, timeout: float = TIMEOUT) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = await asyncio.to_thread(check)
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.1)


async def test_status_lists_two_daphne_processes_with_their_sockets(daphne_factory: Any) -> None:
    # A Redis of its own: the suite's other daphne processes report into the shared one.
    with RedisServer() as own:
        redis_client = redis.Redis(port=own.port)
        await _lists_two_processes(daphne_factory, redis_client, own)
        redis_client.close()


async def _lists_two_processes(
    daphne_factory: Any, redis_client: redis.Redis, redis_server: RedisServer
) -> None:
    env = {**FAST, "REDIS_URL": redis_server.url}
    first, second = daphne_factory(env), daphne_factory(env)
    sockets = [await connect(first, "/ws/status?subscribe-broadcast") for _ in range(2)]
    sockets.append(await connect(second, "/ws/other?subscribe-broadcast"))
    assert first.process is not None and second.process is not None
    pids = {first.process.pid: 2, second.process.pid: 1}

    def reported() -> Any:
        reports = {r.pid: r for r in list_processes(redis_client)}
        if all(pid in reports and reports[pid].sockets == n for pid, n in pids.items()):
            return reports
        return None

    await until(reported)
    result = await asyncio.to_thread(status, redis_server.url)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == [
        "HOST",
        "PID",
        "SOCKETS",
        "SUBSCRIPTIONS",
        "CONNECTED",
        "SINCE",
        "ACCELERATIONS",
        "REDIS",
    ]
    rows = {int(line.split()[1]): line.split() for line in lines[1:-1]}
    assert set(rows) == set(pids)
    for pid, count in pids.items():
        assert rows[pid][2] == str(count)
        assert rows[pid][3] == "1"
        assert rows[pid][-1] == "ok"
    assert lines[-1] == "2 process(es) on 1 host(s), 3 socket(s); 0 with trouble"
    as_json = json.loads((await asyncio.to_thread(status, redis_server.url, "--json")).stdout)
    assert {r["pid"] for r in as_json} == set(pids)
    for ws in sockets:
        await ws.close()
    # A clean stop removes the report at once.
    second.stop()
    await until(lambda: {r.pid for r in list_processes(redis_client)} == {first.process.pid})


async def test_a_stuck_process_is_reported_silent_and_status_exits_1(
    daphne_factory: Any, redis_client: redis.Redis, redis_server: RedisServer
) -> None:
    server = daphne_factory(FAST)
    ws = await connect(server, "/ws/status?subscribe-broadcast")
    assert server.process is not None
    pid = server.process.pid
    await until(lambda: any(r.pid == pid for r in list_processes(redis_client)))
    server.process.send_signal(signal.SIGSTOP)
    try:
        await until(lambda: any(r.pid == pid and r.silent for r in list_processes(redis_client)))
        result = await asyncio.to_thread(status, redis_server.url)
    finally:
        server.process.send_signal(signal.SIGCONT)
    assert result.returncode == 1
    row = next(line for line in result.stdout.splitlines() if f" {pid} " in line)
    assert "SILENT since" in row
    assert result.stderr.strip() == "CommandError: 1 process(es) report trouble with Redis"
    ws.transport.abort()


async def test_a_process_that_cannot_reach_its_redis_reports_why(
    redis_server: RedisServer, redis_client: redis.Redis
) -> None:
    # A real bridge whose Redis refuses connections, reporting to the registry's Redis.
    where = f"redis://127.0.0.1:{free_port()}/0"
    bridge = Bridge(parse_target(where), connect_timeout=1.0)
    heartbeat = Heartbeat(
        redis.asyncio.Redis(port=redis_server.port), "", lambda: status_of(bridge), interval=0.2
    )
    try:
        await until(lambda: bridge.health.trouble is not None)
        heartbeat.start()
        await until(lambda: any(r.ident == heartbeat.ident for r in list_processes(redis_client)))
        result = await asyncio.to_thread(status, redis_server.url)
    finally:
        await heartbeat.stop()
        await bridge.close()
    assert result.returncode == 1
    assert f"TROUBLE: cannot reach Redis at {where}: connection refused" in result.stdout
    # Stopping removed the report. (The session's daphne, started by other tests,
    # reports to the same Redis every few seconds: count only this one.)
    assert redis_client.zscore(index_key(), heartbeat.ident) is None
    assert not redis_client.exists(heartbeat.key)


def test_status_without_processes_says_so() -> None:
    with RedisServer() as empty:
        result = status(empty.url)
    assert result.returncode == 0
    assert result.stdout.startswith("No ws4redis_channels process reports to Redis at")


def test_status_says_in_one_line_when_redis_is_unreachable() -> None:
    where = f"redis://127.0.0.1:{free_port()}/0"
    result = status(where)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"CommandError: cannot reach Redis at {where}: connection refused "
        "(is redis-server running and listening there?)"
    ]


async def test_stopping_while_a_report_is_being_written_leaves_no_report(
    redis_server: RedisServer, redis_client: redis.Redis
) -> None:
    # A heartbeat that writes without pause is always mid-write when it is stopped: the
    # write in flight must not land after the removal and bring the report back.
    client = redis.asyncio.Redis(port=redis_server.port)
    try:
        for _ in range(30):
            heartbeat = Heartbeat(client, "", lambda: {}, interval=0.001)
            heartbeat.start()
            await until(lambda key=heartbeat.key: redis_client.exists(key))
            await heartbeat.stop()
            assert redis_client.zscore(index_key(), heartbeat.ident) is None
            assert not redis_client.exists(heartbeat.key)
    finally:
        await client.aclose()


async def test_status_lists_the_processes_of_a_redis_cluster(daphne_factory: Any) -> None:
    from tests.cluster import RedisCluster

    with RedisCluster() as cluster:
        env = {**FAST, "REDIS_URL": cluster.url}
        first, second = daphne_factory(env), daphne_factory(env)
        # Channels on the three primaries: one subscriber connection per shard.
        sockets = [
            await connect(first, f"/ws/{facility}?subscribe-broadcast")
            for facility in ("status-a", "status-b", "status-c")
        ]
        sockets.append(await connect(second, "/ws/status-a?subscribe-broadcast"))
        assert first.process is not None and second.process is not None
        pids = {first.process.pid: (3, 3), second.process.pid: (1, 1)}

        def reported() -> Any:
            done = status(cluster.url, "--json")
            if done.returncode != 0:
                return None
            reports = {r["pid"]: r for r in json.loads(done.stdout)}
            counts = {pid: (r["sockets"], r["subscriptions"]) for pid, r in reports.items()}
            return reports if counts == pids else None

        reports = await until(reported, 3 * TIMEOUT)
        assert all(r["redis_connected"] and r["trouble"] is None for r in reports.values())
        result = await asyncio.to_thread(status, cluster.url)
        assert result.returncode == 0, result.stderr
        lines = result.stdout.splitlines()
        rows = {int(line.split()[1]): line.split() for line in lines[1:-1]}
        assert set(rows) == set(pids)
        assert all(row[-1] == "ok" for row in rows.values())
        assert lines[-1] == "2 process(es) on 1 host(s), 4 socket(s); 0 with trouble"
        for ws in sockets:
            await ws.close()
        # A clean stop removes the report from the cluster at once.
        second.stop()
        await until(
            lambda: (
                [r["pid"] for r in json.loads(status(cluster.url, "--json").stdout)]
                == [first.process.pid]
            )
        )


async def test_status_on_a_cluster_names_a_shard_that_is_down_and_exits_1(
    daphne_factory: Any,
) -> None:
    from tests.cluster import RedisCluster
    from tests.test_cluster import spread_facilities

    # Without full coverage, the primaries left serve their slots (the reports too).
    with RedisCluster(3, 1, "--cluster-require-full-coverage", "no") as cluster:
        server = daphne_factory({**FAST, "REDIS_URL": cluster.url})
        facilities = spread_facilities(3)
        sockets = [await connect(server, f"/ws/{f}?subscribe-broadcast") for f in facilities]
        assert server.process is not None
        pid = server.process.pid

        def subscribed() -> bool:
            reports = json.loads(status(cluster.url, "--json").stdout)
            return [(r["pid"], r["subscriptions"]) for r in reports] == [(pid, 3)]

        await until(subscribed, 3 * TIMEOUT)
        reports_on = cluster.port_of_key(index_key())
        doomed = next(
            port
            for port in (cluster.port_of_key(f"_broadcast_:{f}") for f in facilities)
            if port != reports_on
        )
        for replica in cluster.replicas_of(doomed):
            cluster.kill(replica)
        cluster.kill(doomed)

        def troubled() -> Any:
            done = status(cluster.url)
            return done if done.returncode == 1 else None

        result = await until(troubled, 3 * TIMEOUT)
        row = next(line for line in result.stdout.splitlines() if f" {pid} " in line)
        # The primary that is down, not the whole cluster.
        assert f"TROUBLE: cannot reach Redis at redis://127.0.0.1:{doomed}/0: " in row, row
        assert result.stderr.strip() == "CommandError: 1 process(es) report trouble with Redis"
        for ws in sockets:
            ws.transport.abort()


async def test_status_says_in_one_line_that_no_node_of_a_cluster_answers() -> None:
    where = f"127.0.0.1:{free_port()}"
    result = await asyncio.to_thread(status, f"redis+cluster://{where}/")
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"CommandError: cannot reach Redis at cluster {where}: connection refused "
        "(is redis-server running and listening there?)"
    )
