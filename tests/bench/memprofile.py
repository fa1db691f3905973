"""What one idle socket costs in the product's daphne process, object by object.

``python -m tests.bench.memprofile [--sockets 2000] [--path /ws/bench?subscribe-broadcast]``

Starts the product (as ``make bench`` does) under :func:`serve`, a wrapper of
daphne's command line that starts ``tracemalloc`` and, on ``SIGUSR1``, writes
the live objects by type (count and ``sys.getsizeof``) and tracemalloc's
allocations by line. The driver takes one dump after a warm-up and one with
the sockets open, and prints the difference per socket: which objects a
socket keeps (daphne's protocol, autobahn's state, the consumer, its outlet,
the scope ...) and which lines allocated the memory.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import gc
import json
import os
import signal
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

__all__ = ["serve"]


_baseline: set[int] = set()  # ids of the objects alive at the first dump


def _name(kind: type) -> str:
    return f"{kind.__module__}.{kind.__qualname__}"


def _owners(objects: list[Any]) -> dict[str, list[int]]:
    """Group the objects that appeared since the first dump by (their type, who holds them):
    which dicts, deques and lists belong to daphne's protocol, the consumer, the scope..."""
    new = {id(obj): obj for obj in objects if id(obj) not in _baseline}
    held: dict[int, str] = {}
    for obj in objects:
        for inner in gc.get_referents(obj):
            if id(inner) in new and id(inner) not in held:
                owner = type(obj)
                label = _name(owner)
                if owner is dict or owner is list or owner is tuple:
                    label += "<-" + held.get(id(obj), "?")
                held[id(inner)] = label
    rows: dict[str, list[int]] = collections.defaultdict(lambda: [0, 0])
    for key, obj in new.items():
        row = rows[f"{_name(type(obj))} held by {held.get(key, '?')}"]
        row[0] += 1
        try:
            row[1] += sys.getsizeof(obj)
        except TypeError:
            pass
    return rows


def _dump(path: str) -> None:
    gc.collect()
    counts: collections.Counter[str] = collections.Counter()
    sizes: collections.Counter[str] = collections.Counter()
    objects = gc.get_objects()
    for obj in objects:
        name = _name(type(obj))
        counts[name] += 1
        try:
            sizes[name] += sys.getsizeof(obj)
        except TypeError:
            pass
    owners = {}
    if not _baseline:
        _baseline.update(id(obj) for obj in objects)
    elif os.environ.get("MEMPROFILE_OWNERS"):
        owners = _owners(objects)
    del objects
    snapshot = tracemalloc.take_snapshot().filter_traces(
        [tracemalloc.Filter(False, tracemalloc.__file__)]
    )
    lines = {
        f"{s.traceback[0].filename}:{s.traceback[0].lineno}": [s.size, s.count]
        for s in snapshot.statistics("lineno")[:400]
    }
    traced = tracemalloc.get_traced_memory()[0]
    Path(path).write_text(
        json.dumps(
            {"counts": counts, "sizes": sizes, "lines": lines, "traced": traced, "owners": owners}
        )
    )


def serve() -> None:
    """Run daphne's CLI with tracemalloc on; SIGUSR1 writes a dump to ``$MEMPROFILE_OUT``."""
    tracemalloc.start(1)
    out = os.environ["MEMPROFILE_OUT"]
    counter = iter(range(1000))

    def on_signal(signum: int, frame: Any) -> None:
        _dump(f"{out}.{next(counter)}")

    signal.signal(signal.SIGUSR1, on_signal)
    from daphne.cli import CommandLineInterface

    sys.argv = ["daphne", *sys.argv[2:]]
    CommandLineInterface.entrypoint()


async def _drive(port: int, path: str, sockets: int, pid: int, out: str) -> None:
    from .client import Meter, close_all, open_sockets

    meter = Meter()
    warm = await open_sockets("127.0.0.1", port, path, 20, meter, concurrency=20, timeout=30)
    await asyncio.sleep(1)
    close_all(warm.sockets)
    await asyncio.sleep(2)
    os.kill(pid, signal.SIGUSR1)
    await _wait_file(f"{out}.0")
    opened = await open_sockets(
        "127.0.0.1", port, path, sockets, meter, concurrency=100, timeout=60
    )
    await asyncio.sleep(2)
    os.kill(pid, signal.SIGUSR1)
    await _wait_file(f"{out}.1")
    print(f"{len(opened.sockets)} sockets open; failures {dict(opened.failures)}")
    close_all(opened.sockets)


async def _wait_file(path: str) -> None:
    for _ in range(600):
        if await asyncio.to_thread(os.path.exists, path):
            await asyncio.sleep(0.5)
            return
        await asyncio.sleep(0.1)
    raise TimeoutError(path)


def _report(before: dict[str, Any], after: dict[str, Any], sockets: int, top: int) -> str:
    lines = [f"traced bytes per socket: {(after['traced'] - before['traced']) / sockets:,.0f}"]
    lines.append("objects per socket (type: count, getsizeof bytes):")
    rows = []
    for name, size in after["sizes"].items():
        grown = size - before["sizes"].get(name, 0)
        count = after["counts"][name] - before["counts"].get(name, 0)
        if grown > 0 or count > 0:
            rows.append((grown / sockets, count / sockets, name))
    rows.sort(reverse=True)
    for size, count, name in rows[:top]:
        lines.append(f"  {size:8.0f} B  {count:6.2f}  {name}")
    lines.append(f"  {sum(r[0] for r in rows):8.0f} B  total of getsizeof (shallow)")
    lines.append("allocations per socket by line (tracemalloc):")
    grown_lines = []
    for where, (size, _count) in after["lines"].items():
        grown = size - before["lines"].get(where, [0, 0])[0]
        if grown > 0:
            grown_lines.append((grown / sockets, where))
    grown_lines.sort(reverse=True)
    for size, where in grown_lines[:top]:
        where = where.replace(str(Path(sys.prefix)), "<venv>")
        lines.append(f"  {size:8.0f} B  {where}")
    if after.get("owners"):
        lines.append("new objects per socket by type and holder (getsizeof):")
        held = sorted(((v[1] / sockets, v[0] / sockets, k) for k, v in after["owners"].items()))
        for size, count, where in held[::-1][:top]:
            lines.append(f"  {size:8.0f} B  {count:6.2f}  {where}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--serve":
        serve()
        return 0
    parser = argparse.ArgumentParser(prog="python -m tests.bench.memprofile")
    parser.add_argument("--sockets", type=int, default=2000)
    parser.add_argument("--path", default="/ws/bench?subscribe-broadcast")
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument(
        "--owners", action="store_true", help="also group new objects by what holds them"
    )
    args = parser.parse_args(argv)

    from testproject.redis_server import RedisServer
    from tests.servers import wait_for_port

    from .__main__ import _migrate
    from .measure import raise_open_files
    from .servers import SERVERS, Running

    raise_open_files(32768)
    with tempfile.TemporaryDirectory(prefix="ws4redis-memprofile-") as tmp:
        db = os.path.join(tmp, "db.sqlite3")
        out = os.path.join(tmp, "dump")
        _migrate(db)
        with RedisServer() as redis_server:
            spec = SERVERS["product"]
            from testproject.redis_server import free_port

            port = free_port()
            running = Running("product", port, {}, {}, spec=spec)
            running.redis_url, running.db_path = redis_server.url, db
            env = {**spec.environment(running), "MEMPROFILE_OUT": out}
            if args.owners:
                env["MEMPROFILE_OWNERS"] = "1"
            command = spec.commands(port, redis_server.url, running._scratch)["server"]
            daphne_args = command[command.index("daphne") + 1 :]
            import subprocess

            process = subprocess.Popen(
                [sys.executable, "-m", "tests.bench.memprofile", "--serve", *daphne_args],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            try:
                wait_for_port(port, 60, process)
                began = time.monotonic()
                asyncio.run(_drive(port, args.path, args.sockets, process.pid, out))
                before = json.loads(Path(f"{out}.0").read_text())
                after = json.loads(Path(f"{out}.1").read_text())
                print(_report(before, after, args.sockets, args.top))
                print(f"({time.monotonic() - began:.0f} s)")
            finally:
                process.terminate()
                process.wait(20)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
