"""A small websocket client for fault runs: many sockets, exact bookkeeping, bad manners.

Each :class:`Client` is an ``asyncio.Protocol``: it sends the upgrade request,
parses server frames, records every text payload and the close code and
reason it got, answers pings (unless told to be rude) and can stop reading
altogether (``pause_reading``) or send whatever frames a test wants, masked
as a browser would.
"""

from __future__ import annotations

import asyncio
import base64
import os
import struct
from collections.abc import Iterable
from typing import cast

__all__ = ["Client", "frame", "open_clients"]


def frame(opcode: int, payload: bytes, *, fin: bool = True) -> bytes:
    """Return a masked client-to-server frame."""
    mask = os.urandom(4)
    length = len(payload)
    first = (0x80 if fin else 0) | opcode
    if length < 126:
        header = struct.pack("!BB", first, 0x80 | length)
    elif length < 65536:
        header = struct.pack("!BBH", first, 0x80 | 126, length)
    else:
        header = struct.pack("!BBQ", first, 0x80 | 127, length)
    # Masking with a repeated key: XOR by whole integers keeps it fast.
    key = (mask * (length // 4 + 1))[:length]
    masked = (int.from_bytes(payload, "big") ^ int.from_bytes(key, "big")).to_bytes(length, "big")
    return header + mask + masked


class Client(asyncio.Protocol):
    """One websocket, recording what it receives."""

    def __init__(self, host: str, port: int, path: str, headers: dict[str, str]) -> None:
        key = base64.b64encode(os.urandom(16)).decode()
        lines = [
            f"GET {path} HTTP/1.1",
            f"Host: {host}:{port}",
            "Upgrade: websocket",
            "Connection: Upgrade",
            f"Sec-WebSocket-Key: {key}",
            "Sec-WebSocket-Version: 13",
            f"Origin: http://{host}:{port}",
            *(f"{name}: {value}" for name, value in headers.items()),
        ]
        self.request = ("\r\n".join(lines) + "\r\n\r\n").encode()
        self.transport: asyncio.Transport | None = None
        self.buffer = b""
        self.upgraded = False
        self.status = 0  # the HTTP status of the handshake
        self.opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.messages: list[bytes] = []
        self.close_code: int | None = None  # None: no close frame (1006 as a browser says)
        self.close_reason = ""
        self.answer_pings = True
        self.arrived: asyncio.Event = asyncio.Event()

    # -- asyncio.Protocol ---------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if not self.upgraded:
            head, sep, rest = self.buffer.partition(b"\r\n\r\n")
            if not sep:
                return
            parts = head.split(b" ", 2)
            self.status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
            if self.status != 101:
                if not self.opened.done():
                    self.opened.set_exception(ConnectionError(f"HTTP {self.status}"))
                assert self.transport is not None
                self.transport.close()
                return
            self.upgraded = True
            self.buffer = rest
            if not self.opened.done():
                self.opened.set_result(None)
        self._frames()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.opened.done():
            self.opened.set_exception(ConnectionError("closed before the handshake ended"))
        if not self.closed.done():
            self.closed.set_result(None)

    # -- frames -------------------------------------------------------------------

    def _frames(self) -> None:
        buffer = self.buffer
        offset = 0
        while len(buffer) - offset >= 2:
            first, second = buffer[offset], buffer[offset + 1]
            length = second & 0x7F
            start = offset + 2
            if length == 126:
                if len(buffer) - start < 2:
                    break
                (length,) = struct.unpack_from("!H", buffer, start)
                start += 2
            elif length == 127:
                if len(buffer) - start < 8:
                    break
                (length,) = struct.unpack_from("!Q", buffer, start)
                start += 8
            if len(buffer) - start < length:
                break
            payload = buffer[start : start + length]
            offset = start + length
            self._frame(first & 0x0F, payload)
        self.buffer = buffer[offset:]

    def _frame(self, opcode: int, payload: bytes) -> None:
        if opcode in (1, 2):
            self.messages.append(payload)
            self.arrived.set()
        elif opcode == 8:
            if len(payload) >= 2:
                (self.close_code,) = struct.unpack_from("!H", payload)
                self.close_reason = payload[2:].decode("utf-8", "replace")
            else:
                self.close_code = 1005
            self.send(frame(8, payload[:2]))
            assert self.transport is not None
            self.transport.close()
        elif opcode == 9 and self.answer_pings:
            self.send(frame(10, payload))

    # -- what a test does ---------------------------------------------------------

    def send(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def send_text(self, text: str) -> None:
        self.send(frame(1, text.encode()))

    def stop_reading(self) -> None:
        assert self.transport is not None
        self.transport.pause_reading()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    async def wait_for(self, payload: bytes, timeout: float) -> bool:
        """Wait until ``payload`` has arrived; return False on timeout or close."""
        deadline = asyncio.get_running_loop().time() + timeout
        while payload not in self.messages[-64:] and payload not in self.messages:
            if self.closed.done():
                return False
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                return False
            self.arrived.clear()
            try:
                await asyncio.wait_for(self.arrived.wait(), remaining)
            except asyncio.TimeoutError:
                return False
        return True


async def open_clients(
    port: int,
    paths: Iterable[str],
    *,
    headers: dict[str, str] | None = None,
    concurrency: int = 100,
    timeout: float = 20.0,
    rcvbuf: int | None = None,
) -> list[Client]:
    """Open one client per path (at most ``concurrency`` handshakes at once)."""
    loop = asyncio.get_running_loop()
    semaphore = asyncio.Semaphore(concurrency)

    async def one(path: str) -> Client:
        async with semaphore:
            sock = None
            if rcvbuf is not None:
                import socket

                sock = socket.socket()
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
                sock.setblocking(False)
                await loop.sock_connect(sock, ("127.0.0.1", port))
                _, client = await loop.create_connection(
                    lambda: Client("127.0.0.1", port, path, headers or {}), sock=sock
                )
            else:
                _, client = await loop.create_connection(
                    lambda: Client("127.0.0.1", port, path, headers or {}), "127.0.0.1", port
                )
            await asyncio.wait_for(client.opened, timeout)
            return client

    return list(await asyncio.gather(*(one(p) for p in paths)))
