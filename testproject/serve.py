"""``make run``: make sure Redis answers, migrate, and serve the demo with daphne.

If nothing answers at ``REDIS_URL`` (default ``redis://127.0.0.1:6379/0``), a
throw-away redis-server is started on that port for this session and stopped
on exit.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlparse

ROOT = Path(__file__).resolve().parent.parent


def redis_answers(url: str) -> bool:
    parsed = urlparse(url)
    if parsed.scheme not in ("redis", "rediss"):
        return True  # unix sockets and sentinels: assume they are managed elsewhere
    try:
        with socket.create_connection(
            (parsed.hostname or "127.0.0.1", parsed.port or 6379), 1
        ) as s:
            s.sendall(b"PING\r\n")
            reply = s.recv(64)
            return reply.startswith((b"+PONG", b"-NOAUTH"))
    except OSError:
        return False


def main() -> int:
    sys.path.insert(0, str(ROOT))
    from testproject.redis_server import RedisServer

    url = os.environ.setdefault("REDIS_URL", "redis://127.0.0.1:6379/0")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "testproject.settings")
    host = os.environ.get("HOST", "127.0.0.1")
    port = os.environ.get("PORT", "8000")
    server = None
    if not redis_answers(url):
        redis_port = urlparse(url).port or 6379
        print(f"Nothing answers at {url}; starting a redis-server on port {redis_port}", flush=True)
        server = RedisServer(redis_port).start()
    try:
        python = sys.executable
        subprocess.run(
            [python, "-m", "django", "migrate", "--noinput", "-v", "0"], cwd=ROOT, check=True
        )
        print(f"Serving the demo on http://{host}:{port}/  (Ctrl-C stops)", flush=True)
        daphne = [python, "-m", "daphne", "-b", host, "-p", port, "testproject.asgi:application"]
        return subprocess.call(daphne, cwd=ROOT)
    except KeyboardInterrupt:
        return 0
    finally:
        if server is not None:
            server.stop()


if __name__ == "__main__":
    raise SystemExit(main())
