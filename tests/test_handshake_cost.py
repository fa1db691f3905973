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
