"""Broken and hostile handshakes against a real daphne: oversized query strings, header
floods, errors anywhere in the handshake, and log lines a client tries to forge. Each
gets a documented refusal, one escaped log line, and never HTTP 500 or a traceback."""

from __future__ import annotations

import json
import socket

import pytest
import websockets

from tests.conftest import TIMEOUT, close_code, connect, recv
from tests.servers import Daphne

E2E = "tests.e2e_settings"


def server_with(daphne_factory, **settings) -> Daphne:
    return daphne_factory(
        {"DJANGO_SETTINGS_MODULE": E2E, "WS4REDIS_TEST_SETTINGS": json.dumps(settings)}
    )


def raw_handshake(server: Daphne, path: str, extra_headers: str = "") -> bytes:
    """Send an opening handshake by hand; return the status line of the answer."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT) as sock:
        sock.sendall(
            (
                f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n"
                "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
                f"Origin: {server.origin}\r\n{extra_headers}\r\n"
            ).encode("latin-1")
        )
        answer = b""
        while b"\r\n" not in answer:
            chunk = sock.recv(4096)
            if not chunk:
                break
            answer += chunk
    return answer.split(b"\r\n", 1)[0]


def log_lines(server: Daphne) -> list[str]:
    return server.log().splitlines()


async def test_a_query_string_with_over_1000_fields_is_refused_with_4400(daphne, redis_client):
    fields = "&".join("x" for _ in range(1500))
    ws = await connect(daphne, f"/ws/foobar?subscribe-broadcast&{fields}")
    assert await close_code(ws) == 4400
    assert "1501 parameters; at most 100" in daphne.log()
    assert "Traceback" not in daphne.log()
    assert raw_handshake(daphne, f"/ws/foobar?{fields}").startswith(b"HTTP/1.1 101")


async def test_an_oversized_query_string_is_refused_with_4400(daphne, redis_client):
    ws = await connect(daphne, "/ws/foobar?subscribe-broadcast&x=" + "y" * 9000)
    assert await close_code(ws) == 4400
    assert "at most 8192 are accepted" in daphne.log()
    assert "y" * 50 not in daphne.log()


async def test_djangos_field_limit_is_a_refusal_not_a_traceback(daphne_factory, redis_client):
    server = server_with(
        daphne_factory,
        DATA_UPLOAD_MAX_NUMBER_FIELDS=5,
        WS4REDIS_ALLOWED_CHANNELS="tests.policies.reads_query",
    )
    ws = await connect(server, "/ws/foobar?subscribe-broadcast&a&b&c&d&e&f&g")
    assert await close_code(ws) == 4400
    assert "TooManyFieldsSent" in server.log()
    assert "Traceback" not in server.log()


def test_too_many_headers_are_refused_with_http_400(daphne):
    headers = "".join(f"X-Flood-{i}: {i}\r\n" for i in range(600))
    answer = raw_handshake(daphne, "/ws/foobar?subscribe-broadcast", headers)
    assert answer.startswith(b"HTTP/1.1 400")
    assert "Traceback" not in daphne.log()


def test_an_oversized_header_line_is_dropped_without_an_answer(daphne):
    headers = "X-Big: " + "z" * 20_000 + "\r\n"
    assert raw_handshake(daphne, "/ws/foobar?subscribe-broadcast", headers) == b""
    assert "Traceback" not in daphne.log()


async def test_an_error_in_the_handshake_is_refused_with_4500(daphne_factory, redis_client):
    server = server_with(daphne_factory, WS4REDIS_ALLOWED_CHANNELS="tests.policies.explodes")
    ws = await connect(server, "/ws/foobar?subscribe-broadcast")
    assert await close_code(ws) == 4500
    assert "Handshake of websocket /ws/foobar?subscribe-broadcast from 127.0.0.1 failed" in (
        server.log()
    )
    assert "500 Internal" not in server.log()
    assert redis_client.pubsub_numsub("_broadcast_:foobar") == [(b"_broadcast_:foobar", 0)]


async def test_a_broken_session_store_is_refused_with_4500(daphne_factory, redis_client):
    server = server_with(daphne_factory, SESSION_ENGINE="tests.policies")
    ws = await connect(server, "/ws/foobar?subscribe-broadcast")
    assert await close_code(ws) == 4500
    assert "session backend unreachable" in server.log()


async def test_logs_escape_client_values_and_leave_query_values_out(daphne, redis_client):
    forged = "%0A2026-12-01%20WARNING%20FORGED%20line"
    ws = await connect(daphne, f"/ws/a{forged}?subscribe-broadcast&token=s3cret%0AFORGED")
    assert await close_code(ws) == 4400
    ws = await connect(daphne, f"/nowhere{forged}?token=s3cret")
    assert await close_code(ws) == 4404
    with pytest.raises(websockets.InvalidStatus):
        await connect(daphne, "/ws/foobar?subscribe-broadcast", origin="http://evil\\x0aexample")
    lines = log_lines(daphne)
    assert not [line for line in lines if line.startswith("2026-12-01 WARNING FORGED")]
    # Our lines show the newline escaped; daphne's access log keeps the URL encoded.
    assert not [line for line in lines if "FORGED" in line and not ("\\n" in line or "%0A" in line)]
    assert "s3cret" not in daphne.log()
    assert "/ws/a\\n2026-12-01 WARNING FORGED line?subscribe-broadcast&token from 127.0.0.1" in (
        daphne.log()
    )
    # The shared server's log also holds other tests' refusals of other origins.
    refused = [line for line in lines if "is not allowed" in line and "x0aexample" in line]
    assert refused and all("\\x0aexample" in line for line in refused), refused
    assert not [line for line in lines if line.startswith("example")]


async def test_well_behaved_sockets_are_served_after_the_refusals(daphne, redis_client):
    ws = await connect(daphne, "/ws/after?subscribe-broadcast")
    redis_client.publish("_broadcast_:after", "still here")
    assert await recv(ws) == "still here"
    await ws.close()
