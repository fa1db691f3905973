"""What the server and the commands say when something is wrong: one line, with the facts."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time

import pytest
import websockets

from testproject.redis_server import RedisServer, free_port
from tests.conftest import TIMEOUT, close_code, connect, recv
from tests.servers import ROOT, Daphne

HEARTBEAT = "--heartbeat--"  # testproject's WS4REDIS_HEARTBEAT


def wait_for_log(server: Daphne, text: str, timeout: float = TIMEOUT) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        log = server.log()
        if text in log:
            return log
        time.sleep(0.05)
    raise AssertionError(f"{text!r} not in the log:\n{server.log()[-3000:]}")


def run_command(redis_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "REDIS_URL": redis_url, "DJANGO_SETTINGS_MODULE": "testproject.settings"}
    env.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
    return subprocess.run(
        [sys.executable, "-m", "django", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


async def test_heartbeat_answered_on_a_socket_that_just_closed_logs_nothing(
    daphne_factory: object,
) -> None:
    # At the default level (INFO): what is logged at debug (the failed reply,
    # with its traceback) must not show.
    server = daphne_factory()  # type: ignore[operator]
    for _ in range(30):
        ws = await connect(server, "/ws/foobar?subscribe-broadcast")
        # The heartbeat and the close frame arrive together: the reply meets a
        # closing socket (daphne raises "Attempt to send on a closed protocol"
        # unless the close waits for the frame's handling).
        await ws.send(HEARTBEAT)
        await asyncio.wait_for(ws.close(), TIMEOUT)
    marker = await connect(server, "/ws/foobar?subscribe-broadcast")
    await marker.send(HEARTBEAT)
    assert await recv(marker) == HEARTBEAT  # everything before was handled
    await marker.close()
    # daphne logs an application's exception when it reaps the application, on a
    # one-second timer that nothing outside can observe: give it two turns.
    with pytest.raises(AssertionError):
        wait_for_log(server, "Traceback", timeout=2.5)
    log = server.log()
    assert "Exception inside application" not in log
    assert " ERROR " not in log and " WARNING " not in log


async def test_foreign_origin_refusal_names_the_origin_and_the_allowed_list(
    daphne: Daphne,
) -> None:
    with pytest.raises(websockets.InvalidStatus) as refused:
        await connect(daphne, "/ws/foobar?subscribe-broadcast", origin="http://evil.example")
    assert refused.value.response.status_code == 403
    log = wait_for_log(daphne, "origin 'http://evil.example' is not allowed")
    line = next(x for x in log.splitlines() if "http://evil.example" in x)
    assert "(allowed: 127.0.0.1, localhost, [::1])" in line
    assert "WS4REDIS_ALLOWED_ORIGINS" in line


def _closed_port_url() -> str:
    return f"redis://127.0.0.1:{free_port()}/0"


@pytest.mark.parametrize(
    "command",
    [
        ["ws4redis_publish", "foobar", "Hello"],
        ["ws4redis_load_function"],
        ["ws4redis_status"],
    ],
)
def test_management_command_says_in_one_line_that_redis_cannot_be_reached(
    command: list[str],
) -> None:
    url = _closed_port_url()
    result = run_command(url, *command)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert f"cannot reach Redis at {url}: connection refused" in lines[0]


def test_management_command_with_a_wrong_password_says_wrongpass() -> None:
    with RedisServer(None, "--requirepass", "right") as redis_server:
        result = run_command(
            f"redis://:wrong@127.0.0.1:{redis_server.port}/0", "ws4redis_publish", "foobar", "Hi"
        )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"CommandError: Redis at redis://127.0.0.1:{redis_server.port}/0 refused the password "
        "(WRONGPASS): check the password (and username) in WS4REDIS_CONNECTION"
    ]


async def test_handshake_with_a_wrong_redis_password_logs_wrongpass(daphne_factory: object) -> None:
    with RedisServer(None, "--requirepass", "right") as redis_server:
        url = f"redis://:wrong@127.0.0.1:{redis_server.port}/0"
        server = daphne_factory({"REDIS_URL": url})  # type: ignore[operator]
        ws = await connect(server, "/ws/foobar?subscribe-broadcast")
        assert await close_code(ws) == 4503
        log = wait_for_log(server, "WRONGPASS")
    assert "did not answer in time" not in log
    assert "refused the password (WRONGPASS)" in log
