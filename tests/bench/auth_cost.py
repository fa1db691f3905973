"""What a logged-in handshake's session and user cost, in one process: ``python -m tests.bench.auth_cost``.

The ``connect-user`` scenario measures whole handshakes through daphne. This
measures only the app's part that an anonymous handshake skips: the
middleware loads the session and the user of a cookie (through channels'
``database_sync_to_async``, one thread for every socket), then the consumer
resolves the socket's identity (user and session channel names). It runs
``--sockets`` of them, ``--concurrency`` at a time, on a fresh SQLite
database of saved sessions (:mod:`tests.bench.users`), and reports the wall
time and the CPU time (every thread) per handshake.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from typing import Any

__all__ = ["main"]


async def _measure(keys: list[str], concurrency: int) -> tuple[float, float]:
    from django.conf import settings

    from ws4redis_channels.access import resolve_identity
    from ws4redis_channels.middleware import WebsocketAuthMiddleware

    middleware = WebsocketAuthMiddleware(None, ["*"])
    cookie = settings.SESSION_COOKIE_NAME
    limit = asyncio.Semaphore(concurrency)

    async def one(key: str) -> None:
        scope = {"type": "websocket", "headers": [(b"cookie", f"{cookie}={key}".encode())]}
        async with limit:
            prepared: Any = await middleware._prepare(scope)
            identity = await resolve_identity(prepared, session=True)
            assert identity.user is not None, "the session did not log its user in"

    wall, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(one(key) for key in keys))
    return time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sockets", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["TESTPROJECT_DB"] = os.path.join(tmp, "auth.sqlite3")
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "testproject.settings")
        import django

        django.setup()
        from django.core.management import call_command

        from .users import create

        call_command("migrate", verbosity=0)
        keys = [key for _, key in create(args.sockets)]
        print(f"{args.sockets} logged-in handshakes, {args.concurrency} at a time:")
        for n in range(args.rounds):
            wall, cpu = asyncio.run(_measure(keys, args.concurrency))
            print(
                f"  round {n + 1}: {args.sockets / wall:,.0f}/s, "
                f"{wall / args.sockets * 1e3:.2f} ms wall and "
                f"{cpu / args.sockets * 1e3:.2f} ms CPU per handshake"
            )


if __name__ == "__main__":
    main()
