"""daphne terminating TLS itself (``-e ssl:...``): frames leave as autobahn's prepared
messages, never as cleartext past the encryption, and the slow-client bound holds.

Under TLS the protocol's transport is Twisted's TLS wrapper, which forwards
the attributes of the TCP connection below it; the fast path must see that
and use public APIs only: prepared messages for the frames, the producer
signal (pause/resume) for what waits for the client. The same runs on plain
TCP with the private accelerations switched off.
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import json
import os
import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.conftest import TIMEOUT, close_code, connect, recv
from tests.rawws import upgrade
from tests.servers import Daphne
from tests.test_accelerator import SHIMS
from tests.test_footprint import assert_lean, census_env, settled_census

PUBLIC_ONLY = {"WS4REDIS_ACCELERATIONS_OFF": "direct_writes"}


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1: (private key, certificate) files."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    folder = tmp_path_factory.mktemp("tls")
    key_path, cert_path = folder / "key.pem", folder / "cert.pem"
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return key_path, cert_path


@pytest.fixture
def server_factory(redis_server, certificate) -> Iterator[object]:
    """Start daphne over TLS (``tls=True``) or plain TCP with extra environment."""
    started: list[Daphne] = []

    def start(tls: bool, env: dict[str, str] | None = None) -> Daphne:
        environment = {"DJANGO_SETTINGS_MODULE": "testproject.settings", **(env or {})}
        server = Daphne(environment, tls=certificate if tls else None).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def client_context(certificate: tuple[Path, Path]) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(certificate[1]))
    context.check_hostname = False  # the certificate names an IP address
    return context


async def open_socket(server: Daphne, certificate, path: str, **kwargs):
    if server.tls:
        kwargs["ssl"] = client_context(certificate)
    return await connect(server, path, **kwargs)


# An autobahn release without sendPreparedMessage: TLS sockets fall back to ASGI.
RENAMED = {
    "PYTHONPATH": os.pathsep.join(p for p in (SHIMS, os.environ.get("PYTHONPATH")) if p),
    "WS4REDIS_TEST_RENAME": json.dumps(
        [["autobahn.", "sendPreparedMessage", "send_prepared_message"]]
    ),
}

CASES = [
    pytest.param(True, {}, id="tls"),
    pytest.param(True, {"WS4REDIS_DIRECT_WRITES": "0"}, id="tls-asgi"),
    pytest.param(True, RENAMED, id="tls-renamed-prepared"),
    pytest.param(False, PUBLIC_ONLY, id="plain-public-apis"),
    # The bound from the producer signal on plain TCP too (as when a release renames
    # what buffer_bound reads).
    pytest.param(
        False, {"WS4REDIS_ACCELERATIONS_OFF": "direct_writes,buffer_bound"}, id="plain-producer"
    ),
]


@pytest.mark.parametrize(("tls", "env"), CASES)
async def test_messages_arrive_in_order_and_close_codes_carry_their_reason(
    server_factory, certificate, redis_client, tls, env
):
    server = server_factory(tls, env)
    sockets = [
        await open_socket(server, certificate, "/ws/tls?subscribe-broadcast") for _ in range(3)
    ]
    pipe = redis_client.pipeline()  # a burst: one read from Redis
    for i in range(50):
        pipe.publish("_broadcast_:tls", f"m{i}")
    pipe.execute()
    for i in range(50, 60):  # and lone messages
        redis_client.publish("_broadcast_:tls", f"m{i}")
    redis_client.publish("_broadcast_:tls", b"\xff\x00")  # not UTF-8: a binary frame
    for ws in sockets:
        assert [await recv(ws) for _ in range(60)] == [f"m{i}" for i in range(60)]
        assert await recv(ws) == b"\xff\x00"
        await asyncio.wait_for(await ws.ping(), TIMEOUT)
    publisher = await open_socket(server, certificate, "/ws/chat?publish-broadcast")
    await publisher.send("x" * 70_000)  # over WS4REDIS_MAX_MESSAGE_SIZE of the demo (64 KiB)
    assert await close_code(publisher) == 4413
    assert publisher.close_reason
    for ws in sockets:
        await ws.close()
    log = server.log()
    assert "Traceback" not in log
    assert "acceleration" not in log.split("ws4redis accelerations", 1)[1].split("\n", 1)[1]
    assert "does not bound" not in log


def open_stalled_socket(server: Daphne, certificate, path: str) -> socket.socket:
    """A websocket client that completes the handshake, then never reads or answers."""
    raw = socket.socket()
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    raw.connect(("127.0.0.1", server.port))
    sock: socket.socket = raw
    if server.tls:
        sock = client_context(certificate).wrap_socket(raw)
    return upgrade(sock, server.port, server.origin, path, TIMEOUT)


async def wait_for_log(server: Daphne, needle: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while needle not in server.log():
        assert time.monotonic() < deadline, f"{needle!r} not logged"
        await asyncio.sleep(0.1)


@pytest.mark.slow
@pytest.mark.parametrize(("tls", "env"), CASES)
async def test_a_client_that_stops_reading_is_closed_with_4507_and_memory_stays_bounded(
    server_factory, certificate, redis_server, redis_client, tls, env
):
    server = server_factory(tls, {"WS4REDIS_MAX_BUFFER_SIZE": str(256 * 1024), **env})
    stalled = open_stalled_socket(server, certificate, "/ws/firehose?subscribe-broadcast")
    reader = await open_socket(
        server, certificate, "/ws/firehose?subscribe-broadcast", max_size=None
    )
    baseline = server.rss_kb()
    padding = "x" * 10_000
    client = redis.asyncio.Redis(port=redis_server.port)
    count = 0
    try:
        # 10 KB messages until the stalled client is closed; 200 MB would be unbounded.
        while "with 4507" not in server.log():
            assert count < 20_000, "the stalled client was never closed"
            await client.publish("_broadcast_:firehose", f"{count} {padding}")
            count += 1
            message = await recv(reader)  # the reader keeps up, in order
            assert message.startswith(f"{count - 1} ")
    finally:
        await client.aclose()
    grown = server.rss_kb() - baseline
    assert grown < 30_000, f"RSS grew by {grown / 1024:.0f} MB"
    # The reader goes on being served.
    redis_client.publish("_broadcast_:firehose", "still here")
    assert await recv(reader) == "still here"
    await reader.close()
    stalled.close()


async def test_a_tls_socket_keeps_nothing_of_its_upgrade_either(
    server_factory, certificate, redis_client, tmp_path
):
    # Under TLS the producer signal replaced Twisted's HTTP channel: it is gone all the same.
    path = tmp_path / "census.json"
    server = server_factory(True, census_env(path))
    sockets = [
        await open_socket(server, certificate, "/ws/tls-census?subscribe-broadcast")
        for _ in range(5)
    ]
    redis_client.publish("_broadcast_:tls-census", "hello")
    for ws in sockets:
        assert await recv(ws) == "hello"
        await asyncio.wait_for(await ws.ping(), TIMEOUT)
    assert_lean(await settled_census(server, path), len(sockets), producer=None)
    for ws in sockets:
        await ws.close()
    assert "Traceback" not in server.log()
