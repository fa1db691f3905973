"""Plain HTTP on the websocket URL gets 400 "needs a websocket upgrade" under the shipped routing."""

from __future__ import annotations

import http.client

from tests.conftest import TIMEOUT, connect, recv


def request(daphne, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", daphne.port, timeout=TIMEOUT)
    try:
        conn.request(method, path, body=body)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def test_a_plain_get_on_the_websocket_url_answers_400_with_a_short_text(daphne):
    status, body = request(daphne, "GET", "/ws/foobar?subscribe-broadcast")
    assert status == 400
    assert b"needs a websocket upgrade" in body
    # The original's test looked for this phrase.
    assert b"upgrade to a websocket" in body
    assert len(body) < 200 and b"<html" not in body.lower()


def test_a_post_on_the_websocket_url_answers_400_too(daphne):
    status, body = request(daphne, "POST", "/ws/foobar", body=b"x=1")
    assert status == 400 and b"needs a websocket upgrade" in body


def test_other_paths_still_reach_django(daphne):
    status, _ = request(daphne, "GET", "/no/such/page/")
    assert status == 404
    status, _ = request(daphne, "GET", "/static/ws4redis_channels/ws4redis.js")
    assert status == 200


async def test_the_websocket_itself_still_works_on_the_same_url(daphne, redis_client):
    ws = await connect(daphne, "/ws/foobar?subscribe-broadcast")
    redis_client.publish("_broadcast_:foobar", "after the 400s")
    assert await recv(ws) == "after the 400s"
    await ws.close()
