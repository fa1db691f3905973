"""The servers the benchmark compares, each started as fresh processes on a free port.

=================  ==========================================================
``product``        ws4redis_channels: ``daphne testproject.asgi:application``
``naive``          one Redis subscription per socket (``reference.NaiveConsumer``)
``groups-core``    Channels groups on ``RedisChannelLayer`` + a group_send bridge
``groups-pubsub``  the same on ``RedisPubSubChannelLayer``
``floor``          hand-rolled asyncio websocket server, one subscription (``floor.py``)
``floor-unbatched``  the same, one write per message and socket
=================  ==========================================================

Every server serves ``/ws/<facility>?subscribe-broadcast`` and delivers
``PUBLISH _broadcast_:<facility>``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from testproject.redis_server import free_port
from tests.servers import ROOT, wait_for_port

__all__ = ["SERVERS", "Running", "ServerSpec"]

# Generous for burst runs: the product closes a socket that falls behind by
# this many bytes (4507); the harness reports it if that happens anyway.
MAX_BUFFER = str(64 * 1024 * 1024)


@dataclass
class Running:
    """The processes of one started server."""

    name: str
    port: int
    processes: dict[str, subprocess.Popen[bytes]]
    logs: dict[str, Path]
    stopped: dict[str, int | None] = field(default_factory=dict)

    @property
    def server_pid(self) -> int:
        return self.processes["server"].pid

    def pids(self) -> dict[str, int]:
        return {role: p.pid for role, p in self.processes.items()}

    def exited(self) -> dict[str, int]:
        """Processes that are no longer running, with their exit codes."""
        return {role: p.returncode for role, p in self.processes.items() if p.poll() is not None}

    def log_tail(self, lines: int = 15) -> dict[str, str]:
        out = {}
        for role, path in self.logs.items():
            text = path.read_text(errors="replace").splitlines()
            out[role] = "\n".join(text[-lines:])
        return out

    def stop(self, timeout: float = 10.0) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for role, process in self.processes.items():
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            self.stopped[role] = process.returncode
        for path in self.logs.values():
            path.unlink(missing_ok=True)


@dataclass(frozen=True)
class ServerSpec:
    name: str
    description: str
    # role -> command, given (port, redis url); "server" listens on the port.
    commands: Callable[[int, str], dict[str, list[str]]]
    env: dict[str, str] = field(default_factory=dict)

    def start(self, redis_url: str, db_path: str) -> Running:
        port = free_port()
        env = {
            **os.environ,
            "REDIS_URL": redis_url,
            "TESTPROJECT_DB": db_path,
            "PYTHONUNBUFFERED": "1",
            **self.env,
        }
        env.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        processes: dict[str, subprocess.Popen[bytes]] = {}
        logs: dict[str, Path] = {}
        running = Running(self.name, port, processes, logs)
        try:
            for role, command in self.commands(port, redis_url).items():
                fd, name = tempfile.mkstemp(prefix=f"bench-{self.name}-{role}-", suffix=".log")
                logs[role] = Path(name)
                with os.fdopen(fd, "wb") as log:
                    processes[role] = subprocess.Popen(
                        command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
                    )
            wait_for_port(port, timeout=30.0, process=processes["server"])
        except BaseException:
            running.stop()
            raise
        return running


# daphne listens with Twisted's default backlog of 50; a connect burst beyond
# that drops SYNs, which clients retry after 1 s, and the connect numbers then
# measure that retry, not the servers. Every daphne server gets the backlog the
# deployment guide recommends; ``--daphne-backlog 0`` keeps Twisted's default.
daphne_backlog: int | None = 1024


def _daphne(app: str) -> Callable[[int, str], list[str]]:
    def command(port: int, redis_url: str) -> list[str]:
        if daphne_backlog:
            where = ["-e", f"tcp:port={port}:interface=127.0.0.1:backlog={daphne_backlog}"]
        else:
            where = ["-b", "127.0.0.1", "-p", str(port)]
        return [sys.executable, "-m", "daphne", *where, app]

    return command


_product = _daphne("testproject.asgi:application")
_reference = _daphne("tests.bench.reference:application")


def _floor(port: int, redis_url: str) -> list[str]:
    return [sys.executable, "-m", "tests.bench.floor", "--port", str(port), "--redis", redis_url]


_BRIDGE = [sys.executable, "-m", "tests.bench.group_bridge"]
_REFERENCE_ENV = {"DJANGO_SETTINGS_MODULE": "tests.bench.reference_settings"}

SERVERS: dict[str, ServerSpec] = {
    spec.name: spec
    for spec in [
        ServerSpec(
            "product",
            "ws4redis_channels under daphne (testproject.asgi)",
            lambda port, url: {"server": _product(port, url)},
            {
                "DJANGO_SETTINGS_MODULE": "testproject.settings",
                "DJANGO_DEBUG": "0",
                "WS4REDIS_EXPIRE": "0",
                "WS4REDIS_PUBLISH_RATE": "0",
                "WS4REDIS_MAX_BUFFER_SIZE": MAX_BUFFER,
                "WS4REDIS_LOG_LEVEL": "WARNING",
            },
        ),
        ServerSpec(
            "naive",
            "a Redis subscription per socket, under daphne",
            lambda port, url: {"server": _reference(port, url)},
            {**_REFERENCE_ENV, "BENCH_REFERENCE": "naive"},
        ),
        ServerSpec(
            "groups-core",
            "Channels groups, RedisChannelLayer, one group_send bridge process",
            lambda port, url: {"server": _reference(port, url), "bridge": _BRIDGE},
            {**_REFERENCE_ENV, "BENCH_REFERENCE": "groups", "BENCH_LAYER": "core"},
        ),
        ServerSpec(
            "groups-pubsub",
            "Channels groups, RedisPubSubChannelLayer, one group_send bridge process",
            lambda port, url: {"server": _reference(port, url), "bridge": _BRIDGE},
            {**_REFERENCE_ENV, "BENCH_REFERENCE": "groups", "BENCH_LAYER": "pubsub"},
        ),
        ServerSpec(
            "floor",
            "hand-rolled asyncio websocket server, one subscription, frames of one Redis "
            "read joined per socket (uvloop if installed)",
            lambda port, url: {"server": _floor(port, url)},
        ),
        ServerSpec(
            "floor-unbatched",
            "the floor with one write per message and socket",
            lambda port, url: {"server": [*_floor(port, url), "--unbatched"]},
        ),
    ]
}
