"""A django-websocket-redis 0.6 project, migrated by the guide, works against a real daphne.

The project is ``tests/oldchat`` (typed names with the prefix ``demo``,
``RedisPublisher`` and ``SELF`` in its views, the groups 0.6 kept in the
session, the heartbeat, the old client path). These tests are the original's
own live-server tests (``examples/chatserver/tests/test_chatclient.py``),
ported to a daphne subprocess and a real websocket client, plus its views
and pages. Users log in through the project's login form.
"""

from __future__ import annotations

import asyncio
import http.client
import http.cookiejar
import json
import re
import urllib.parse
import urllib.request
from collections.abc import Iterator

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.test import RequestFactory, override_settings

from tests.conftest import TIMEOUT, close_code, connect, nothing_arrives, recv
from tests.servers import Daphne
from ws4redis.publisher import RedisPublisher
from ws4redis.redis_store import SELF, RedisMessage

OLDCHAT = {"DJANGO_SETTINGS_MODULE": "tests.oldchat.settings"}
# What the project's settings say, for the publishers of this test process.
PROJECT = {"WS4REDIS_NAMING": "typed", "WS4REDIS_PREFIX": "demo"}
PASSWORD = "demo"  # the demo users of the test database
MESSAGE = "".join(chr(c) for c in range(33, 128))
FACILITY = "unittest"


@pytest.fixture(scope="module")
def oldchat(redis_server) -> Iterator[Daphne]:
    chatters = Group.objects.get_or_create(name="chatters")[0]
    for name in ("john", "mary"):
        get_user_model().objects.get(username=name).groups.add(chatters)
    server = Daphne(OLDCHAT, app="tests.oldchat.asgi:application").start()
    yield server
    server.stop()
    chatters.delete()  # the other tests' users keep their own groups


class Browser:
    """An HTTP client with a cookie jar, as a browser's tab would be."""

    def __init__(self, server: Daphne) -> None:
        self.server = server
        self.jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar))

    def cookie(self, name: str) -> str | None:
        return next((c.value for c in self.jar if c.name == name), None)

    def get(self, path: str) -> str:
        with self.opener.open(self.server.http(path), timeout=TIMEOUT) as response:
            return response.read().decode()  # type: ignore[no-any-return]

    def post(self, path: str, data: dict[str, str]) -> tuple[int, str]:
        body = urllib.parse.urlencode(data).encode()
        request = urllib.request.Request(self.server.http(path), data=body)
        request.add_header("Referer", self.server.http(path))
        try:
            with self.opener.open(request, timeout=TIMEOUT) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    def login(self, username: str) -> str:
        """Log in through the project's login form; return the session key."""
        page = self.get("/accounts/login/")
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page)
        assert token, page
        status, _ = self.post(
            "/accounts/login/",
            {"csrfmiddlewaretoken": token.group(1), "username": username, "password": PASSWORD},
        )
        assert status == 200
        session = self.cookie("sessionid")
        assert session, "the login form did not log in"
        return session


def request_for(username: str | None = None):
    request = RequestFactory().get("/chat/")
    if username is not None:
        request.user = get_user_model().objects.get(username=username)
    return request


# -- the original's live-server tests ---------------------------------------------


async def test_subscribe_broadcast(oldchat, redis_client):
    with override_settings(**PROJECT):
        publisher = RedisPublisher(facility=FACILITY, broadcast=True)
        publisher.publish_message(RedisMessage(MESSAGE), 10)
    assert redis_client.get("demo:broadcast:unittest") == MESSAGE.encode()
    ws = await connect(oldchat, f"/ws/{FACILITY}?subscribe-broadcast")
    assert await recv(ws) == MESSAGE
    await ws.close()


async def test_pubsub_broadcast(oldchat, redis_client):
    ws = await connect(oldchat, f"/ws/{FACILITY}?subscribe-broadcast&publish-broadcast&echo")
    await ws.send(MESSAGE)
    assert await recv(ws) == MESSAGE
    await ws.close()


async def test_publish_broadcast(oldchat, redis_client):
    ws = await connect(oldchat, f"/ws/{FACILITY}?publish-broadcast")
    await ws.send(MESSAGE)
    await asyncio.wait_for(ws.close(), TIMEOUT)
    with override_settings(**PROJECT):
        publisher = RedisPublisher()
        result = publisher.fetch_message(request_for(), FACILITY, "broadcast")
        assert result == MESSAGE.encode()
        # now access Redis store directly
        assert publisher._connection.get("demo:broadcast:" + FACILITY) == MESSAGE.encode()


async def test_subscribe_user(oldchat, redis_client):
    session = Browser(oldchat).login("john")
    with override_settings(**PROJECT):
        publisher = RedisPublisher(
            request=request_for("mary"), facility=FACILITY, users=["john", "mary"]
        )
        publisher.publish_message(RedisMessage(MESSAGE), 10)
    ws = await connect(oldchat, f"/ws/{FACILITY}?subscribe-user", session=session)
    assert await recv(ws) == MESSAGE
    await ws.close()


async def test_publish_user(oldchat, redis_client):
    session = Browser(oldchat).login("john")
    ws = await connect(oldchat, f"/ws/{FACILITY}?publish-user", session=session)
    await ws.send(MESSAGE)
    await asyncio.wait_for(ws.close(), TIMEOUT)
    with override_settings(**PROJECT):
        publisher = RedisPublisher()
        request = request_for("john")
        assert publisher.fetch_message(request, FACILITY, "user") == MESSAGE.encode()
        request.user = None
        assert publisher.fetch_message(request, FACILITY, "user") is None


async def test_subscribe_group(oldchat, redis_client):
    session = Browser(oldchat).login("john")
    with override_settings(**PROJECT):
        publisher = RedisPublisher(
            request=request_for("mary"), facility=FACILITY, groups=["chatters"]
        )
        publisher.publish_message(RedisMessage(MESSAGE), 10)
    ws = await connect(oldchat, f"/ws/{FACILITY}?subscribe-group", session=session)
    assert await recv(ws) == MESSAGE
    await ws.close()


async def test_publish_group(oldchat, redis_client):
    session = Browser(oldchat).login("john")
    ws = await connect(oldchat, f"/ws/{FACILITY}?publish-group", session=session)
    await ws.send(MESSAGE)
    await asyncio.wait_for(ws.close(), TIMEOUT)
    with override_settings(**PROJECT):
        publisher = RedisPublisher()
        result = publisher.fetch_message(request_for("mary"), FACILITY, "group")
    assert result == MESSAGE.encode()
    assert redis_client.get("demo:group:chatters:unittest") == MESSAGE.encode()


async def test_subscribe_session(oldchat, redis_client):
    from django.contrib.sessions.backends.db import SessionStore

    session_key = Browser(oldchat).login("john")
    assert len(session_key) > 30
    request = request_for()
    request.session = SessionStore(session_key)
    with override_settings(**PROJECT):
        publisher = RedisPublisher(request=request, facility=FACILITY, sessions=[SELF])
        publisher.publish_message(RedisMessage(MESSAGE), 10)
    ws = await connect(oldchat, f"/ws/{FACILITY}?subscribe-session", session=session_key)
    assert await recv(ws) == MESSAGE
    await ws.close()


async def test_publish_session(oldchat, redis_client):
    from django.contrib.sessions.backends.db import SessionStore

    session_key = Browser(oldchat).login("mary")
    ws = await connect(oldchat, f"/ws/{FACILITY}?publish-session", session=session_key)
    await ws.send(MESSAGE)
    await asyncio.wait_for(ws.close(), TIMEOUT)
    request = request_for()
    request.session = SessionStore(session_key)
    with override_settings(**PROJECT):
        result = RedisPublisher().fetch_message(request, FACILITY, "session")
    assert result == MESSAGE.encode()


def test_invalid_request(oldchat):
    for method in ("GET", "POST"):
        conn = http.client.HTTPConnection("127.0.0.1", oldchat.port, timeout=TIMEOUT)
        conn.request(method, "/ws/foobar", body=b"" if method == "POST" else None)
        response = conn.getresponse()
        assert response.status == 400
        assert "upgrade to a websocket" in response.read().decode()
        conn.close()


def test_defining_multiple_publishers():
    with override_settings(**PROJECT):
        pub1 = RedisPublisher(facility=FACILITY, broadcast=True)
        assert pub1._publishers == {"demo:broadcast:" + FACILITY}
        pub2 = RedisPublisher(facility=FACILITY, users=["john"])
        assert pub2._publishers == {"demo:user:john:" + FACILITY}


async def test_protocol_support(oldchat, redis_client):
    url = f"/ws/{FACILITY}?subscribe-broadcast&publish-broadcast"
    ws = await connect(oldchat, url, subprotocols=["unittestprotocol"])
    assert ws.response.headers["Sec-WebSocket-Protocol"] == "unittestprotocol"
    await ws.close()
    ws = await connect(oldchat, url)
    assert "Sec-WebSocket-Protocol" not in ws.response.headers
    await ws.close()


async def test_close_connection_with_every_code_harms_nothing(oldchat, redis_client):
    url = f"/ws/{FACILITY}?subscribe-broadcast&publish-broadcast&echo"
    for status in (1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 4999):
        ws = await connect(oldchat, url)
        await asyncio.wait_for(ws.close(status), TIMEOUT)
    ws = await connect(oldchat, url)
    await ws.send("still serving")
    assert await recv(ws) == "still serving"
    await ws.close()


# -- the project's views and settings -----------------------------------------------


async def test_the_chat_page_publishes_a_welcome_that_new_sockets_get(oldchat, redis_client):
    page = Browser(oldchat).get("/chat/")
    assert '/static/js/ws4redis.js"' in page
    assert f"ws://127.0.0.1:{oldchat.port}/ws/foobar?subscribe-broadcast" in page
    assert 'heartbeat_msg: "--heartbeat--"' in page
    ws = await connect(oldchat, "/ws/foobar?subscribe-broadcast")
    assert await recv(ws) == "Hello everybody"
    await ws.close()


async def test_the_user_chat_form_reaches_the_user_and_nobody_picked_is_no_error(
    oldchat, redis_client
):
    john = await connect(
        oldchat, "/ws/foobar?subscribe-user", session=Browser(oldchat).login("john")
    )
    mary = await connect(
        oldchat, "/ws/foobar?subscribe-user", session=Browser(oldchat).login("mary")
    )
    sender = Browser(oldchat)
    assert sender.post("/userchat/", {"user": "", "message": "to nobody"}) == (200, "OK")
    assert sender.post("/userchat/", {"user": "john", "message": "hi john"}) == (200, "OK")
    assert await recv(john) == "hi john"
    assert sender.post("/userchat/", {"user": "mary", "message": "marker"}) == (200, "OK")
    assert await recv(mary) == "marker"
    assert await nothing_arrives(john, 0.2)
    await john.close()
    await mary.close()


async def test_the_group_chat_form_reaches_the_members(oldchat, redis_client):
    john = await connect(
        oldchat, "/ws/foobar?subscribe-group", session=Browser(oldchat).login("john")
    )
    status = Browser(oldchat).post("/groupchat/", {"group": "chatters", "message": "hi all"})
    assert status == (200, "OK")
    assert await recv(john) == "hi all"
    await john.close()


async def test_self_in_a_view_reaches_the_users_own_sockets_and_groups(oldchat, redis_client):
    tab = Browser(oldchat)
    session = tab.login("mary")
    user = await connect(oldchat, "/ws/foobar?subscribe-user", session=session)
    group = await connect(
        oldchat, "/ws/foobar?subscribe-group", session=Browser(oldchat).login("john")
    )
    assert tab.post("/notetoself/", {"message": "just me"}) == (200, "OK")
    assert await recv(user) == "just me"
    assert tab.post("/notetoself/", {"message": "me and my groups", "groups": "1"}) == (200, "OK")
    assert await recv(user) == "me and my groups"
    assert await recv(group) == "me and my groups"
    assert Browser(oldchat).post("/notetoself/", {"message": "anonymous"})[0] == 500
    await user.close()
    await group.close()


def test_the_groups_are_in_the_session_as_0_6_put_them_there(oldchat):
    tab = Browser(oldchat)
    tab.login("john")
    groups = json.loads(tab.get("/mygroups/"))["memberof"]
    assert "chatters" in groups and "staff" in groups


async def test_the_heartbeat_is_answered(oldchat, redis_client):
    ws = await connect(oldchat, "/ws/foobar?subscribe-broadcast&publish-broadcast")
    await ws.send("--heartbeat--")
    assert await recv(ws) == "--heartbeat--"
    await ws.close()


async def test_user_flags_of_an_anonymous_socket_are_refused(oldchat, redis_client):
    ws = await connect(oldchat, "/ws/foobar?subscribe-user")
    assert await close_code(ws) == 4401


def test_the_naming_command_finds_what_the_project_publishes(oldchat, redis_client):
    import io

    from django.core.management import call_command

    with override_settings(**PROJECT):
        RedisPublisher(facility="foobar", broadcast=True).publish_message("stored", 60)
        out = io.StringIO()
        call_command("ws4redis_naming", "--check", stdout=out)
    assert "OK: the settings match" in out.getvalue()
