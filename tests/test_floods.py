"""Heartbeat and ping floods from clients that never read: their replies count against the
outbound bound and the rate limit, so the flooder is closed and server memory stays bounded."""

from __future__ import annotations

import asyncio
import os
import socket
import struct

import pytest

from tests.conftest import TIMEOUT, connect, recv
from tests.test_reliability import open_raw_socket

pytestmark = pytest.mark.slow

FLOOD_BYTES = 100 * 1024 * 1024
# Far above WS4REDIS_MAX_BUFFER_SIZE (1 MiB), far below what an unbounded flood costs.
RSS_GROWTH_KB = 30_000
# A smaller bound reaches the limit sooner; the default one is tested in test_reliability.
SMALL_BOUND = {"WS4REDIS_MAX_BUFFER_SIZE": str(128 * 1024)}


def client_frame(opcode: int, payload: bytes) -> bytes:
    """A masked client-to-server frame (payload < 126 bytes)."""
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return struct.pack("!BB", 0x80 | opcode, 0x80 | len(payload)) + mask + masked


def flood(sock: socket.socket, frames: bytes, server, needle: str) -> int:
    """Send ``frames`` again and again, never reading, until the server logs ``needle`` or
    stops taking data; return the bytes sent."""
    sent = 0
    sock.settimeout(10.0)
    while sent < FLOOD_BYTES:
        try:
            sock.sendall(frames)
        except OSError:  # timeout: the server stopped reading; reset: it closed
            break
        sent += len(frames)
        if sent % (len(frames) * 64) == 0 and needle in server.log():
            break
    return sent


async def wait_for_log(server, needle: str, timeout: float = TIMEOUT) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while needle not in server.log():
        assert asyncio.get_running_loop().time() < deadline, (
            f"{needle!r} not logged; daphne log:\n{server.log()[-3000:]}"
        )
        await asyncio.sleep(0.1)


async def bystander_still_served(server, redis_client) -> None:
    ws = await connect(server, "/ws/bystander?subscribe-broadcast")
    redis_client.publish("_broadcast_:bystander", "still here")
    assert await recv(ws) == "still here"
    await ws.close()


@pytest.mark.parametrize(
    ("name", "frame", "env", "code"),
    [
        (
            "heartbeat",
            client_frame(0x1, b"--heartbeat--"),
            # Both rate limits off, so that only the outbound bound can end the flood:
            # how many replies the kernel buffers before daphne's own buffer grows
            # depends on the machine's TCP buffers (tcp_wmem up to 4 MiB here), and
            # on some machines the byte limit (4429) came first.
            {"WS4REDIS_PUBLISH_RATE": "0", "WS4REDIS_PUBLISH_BYTES_RATE": "0", **SMALL_BOUND},
            4507,
        ),
        ("ping", client_frame(0x9, b"p" * 125), SMALL_BOUND, 4507),
    ],
    ids=["heartbeats-unlimited-rate", "pings"],
)
async def test_a_flood_from_a_client_that_never_reads_is_closed_with_memory_bounded(
    daphne_factory, redis_client, name, frame, env, code
):
    server = daphne_factory(env)
    sock = open_raw_socket(server, "/ws/flood?subscribe-broadcast", rcvbuf=4096)
    baseline = server.rss_kb()
    frames = frame * (65536 // len(frame))
    await asyncio.get_running_loop().run_in_executor(
        None, flood, sock, frames, server, f"with {code}"
    )
    await wait_for_log(server, f"with {code}", 30)
    grown = server.rss_kb() - baseline
    assert grown < RSS_GROWTH_KB, f"RSS grew by {grown / 1024:.0f} MB under a {name} flood"
    await bystander_still_served(server, redis_client)
    sock.close()


async def test_a_heartbeat_flood_is_rate_limited_with_4429(daphne_factory, redis_client):
    server = daphne_factory()
    sock = open_raw_socket(server, "/ws/flood?subscribe-broadcast", rcvbuf=4096)
    frames = client_frame(0x1, b"--heartbeat--") * 200
    await asyncio.get_running_loop().run_in_executor(None, flood, sock, frames, server, "4429")
    await wait_for_log(server, "with 4429")
    await bystander_still_served(server, redis_client)
    sock.close()
