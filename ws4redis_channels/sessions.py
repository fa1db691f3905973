"""The sessions and users of the sockets being opened, loaded together.

channels' ``get_user`` makes one trip to the database thread per handshake:
the session row, then the user row, on a connection that Django opens and
closes around each trip (``CONN_MAX_AGE = 0``). When hundreds of logged-in
browsers connect at once (a deploy, an outage) those trips queue one behind
the other and the event loop and the database thread wait for each other.

:func:`load_user` gives the same answer as channels' ``get_user``, but the
handshakes that wait at the same time share one trip: one query for their
database sessions, one per authentication backend for their users, one
connection. Per socket it still decodes the session and checks the session
hash of the user's password, as Django does, and a session whose hash no
longer matches is flushed, as channels does.

What is loaded in bulk, and what one by one (in the same trip):

* sessions of ``django.contrib.sessions.backends.db`` (and subclasses that
  keep its loading) in bulk; every other engine (``cached_db``, ``cache``,
  ``file``, ``signed_cookies``, your own) loads each session its own way;
* users of backends that keep ``ModelBackend.get_user`` (``ModelBackend``,
  ``AllowAllUsersModelBackend``, ``RemoteUserBackend``) in bulk, with the same
  ``user_can_authenticate`` check; other backends' ``get_user`` is called per
  socket.

A database session loaded in bulk is handed to its ``SessionStore`` through
the store's private cache attribute (``_session_cache``), the one its own
loading fills; :func:`loaded_key` reads it too, and no other module does.
:func:`bulk_sessions` checks once per process, without the database, that a
store so filled answers from it; if a Django release changes that, sessions
load one by one and nothing else changes.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import weakref
from typing import Any

from channels.db import database_sync_to_async

__all__ = ["BATCH_LIMIT", "bulk_sessions", "load_user", "load_users", "loaded_key"]

logger = logging.getLogger(__name__)

#: At most this many handshakes share one trip (and one ``IN (...)`` list).
BATCH_LIMIT = 250


class _Loaded(Exception):
    """Raised by the probe's store when it would load from the database."""


_bulk: bool | None = None


def bulk_sessions() -> bool:
    """True when database sessions can be handed to their stores in bulk (checked once)."""
    global _bulk
    if _bulk is None:
        from django.contrib.sessions.backends.db import SessionStore

        class Probe(SessionStore):
            def load(self) -> dict[str, Any]:
                raise _Loaded

        probe: Any = Probe("p" * 32)
        try:
            probe._session_cache = {"probe": 1}
            filled = probe.get("probe") == 1 and probe.accessed
            probe = Probe("p" * 32)
            probe._session_key = None
            probe._session_cache = {}
            filled = filled and probe.session_key is None and probe.get("probe") is None
        except (_Loaded, AttributeError, TypeError):
            filled = False
        if not filled:
            logger.info(
                "Django's database SessionStore no longer answers from _session_cache: "
                "websocket handshakes load their sessions one by one"
            )
        _bulk = filled
    return _bulk


def _bulk_loadable(store: Any) -> bool:
    from django.contrib.sessions.backends.db import SessionStore

    cls: Any = type(store)
    db: Any = SessionStore
    return (
        isinstance(store, SessionStore)
        and cls.load is db.load
        and cls._get_session_from_db is db._get_session_from_db
        and not hasattr(store, "_session_cache")
        and store.session_key is not None
    )


def _load_sessions(stores: list[Any]) -> None:
    """Fill the database sessions among ``stores`` with one query per session model."""
    if not bulk_sessions():
        return
    from django.utils import timezone

    by_model: dict[Any, list[Any]] = {}
    for store in stores:
        if _bulk_loadable(store):
            by_model.setdefault(store.model, []).append(store)
    for model, waiting in by_model.items():
        rows = dict(
            model.objects.filter(
                session_key__in={store.session_key for store in waiting},
                expire_date__gt=timezone.now(),
            ).values_list("session_key", "session_data")
        )
        for store in waiting:
            data = rows.get(store.session_key)
            if data is None:
                # What the store's own loading does for a missing or expired row.
                store._session_key = None
                store._session_cache = {}
            else:
                store._session_cache = store.decode(data)


def loaded_key(session: Any) -> tuple[bool, str | None]:
    """``(True, key)`` for a database session that is already loaded, else ``(False, None)``.

    Loading a database session (``db``, ``cached_db``: the user middleware
    does, to find the user) sets its key to None when no live row has it, so
    the key of a loaded one names a saved session: no second query needed.
    """
    from django.contrib.sessions.backends.db import SessionStore

    if isinstance(session, SessionStore) and hasattr(session, "_session_cache"):
        key = session.session_key
        return True, key if isinstance(key, str) and key else None
    return False, None


def _model_backend_users(backend: Any) -> bool:
    from django.contrib.auth.backends import ModelBackend

    return isinstance(backend, ModelBackend) and type(backend).get_user is ModelBackend.get_user


def load_users(scopes: list[Any]) -> list[Any]:
    """channels' ``get_user`` for each scope, in bulk (synchronous: the database thread).

    Returns, per scope, its user (or ``AnonymousUser``) or the exception that
    loading it raised, so that one broken session fails only its own socket.
    """
    from django.conf import settings
    from django.contrib.auth import BACKEND_SESSION_KEY, SESSION_KEY, get_user_model, load_backend

    _load_sessions([scope["session"] for scope in scopes])
    pk = get_user_model()._meta.pk
    results: list[Any] = [None] * len(scopes)
    wanted: list[tuple[int, Any, Any]] = []  # (index, user id, backend)
    bulk: dict[str, set[Any]] = {}
    backends: dict[str, Any] = {}
    for index, scope in enumerate(scopes):
        session = scope["session"]
        try:
            try:
                user_id = pk.to_python(session[SESSION_KEY])
                path = session[BACKEND_SESSION_KEY]
            except KeyError:
                continue
            if path not in settings.AUTHENTICATION_BACKENDS:
                continue
            if path not in backends:
                backends[path] = load_backend(path)
            wanted.append((index, user_id, path))
            if _model_backend_users(backends[path]):
                bulk.setdefault(path, set()).add(user_id)
        except Exception as exc:
            results[index] = exc
    found: dict[str, dict[Any, Any]] = {}
    for path, ids in bulk.items():
        model = get_user_model()
        found[path] = {user.pk: user for user in model._default_manager.filter(pk__in=ids)}
    handed: set[int] = set()
    for index, user_id, path in wanted:
        session = scopes[index]["session"]
        backend = backends[path]
        try:
            if path in found:
                user = found[path].get(user_id)
                if user is not None:
                    # Each socket gets its own instance, as one query each would give.
                    if id(user) in handed:
                        user = copy.copy(user)
                    handed.add(id(user))
                    if not backend.user_can_authenticate(user):
                        user = None
            else:
                user = backend.get_user(user_id)
            results[index] = _verified(session, user)
        except Exception as exc:
            results[index] = exc
    from django.contrib.auth.models import AnonymousUser

    return [AnonymousUser() if result is None else result for result in results]


def _verified(session: Any, user: Any) -> Any:
    """``user`` if the session's hash matches its password's; else flush the session (channels)."""
    from django.contrib.auth import HASH_SESSION_KEY
    from django.utils.crypto import constant_time_compare

    if hasattr(user, "get_session_auth_hash"):
        session_hash = session.get(HASH_SESSION_KEY)
        if not (session_hash and constant_time_compare(session_hash, user.get_session_auth_hash())):
            session.flush()
            return None
    return user


class _Loader:
    """The handshakes of one event loop waiting for their users, and the trip that loads them."""

    def __init__(self) -> None:
        self.waiting: list[tuple[Any, asyncio.Future[Any]]] = []
        self.task: asyncio.Task[None] | None = None

    async def load(self, scope: Any) -> Any:
        future = asyncio.get_running_loop().create_future()
        self.waiting.append((scope, future))
        if self.task is None:
            # Started on the next pass of the loop: the handshakes of this one join it.
            self.task = asyncio.get_running_loop().create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        try:
            while self.waiting:
                batch = [entry for entry in self.waiting[:BATCH_LIMIT] if not entry[1].done()]
                del self.waiting[:BATCH_LIMIT]
                if not batch:
                    continue
                try:
                    results = await database_sync_to_async(load_users)([s for s, _ in batch])
                except asyncio.CancelledError:
                    for _, future in batch:
                        future.cancel()
                    raise
                except Exception as exc:
                    results = [exc] * len(batch)
                for (_, future), result in zip(batch, results, strict=True):
                    if future.done():
                        continue
                    if isinstance(result, BaseException):
                        future.set_exception(result)
                    else:
                        future.set_result(result)
        finally:
            self.task = None


_loaders: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Loader] = (
    weakref.WeakKeyDictionary()
)


async def load_user(scope: Any) -> Any:
    """The user of ``scope`` (its ``session`` set), as channels' ``get_user`` gives it."""
    loop = asyncio.get_running_loop()
    loader = _loaders.get(loop)
    if loader is None:
        loader = _loaders[loop] = _Loader()
    return await loader.load(scope)
