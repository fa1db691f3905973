"""The faults: each starts its own Redis and daphne, does one bad thing, and measures.

Every fault returns a :class:`Result`: the load it ran under, what the
clients saw (close codes), what was lost or repeated among the messages Redis
accepted, how long recovery took and what it cost the server. Nothing is
judged here; the report prints the numbers and the docs publish them.

"Lost" counts, per socket, the messages that Redis accepted for a subscriber
(``PUBLISH`` returned at least one receiver) and that the socket never got,
so a message published while nobody could hear it is not counted as lost
but as "not accepted".
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import itertools
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import redis
import redis.asyncio

from testproject.redis_server import RedisServer
from tests.servers import ROOT, Daphne

from .wire import Client, frame, open_clients

__all__ = ["FAULTS", "Result"]


@dataclasses.dataclass
class Result:
    fault: str
    load: str
    outcome: str = ""
    lost: str = "—"
    repeated: str = "—"
    recovery: str = "—"
    cost: str = "—"
    notes: list[str] = dataclasses.field(default_factory=list)
    raw: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class Scale:
    sockets: int
    many: int  # the biggest socket counts (SIGTERM, kill -9)
    flood_mb: int


FULL = Scale(sockets=200, many=500, flood_mb=48)
QUICK = Scale(sockets=50, many=100, flood_mb=8)

_db_dir = tempfile.mkdtemp(prefix="ws4redis-chaos-")
DB = os.path.join(_db_dir, "db.sqlite3")


def migrate() -> None:
    """Create the throw-away database every daphne of the run uses."""
    env = {**os.environ, "TESTPROJECT_DB": DB, "DJANGO_SETTINGS_MODULE": "testproject.settings"}
    subprocess.run(
        [sys.executable, "-m", "django", "migrate", "-v0"], cwd=ROOT, env=env, check=True
    )


def session_for(username: str) -> str:
    """Create a logged-in session in the run's database; return its key."""
    os.environ.setdefault("TESTPROJECT_DB", DB)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "testproject.settings")
    import django

    django.setup()
    from django.contrib.auth import (
        BACKEND_SESSION_KEY,
        HASH_SESSION_KEY,
        SESSION_KEY,
        get_user_model,
    )
    from django.contrib.sessions.backends.db import SessionStore

    user = get_user_model().objects.get_or_create(username=username)[0]
    store = SessionStore()
    store[SESSION_KEY] = str(user.pk)
    store[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
    store[HASH_SESSION_KEY] = user.get_session_auth_hash()
    store.save()
    assert store.session_key
    return store.session_key


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def daphne_env(server: RedisServer, **settings: str) -> dict[str, str]:
    return {
        "REDIS_URL": server.url,
        "TESTPROJECT_DB": DB,
        "DJANGO_DEBUG": "0",
        "WS4REDIS_EXPIRE": "0",
        **settings,
    }


@contextlib.asynccontextmanager
async def redis_and_daphne(
    *redis_args: str, **settings: str
) -> AsyncIterator[tuple[RedisServer, Daphne]]:
    log = tempfile.mktemp(prefix="ws4redis-chaos-redis-", suffix=".log")
    with RedisServer(None, "--logfile", log, *redis_args) as server:
        server.logfile = log  # type: ignore[attr-defined]
        daphne = Daphne(daphne_env(server, **settings)).start()
        try:
            yield server, daphne
        finally:
            daphne.stop()


def codes(clients: list[Client]) -> str:
    counts = collections.Counter(
        "1006" if c.close_code is None else str(c.close_code) for c in clients if c.closed.done()
    )
    still_open = sum(1 for c in clients if not c.closed.done())
    parts = [f"{n}x {code}" for code, n in sorted(counts.items())]
    if still_open:
        parts.append(f"{still_open} still open")
    return ", ".join(parts) or "none closed"


async def marker_reaches_all(
    client: redis.asyncio.Redis, channel: str, clients: list[Client], timeout: float
) -> float | None:
    """Publish markers until every client has one; return the seconds it took, or None."""
    started = time.monotonic()
    deadline = started + timeout
    n = 0
    while time.monotonic() < deadline:
        marker = f"marker-{n}".encode()
        n += 1
        try:
            await client.publish(channel, marker)
        except redis.RedisError:
            await asyncio.sleep(0.05)
            continue
        results = await asyncio.gather(*(c.wait_for(marker, 0.25) for c in clients))
        if all(results):
            return time.monotonic() - started
        # A socket that got a later marker has recovered as well.
        done = [any(m.startswith(b"marker-") for m in c.messages) for c in clients]
        if all(done):
            return time.monotonic() - started
    return None


class Stream:
    """A numbered stream published at a steady rate; remembers what Redis accepted."""

    def __init__(self, client: redis.asyncio.Redis, channel: str, rate: float) -> None:
        self.client = client
        self.channel = channel
        self.rate = rate
        self.accepted: list[int] = []  # sequence numbers with at least one receiver
        self.unheard: list[int] = []  # accepted by Redis, but nobody subscribed
        self.refused: list[int] = []  # publish failed (Redis down)
        self.stamps: dict[int, float] = {}
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> Stream:
        self._task = asyncio.ensure_future(self._run())
        return self

    async def _run(self) -> None:
        seq = 0
        interval = 1.0 / self.rate
        next_at = time.monotonic()
        while not self._stop.is_set():
            now = time.monotonic()
            if now < next_at:
                await asyncio.sleep(next_at - now)
            next_at += interval
            self.stamps[seq] = time.monotonic()
            try:
                receivers = await self.publish(f"s{seq}")
            except Exception:  # down, timed out, not replicated: not published
                self.refused.append(seq)
                await asyncio.sleep(0.05)
            else:
                (self.accepted if receivers else self.unheard).append(seq)
            seq += 1

    async def publish(self, message: str) -> int:
        """Publish one message; return how many subscribers Redis counted."""
        return int(await asyncio.wait_for(self.client.publish(self.channel, message), 2.0))

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            await self._task

    def tally(self, clients: list[Client]) -> tuple[int, int, int]:
        """Return (lost, repeated, out of order) summed over ``clients``."""
        accepted = set(self.accepted)
        lost = repeated = disorder = 0
        for c in clients:
            seqs = [int(m[1:]) for m in c.messages if m[:1] == b"s" and m[1:].isdigit()]
            lost += len(accepted - set(seqs))
            repeated += len(seqs) - len(set(seqs))
            disorder += sum(1 for a, b in itertools.pairwise(seqs) if b < a)
        return lost, repeated, disorder

    def latencies(self, client: Client, received_at: dict[int, float]) -> list[float]:
        return [received_at[s] - self.stamps[s] for s in received_at if s in self.stamps]


def stream_result(result: Result, stream: Stream, clients: list[Client]) -> None:
    lost, repeated, disorder = stream.tally(clients)
    result.lost = f"{lost} of {len(stream.accepted) * len(clients)} deliveries"
    result.repeated = f"{repeated} repeated, {disorder} out of order"
    result.raw.update(
        accepted=len(stream.accepted),
        unheard=len(stream.unheard),
        refused=len(stream.refused),
        lost=lost,
        repeated=repeated,
        out_of_order=disorder,
    )
    if stream.refused or stream.unheard:
        result.notes.append(
            f"{len(stream.refused)} publishes failed and {len(stream.unheard)} found no "
            "subscriber while Redis or the bridge was away (live-only PUBLISH: not counted "
            "as lost)"
        )


async def wait_closed(clients: list[Client], timeout: float) -> float | None:
    started = time.monotonic()
    try:
        await asyncio.wait_for(asyncio.gather(*(c.closed for c in clients)), timeout)
    except asyncio.TimeoutError:
        return None
    return time.monotonic() - started


# -- the faults ---------------------------------------------------------------------


async def sigterm(scale: Scale, *, steady: bool) -> Result:
    n = scale.many
    result = Result(
        f"SIGTERM to daphne ({'under a steady publish' if steady else 'idle'})",
        f"{n} sockets open for 3 s{', 50 msg/s' if steady else ''}",
    )
    async with redis_and_daphne() as (server, daphne):
        clients = await open_clients(daphne.port, ["/ws/term?subscribe-broadcast"] * n)
        client = redis.asyncio.Redis(port=server.port)
        stream = Stream(client, "_broadcast_:term", 50).start() if steady else None
        await asyncio.sleep(3)  # the condition itself: sockets that have been open a while
        assert daphne.process is not None
        started = time.monotonic()
        daphne.process.send_signal(signal.SIGTERM)
        took = await wait_closed(clients, 20)
        if stream is not None:
            await stream.stop()
        result.outcome = codes(clients)
        result.recovery = f"all closed in {took:.2f} s" if took is not None else "not all closed"
        exit_code = daphne.process.wait(20)
        result.notes.append(
            f"daphne exited with {exit_code} {time.monotonic() - started:.1f} s after SIGTERM"
        )
        result.raw.update(
            going_away=sum(1 for c in clients if c.close_code == 1001),
            reasons=sorted({c.close_reason for c in clients if c.close_reason}),
        )
        await client.aclose()
    return result


async def redis_restart(scale: Scale) -> Result:
    n = scale.sockets
    result = Result("Redis restart (3 s down)", f"{n} sockets, 100 msg/s live PUBLISH")
    async with redis_and_daphne() as (server, daphne):
        clients = await open_clients(daphne.port, ["/ws/rr?subscribe-broadcast"] * n)
        client = redis.asyncio.Redis(port=server.port)
        stream = Stream(client, "_broadcast_:rr", 100).start()
        await asyncio.sleep(1)
        rss = rss_kb(daphne.process.pid)  # type: ignore[union-attr]
        server.stop()
        await asyncio.sleep(3)
        server.start()
        back = time.monotonic()
        took = await marker_reaches_all(client, "_broadcast_:rr", clients, 20)
        await asyncio.sleep(1)
        await stream.stop()
        stream_result(result, stream, clients)
        result.outcome = (
            codes(clients) if any(c.closed.done() for c in clients) else "all stayed open"
        )
        result.recovery = (
            f"{took:.2f} s after Redis was back" if took is not None else "not recovered in 20 s"
        )
        result.cost = f"{(rss_kb(daphne.process.pid) - rss) / 1024:+.1f} MiB RSS"  # type: ignore[union-attr]
        result.raw["recovery_s"] = took
        del back
        await client.aclose()
    return result


async def pubsub_kill(scale: Scale) -> Result:
    n = scale.sockets
    result = Result(
        "Subscriber connection killed (CLIENT KILL TYPE pubsub)", f"{n} sockets, 200 msg/s"
    )
    async with redis_and_daphne() as (server, daphne):
        clients = await open_clients(daphne.port, ["/ws/kill?subscribe-broadcast"] * n)
        client = redis.asyncio.Redis(port=server.port)
        stream = Stream(client, "_broadcast_:kill", 200).start()
        await asyncio.sleep(1)
        killed = time.monotonic()
        await redis.asyncio.Redis(port=server.port).client_kill_filter(_type="pubsub")
        took = await marker_reaches_all(client, "_broadcast_:kill", clients, 20)
        await asyncio.sleep(1)
        await stream.stop()
        stream_result(result, stream, clients)
        result.outcome = (
            codes(clients) if any(c.closed.done() for c in clients) else "all stayed open"
        )
        result.recovery = f"{took:.2f} s" if took is not None else "not recovered in 20 s"
        result.raw["recovery_s"] = took
        del killed
        await client.aclose()
    return result


async def outage_bound(scale: Scale) -> Result:
    n = scale.sockets
    result = Result("Redis down past WS4REDIS_OUTAGE_TIMEOUT (2 s)", f"{n} sockets")
    async with redis_and_daphne(WS4REDIS_OUTAGE_TIMEOUT="2") as (server, daphne):
        clients = await open_clients(daphne.port, ["/ws/out?subscribe-broadcast"] * n)
        server.stop()
        took = await wait_closed(clients, 20)
        result.outcome = codes(clients)
        result.recovery = f"all closed {took:.2f} s after Redis went" if took else "not all closed"
        reasons = sorted({c.close_reason for c in clients if c.close_reason})
        result.notes.append(f"close reasons received: {reasons or 'none'}")
        server.start()
    return result


async def daphne_kill9(scale: Scale) -> Result:
    n = scale.many
    result = Result("daphne killed (kill -9) and restarted", f"{n} sockets reconnecting at once")
    async with redis_and_daphne() as (server, daphne):
        clients = await open_clients(daphne.port, ["/ws/k9?subscribe-broadcast"] * n)
        assert daphne.process is not None
        daphne.process.kill()
        daphne.process.wait()
        await wait_closed(clients, 10)
        result.outcome = codes(clients)
        started = time.monotonic()
        daphne.start()
        again: list[Client] = []

        async def reconnect() -> None:
            while True:
                try:
                    again.extend(await open_clients(daphne.port, ["/ws/k9?subscribe-broadcast"]))
                    return
                except OSError:
                    await asyncio.sleep(0.05)

        await asyncio.wait_for(asyncio.gather(*(reconnect() for _ in range(n))), 60)
        client = redis.asyncio.Redis(port=server.port)
        took = await marker_reaches_all(client, "_broadcast_:k9", again, 20)
        total = time.monotonic() - started
        result.recovery = (
            f"all {n} subscribed again {total:.2f} s after the restart began"
            if took is not None
            else "not all resubscribed"
        )
        result.raw["resubscribed_s"] = total
        await client.aclose()
    return result


async def slow_client(scale: Scale) -> Result:
    mb = scale.flood_mb
    result = Result("A client that stops reading", f"{mb} MB published to it and 10 readers")
    async with redis_and_daphne(WS4REDIS_MAX_BUFFER_SIZE=str(1 << 20)) as (server, daphne):
        (rude,) = await open_clients(daphne.port, ["/ws/slow?subscribe-broadcast"], rcvbuf=4096)
        rude.stop_reading()
        readers = await open_clients(daphne.port, ["/ws/slow?subscribe-broadcast"] * 10)
        pid = daphne.process.pid  # type: ignore[union-attr]
        before = rss_kb(pid)
        client = redis.asyncio.Redis(port=server.port)
        payload = b"x" * 65536
        for _ in range(mb * 16):
            await client.publish("_broadcast_:slow", payload)
        peak = rss_kb(pid)
        took = await marker_reaches_all(client, "_broadcast_:slow", readers, 30)
        result.outcome = (
            f"the stalled client: {rude.close_code or 'no close frame (it does not read)'}"
        )
        # It does not read, so it cannot see the close frame: ask the server's log.
        if "4507" in daphne.log():
            result.outcome = "the stalled client: closed with 4507 (server log)"
        got = [sum(1 for m in r.messages if m == payload) for r in readers]
        result.lost = f"readers: {mb * 16 * 10 - sum(got)} of {mb * 16 * 10}"
        result.cost = f"{(peak - before) / 1024:+.1f} MiB RSS at the peak"
        result.recovery = f"readers got the marker {took:.2f} s after the flood" if took else "—"
        await client.aclose()
    return result


async def _flood_victim(
    daphne: Daphne, server: RedisServer, flood: Callable[[Client], Awaitable[None]]
) -> tuple[Client, Client, list[float], int, int]:
    (rude,) = await open_clients(daphne.port, ["/ws/flood?subscribe-broadcast"], rcvbuf=4096)
    rude.stop_reading()
    (victim,) = await open_clients(daphne.port, ["/ws/victim?subscribe-broadcast"])
    pid = daphne.process.pid  # type: ignore[union-attr]
    before = rss_kb(pid)
    client = redis.asyncio.Redis(port=server.port)
    latencies: list[float] = []
    stop = asyncio.Event()

    async def probe() -> None:
        n = 0
        while not stop.is_set():
            marker = f"p{n}".encode()
            n += 1
            sent = time.monotonic()
            await client.publish("_broadcast_:victim", marker)
            if await victim.wait_for(marker, 5):
                latencies.append(time.monotonic() - sent)
            await asyncio.sleep(0.02)

    prober = asyncio.ensure_future(probe())
    await asyncio.sleep(0.5)
    await flood(rude)
    peak = rss_kb(pid)
    stop.set()
    await prober
    await client.aclose()
    return rude, victim, latencies, before, peak


def _p99(values: list[float]) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000


async def control_flood(scale: Scale, *, kind: str, chunk: bytes) -> Result:
    """A client that never reads floods frames the server must answer (heartbeats, pings)."""
    mb = scale.flood_mb
    result = Result(f"{kind} flood from a client that never reads", f"{mb} MB of {kind.lower()}s")
    async with redis_and_daphne() as (server, daphne):

        async def flood(rude: Client) -> None:
            for _ in range(mb * 1024 * 1024 // len(chunk)):
                if rude.closed.done():
                    break
                rude.send(chunk)
                await asyncio.sleep(0)
                if rude.transport is not None and rude.transport.get_write_buffer_size() > 1 << 22:
                    await asyncio.sleep(0.01)

        _rude, _victim, lat, before, peak = await _flood_victim(daphne, server, flood)
        log = daphne.log()
        closed = [code for code in ("4507", "4429") if code in log]
        result.outcome = (
            f"flooder closed with {'/'.join(closed)} (server log)"
            if closed
            else "flooder not closed"
        )
        result.cost = f"{(peak - before) / 1024:+.1f} MiB RSS; victim p99 {_p99(lat):.0f} ms"
    return result


async def reconnect_publish_loop(scale: Scale) -> Result:
    result = Result(
        "Reconnect loop publishing on an open facility", "5 s of connect, 40 frames, close"
    )
    async with redis_and_daphne() as (server, daphne):
        spy = redis.Redis(port=server.port).pubsub()
        spy.subscribe("_broadcast_:chat")
        spy.get_message(timeout=5)
        started = time.monotonic()
        while time.monotonic() - started < 5:
            try:
                (c,) = await open_clients(daphne.port, ["/ws/chat?publish-broadcast"])
            except (OSError, ConnectionError):
                continue
            c.send(b"".join(frame(1, b"spam") for _ in range(40)))
            await asyncio.sleep(0.01)
            c.send(frame(8, b"\x03\xe8"))
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(c.closed, 2)
        elapsed = time.monotonic() - started
        got = 0
        while (m := spy.get_message(timeout=0.5)) is not None:
            got += m["type"] == "message"
        result.outcome = f"{got / elapsed:.0f} frames/s published"
        result.notes.append(
            "limits per identity (here the client address), not per socket: by default "
            "40 frames then 20/s, and 1 MiB then 256 KiB/s"
        )
        result.raw["published_per_s"] = got / elapsed
        spy.close()
    return result


async def outbuf_attack(scale: Scale) -> Result:
    attackers = 50
    result = Result(
        "Big frames from many sockets of one client",
        f"{attackers} sockets x 40 frames of 64 KiB; a victim on another facility at 200 msg/s",
    )
    async with redis_and_daphne() as (server, daphne):
        (victim,) = await open_clients(daphne.port, ["/ws/quiet?subscribe-broadcast"])
        # A reader of the flooded facility in the same process: the flood comes back to
        # the process through its subscriber connection while it is busy taking it in.
        (reader,) = await open_clients(daphne.port, ["/ws/chat?subscribe-broadcast"])
        flooders = await open_clients(daphne.port, ["/ws/chat?publish-broadcast"] * attackers)
        client = redis.asyncio.Redis(port=server.port)
        stream = Stream(client, "_broadcast_:quiet", 200).start()
        await asyncio.sleep(0.5)
        big = frame(2, os.urandom(65536 - 16))
        for f in flooders:
            f.send(big * 40)
        await asyncio.sleep(5)
        await stream.stop()
        await marker_reaches_all(client, "_broadcast_:quiet", [victim], 10)
        stream_result(result, stream, [victim])
        log = await asyncio.to_thread(Path(server.logfile).read_text, errors="replace")  # type: ignore[attr-defined]
        dropped = "output buffer limits" in log
        result.outcome = (
            "Redis dropped the subscriber (output buffer limit)" if dropped else "subscriber kept"
        )
        result.raw["subscriber_dropped"] = dropped
        result.notes.append(f"the reader of the flooded facility got {len(reader.messages)} frames")
        await client.aclose()
    return result


async def store_flood(scale: Scale) -> Result:
    result = Result("One user storing on many facilities", "publish-user on new facilities for 8 s")
    async with redis_and_daphne(WS4REDIS_EXPIRE="3600") as (server, daphne):
        session = await asyncio.to_thread(session_for, "flooder")
        probe = redis.Redis(port=server.port)
        before = int(probe.info("memory")["used_memory"])
        started = time.monotonic()
        n = 0
        payload = frame(1, b"x" * 60000)
        while time.monotonic() - started < 8:
            try:
                clients = await open_clients(
                    daphne.port,
                    [f"/ws/f{n + i}?publish-user" for i in range(10)],
                    headers={"Cookie": f"sessionid={session}"},
                )
            except (OSError, ConnectionError):
                break
            n += 10
            for c in clients:
                c.send(payload)
            await asyncio.sleep(0.05)
            for c in clients:
                c.abort()
        keys = probe.dbsize()
        grown = (int(probe.info("memory")["used_memory"]) - before) / (1 << 20)
        result.outcome = f"{keys} keys stored, {grown:+.1f} MiB in Redis"
        result.load += f" ({n} facilities tried)"
        result.raw.update(keys=keys, grown_mib=grown)
        probe.close()
    return result


async def query_fields(scale: Scale) -> Result:
    result = Result("A query string with 1,500 fields", "one handshake")
    async with redis_and_daphne() as (_server, daphne):
        query = "&".join(f"f{i}=1" for i in range(1500))
        try:
            (c,) = await open_clients(daphne.port, [f"/ws/q?subscribe-broadcast&{query}"])
        except ConnectionError as exc:
            result.outcome = f"refused: {exc}"
        else:
            await asyncio.wait_for(c.closed, 10)
            result.outcome = f"closed with {c.close_code} {c.close_reason!r}"
        result.notes.append(
            "traceback in the server log" if "Traceback" in daphne.log() else "no traceback logged"
        )
    return result


async def fragments(scale: Scale) -> Result:
    mb = max(1, scale.flood_mb // 8)
    result = Result("An unfinished fragmented message", f"{mb} MB of 1-byte continuation frames")
    async with redis_and_daphne() as (_server, daphne):
        (c,) = await open_clients(daphne.port, ["/ws/chat?publish-broadcast"])
        pid = daphne.process.pid  # type: ignore[union-attr]
        before = rss_kb(pid)
        c.send(frame(1, b"a", fin=False))
        chunk = frame(0, b"a", fin=False) * 8192
        sent = 0
        while sent < mb * (1 << 20) and not c.closed.done():
            c.send(chunk)
            sent += 8192
            await asyncio.sleep(0)
            if c.transport is not None and c.transport.get_write_buffer_size() > 1 << 22:
                await asyncio.sleep(0.01)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(c.closed, 5)
        peak = rss_kb(pid)
        result.outcome = (
            f"closed with {c.close_code} after {sent / (1 << 20):.1f} MB of payload"
            if c.closed.done()
            else "still open"
        )
        result.cost = f"{(peak - before) / 1024:+.1f} MiB RSS"
    return result


FAULTS: dict[str, Callable[[Scale], Awaitable[Result]]] = {
    "sigterm-idle": lambda s: sigterm(s, steady=False),
    "sigterm-steady": lambda s: sigterm(s, steady=True),
    "redis-restart": redis_restart,
    "pubsub-kill": pubsub_kill,
    "outage-bound": outage_bound,
    "daphne-kill9": daphne_kill9,
    "slow-client": slow_client,
    "heartbeat-flood": lambda s: control_flood(
        s, kind="Heartbeat", chunk=frame(1, b"--heartbeat--") * 4096
    ),
    "ping-flood": lambda s: control_flood(s, kind="Ping", chunk=frame(9, b"p" * 125) * 1024),
    "reconnect-loop": reconnect_publish_loop,
    "big-frames": outbuf_attack,
    "store-flood": store_flood,
    "query-fields": query_fields,
    "fragments": fragments,
}


# -- Sentinel -------------------------------------------------------------------------


class AppStream(Stream):
    """A numbered stream published with the app's Python API (stored, fenced)."""

    def __init__(self, facility: str, rate: float) -> None:
        super().__init__(None, f"_broadcast_:{facility}", rate)  # type: ignore[arg-type]
        self.facility = facility

    async def publish(self, message: str) -> int:
        from ws4redis_channels.publisher import apublish

        return int(
            await asyncio.wait_for(
                apublish(self.facility, message, broadcast=True, expire=3600), 5.0
            )
        )


def _django(url: str) -> Any:
    os.environ.setdefault("TESTPROJECT_DB", DB)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "testproject.settings")
    import django

    django.setup()
    from django.test import override_settings

    return override_settings(WS4REDIS_CONNECTION=url)


async def sentinel_failover(scale: Scale, *, manual: bool) -> Result:
    from tests.sentinels import SentinelGroup

    n = scale.sockets * 2
    kind = "SENTINEL FAILOVER" if manual else "master killed (kill -9)"
    result = Result(
        f"Sentinel: {kind}",
        f"{n} sockets, 50 msg/s stored publications through the Python API",
    )
    directory = Path(tempfile.mkdtemp(prefix="ws4redis-chaos-sentinel-"))
    with SentinelGroup(directory) as group:
        settings = _django(group.url)
        settings.enable()
        daphne = Daphne(
            {
                "REDIS_URL": group.url,
                "TESTPROJECT_DB": DB,
                "DJANGO_DEBUG": "0",
                "WS4REDIS_EXPIRE": "3600",
            }
        ).start()
        try:
            clients = await open_clients(daphne.port, ["/ws/sfo?subscribe-broadcast"] * n)
            stream = AppStream("sfo", 50).start()
            await asyncio.sleep(2)
            switch = await (group.failover() if manual else group.kill_master())
            await switch.switched(30)
            switched = time.monotonic() - switch.started
            resumed = time.monotonic()
            # Recovery: the first publication after the switch that reaches every socket.
            while time.monotonic() - resumed < 30:
                accepted_after = [s for s in stream.accepted if stream.stamps[s] >= resumed]
                if accepted_after and all(
                    f"s{accepted_after[0]}".encode() in c.messages for c in clients
                ):
                    break
                await asyncio.sleep(0.05)
            took = time.monotonic() - switch.started
            await asyncio.sleep(2)
            await stream.stop()
            stream_result(result, stream, clients)
            stale = 0
            for c in clients:
                seqs = [int(m[1:]) for m in c.messages if m[:1] == b"s" and m[1:].isdigit()]
                stale += any(b < a for a, b in itertools.pairwise(seqs))
            result.outcome = (
                codes(clients) if any(c.closed.done() for c in clients) else "all stayed open"
            )
            result.recovery = (
                f"switch seen {switched:.1f} s after the fault; every socket had a new "
                f"publication {took:.1f} s after it"
            )
            result.notes.append(f"{stale} sockets saw an older message after a newer one")
            result.notes.append(
                f"{len(stream.refused)} publications refused (NotReplicated or unavailable) "
                "during the switch"
            )
            result.raw.update(stale_sockets=stale, switch_s=switched, recovered_s=took)
        finally:
            daphne.stop()
            settings.disable()
    return result


FAULTS["sentinel-failover"] = lambda s: sentinel_failover(s, manual=True)
FAULTS["sentinel-kill"] = lambda s: sentinel_failover(s, manual=False)
