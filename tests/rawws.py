"""A minimal websocket client connection, for tests and benchmarks with many sockets.

1,000 sockets must keep up with 200,000 frames/s in one Python process, which
the ``websockets`` library cannot on this machine. This one only does what
those tests need: the opening handshake, unmasked server frames, pongs.
"""

from __future__ import annotations

import asyncio
import base64
import os
import socket
from collections.abc import Callable

__all__ = ["Wire", "upgrade"]


def upgrade(
    sock: socket.socket, port: int, origin: str, path: str, timeout: float
) -> socket.socket:
    """Send the opening handshake on a connected blocking socket; return it once
    the 101 is read (nothing after it is consumed)."""
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        (
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
            f"Origin: {origin}\r\n\r\n"
        ).encode()
    )
    sock.settimeout(timeout)
    response = b""
    while b"\r\n\r\n" not in response:
        response += sock.recv(1)
    assert response.startswith(b"HTTP/1.1 101"), response
    return sock


class Wire(asyncio.Protocol):
    """A minimal websocket client connection: 1,000 of them must keep up with 200,000
    frames/s in one Python process, which the ``websockets`` library cannot here."""

    def __init__(self, on_frame: Callable[[bytes], None], path: str, port: int) -> None:
        self.on_frame = on_frame
        self.request = (
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
            "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
            f"Sec-WebSocket-Key: {base64.b64encode(os.urandom(16)).decode()}\r\n"
            f"Origin: http://127.0.0.1:{port}\r\n\r\n"
        ).encode()
        self.buffer = b""
        self.upgraded = False
        self.transport: asyncio.Transport | None = None
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.transport.write(self.request)  # type: ignore[union-attr]

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer + data
        if not self.upgraded:
            end = buffer.find(b"\r\n\r\n")
            if end == -1:
                self.buffer = buffer
                return
            if b" 101 " not in buffer[: buffer.find(b"\r\n")]:
                assert self.transport is not None
                self.transport.close()
                return
            self.upgraded = True
            buffer = buffer[end + 4 :]
        i, size = 0, len(buffer)
        while size - i >= 2:
            opcode, length = buffer[i] & 0x0F, buffer[i + 1] & 0x7F
            head = 2
            if length == 126:
                if size - i < 4:
                    break
                length, head = int.from_bytes(buffer[i + 2 : i + 4], "big"), 4
            elif length == 127:
                if size - i < 10:
                    break
                length, head = int.from_bytes(buffer[i + 2 : i + 10], "big"), 10
            if size - i < head + length:
                break
            payload = buffer[i + head : i + head + length]
            i += head + length
            if opcode in (1, 2):
                self.on_frame(payload)
            elif opcode == 9:  # ping: a masked pong
                mask = os.urandom(4)
                masked = bytes(b ^ mask[j % 4] for j, b in enumerate(payload))
                assert self.transport is not None
                self.transport.write(bytes([0x8A, 0x80 | len(payload)]) + mask + masked)
            elif opcode == 8:
                assert self.transport is not None
                self.transport.close()
        self.buffer = buffer[i:]

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.lost.done():
            self.lost.set_result(None)
