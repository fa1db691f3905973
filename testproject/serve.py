"""``make run``: serve the demo with daphne, on a Redis of its own unless told otherwise.

Environment:

``PORT`` / ``HOST``
    Where daphne listens (default ``8000`` on ``127.0.0.1``; ``HOST=0.0.0.0``
    for other machines, with ``DJANGO_ALLOWED_HOSTS`` naming this one).
``REDIS_URL``
    Unset (the default): a private redis-server is started on a free port,
    keeping nothing on disk, and stopped with its files removed when the demo
    stops (Ctrl-C, SIGTERM). Set: that Redis is used, and every channel and
    key of the demo gets the prefix ``WS4REDIS_PREFIX`` (default ``demo``),
    so the demo never writes into an application's channels by accident.

It prints which Redis it uses before serving.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from types import FrameType
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

__all__ = ["choose_redis", "main"]


class _Stop(Exception):
    """SIGTERM arrived: stop daphne, then the private Redis."""


def choose_redis(env: dict[str, str]) -> tuple[bool, str]:
    """Decide which Redis the demo uses; return (start a private one, what to print).

    Sets ``WS4REDIS_PREFIX`` in ``env`` when an existing Redis is used.
    """
    url = env.get("REDIS_URL")
    if not url:
        return True, ""
    from ws4redis_channels.connection import parse_target

    prefix = env.setdefault("WS4REDIS_PREFIX", "demo")
    where = parse_target(url).describe()  # without the password
    shown = f"the prefix {prefix!r}" if prefix else "no prefix (WS4REDIS_PREFIX is empty)"
    return False, f"Using the Redis at {where} (REDIS_URL), with {shown} on every channel and key"


def _on_sigterm(signum: int, frame: FrameType | None) -> Any:
    raise _Stop()


def main() -> int:
    sys.path.insert(0, str(ROOT))
    from testproject.redis_server import RedisServer

    env = dict(os.environ)
    env.setdefault("DJANGO_SETTINGS_MODULE", "testproject.settings")
    host = env.get("HOST", "127.0.0.1")
    port = env.get("PORT", "8000")
    private, message = choose_redis(env)
    server: RedisServer | None = None
    daphne: subprocess.Popen[bytes] | None = None
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        if private:
            server = RedisServer().start()
            env["REDIS_URL"] = server.url
            message = (
                f"Started a private redis-server at {server.url} (files in {server.dir}); "
                "it stops, and its files go, when the demo stops. Set REDIS_URL to use another."
            )
        print(message, flush=True)
        python = sys.executable
        subprocess.run(
            [python, "-m", "django", "migrate", "--noinput", "-v", "0"],
            cwd=ROOT,
            env=env,
            check=True,
        )
        print(f"Serving the demo on http://{host}:{port}/  (Ctrl-C stops)", flush=True)
        daphne = subprocess.Popen(
            [python, "-m", "daphne", "-b", host, "-p", port, "testproject.asgi:application"],
            cwd=ROOT,
            env=env,
        )
        return daphne.wait()
    except (KeyboardInterrupt, _Stop):
        return 0
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if daphne is not None and daphne.poll() is None:
            daphne.send_signal(signal.SIGTERM)
            try:
                daphne.wait(15)
            except subprocess.TimeoutExpired:
                daphne.kill()
                daphne.wait()
        if server is not None:
            server.__exit__(None, None, None)  # stops it and removes its directory
            print(f"Stopped the private redis-server and removed {server.dir}", flush=True)
        signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    raise SystemExit(main())
