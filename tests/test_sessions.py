"""Sessions and users of waiting handshakes load together, with channels' answers.

Each case is answered twice, by channels' ``get_user`` and by
:func:`load_users` on fresh stores of the same cookies, and the answers (the
user, the session's key afterwards, whether the row still exists) must agree.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from channels.auth import get_user
from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY, get_user_model
from django.contrib.auth.backends import ModelBackend
from django.contrib.sessions.backends.db import SessionStore
from django.contrib.sessions.models import Session
from django.db import connection
from django.test import override_settings
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from tests.conftest import close_code, connect, recv, session_cookie
from ws4redis_channels import sessions
from ws4redis_channels.sessions import load_user, load_users

MODEL = "django.contrib.auth.backends.ModelBackend"
ALLOW_ALL = "django.contrib.auth.backends.AllowAllUsersModelBackend"
CUSTOM = "tests.test_sessions.UppercaseBackend"


class UppercaseBackend(ModelBackend):
    """A backend with its own get_user: it is called per socket, not in bulk."""

    calls: list[Any] = []

    def get_user(self, user_id: Any) -> Any:
        self.calls.append(user_id)
        user = super().get_user(user_id)
        if user is not None and user.username.startswith("broken"):
            raise RuntimeError("this backend cannot load broken users")
        return user


def _name() -> str:
    return f"u{uuid.uuid4().hex[:12]}"


def logged_in(username: str, backend: str = MODEL, **fields: Any) -> str:
    user = get_user_model().objects.create(username=username, **fields)
    store = SessionStore()
    store[SESSION_KEY] = str(user.pk)
    store[BACKEND_SESSION_KEY] = backend
    store[HASH_SESSION_KEY] = user.get_session_auth_hash()
    store.save()
    return store.session_key


def answer(user: Any) -> Any:
    if isinstance(user, BaseException):
        return type(user)
    return user.get_username() if user.is_authenticated else None


def both(cookie: str | None) -> tuple[Any, Any]:
    """(channels' answer, ours) for the same cookie, each on a fresh store."""

    def one(loaded: Any, store: SessionStore) -> Any:
        return (
            answer(loaded),
            store.session_key,
            bool(cookie) and Session.objects.filter(session_key=cookie).exists(),
        )

    theirs = SessionStore(cookie)
    try:
        their_user = async_to_sync(get_user)({"session": theirs})
    except Exception as exc:
        their_user = exc
    their_answer = one(their_user, theirs)
    ours = SessionStore(cookie)
    our_answer = one(load_users([{"session": ours}])[0], ours)
    return their_answer, our_answer


def test_a_logged_in_session_gives_its_user():
    theirs, ours = both(logged_in(name := _name()))
    assert ours == theirs
    assert ours[0] == name


def test_sessions_without_a_user_unknown_expired_or_malformed_cookies_are_anonymous():
    expired = logged_in(_name())
    Session.objects.filter(session_key=expired).update(expire_date=timezone.now())
    for cookie in (session_cookie(), "x" * 32, "john", expired, None):
        theirs, ours = both(cookie)
        assert ours == theirs, cookie
        assert ours[0] is None


def test_a_changed_password_logs_the_session_out_and_flushes_it():
    name = _name()
    # Twice: channels' answer flushes the first session.
    cookies = [logged_in(name + "a"), logged_in(name + "b")]
    model = get_user_model()
    for user in model.objects.filter(username__in=[name + "a", name + "b"]):
        user.set_password("changed")
        user.save()
    theirs = both(cookies[0])[0]
    ours = both(cookies[1])[1]
    assert theirs == ours == (None, None, False)


def test_inactive_deleted_and_unlisted_backends_as_channels_answers():
    model = get_user_model()
    inactive = _name()
    cookies = [logged_in(inactive, is_active=False)]
    gone = _name()
    cookies.append(logged_in(gone))
    model.objects.filter(username=gone).delete()
    cookies.append(logged_in(_name(), backend="tests.nowhere.Backend"))
    for cookie in cookies:
        theirs, ours = both(cookie)
        assert ours == theirs
        assert ours[0] is None
    with override_settings(AUTHENTICATION_BACKENDS=[ALLOW_ALL]):
        theirs, ours = both(logged_in(inactive + "x", backend=ALLOW_ALL, is_active=False))
        assert ours == theirs
        assert ours[0] == inactive + "x"


@override_settings(AUTHENTICATION_BACKENDS=[CUSTOM, MODEL])
def test_a_backend_with_its_own_get_user_is_asked_per_socket_and_fails_only_its_socket():
    UppercaseBackend.calls.clear()
    good, broken, plain = _name(), "broken" + _name(), _name()
    scopes = [
        {"session": SessionStore(logged_in(good, backend=CUSTOM))},
        {"session": SessionStore(logged_in(broken, backend=CUSTOM))},
        {"session": SessionStore(logged_in(plain))},
    ]
    results = load_users(scopes)
    assert [answer(result) for result in results] == [good, RuntimeError, plain]
    assert len(UppercaseBackend.calls) == 2
    theirs, ours = both(logged_in(broken + "x", backend=CUSTOM))
    assert ours == theirs
    assert ours[0] is RuntimeError


def test_many_handshakes_cost_one_query_for_sessions_and_one_for_users():
    """The guard of the bulk path: a Django that changes its session cache fails this test."""
    assert sessions.bulk_sessions()
    name = _name()
    cookies = [logged_in(f"{name}{i}") for i in range(20)]
    cookies += [cookies[0], session_cookie(), "y" * 32]  # the same user twice, no user, unknown
    scopes = [{"session": SessionStore(cookie)} for cookie in cookies]
    with CaptureQueriesContext(connection) as queries:
        results = load_users(scopes)
    assert len(queries) == 2, [query["sql"] for query in queries]
    names = [answer(result) for result in results]
    assert names == [f"{name}{i}" for i in range(20)] + [name + "0", None, None]
    assert results[0] is not results[20]  # each socket its own user instance
    assert [scope["session"].session_key for scope in scopes[-2:]] == [cookies[-2], None]


@override_settings(SESSION_ENGINE="django.contrib.sessions.backends.cached_db")
def test_other_session_engines_load_one_by_one_in_the_same_trip():
    from django.contrib.sessions.backends.cached_db import SessionStore as Cached

    name = _name()
    user = get_user_model().objects.create(username=name)
    store = Cached()
    store[SESSION_KEY] = str(user.pk)
    store[BACKEND_SESSION_KEY] = MODEL
    store[HASH_SESSION_KEY] = user.get_session_auth_hash()
    store.save()
    assert [answer(u) for u in load_users([{"session": Cached(store.session_key)}])] == [name]


def test_without_the_session_cache_contract_sessions_load_one_by_one(monkeypatch):
    monkeypatch.setattr(sessions, "_bulk", False)
    name = _name()
    scopes = [{"session": SessionStore(logged_in(f"{name}{i}"))} for i in range(3)]
    with CaptureQueriesContext(connection) as queries:
        results = load_users(scopes)
    assert [answer(result) for result in results] == [f"{name}{i}" for i in range(3)]
    assert len(queries) == 4  # each session, then the users together


async def test_handshakes_waiting_together_share_one_trip(monkeypatch):
    trips: list[int] = []
    real = sessions.load_users

    def counted(scopes: list[Any]) -> list[Any]:
        trips.append(len(scopes))
        return real(scopes)

    monkeypatch.setattr(sessions, "load_users", counted)
    name = _name()
    cookies = [logged_in(f"{name}{i}") for i in range(30)]
    users = await asyncio.gather(
        *(load_user({"session": SessionStore(cookie)}) for cookie in cookies)
    )
    assert [user.get_username() for user in users] == [f"{name}{i}" for i in range(30)]
    assert trips == [30]
    # A lone handshake later makes its own trip.
    assert (await load_user({"session": SessionStore(cookies[0])})).get_username() == name + "0"
    assert trips == [30, 1]


async def test_a_failed_trip_fails_its_handshakes_and_the_next_trip_works(monkeypatch):
    real = sessions.load_users

    def broken(scopes: list[Any]) -> list[Any]:
        raise ConnectionError("database unreachable")

    monkeypatch.setattr(sessions, "load_users", broken)
    with pytest.raises(ConnectionError):
        await load_user({"session": SessionStore(session_cookie())})
    monkeypatch.setattr(sessions, "load_users", real)
    name = _name()
    assert (await load_user({"session": SessionStore(logged_in(name))})).get_username() == name


async def test_a_burst_of_logged_in_sockets_each_gets_its_own_channels(daphne, redis_client):
    """Through daphne: 40 users connect at once, each receives only its own message."""
    name = _name()
    cookies = [session_cookie(f"{name}{i}") for i in range(40)]
    sockets = await asyncio.gather(
        *(connect(daphne, "/ws/burst?subscribe-user&subscribe-session", session=c) for c in cookies)
    )
    try:
        for i, cookie in enumerate(cookies):
            redis_client.publish(f"{name}{i}:burst", f"user {i}")
            redis_client.publish(f"{cookie}:burst", f"session {i}")
        for i, ws in enumerate(sockets):
            assert await recv(ws) == f"user {i}"
            assert await recv(ws) == f"session {i}"
    finally:
        for ws in sockets:
            await ws.close()
    forged = await connect(daphne, "/ws/burst?subscribe-user", session="z" * 32)
    assert await close_code(forged) == 4401
