"""The servers the benchmark compares, each started as fresh processes on a free port.

=================  ==========================================================
``product``        ws4redis_channels: ``daphne testproject.asgi:application``
``product-nometrics``  the same with ``WS4REDIS_METRICS=0`` (the metrics' cost)
``product-public``     the same with autobahn's prepared messages, not direct writes
``product-producer``   the same bounded by Twisted's producer signal, not its buffer
``product-asgi``       the same with every frame through daphne's ASGI ``send``
``naive``          one Redis subscription per socket (``reference.NaiveConsumer``)
``groups-core``    Channels groups on ``RedisChannelLayer`` + a group_send bridge
``groups-pubsub``  the same on ``RedisPubSubChannelLayer``
``floor``          hand-rolled asyncio websocket server, one subscription (``floor.py``)
``floor-unbatched``  the same, one write per message and socket
``nchan``          nginx + nchan (C), memory store, one worker (``nchan.py``)
``nchan-redis``    the same with the Redis store
``baseline``       the product of another checkout (``--baseline PATH``)
=================  ==========================================================

Every server serves ``/ws/<facility>?subscribe-broadcast`` and delivers
``PUBLISH _broadcast_:<facility>`` (nchan: ``POST /pub/_broadcast_:<facility>``).
The product and nchan also serve sockets with an identity (``user_path``):
the product a logged-in user's channel, nchan the session cookie's.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from testproject.redis_server import free_port
from tests.servers import ROOT, wait_for_port

from . import nchan

__all__ = ["SERVERS", "Running", "ServerSpec", "baseline_spec"]

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
    spec: ServerSpec | None = None
    redis_url: str = ""
    db_path: str = ""
    scratch: Path | None = None
    extra_env: dict[str, str] = field(default_factory=dict)

    @property
    def server_pid(self) -> int:
        return self.pids()["server"]

    def pids(self) -> dict[str, int]:
        """The processes to measure: for nginx its worker, not the idle master."""
        out = {role: p.pid for role, p in self.processes.items()}
        if self.spec is not None and self.spec.measure_children:
            workers = _children(out["server"])
            if workers:
                out["server"] = workers[0]
                out.update({f"worker{n + 2}": pid for n, pid in enumerate(workers[1:])})
        return out

    def restart(self) -> tuple[float, float]:
        """Stop the server process (its sockets drop) and start it again on the same port.

        Returns (seconds the old process took to exit, seconds until the new one listens).
        """
        assert self.spec is not None
        process = self.processes["server"]
        began = time.monotonic()
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        stopped = time.monotonic()
        command = self.spec.commands(self.port, self.redis_url, self._scratch)["server"]
        with open(self.logs["server"], "ab") as log:
            self.processes["server"] = subprocess.Popen(
                command,
                cwd=self.spec.cwd,
                env=self.spec.environment(self),
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        wait_for_port(self.port, timeout=30.0, process=self.processes["server"])
        return stopped - began, time.monotonic() - stopped

    def _scratch(self) -> Path:
        if self.scratch is None:
            self.scratch = Path(tempfile.mkdtemp(prefix=f"bench-{self.name}-"))
        return self.scratch

    def exited(self) -> dict[str, int]:
        """Processes that are no longer running, with their exit codes."""
        return {role: p.returncode for role, p in self.processes.items() if p.poll() is not None}

    def log_tail(self, lines: int = 40) -> dict[str, str]:
        out = {}
        for role, path in self.logs.items():
            # Without daphne's access log lines ("WSCONNECT /ws/..."): they say nothing.
            text = [
                line
                for line in path.read_text(errors="replace").splitlines()
                if '"WS' not in line and '"GET ' not in line
            ]
            # The first lines say what went wrong first; the last ones how it ended.
            head = text[:15] if len(text) > lines + 15 else []
            out[role] = "\n".join([*head, *(["..."] if head else []), *text[-lines:]])
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
        for role, path in self.logs.items():
            if os.environ.get("BENCH_KEEP_LOGS"):
                print(f"  {self.name} {role} log kept: {path}", file=sys.stderr, flush=True)
            else:
                path.unlink(missing_ok=True)
        if self.scratch is not None:
            shutil.rmtree(self.scratch, ignore_errors=True)


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


@dataclass(frozen=True)
class ServerSpec:
    name: str
    description: str
    # role -> command, given (port, redis url, a scratch folder); "server" listens on the port.
    commands: Callable[[int, str, Callable[[], Path]], dict[str, list[str]]]
    env: dict[str, str] = field(default_factory=dict)
    # How clients publish: "redis" (PUBLISH) or "http" (POST /pub/<channel>).
    publish: str = "redis"
    # Path of sockets with an identity, and which of it names their own channel.
    user_path: str | None = None
    own_channel: str = "user"
    measure_children: bool = False
    # It has a history and message positions (the burst1k-app and burst1k-pos scenarios).
    positions: bool = False
    # Returns "" when the server can run here, else a note why its row is skipped.
    available: Callable[[], str] = lambda: ""
    # Where its processes run (``baseline``: the other checkout).
    cwd: Path = ROOT

    def environment(self, running: Running) -> dict[str, str]:
        env = {
            **os.environ,
            "REDIS_URL": running.redis_url,
            "TESTPROJECT_DB": running.db_path,
            "PYTHONUNBUFFERED": "1",
            **self.env,
            **(product_env if self.positions else {}),
            **running.extra_env,
        }
        env.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        return env

    def start(
        self, redis_url: str, db_path: str, extra_env: dict[str, str] | None = None
    ) -> Running:
        """Start the processes; ``extra_env`` (a scenario's settings) is applied to servers
        with ``positions`` only."""
        port = free_port()
        processes: dict[str, subprocess.Popen[bytes]] = {}
        logs: dict[str, Path] = {}
        running = Running(self.name, port, processes, logs, spec=self)
        running.redis_url, running.db_path = redis_url, db_path
        if self.positions:
            running.extra_env = dict(extra_env or {})
        env = self.environment(running)
        try:
            for role, command in self.commands(port, redis_url, running._scratch).items():
                fd, name = tempfile.mkstemp(prefix=f"bench-{self.name}-{role}-", suffix=".log")
                logs[role] = Path(name)
                with os.fdopen(fd, "wb") as log:
                    processes[role] = subprocess.Popen(
                        command, cwd=self.cwd, env=env, stdout=log, stderr=subprocess.STDOUT
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
daphne_backlog: int | None = 4096
# daphne drops a connection whose handshake is not done in 5 s (autobahn's
# openHandshakeTimeout); ``--daphne-connect-timeout`` passes another value.
daphne_connect_timeout: int | None = None
# Settings over the benchmark's for the product's rows (``--product-env NAME=VALUE``).
product_env: dict[str, str] = {}


def _daphne(app: str, python: str = sys.executable) -> Callable[[int, str], list[str]]:
    def command(port: int, redis_url: str) -> list[str]:
        if daphne_backlog:
            where = ["-e", f"tcp:port={port}:interface=127.0.0.1:backlog={daphne_backlog}"]
        else:
            where = ["-b", "127.0.0.1", "-p", str(port)]
        if daphne_connect_timeout:
            where += ["--websocket_connect_timeout", str(daphne_connect_timeout)]
        return [python, "-m", "daphne", *where, app]

    return command


_product = _daphne("testproject.asgi:application")
_reference = _daphne("tests.bench.reference:application")
_daphne_floor = _daphne("tests.bench.daphne_floor:application")


def _floor(port: int, redis_url: str) -> list[str]:
    return [sys.executable, "-m", "tests.bench.floor", "--port", str(port), "--redis", redis_url]


def _nginx(redis: bool) -> Callable[[int, str, Callable[[], Path]], dict[str, list[str]]]:
    def commands(port: int, redis_url: str, scratch: Callable[[], Path]) -> dict[str, list[str]]:
        directory = scratch()
        path = nchan.config(directory, port, redis_url if redis else None, daphne_backlog or 511)
        return {"server": [nchan.NGINX, "-p", str(directory), "-c", str(path)]}

    return commands


_BRIDGE = [sys.executable, "-m", "tests.bench.group_bridge"]
_REFERENCE_ENV = {"DJANGO_SETTINGS_MODULE": "tests.bench.reference_settings"}

_PRODUCT_ENV = {
    "DJANGO_SETTINGS_MODULE": "testproject.settings",
    "DJANGO_DEBUG": "0",
    "WS4REDIS_EXPIRE": "0",
    "WS4REDIS_PUBLISH_RATE": "0",
    "WS4REDIS_MAX_BUFFER_SIZE": MAX_BUFFER,
    "WS4REDIS_LOG_LEVEL": "WARNING",
}
_PRODUCT_USER_PATH = "/ws/bench?subscribe-broadcast&subscribe-user&subscribe-session"


def _product_spec(name: str, what: str, **env: str) -> ServerSpec:
    """The product under daphne, with ``env`` over the benchmark's settings."""
    return ServerSpec(
        name,
        what,
        lambda port, url, _: {"server": _product(port, url)},
        {**_PRODUCT_ENV, **env},
        user_path=_PRODUCT_USER_PATH,
        positions=True,
    )


SERVERS: dict[str, ServerSpec] = {
    spec.name: spec
    for spec in [
        _product_spec(
            "product",
            "ws4redis_channels under daphne (testproject.asgi)",
            # Metrics on, whatever the caller's environment says.
            WS4REDIS_METRICS="1",
        ),
        _product_spec(
            "product-nometrics",
            "the product with WS4REDIS_METRICS = False: what the metrics cost",
            WS4REDIS_METRICS="0",
        ),
        # The product with its private accelerations switched off, to measure them
        # (docs/benchmarks.rst, "Public APIs or the raw path").
        _product_spec(
            "product-public",
            "the product with public APIs only: autobahn's prepared messages instead of "
            "direct writes (WS4REDIS_ACCELERATIONS_OFF)",
            WS4REDIS_ACCELERATIONS_OFF="direct_writes",
        ),
        _product_spec(
            "product-producer",
            "the product with the bound from Twisted's producer signal (public) instead of "
            "its write buffer (WS4REDIS_ACCELERATIONS_OFF)",
            WS4REDIS_ACCELERATIONS_OFF="buffer_bound",
        ),
        _product_spec(
            "product-asgi",
            "the product with every frame through daphne's ASGI send (WS4REDIS_DIRECT_WRITES=0)",
            WS4REDIS_DIRECT_WRITES="0",
        ),
        ServerSpec(
            "naive",
            "a Redis subscription per socket, under daphne",
            lambda port, url, _: {"server": _reference(port, url)},
            {**_REFERENCE_ENV, "BENCH_REFERENCE": "naive"},
        ),
        ServerSpec(
            "groups-core",
            "Channels groups, RedisChannelLayer, one group_send bridge process",
            lambda port, url, _: {"server": _reference(port, url), "bridge": _BRIDGE},
            {**_REFERENCE_ENV, "BENCH_REFERENCE": "groups", "BENCH_LAYER": "core"},
        ),
        ServerSpec(
            "groups-pubsub",
            "Channels groups, RedisPubSubChannelLayer, one group_send bridge process",
            lambda port, url, _: {"server": _reference(port, url), "bridge": _BRIDGE},
            {**_REFERENCE_ENV, "BENCH_REFERENCE": "groups", "BENCH_LAYER": "pubsub"},
        ),
        ServerSpec(
            "floor",
            "hand-rolled asyncio websocket server, one subscription, frames of one Redis "
            "read joined per socket (uvloop if installed)",
            lambda port, url, _: {"server": _floor(port, url)},
        ),
        ServerSpec(
            "daphne-floor",
            "daphne with a bare ASGI app: accepts at once, one Redis subscription, ASGI send "
            "per socket; the ceiling of any app daphne serves (tests/bench/daphne_floor.py)",
            lambda port, url, _: {"server": _daphne_floor(port, url)},
        ),
        ServerSpec(
            "floor-unbatched",
            "the floor with one write per message and socket",
            lambda port, url, _: {"server": [*_floor(port, url), "--unbatched"]},
        ),
        ServerSpec(
            "nchan",
            "nginx + nchan (C), memory store, one worker; publishing by HTTP POST",
            _nginx(redis=False),
            publish="http",
            user_path="/wsu/bench",
            own_channel="session",
            measure_children=True,
            available=nchan.ensure_installed,
        ),
        ServerSpec(
            "nchan-redis",
            "nginx + nchan (C), Redis store (nchan_redis_url), one worker; HTTP POST",
            _nginx(redis=True),
            publish="http",
            user_path="/wsu/bench",
            own_channel="session",
            measure_children=True,
            available=nchan.ensure_installed,
        ),
    ]
}


def baseline_spec(path: Path) -> ServerSpec:
    """The ``product`` row served by another checkout: ``PATH/.venv``'s daphne, cwd ``PATH``.

    ``PATH`` is e.g. ``git worktree add --detach PATH <commit>`` followed by ``make
    install`` there. Same Redis, database, environment and settings as ``product``. The
    scenarios with positions run only if that checkout's settings know
    ``WS4REDIS_HISTORY_SIZE`` (the first versions had no history: ``n/a``).
    """
    path = Path(path).resolve()
    python = path / ".venv" / "bin" / "python"
    settings = path / "testproject" / "settings.py"
    if not python.exists() or not settings.exists():
        raise ValueError(f"{path}: no .venv/bin/python or testproject/settings.py (make install)")
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=path, capture_output=True, text=True
    ).stdout.strip()
    command = _daphne("testproject.asgi:application", str(python))
    return dataclasses.replace(
        SERVERS["product"],
        name="baseline",
        description=f"the product of {path} (commit {commit or '?'}) with product's settings",
        commands=lambda port, url, _: {"server": command(port, url)},
        positions="WS4REDIS_HISTORY_SIZE" in settings.read_text(),
        cwd=path,
    )
