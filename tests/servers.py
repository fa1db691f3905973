"""Real servers for the tests: daphne subprocesses serving the demo project.

A :class:`Daphne` runs ``daphne testproject.asgi:application`` on a free port
with the environment the test gives it (``REDIS_URL``, settings overrides),
waits until it accepts connections, and keeps its output in a log file the
test can read.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from testproject.redis_server import free_port

ROOT = Path(__file__).resolve().parent.parent

__all__ = ["ROOT", "Daphne", "wait_for_port"]


def wait_for_port(
    port: int, timeout: float = 20.0, process: subprocess.Popen[bytes] | None = None
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode} before listening")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port} after {timeout}s")


class Daphne:
    """One daphne process serving ``testproject.asgi:application`` (or ``app``)."""

    def __init__(
        self,
        env: dict[str, str] | None = None,
        *args: str,
        port: int | None = None,
        app: str = "testproject.asgi:application",
        tls: tuple[Path, Path] | None = None,
    ) -> None:
        self.port = port or free_port()
        self.app = app
        self.tls = tls  # (private key, certificate): daphne terminates TLS itself
        self.env = {**os.environ, **(env or {})}
        self.env.setdefault("DJANGO_SETTINGS_MODULE", "testproject.settings")
        # The test process allows sync ORM calls from async tests; the server must not.
        self.env.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        self.args = args
        self.log_path = Path(tempfile.mkstemp(prefix="daphne-", suffix=".log")[1])
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def origin(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    def url(self, path: str) -> str:
        return f"{'wss' if self.tls else 'ws'}://127.0.0.1:{self.port}{path}"

    def http(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def start(self) -> Daphne:
        log = open(self.log_path, "ab")
        if self.tls:
            key, cert = self.tls
            where = [
                "-e",
                f"ssl:port={self.port}:interface=127.0.0.1:privateKey={key}:certKey={cert}",
            ]
        else:
            where = ["-b", "127.0.0.1", "-p", str(self.port)]
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "daphne",
                *where,
                *self.args,
                self.app,
            ],
            cwd=ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        wait_for_port(self.port, process=self.process)
        return self

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int | None:
        process = self.process
        if process is None:
            return None
        if process.poll() is None:
            process.send_signal(sig)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.process = None
        return process.returncode

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def rss_kb(self) -> int:
        assert self.process is not None
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise RuntimeError("no VmRSS")

    def __enter__(self) -> Daphne:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
