"""An attack suite against a real daphne: every malformed or hostile request gets its
documented answer, reaches nobody it should not, and leaves the server serving others."""

from __future__ import annotations

import asyncio
import json

import pytest
import redis
import websockets
from websockets.frames import Frame, Opcode

from tests.conftest import Spy, close_code, connect, nothing_arrives, recv, session_cookie
from tests.servers import Daphne
from ws4redis_channels.exceptions import InvalidName
from ws4redis_channels.names import parse_channel

POLICY_SETTINGS = "tests.e2e_settings"


async def still_serves(server: Daphne, client: redis.Redis) -> None:
    """A well-behaved socket on the same server still gets its messages."""
    ws = await connect(server, "/ws/canary?subscribe-broadcast")
    client.publish("_broadcast_:canary", "alive")
    assert await recv(ws) == "alive"
    await ws.close()


async def refused_with_status(server: Daphne, path: str, **kwargs) -> int:
    with pytest.raises(websockets.InvalidStatus) as info:
        ws = await connect(server, path, **kwargs)
        await ws.close()
    return info.value.response.status_code


# -- origins ----------------------------------------------------------------------


async def test_foreign_origin_is_refused_before_any_subscription(daphne, redis_client):
    status = await refused_with_status(
        daphne, "/ws/foobar?subscribe-broadcast", origin="http://evil.example"
    )
    assert status == 403
    assert redis_client.pubsub_numsub("_broadcast_:foobar") == [(b"_broadcast_:foobar", 0)]
    await still_serves(daphne, redis_client)


async def test_missing_origin_is_refused(daphne, redis_client):
    assert await refused_with_status(daphne, "/ws/foobar?subscribe-broadcast", origin=None) == 403


# -- identity ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "flag", ["subscribe-user", "publish-user", "subscribe-group", "publish-group"]
)
async def test_anonymous_user_flags_are_refused_with_4401(daphne, redis_client, flag):
    ws = await connect(daphne, f"/ws/foobar?subscribe-broadcast&{flag}")
    assert await close_code(ws) == 4401
    assert not any(
        ch.startswith(("None", "AnonymousUser")) for ch in redis_client.pubsub_channels()
    )
    assert f"{flag} needs a logged-in user" in daphne.log()
    await still_serves(daphne, redis_client)


@pytest.mark.parametrize("flag", ["subscribe-session", "publish-session"])
async def test_session_flags_without_a_saved_session_are_refused_with_4428(
    daphne, redis_client, flag
):
    ws = await connect(daphne, f"/ws/foobar?{flag}")
    assert await close_code(ws) == 4428
    await still_serves(daphne, redis_client)


@pytest.mark.parametrize("forged", ["john", "_broadcast_", "wnqd0gbw5obpnj50zwh6yaq2yz4o8g9x"])
async def test_forged_session_cookies_name_no_channel(daphne, redis_client, forged):
    spy = Spy(redis_client)
    victim = await connect(daphne, "/ws/news?subscribe-user", session=session_cookie("john"))
    ws = await connect(daphne, "/ws/news?subscribe-session&publish-session", session=forged)
    assert await close_code(ws) == 4428
    redis_client.publish("john:news", "john's secret")
    assert await recv(victim) == "john's secret"
    assert spy.channels() == ["john:news"]
    # A forged cookie on a broadcast-only socket is just an anonymous visitor.
    anon = await connect(daphne, "/ws/news?subscribe-broadcast", session=forged)
    redis_client.publish("john:news", "still secret")
    redis_client.publish("_broadcast_:news", "public")
    assert await recv(anon) == "public"
    await anon.close()
    await victim.close()


async def test_a_user_named_broadcast_cannot_publish_to_everyone(daphne, redis_client):
    spy = Spy(redis_client)
    everyone = await connect(daphne, "/ws/news?subscribe-broadcast")
    ws = await connect(daphne, "/ws/news?publish-user", session=session_cookie("_broadcast_"))
    assert await close_code(ws) == 4401
    assert await nothing_arrives(everyone)
    assert spy.channels() == []
    assert "reserved" in daphne.log()
    await everyone.close()


async def test_a_user_name_with_a_colon_is_refused(daphne, redis_client):
    ws = await connect(daphne, "/ws/news?subscribe-user", session=session_cookie("a:b"))
    assert await close_code(ws) == 4401


# -- facilities -------------------------------------------------------------------


@pytest.mark.parametrize(
    "facility", ["a:b", "", "x" * 10_000, "%00", "a%00b", "..%2Fx", "caf%C3%A9", "a%20b", "a%0Ab"]
)
async def test_invalid_facilities_are_refused_with_4400(daphne, redis_client, facility):
    spy = Spy(redis_client)
    ws = await connect(daphne, f"/ws/{facility}?subscribe-broadcast&publish-broadcast")
    assert await close_code(ws) == 4400
    assert spy.channels() == []
    assert "facility" in daphne.log()
    await still_serves(daphne, redis_client)


async def test_unknown_flags_are_ignored(daphne, redis_client):
    ws = await connect(daphne, "/ws/foobar?subscribe-broadcast&subscribe-everything&x=1&=&&")
    redis_client.publish("_broadcast_:foobar", "fine")
    assert await recv(ws) == "fine"
    await ws.close()


# -- publishing without permission ------------------------------------------------


async def test_anonymous_publish_broadcast_needs_an_open_facility(daphne, redis_client):
    spy = Spy(redis_client)
    listener = await connect(daphne, "/ws/news?subscribe-broadcast")
    ws = await connect(daphne, "/ws/news?subscribe-broadcast&publish-broadcast")
    await ws.send("spam for everyone")
    assert await close_code(ws) == 4403
    assert await nothing_arrives(listener)
    assert spy.channels() == []
    assert "flags not permitted: publish-broadcast" in daphne.log()
    await listener.close()


async def test_logged_in_users_publish_broadcast_only_where_permitted(daphne, redis_client):
    ws = await connect(
        daphne, "/ws/news?publish-broadcast&publish-user", session=session_cookie("mary")
    )
    spy = Spy(redis_client)
    await ws.send("hello")
    assert spy.channels() == ["mary:news"]
    await ws.close()


# -- limits -----------------------------------------------------------------------


async def test_frames_over_the_size_limit_close_with_4413_and_publish_nothing(daphne, redis_client):
    spy = Spy(redis_client)
    listener = await connect(daphne, "/ws/chat?subscribe-broadcast")
    ws = await connect(daphne, "/ws/chat?publish-broadcast")
    await ws.send("x" * (64 * 1024 + 1))
    assert await close_code(ws) == 4413
    assert await nothing_arrives(listener)
    assert spy.channels() == []
    await listener.close()


async def test_frames_over_daphnes_own_limit_close_with_1009(daphne, redis_client):
    spy = Spy(redis_client)
    ws = await connect(daphne, "/ws/chat?publish-broadcast", max_size=None)
    try:
        await ws.send(b"x" * (2 * 1024 * 1024))
    except websockets.ConnectionClosed:
        pass
    assert await close_code(ws) == 1009
    assert spy.channels() == []
    await still_serves(daphne, redis_client)


async def test_invalid_utf8_in_a_text_frame_closes_with_1007(daphne, redis_client):
    spy = Spy(redis_client)
    ws = await connect(daphne, "/ws/chat?publish-broadcast")
    ws.protocol.send_frame(Frame(Opcode.TEXT, b"\xff\xfe not utf-8"))
    ws.send_data()
    assert await close_code(ws) == 1007
    assert spy.channels() == []


async def test_a_flood_is_cut_at_the_rate_limit_and_nothing_accepted_is_lost(daphne, redis_client):
    listener = await connect(daphne, "/ws/chat?subscribe-broadcast")
    ws = await connect(daphne, "/ws/chat?publish-broadcast")
    for i in range(200):
        try:
            await ws.send(json.dumps(i))
        except websockets.ConnectionClosed:
            break
    assert await close_code(ws) == 4429
    received = []
    try:
        while True:
            received.append(json.loads(await recv(listener, 1.0)))
    except asyncio.TimeoutError:
        pass
    # Everything before the cut was published, in order; nothing after it.
    assert received == list(range(len(received)))
    assert 40 <= len(received) < 200
    await listener.close()
    await still_serves(daphne, redis_client)


# -- WS4REDIS_ALLOWED_CHANNELS ------------------------------------------------------


def policy_server(daphne_factory, **settings) -> Daphne:
    return daphne_factory(
        {"DJANGO_SETTINGS_MODULE": POLICY_SETTINGS, "WS4REDIS_TEST_SETTINGS": json.dumps(settings)}
    )


async def test_an_original_style_callback_drops_publish_flags(daphne_factory, redis_client):
    server = policy_server(
        daphne_factory, WS4REDIS_ALLOWED_CHANNELS="tests.policies.subscribe_only"
    )
    ws = await connect(server, "/ws/chat?subscribe-broadcast&publish-broadcast")
    redis_client.publish("_broadcast_:chat", "subscribed")
    assert await recv(ws) == "subscribed"
    await ws.send("not allowed")
    assert await close_code(ws) == 4403


async def test_an_async_callback_can_grant_publish_broadcast(daphne_factory, redis_client):
    server = policy_server(
        daphne_factory, WS4REDIS_ALLOWED_CHANNELS="tests.policies.staff_may_broadcast"
    )
    listener = await connect(server, "/ws/news?subscribe-broadcast")
    john = await connect(server, "/ws/news?publish-broadcast", session=session_cookie("john"))
    mary = await connect(server, "/ws/news?publish-broadcast", session=session_cookie("mary"))
    await john.send("from staff")
    assert await recv(listener) == "from staff"
    await mary.send("from mary")
    assert await close_code(mary) == 4403
    assert await nothing_arrives(listener)
    await john.close()
    await listener.close()


async def test_permission_denied_refuses_the_handshake_with_403(daphne_factory, redis_client):
    server = policy_server(daphne_factory, WS4REDIS_ALLOWED_CHANNELS="tests.policies.members_only")
    assert await refused_with_status(server, "/ws/news?subscribe-broadcast") == 403
    ws = await connect(server, "/ws/news?subscribe-broadcast", session=session_cookie("mary"))
    await ws.close()
    assert "members only" in server.log()


async def test_a_callback_returning_none_is_a_clear_configuration_error(
    daphne_factory, redis_client
):
    server = policy_server(daphne_factory, WS4REDIS_ALLOWED_CHANNELS="tests.policies.broken")
    assert await refused_with_status(server, "/ws/news?subscribe-broadcast") == 403
    assert "WS4REDIS_ALLOWED_CHANNELS returned None" in server.log()
    assert "Traceback" not in server.log()


async def test_the_permissive_policy_restores_the_original_behaviour(daphne_factory, redis_client):
    server = policy_server(daphne_factory, WS4REDIS_PUBLISH_POLICY="permissive")
    listener = await connect(server, "/ws/news?subscribe-broadcast")
    ws = await connect(server, "/ws/news?publish-broadcast")
    await ws.send("anyone may")
    assert await recv(listener) == "anyone may"
    await ws.close()
    await listener.close()


async def test_a_path_outside_the_websocket_url_is_refused_with_4404(daphne, redis_client):
    ws = await connect(daphne, "/elsewhere/foobar?subscribe-broadcast")
    assert await close_code(ws) == 4404
    assert "Traceback" not in daphne.log()
    await still_serves(daphne, redis_client)


# -- afterwards -------------------------------------------------------------------


async def test_no_junk_channel_is_ever_subscribed(daphne, redis_client):
    """Run last in this module: every channel subscribed in Redis is a valid name."""
    for channel in redis_client.pubsub_channels():
        name = channel.decode()
        if name.startswith("ws4redis") or "!" in name or name.startswith("asgi"):
            continue  # the channel layer's own channels
        try:
            parse_channel(name)
        except InvalidName:
            pytest.fail(f"junk channel subscribed: {name!r}")
