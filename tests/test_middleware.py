"""The one-layer websocket middleware gives what channels' stack gives."""

from __future__ import annotations

from typing import Any

from channels.generic.websocket import AsyncWebsocketConsumer
from channels.testing import WebsocketCommunicator
from django.test import override_settings

from tests.conftest import session_cookie
from ws4redis_channels.middleware import WebsocketAuthMiddleware

seen: list[dict[str, Any]] = []


class Recorder(AsyncWebsocketConsumer):
    async def connect(self) -> None:
        session = self.scope["session"]
        seen.append(
            {
                "user": self.scope["user"].get_username() or None,
                "session": session.session_key,
                "cookies": dict(self.scope["cookies"]),
            }
        )
        await self.accept()


def app(origins: list[str] | None = None) -> WebsocketAuthMiddleware:
    return WebsocketAuthMiddleware(Recorder.as_asgi(), origins or ["127.0.0.1"])


async def connect(application: Any, headers: list[tuple[bytes, bytes]]) -> tuple[bool, Any]:
    communicator = WebsocketCommunicator(application, "/ws/x", headers=headers)
    connected, code = await communicator.connect(timeout=5)
    await communicator.disconnect()
    return connected, code


async def test_cookies_session_and_user_come_from_the_session_cookie():
    seen.clear()
    key = session_cookie("john")
    headers = [(b"origin", b"http://127.0.0.1"), (b"cookie", f"sessionid={key}; a=b".encode())]
    assert (await connect(app(), headers))[0]
    assert seen == [{"user": "john", "session": key, "cookies": {"sessionid": key, "a": "b"}}]


async def test_without_cookies_the_user_is_anonymous():
    seen.clear()
    assert (await connect(app(), [(b"origin", b"http://127.0.0.1")]))[0]
    assert seen == [{"user": None, "session": None, "cookies": {}}]


async def test_foreign_or_missing_origins_are_refused_before_the_inner_app():
    seen.clear()
    assert not (await connect(app(), [(b"origin", b"http://evil.example")]))[0]
    assert not (await connect(app(), []))[0]
    assert not (await connect(app(), [(b"origin", b"\xff\xfe")]))[0]
    assert seen == []


async def test_origin_patterns_follow_channels_rules():
    seen.clear()
    application = app([".example.com", "http://other.test:8000"])
    assert (await connect(application, [(b"origin", b"https://www.example.com")]))[0]
    assert (await connect(application, [(b"origin", b"http://other.test:8000")]))[0]
    assert not (await connect(application, [(b"origin", b"http://other.test:9000")]))[0]


@override_settings(ALLOWED_HOSTS=[], DEBUG=True)
async def test_the_shipped_application_allows_local_origins_in_debug_without_allowed_hosts(
    redis_server,
):
    from ws4redis_channels.routing import websocket_application

    communicator = WebsocketCommunicator(
        websocket_application(),
        "/ws/foo?subscribe-broadcast",
        headers=[(b"origin", b"http://localhost")],
    )
    connected, _ = await communicator.connect(timeout=5)
    assert connected
    await communicator.disconnect()
