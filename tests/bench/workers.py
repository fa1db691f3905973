"""Client processes for the handshake scenarios, so the client is not what is measured.

A handshake costs the client about as much as a C server (create the
connection, write the upgrade, parse the ``101``): against nchan one client
process is the bottleneck. :class:`Workers` starts ``n`` processes
(``python -m tests.bench.workers``), each holding its share of the sockets,
and talks to them in JSON lines over their stdin/stdout. Times are
``time.monotonic_ns()``, one clock for every process on the machine.

Commands (one JSON object a line; every reply is one JSON line):
``open`` (path, cookies, concurrency, timeout) opens sockets; ``status``
counts open, probed and received (``since_ns``: probes after that time);
``reopen`` waits until the server dropped every socket, then reconnects
them all at once; ``tally`` gives latencies and per-socket counts of data
frames; ``close`` closes everything and exits.
"""

from __future__ import annotations

import asyncio
import collections
import json
import random
import sys
import time
from typing import Any

from .client import Meter, Socket, close_all, open_sockets, payload_stamp

__all__ = ["Workers"]


class Workers:
    """``n`` client processes, driven from the harness's event loop."""

    def __init__(self, count: int, host: str, port: int) -> None:
        self.count = count
        self.host = host
        self.port = port
        self._procs: list[asyncio.subprocess.Process] = []

    async def __aenter__(self) -> Workers:
        for _ in range(self.count):
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "tests.bench.workers",
                self.host,
                str(self.port),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                limit=64 * 1024 * 1024,
            )
            self._procs.append(proc)
        return self

    async def __aexit__(self, *exc: object) -> None:
        for proc in self._procs:
            if proc.returncode is None:
                try:
                    assert proc.stdin is not None
                    proc.stdin.write(b'{"op": "close"}\n')
                    await asyncio.wait_for(proc.wait(), 10)
                except (Exception, asyncio.CancelledError):
                    proc.kill()
                    await proc.wait()

    def pids(self) -> list[int]:
        return [p.pid for p in self._procs]

    async def ask(self, commands: list[dict[str, Any]], timeout: float) -> list[dict[str, Any]]:
        """Send command ``i`` to worker ``i`` and return their replies."""

        async def one(proc: asyncio.subprocess.Process, command: dict[str, Any]) -> Any:
            assert proc.stdin is not None and proc.stdout is not None
            proc.stdin.write(json.dumps(command).encode() + b"\n")
            line = await proc.stdout.readline()
            if not line:
                raise RuntimeError("a client process exited")
            reply = json.loads(line)
            if "error" in reply:
                raise RuntimeError(f"client process: {reply['error']}")
            return reply

        return list(
            await asyncio.wait_for(
                asyncio.gather(*(one(p, c) for p, c in zip(self._procs, commands, strict=True))),
                timeout,
            )
        )

    async def all(self, command: dict[str, Any], timeout: float) -> list[dict[str, Any]]:
        return await self.ask([command] * self.count, timeout)

    def split(self, items: list[Any]) -> list[list[Any]]:
        """Deal ``items`` out to the workers, round robin."""
        return [items[i :: self.count] for i in range(self.count)]


# -- the worker process --------------------------------------------------------


class _Worker:
    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self.meter = Meter()
        self.sockets: list[Socket] = []
        self.path = ""
        self.cookies: list[str] | None = None

    async def open(self, cmd: dict[str, Any]) -> dict[str, Any]:
        self.path, self.cookies = cmd["path"], cmd.get("cookies")
        count = len(self.cookies) if self.cookies else cmd["count"]
        return await self._open(count, cmd["concurrency"], cmd["timeout"])

    async def _open(self, count: int, concurrency: int, timeout: float) -> dict[str, Any]:
        began = time.monotonic_ns()
        opened = await open_sockets(
            self.host,
            self.port,
            self.path,
            count,
            self.meter,
            concurrency=max(1, concurrency),
            timeout=timeout,
            cookies=self.cookies,
        )
        self.sockets.extend(opened.sockets)
        return {
            "opened": len(opened.sockets),
            "began_ns": began,
            "ended_ns": time.monotonic_ns(),
            "handshake_ms": opened.handshake_ms,
            "failures": dict(opened.failures),
        }

    def status(self, cmd: dict[str, Any]) -> dict[str, Any]:
        since = cmd.get("since_ns", 0)
        live = [s for s in self.sockets if not s.gone]
        probed = [s.probed_ns for s in live if s.probed and s.probed_ns >= since]
        return {
            "live": len(live),
            "probed": len(probed),
            "last_probed_ns": max(probed, default=0),
            "received": self.meter.received,
            "last_ns": self.meter.last_ns,
            "closes": {str(k): v for k, v in self.meter.closes.items()},
            "dropped": self.meter.dropped,
        }

    def reset_probes(self) -> None:
        for sock in self.sockets:
            sock.probed = False
            sock.probed_ns = 0
            sock.clear()
        self.meter.received = 0
        self.meter.last_ns = 0

    async def reopen(self, cmd: dict[str, Any]) -> dict[str, Any]:
        """Wait until every socket was dropped, then reconnect them all, as browsers would.

        Attempt 0 starts at once (``jitter_ms``: after a random delay up to that);
        a failed attempt ``n`` is retried after a random delay in
        ``[0, min(30 s, 1 s * 2**n)]``, the backoff of the shipped JavaScript client.
        """
        deadline = time.monotonic() + cmd["timeout"]
        while any(not s.gone for s in self.sockets) and time.monotonic() < deadline:
            await asyncio.sleep(0.005)
        still = sum(1 for s in self.sockets if not s.gone)
        count = len(self.sockets)
        close_all(self.sockets)
        self.sockets = []
        self.meter.closes.clear()
        self.meter.dropped = 0
        began = time.monotonic_ns()
        jitter = cmd.get("jitter_ms", 0) / 1000
        times: list[float] = []
        attempts: list[int] = []
        failures: collections.Counter[str] = collections.Counter()

        async def one(index: int) -> None:
            if jitter:
                await asyncio.sleep(random.random() * jitter)
            attempt = 0
            started = time.perf_counter()
            while time.monotonic() < deadline:
                opened = await open_sockets(
                    self.host,
                    self.port,
                    self.path,
                    1,
                    self.meter,
                    concurrency=1,
                    timeout=max(0.1, deadline - time.monotonic()),
                    cookies=[self.cookies[index]] if self.cookies else None,
                )
                if opened.sockets:
                    self.sockets.extend(opened.sockets)
                    times.append(opened.handshake_ms[0])
                    attempts.append(attempt)
                    return
                failures.update(opened.failures)
                await asyncio.sleep(random.random() * min(30.0, 2.0**attempt))
                attempt += 1
            del started

        await asyncio.gather(*(one(i) for i in range(count)))
        return {
            "opened": len(self.sockets),
            "began_ns": began,
            "ended_ns": time.monotonic_ns(),
            "handshake_ms": times,
            "failures": dict(failures),
            "retried": sum(1 for a in attempts if a),
            "max_attempt": max(attempts, default=0),
            "not_dropped": still,
        }

    def tally(self) -> dict[str, Any]:
        latencies: list[int] = []
        counts: list[int] = []
        for sock in self.sockets:
            got = sock.received()
            counts.append(len(got))
            latencies.extend(at - payload_stamp(p) for p, at in got)
        return {"latencies_ns": latencies, "counts": counts}

    async def handle(self, cmd: dict[str, Any]) -> dict[str, Any]:
        op = cmd["op"]
        if op == "open":
            return await self.open(cmd)
        if op == "status":
            return self.status(cmd)
        if op == "reset":
            self.reset_probes()
            return {}
        if op == "reopen":
            return await self.reopen(cmd)
        if op == "tally":
            return self.tally()
        if op == "close":
            close_all(self.sockets)
            self.sockets = []
            return {}
        raise ValueError(f"unknown op {op!r}")


async def _serve(host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=64 * 1024 * 1024)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    worker = _Worker(host, port)
    while True:
        line = await reader.readline()
        if not line:
            break
        cmd = json.loads(line)
        try:
            reply = await worker.handle(cmd)
        except Exception as exc:
            reply = {"error": repr(exc)}
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()
        if cmd["op"] == "close":
            break


def main() -> None:
    from .measure import raise_open_files

    raise_open_files(32768)
    try:
        import uvloop
    except ImportError:
        asyncio.run(_serve(sys.argv[1], int(sys.argv[2])))
    else:
        uvloop.run(_serve(sys.argv[1], int(sys.argv[2])))


if __name__ == "__main__":
    main()
