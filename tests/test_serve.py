"""``make run`` (testproject/serve.py): which Redis it uses, and that it cleans up after itself."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from testproject.redis_server import RedisServer, free_port
from testproject.serve import choose_redis
from tests.conftest import TIMEOUT
from tests.servers import ROOT, wait_for_port


class Serve:
    """``python -m testproject.serve`` with its output read line by line."""

    def __init__(self, **env: str) -> None:
        self.port = free_port()
        full = {**os.environ, "PORT": str(self.port), "HOST": "127.0.0.1", **env}
        full.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        full.pop("DJANGO_SETTINGS_MODULE", None)
        if "REDIS_URL" not in env:
            full.pop("REDIS_URL", None)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "testproject.serve"],
            cwd=ROOT,
            env=full,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: list[str] = []

    def wait_for(self, pattern: str, timeout: float = TIMEOUT * 3) -> re.Match[str]:
        assert self.process.stdout is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.process.stdout.readline()
            if not line:
                raise AssertionError(f"serve exited; it printed: {self.lines}")
            self.lines.append(line)
            match = re.search(pattern, line)
            if match:
                return match
        raise AssertionError(f"{pattern!r} not printed; got {self.lines}")

    def stop(self, sig: int) -> int:
        self.process.send_signal(sig)
        out, _ = self.process.communicate(timeout=30)
        self.lines.extend(out.splitlines(keepends=True))
        return self.process.returncode

    def kill(self) -> None:
        """Stop it (SIGTERM stops its daphne and Redis too), however the test ended."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


@pytest.fixture
def serve() -> Any:
    started: list[Serve] = []

    def start(**env: str) -> Serve:
        started.append(Serve(**env))
        return started[-1]

    yield start
    for server in started:
        server.kill()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_make_run_starts_a_private_redis_and_removes_it_on_exit(serve: Any, sig: int) -> None:
    server = serve()
    match = server.wait_for(
        r"Started a private redis-server at redis://127\.0\.0\.1:(\d+)/0 \(files in (\S+)\)"
    )
    redis_port, directory = int(match.group(1)), Path(match.group(2))
    assert redis_port != 6379
    server.wait_for(r"Serving the demo on http://127\.0\.0\.1:\d+/")
    wait_for_port(server.port)
    with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/", timeout=TIMEOUT) as page:
        assert page.status == 200
    assert _answers(redis_port) and directory.is_dir()
    assert server.stop(sig) == 0
    assert not _answers(redis_port)
    assert not directory.exists()
    assert any("Stopped the private redis-server" in line for line in server.lines)


def test_make_run_with_redis_url_uses_it_with_a_demo_prefix(serve: Any) -> None:
    with RedisServer(None, "--requirepass", "secret") as redis_server:
        url = f"redis://:secret@127.0.0.1:{redis_server.port}/3"
        server = serve(REDIS_URL=url)
        line = server.wait_for(r"Using the Redis at").string
        assert f"redis://127.0.0.1:{redis_server.port}/3 (REDIS_URL)" in line
        assert "the prefix 'demo'" in line
        assert "secret" not in line
        server.wait_for(r"Serving the demo")
        wait_for_port(server.port)
        with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/", timeout=TIMEOUT) as page:
            # The shell lines the page shows name the demo's prefixed channels.
            assert '"broadcast": "demo:_broadcast_:"' in page.read().decode()
        assert server.stop(signal.SIGTERM) == 0
        assert _answers(redis_server.port)  # somebody else's Redis keeps running


def test_choose_redis_keeps_an_explicit_prefix() -> None:
    env = {"REDIS_URL": "redis://127.0.0.1:6390/0", "WS4REDIS_PREFIX": "mine"}
    private, message = choose_redis(env)
    assert not private
    assert "the prefix 'mine'" in message
    assert choose_redis({}) == (True, "")
