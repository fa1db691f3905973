"""The cheap handshake paths keep their answers: sessions are trusted only when saved and live."""

from __future__ import annotations

import datetime

from django.contrib.sessions.models import Session
from django.utils import timezone

from tests.conftest import close_code, connect, recv, session_cookie


async def test_an_expired_session_names_no_session_channel(daphne, redis_client):
    key = session_cookie()
    Session.objects.filter(session_key=key).update(
        expire_date=timezone.now() - datetime.timedelta(seconds=1)
    )
    ws = await connect(daphne, "/ws/news?subscribe-session", session=key)
    assert await close_code(ws) == 4428
    assert not any(ch.startswith(key.encode()) for ch in redis_client.pubsub_channels())


async def test_a_saved_session_gets_its_channel_with_the_user_channel(daphne, redis_client):
    key = session_cookie("sessionuser")
    ws = await connect(daphne, "/ws/news?subscribe-session&subscribe-user", session=key)
    redis_client.publish(f"{key}:news", "to the session")
    assert await recv(ws) == "to the session"
    redis_client.publish("sessionuser:news", "to the user")
    assert await recv(ws) == "to the user"
    await ws.close()


async def test_a_socket_without_cookies_is_anonymous(daphne, redis_client):
    ws = await connect(daphne, "/ws/news?subscribe-user")
    assert await close_code(ws) == 4401
    anon = await connect(daphne, "/ws/news?subscribe-broadcast")
    redis_client.publish("_broadcast_:news", "public")
    assert await recv(anon) == "public"
    await anon.close()


def test_the_request_view_builds_get_cookies_and_meta_on_first_use():
    from ws4redis_channels.access import WebsocketRequest

    scope = {
        "path": "/ws/news",
        "query_string": b"subscribe-broadcast&x=1",
        "headers": [(b"cookie", b"sessionid=abc; theme=dark"), (b"x-forwarded-for", b"1.2.3.4")],
        "client": ["127.0.0.1", 5000],
    }
    request = WebsocketRequest(scope, "news")
    assert "META" not in vars(request) and "COOKIES" not in vars(request)
    assert request.GET["x"] == "1" and "subscribe-broadcast" in request.GET
    assert request.META["HTTP_X_FORWARDED_FOR"] == "1.2.3.4"
    assert request.META["REMOTE_ADDR"] == "127.0.0.1"
    assert request.META["QUERY_STRING"] == "subscribe-broadcast=&x=1"
    # Without scope["cookies"] (no middleware), the Cookie header is parsed.
    assert request.COOKIES == {"sessionid": "abc", "theme": "dark"}
    with_cookies = WebsocketRequest({**scope, "cookies": {"sessionid": "zzz"}}, "news")
    assert with_cookies.COOKIES == {"sessionid": "zzz"}
    assert with_cookies.path == with_cookies.path_info == "/ws/news"


def test_later_daphne_protocols_read_the_factory_options_from_their_class():
    from daphne.ws_protocol import WebSocketFactory, WebSocketProtocol

    from ws4redis_channels.accelerator.options import share_protocol_options

    factory = WebSocketFactory(None, server="daphne")
    factory.setProtocolOptions(autoPingInterval=7, openHandshakeTimeout=3)
    first = factory.buildProtocol(None)
    assert share_protocol_options(first)
    assert not share_protocol_options(first)  # once per factory
    later = factory.buildProtocol(None)
    assert isinstance(later, WebSocketProtocol) and type(later) is not WebSocketProtocol
    for name in WebSocketProtocol.CONFIG_ATTRS:
        assert getattr(later, name) == getattr(factory, name)
        assert name not in vars(later)
    assert later.autoPingInterval == 7 and later.openHandshakeTimeout == 3
    assert later.perMessageCompressionAccept([]) is None  # a function option stays unbound


def test_an_unknown_factory_is_left_alone():
    from ws4redis_channels.accelerator.options import share_protocol_options

    class Plain:
        factory = None

    assert not share_protocol_options(Plain())


async def test_sockets_after_the_first_offer_compression_and_open(daphne, redis_client):
    # websockets offers permessage-deflate: autobahn calls the factory's
    # perMessageCompressionAccept, a plain function among the shared options.
    sockets = [await connect(daphne, "/ws/news?subscribe-broadcast") for _ in range(3)]
    redis_client.publish("_broadcast_:news", "to all three")
    for ws in sockets:
        assert await recv(ws) == "to all three"
        await ws.close()
