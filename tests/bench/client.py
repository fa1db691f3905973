"""The load client: many websockets and one Redis publisher in one cheap process.

A :class:`Socket` is a bare ``asyncio.Protocol``: it writes the HTTP upgrade,
waits for ``101``, then parses only what a server sends (unmasked frames).
It answers pings, records close codes and keeps the payload of every data
frame together with the time its chunk of bytes arrived; everything else
(sequence numbers, latencies) is worked out after the measured window, off
the clock. All sockets share one :class:`Meter` that counts deliveries and
wakes the scenario when the expected number has arrived.

Payloads are ``b"<seq:08d> <monotonic_ns:019d> xxx..."``; probe payloads
start with ``P`` and only tell that a socket receives (see ``probe_ready``).
:class:`Publisher` writes ``PUBLISH`` commands on a raw connection to Redis.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import cast

__all__ = [
    "HttpPublisher",
    "Meter",
    "Publisher",
    "Socket",
    "close_all",
    "make_payload",
    "open_sockets",
    "payload_seq",
    "payload_stamp",
    "probe_ready",
]

_KEY = b"dGhlIHNhbXBsZSBub25jZQ=="
_PROBE = 0x50  # b"P"
_STATE = 0x70  # b"p": the state frame of a socket with positions
_MASKED_PONG = 0x8A
_MASKED_CLOSE = 0x88
monotonic_ns = time.monotonic_ns


def make_payload(seq: int, size: int) -> bytes:
    """Return a payload carrying ``seq`` and the time now, padded to ``size`` bytes."""
    head = b"%08d %019d " % (seq, monotonic_ns())
    return head + b"x" * max(0, size - len(head))


def payload_seq(payload: bytes) -> int:
    return int(payload[:8])


def payload_stamp(payload: bytes) -> int:
    return int(payload[9:28])


@dataclass
class Meter:
    """What all sockets of a scenario received, counted as it happens."""

    expected: int = 0
    received: int = 0
    probed: int = 0
    last_ns: int = 0
    frames_ns: int = 0  # time of the latest frame of any kind, probes too
    closes: collections.Counter[int] = field(default_factory=collections.Counter)
    dropped: int = 0  # connections lost without a close frame
    done: asyncio.Future[None] | None = None

    def expect(self, count: int) -> asyncio.Future[None]:
        """Reset the count and return a future set once ``count`` deliveries arrived."""
        self.received = 0
        self.expected = count
        self.last_ns = 0
        self.done = asyncio.get_running_loop().create_future()
        return self.done


def _retrieve(future: asyncio.Future[None]) -> None:
    if not future.cancelled():
        future.exception()


class Socket(asyncio.Protocol):
    """One client websocket; cheap enough to run thousands in one process."""

    def __init__(self, request: bytes, meter: Meter, *, positioned: bool = False) -> None:
        self.request = request
        self.meter = meter
        # Opted into positions: frames are "m <label> <position>\n<payload>", and
        # a state frame "p ..." comes first (kept whole; received() cuts the head).
        self.positioned = positioned
        self.transport: asyncio.Transport | None = None
        self.opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        # A handshake the client gave up on may still fail later: nobody awaits that.
        self.opened.add_done_callback(_retrieve)
        self.handshaking = True
        self.buffer = b""
        self.payloads: list[bytes] = []
        # (index of the first payload of a chunk, monotonic_ns when it arrived)
        self.chunks: list[tuple[int, int]] = []
        self.probed = False
        self.probed_ns = 0  # when the first probe arrived
        self.close_code: int | None = None
        self.gone = False
        self.leaving = False  # the client closes it: not a drop
        self.tag = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)
        self.transport.write(self.request)

    def connection_lost(self, exc: Exception | None) -> None:
        self.gone = True
        if not self.opened.done():
            self.opened.set_exception(ConnectionError(f"closed during the handshake: {exc!r}"))
        elif self.close_code is None and not self.leaving:
            self.meter.dropped += 1

    def data_received(self, data: bytes) -> None:
        if self.buffer:
            data = self.buffer + data
            self.buffer = b""
        if self.handshaking:
            end = data.find(b"\r\n\r\n")
            if end < 0:
                self.buffer = data
                return
            status = data[: data.find(b"\r\n")]
            if b" 101 " not in status + b" ":
                self.opened.set_exception(ConnectionError(status.decode("latin-1")))
                assert self.transport is not None
                self.transport.close()
                return
            self.handshaking = False
            self.opened.set_result(None)
            data = data[end + 4 :]
            if not data:
                return
        self._frames(data)

    def _frames(self, data: bytes) -> None:
        now = monotonic_ns()
        payloads = self.payloads
        self.chunks.append((len(payloads), now))
        count = 0
        i = 0
        n = len(data)
        while i + 2 <= n:
            length = data[i + 1] & 0x7F
            if length < 126:
                start = i + 2
            elif length == 126:
                if i + 4 > n:
                    break
                length = (data[i + 2] << 8) | data[i + 3]
                start = i + 4
            else:
                if i + 10 > n:
                    break
                length = int.from_bytes(data[i + 2 : i + 10], "big")
                start = i + 10
            end = start + length
            if end > n:
                break
            opcode = data[i] & 0x0F
            if opcode == 1 or opcode == 2:
                payload = data[start:end]
                if self.positioned:
                    # As cheap per frame as a plain socket's check: the head
                    # is looked at only until the first probe arrived.
                    if payload[0] == _STATE:
                        i = end
                        continue
                    probe = False
                    if not self.probed:
                        body = payload.find(b"\n") + 1
                        probe = body < len(payload) and payload[body] == _PROBE
                else:
                    probe = bool(payload) and payload[0] == _PROBE
                if probe:
                    if not self.probed:
                        self.probed = True
                        self.probed_ns = now
                        self.meter.probed += 1
                else:
                    payloads.append(payload)
                    count += 1
            elif opcode == 9:
                self._control(_MASKED_PONG, data[start:end])
            elif opcode == 8:
                body = data[start:end]
                self.close_code = int.from_bytes(body[:2], "big") if len(body) >= 2 else 1005
                self.meter.closes[self.close_code] += 1
                self._control(_MASKED_CLOSE, body[:2])
                assert self.transport is not None
                self.transport.close()
            i = end
        if i < n:
            self.buffer = data[i:]
        meter = self.meter
        meter.frames_ns = now
        if count:
            meter.received += count
            meter.last_ns = now
            if (
                meter.received >= meter.expected
                and meter.done is not None
                and not meter.done.done()
            ):
                meter.done.set_result(None)

    def _control(self, opcode: int, body: bytes) -> None:
        # Client frames must be masked; a zero mask leaves the body as it is.
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(bytes((opcode, 0x80 | len(body))) + b"\0\0\0\0" + body)

    def received(self) -> list[tuple[bytes, int]]:
        """Return ``(payload, arrival ns)`` of every data frame since the last :meth:`clear`."""
        out: list[tuple[bytes, int]] = []
        chunks = self.chunks
        payloads = self.payloads
        if self.positioned:
            payloads = [p[p.find(b"\n") + 1 :] for p in payloads]
        for k, (first, at) in enumerate(chunks):
            last = chunks[k + 1][0] if k + 1 < len(chunks) else len(payloads)
            out.extend((payloads[j], at) for j in range(first, last))
        return out

    def positions(self) -> list[bytes]:
        """Return the position of every data frame since the last :meth:`clear` (positioned
        sockets; ``b"-"`` for a message published without one)."""
        return [p[: p.find(b"\n")].rpartition(b" ")[2] for p in self.payloads]

    def clear(self) -> None:
        self.payloads = []
        self.chunks = []


def upgrade_request(host: str, port: int, path: str, cookie: str | None = None) -> bytes:
    origin = f"http://{host}:{port}"
    cookie_line = f"Cookie: {cookie}\r\n" if cookie else ""
    return (
        f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {_KEY.decode()}\r\n"
        f"Sec-WebSocket-Version: 13\r\nOrigin: {origin}\r\n{cookie_line}\r\n"
    ).encode()


@dataclass
class Opened:
    sockets: list[Socket]
    seconds: float
    handshake_ms: list[float]
    failures: collections.Counter[str]


async def open_sockets(
    host: str,
    port: int,
    path: str,
    count: int,
    meter: Meter,
    *,
    concurrency: int,
    timeout: float,
    cookies: list[str] | None = None,
    positioned: bool = False,
) -> Opened:
    """Open ``count`` websockets, at most ``concurrency`` handshakes in flight.

    With ``cookies``, socket ``i`` sends ``Cookie: cookies[i]`` (its ``tag`` is ``i``).
    """
    loop = asyncio.get_running_loop()
    plain = upgrade_request(host, port, path)
    gate = asyncio.Semaphore(concurrency)
    sockets: list[Socket] = []
    times: list[float] = []
    failures: collections.Counter[str] = collections.Counter()

    async def one(index: int) -> None:
        request = upgrade_request(host, port, path, cookies[index]) if cookies else plain

        def make() -> Socket:
            sock = Socket(request, meter, positioned=positioned)
            sock.tag = index
            return sock

        async with gate:
            began = time.perf_counter()
            try:
                _, sock = await asyncio.wait_for(loop.create_connection(make, host, port), timeout)
                try:
                    await asyncio.wait_for(asyncio.shield(sock.opened), timeout)
                except BaseException:
                    if sock.transport is not None:
                        sock.transport.abort()
                    raise
            except Exception as exc:
                failures[_describe(exc)] += 1
                return
            times.append((time.perf_counter() - began) * 1000)
            sockets.append(sock)

    began = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(count)))
    return Opened(sockets, time.perf_counter() - began, times, failures)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, asyncio.TimeoutError):
        return "timeout"
    text = str(exc) or type(exc).__name__
    return text[:80]


def close_all(sockets: Iterable[Socket]) -> None:
    for sock in sockets:
        sock.leaving = True
        if sock.transport is not None:
            sock.transport.abort()


class _RedisReplies(asyncio.Protocol):
    """Counts integer replies (all that ``PUBLISH`` returns) and their sum."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.replies = 0
        self.receivers = 0
        self.buffer = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        data = self.buffer + data
        lines = data.split(b"\r\n")
        self.buffer = lines.pop()
        for line in lines:
            self.replies += 1
            if line[:1] == b":":
                self.receivers += int(line[1:])


class Publisher:
    """A raw Redis connection that writes ``PUBLISH`` commands without waiting for replies."""

    def __init__(self, protocol: _RedisReplies) -> None:
        self._protocol = protocol

    @classmethod
    async def connect(cls, host: str, port: int) -> Publisher:
        _, protocol = await asyncio.get_running_loop().create_connection(_RedisReplies, host, port)
        return cls(protocol)

    @staticmethod
    def command(channel: bytes, payload: bytes) -> bytes:
        return b"*3\r\n$7\r\nPUBLISH\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n" % (
            len(channel),
            channel,
            len(payload),
            payload,
        )

    @staticmethod
    def app_command(channel: bytes, payload: bytes) -> bytes:
        """Publish through the app: ``FCALL ws4redis_publish 1 <channel> <payload> 0``
        (stored in the history, with a position; see ws4redis_channels.store)."""
        return (
            b"*6\r\n$5\r\nFCALL\r\n$16\r\nws4redis_publish\r\n$1\r\n1\r\n"
            b"$%d\r\n%s\r\n$%d\r\n%s\r\n$1\r\n0\r\n"
            % (len(channel), channel, len(payload), payload)
        )

    def write(self, data: bytes) -> None:
        assert self._protocol.transport is not None
        self._protocol.transport.write(data)

    def publish(self, channel: bytes, payload: bytes) -> None:
        self.write(self.command(channel, payload))

    @property
    def receivers(self) -> int:
        """Sum of the subscriber counts Redis answered so far."""
        return self._protocol.receivers

    async def settle(self, sent: int, timeout: float = 10.0) -> None:
        """Wait until Redis answered ``sent`` commands in all."""
        deadline = time.monotonic() + timeout
        while self._protocol.replies < sent and time.monotonic() < deadline:
            await asyncio.sleep(0.01)

    def close(self) -> None:
        if self._protocol.transport is not None:
            self._protocol.transport.close()


class HttpPublisher(Publisher):
    """A keep-alive HTTP connection that pipelines ``POST /pub/<channel>`` (nchan's publisher)."""

    @classmethod
    async def connect(cls, host: str, port: int) -> Publisher:
        _, protocol = await asyncio.get_running_loop().create_connection(_Discard, host, port)
        return cls(cast(_RedisReplies, protocol))

    @staticmethod
    def command(channel: bytes, payload: bytes) -> bytes:
        return b"POST /pub/%s HTTP/1.1\r\nHost: bench\r\nContent-Length: %d\r\n\r\n%s" % (
            channel,
            len(payload),
            payload,
        )


class _Discard(_RedisReplies):
    def data_received(self, data: bytes) -> None:
        self.replies += data.count(b"HTTP/1.1 ")


async def probe_ready(
    sockets: list[Socket],
    meter: Meter,
    publisher: Publisher,
    channel: bytes,
    *,
    timeout: float,
    every: float = 2.0,
    quiet: float = 0.5,
) -> float:
    """Publish probes until every socket received one, then wait until frames stop.

    Whatever a design does after the handshake (subscribe, join a group), a
    socket that received a probe receives what follows. Returns the seconds
    it took; raises ``TimeoutError`` if some socket never received a probe.
    """
    began = time.monotonic()
    deadline = began + timeout
    meter.probed = sum(1 for s in sockets if s.probed)
    live = [s for s in sockets if not s.gone]
    probe = 0
    while meter.probed < len(live):
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"{len(live) - meter.probed} of {len(live)} sockets received no probe "
                f"in {timeout:.0f}s"
            )
        publisher.publish(channel, b"P%d" % probe)
        probe += 1
        wait_until = min(deadline, time.monotonic() + every)
        while meter.probed < len(live) and time.monotonic() < wait_until:
            await asyncio.sleep(0.01)
        live = [s for s in sockets if not s.gone]
    ready = time.monotonic() - began
    # Late probes still in flight must not land in the measured window.
    meter.frames_ns = monotonic_ns()
    while monotonic_ns() - meter.frames_ns < quiet * 1e9 and time.monotonic() < deadline + timeout:
        await asyncio.sleep(0.05)
    return ready
