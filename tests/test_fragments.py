"""Unfinished fragmented messages against a real daphne: a client that sends 1-byte
continuation frames of a message it never finishes costs the server what the payload
is (bounded by the server's message size limit), not tens of bytes per fragment."""

from __future__ import annotations

import asyncio
import socket

import pytest

from tests.conftest import TIMEOUT, connect, recv
from tests.rawws import upgrade
from tests.servers import Daphne

pytestmark = pytest.mark.slow

MASK = b"\x01\x02\x03\x04"


def masked_frame(opcode: int, payload: bytes, fin: bool) -> bytes:
    """A client frame (masked, payload under 126 bytes)."""
    data = bytes(b ^ MASK[i % 4] for i, b in enumerate(payload))
    return bytes([(0x80 if fin else 0) | opcode, 0x80 | len(payload)]) + MASK + data


def open_websocket(server: Daphne, path: str) -> socket.socket:
    # Parsing a few hundred thousand frames takes the server seconds.
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=6 * TIMEOUT)
    return upgrade(sock, server.port, server.origin, path, sock.gettimeout() or TIMEOUT)


def send_unfinished_message(sock: socket.socket, fragments: int) -> None:
    """Start a text message, add ``fragments`` 1-byte continuation frames, never finish it;
    then ping and wait for the pong, so the server has read everything."""
    sock.sendall(masked_frame(0x1, b"x", fin=False))
    continuation = masked_frame(0x0, b"x", fin=False)
    chunk = continuation * 10_000
    for _ in range(fragments // 10_000):
        sock.sendall(chunk)
    sock.sendall(masked_frame(0x9, b"sync", fin=True))
    seen = b""
    while b"sync" not in seen:
        data = sock.recv(65536)
        assert data, "the server closed the connection"
        seen += data


async def test_unfinished_fragmented_messages_cost_their_payload_not_per_fragment(
    daphne_factory, redis_client
):
    server = daphne_factory()
    sockets = [open_websocket(server, "/ws/frag?publish-broadcast") for _ in range(4)]
    before = server.rss_kb()
    fragments = 150_000  # 1 MB on the wire and 150 KB of payload per socket
    await asyncio.gather(
        *(asyncio.to_thread(send_unfinished_message, s, fragments) for s in sockets)
    )
    grown_kb = server.rss_kb() - before
    # One object per fragment: about 4 x 5 MiB. One buffer per message: 4 x 0.15 MiB.
    print(f"RSS grew by {grown_kb / 1024:.1f} MiB")
    assert grown_kb < 8 * 1024, f"RSS grew by {grown_kb / 1024:.1f} MiB"
    # The server still serves others.
    ws = await connect(server, "/ws/other?subscribe-broadcast")
    redis_client.publish("_broadcast_:other", "fine")
    assert await recv(ws) == "fine"
    await ws.close()
    for s in sockets:
        s.close()


async def test_a_fragmented_message_over_the_servers_limit_is_closed_with_1009(
    daphne_factory, redis_client
):
    server = daphne_factory({}, "--websocket-max-message-size", "100000")
    sock = open_websocket(server, "/ws/frag?publish-broadcast")
    sock.sendall(masked_frame(0x1, b"x", fin=False))
    sock.sendall(masked_frame(0x0, b"y" * 100, fin=False) * 1001)
    answer = b""
    while len(answer) < 4:
        data = sock.recv(65536)
        if not data:
            break
        answer += data
    assert answer[:1] == b"\x88", answer[:20]  # a close frame
    assert int.from_bytes(answer[2:4], "big") == 1009
    sock.close()
