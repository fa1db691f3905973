"""The floor: the least Python can do to fan Redis messages out to websockets.

A hand-rolled websocket server on a bare ``asyncio.Protocol`` (uvloop when
installed): it answers the upgrade, keeps each socket's transport in the set
of its facility, and reads client frames only to answer pings and closes.
ONE raw Redis connection ``PSUBSCRIBE``s ``_broadcast_:*``; each message
becomes one frame, built once and written to every transport of its facility
in a plain loop. By default the frames of all messages that came in one read
from Redis are joined and written once per socket (a burst costs one write
per socket); ``--unbatched`` writes once per message and socket. No Django,
no ASGI, no per-socket task, no redis-py.

Run as ``python -m tests.bench.floor --port 8001 --redis redis://127.0.0.1:6379/0``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import signal
from collections import defaultdict
from typing import cast
from urllib.parse import urlparse

__all__ = ["frame", "main"]

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_CHANNEL_PREFIX = b"_broadcast_:"
_WS_PREFIX = b"/ws/"

sockets: defaultdict[bytes, set[asyncio.Transport]] = defaultdict(set)


def frame(payload: bytes) -> bytes:
    """Return an unmasked, unfragmented text (UTF-8) or binary frame."""
    try:
        payload.decode("utf-8")
        first = 0x81
    except UnicodeDecodeError:
        first = 0x82
    n = len(payload)
    if n < 126:
        return bytes((first, n)) + payload
    if n < 65536:
        return bytes((first, 126)) + n.to_bytes(2, "big") + payload
    return bytes((first, 127)) + n.to_bytes(8, "big") + payload


class WebsocketProtocol(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.facility: bytes | None = None
        self.buffer = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.facility is not None and self.transport is not None:
            sockets[self.facility].discard(self.transport)

    def data_received(self, data: bytes) -> None:
        data = self.buffer + data
        if self.facility is None:
            end = data.find(b"\r\n\r\n")
            if end < 0:
                self.buffer = data
                return
            self._handshake(data[:end])
            data = data[end + 4 :]
        self.buffer = self._client_frames(data)

    def _handshake(self, head: bytes) -> None:
        assert self.transport is not None
        lines = head.split(b"\r\n")
        path = lines[0].split(b" ")[1] if len(lines[0].split(b" ")) > 2 else b""
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
        key = headers.get(b"sec-websocket-key")
        if not path.startswith(_WS_PREFIX) or key is None:
            self.transport.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
            self.transport.close()
            return
        accept = base64.b64encode(hashlib.sha1(key + _GUID).digest())
        self.transport.write(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n"
        )
        self.facility = path[len(_WS_PREFIX) :].split(b"?", 1)[0]
        sockets[self.facility].add(self.transport)

    def _client_frames(self, data: bytes) -> bytes:
        # Client frames are masked; only pings and closes need an answer.
        assert self.transport is not None
        while len(data) >= 6:
            opcode = data[0] & 0x0F
            length = data[1] & 0x7F
            start = 2
            if length == 126:
                length, start = int.from_bytes(data[2:4], "big"), 4
            elif length == 127:
                length, start = int.from_bytes(data[2:10], "big"), 10
            end = start + 4 + length
            if len(data) < end:
                break
            mask = data[start : start + 4]
            body = bytes(b ^ mask[i % 4] for i, b in enumerate(data[start + 4 : end]))
            if opcode == 8:
                self.transport.write(bytes((0x88, len(body[:2]))) + body[:2])
                self.transport.close()
                return b""
            if opcode == 9:
                self.transport.write(bytes((0x8A, len(body))) + body)
            data = data[end:]
        return data


def _parse(buffer: bytes, pos: int) -> tuple[list[bytes | int] | None, int]:
    """Parse one RESP2 array of bulk strings and integers at ``pos``; None if incomplete."""
    end = buffer.find(b"\r\n", pos)
    if end < 0:
        return None, pos
    count = int(buffer[pos + 1 : end])
    at = end + 2
    items: list[bytes | int] = []
    for _ in range(count):
        end = buffer.find(b"\r\n", at)
        if end < 0:
            return None, pos
        if buffer[at] == 0x3A:  # ":" integer
            items.append(int(buffer[at + 1 : end]))
            at = end + 2
            continue
        size = int(buffer[at + 1 : end])
        start = end + 2
        if len(buffer) < start + size + 2:
            return None, pos
        items.append(buffer[start : start + size])
        at = start + size + 2
    return items, at


class RedisSubscriber(asyncio.Protocol):
    """ONE ``PSUBSCRIBE _broadcast_:*`` connection; fans each message out in a loop.

    ``batched``: the frames of all messages that arrived in one read are joined
    and written once per socket, the way a burst is cheapest to deliver.
    """

    def __init__(self, batched: bool) -> None:
        self.batched = batched
        self.buffer = b""
        self.subscribed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        pattern = _CHANNEL_PREFIX + b"*"
        command = b"*2\r\n$10\r\nPSUBSCRIBE\r\n$%d\r\n%s\r\n" % (len(pattern), pattern)
        cast(asyncio.Transport, transport).write(command)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.lost.done():
            self.lost.set_result(None)

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer + data if self.buffer else data
        pos = 0
        batches: dict[bytes, list[bytes]] = {}
        while pos < len(buffer):
            items, pos = _parse(buffer, pos)
            if items is None:
                break
            if items[0] == b"pmessage":
                facility = items[2][len(_CHANNEL_PREFIX) :]  # type: ignore[index]
                data_frame = frame(items[3])  # type: ignore[arg-type]
                if self.batched:
                    batches.setdefault(facility, []).append(data_frame)
                else:
                    for transport in tuple(sockets.get(facility, ())):
                        transport.write(data_frame)
            elif items[0] == b"psubscribe" and not self.subscribed.done():
                self.subscribed.set_result(None)
        self.buffer = buffer[pos:]
        for facility, frames in batches.items():
            joined = b"".join(frames)
            for transport in tuple(sockets.get(facility, ())):
                transport.write(joined)


async def serve(host: str, port: int, url: str, batched: bool) -> None:
    loop = asyncio.get_running_loop()
    stop = loop.create_future()
    loop.add_signal_handler(signal.SIGTERM, stop.set_result, None)
    target = urlparse(url)
    _, subscriber = await loop.create_connection(
        lambda: RedisSubscriber(batched), target.hostname or "127.0.0.1", target.port or 6379
    )
    await subscriber.subscribed  # subscribed before the first socket can open
    server = await loop.create_server(WebsocketProtocol, host, port)
    await asyncio.wait({stop, subscriber.lost}, return_when=asyncio.FIRST_COMPLETED)
    server.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--redis", required=True)
    parser.add_argument(
        "--unbatched", action="store_true", help="one write per message and socket, no joining"
    )
    args = parser.parse_args()
    main = serve(args.host, args.port, args.redis, not args.unbatched)
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
    else:
        uvloop.run(main)


if __name__ == "__main__":
    main()
