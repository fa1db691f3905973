"""Where Redis is and how to reach it: ``WS4REDIS_CONNECTION`` turned into clients.

``WS4REDIS_CONNECTION`` is either the dict django-websocket-redis used
(``host``, ``port``, ``db``, ``password``, ``unix_socket_path``; plus
``username``, ``ssl``, ``sentinels``, ``service_name``, ``sentinel_password``)
or a URL: ``redis://``, ``rediss://``, ``unix://`` or
``redis+sentinel://[:password@]host:port[,host:port...]/service[/db]``.

Errors of the Redis client are re-raised at this boundary as the app's own
(:func:`redis_errors`): :class:`~ws4redis_channels.exceptions.RedisTimeout`,
:class:`~ws4redis_channels.exceptions.RedisUnavailable` and
:class:`~ws4redis_channels.exceptions.RedisCommandError`.

Clients are created on first use. Asynchronous clients belong to one event
loop each; the synchronous client is shared by all threads (redis-py's pool
is thread-safe). Every cache is keyed by the parsed target, so changing the
setting (``override_settings`` in tests) yields new clients.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl as ssl_module
import threading
import weakref
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, unquote, urlparse

import redis
import redis.asyncio
import redis.asyncio.sentinel
import redis.sentinel

from .exceptions import RedisCommandError, RedisTimeout, RedisUnavailable, WS4RedisError

__all__ = [
    "RedisTarget",
    "async_client",
    "parse_target",
    "redis_errors",
    "resolve_address",
    "sync_client",
]

# Enough for a burst of publishes from many sockets; callers wait for a free
# connection (BlockingConnectionPool) instead of failing, up to the timeout.
MAX_CONNECTIONS = 64
POOL_TIMEOUT = 10.0
# Commands (not the long-lived pub/sub reader) get a socket timeout.
COMMAND_TIMEOUT = 10.0
CONNECT_TIMEOUT = 5.0


@dataclass(frozen=True)
class RedisTarget:
    """A parsed ``WS4REDIS_CONNECTION``: one server, or a Sentinel-monitored service."""

    host: str = "localhost"
    port: int = 6379
    path: str | None = None
    db: int = 0
    username: str | None = None
    password: str | None = None
    ssl: bool = False
    sentinels: tuple[tuple[str, int], ...] = ()
    service_name: str | None = None
    sentinel_password: str | None = None

    def describe(self) -> str:
        """Return where this target points, without credentials, for log lines."""
        if self.sentinels:
            hosts = ",".join(f"{h}:{p}" for h, p in self.sentinels)
            return f"sentinel {hosts} service {self.service_name!r}"
        if self.path:
            return f"unix:{self.path}"
        return f"{'rediss' if self.ssl else 'redis'}://{self.host}:{self.port}/{self.db}"


@contextlib.contextmanager
def redis_errors(target: RedisTarget | None = None) -> Iterator[None]:
    """Re-raise the Redis client's errors (and socket errors) as the app's own.

    redis-py's ``ConnectionError`` and ``TimeoutError`` are not the builtin
    ones, so ``except ConnectionError`` above this boundary would miss them.
    """
    where = f"Redis at {target.describe()}" if target is not None else "Redis"
    try:
        yield
    except WS4RedisError:
        raise  # already ours (a nested boundary, the subscriber's ReplyError)
    except (redis.TimeoutError, asyncio.TimeoutError, TimeoutError) as exc:
        raise RedisTimeout(f"{where} did not answer in time: {exc!r}") from exc
    except redis.ResponseError as exc:
        raise RedisCommandError(f"{where} answered with an error: {exc}") from exc
    except (redis.RedisError, OSError) as exc:
        # ConnectionError, pool exhaustion, sentinel errors, refused sockets...
        raise RedisUnavailable(f"{where} is unreachable: {exc!r}") from exc


def _parse_url(url: str) -> RedisTarget:
    parsed = urlparse(url)
    query = {k: v[0] for k, v in parse_qs(parsed.query).items() if v}
    username = unquote(parsed.username) if parsed.username else None
    password = unquote(parsed.password) if parsed.password else None
    db = int(query.get("db", 0))
    if parsed.scheme == "unix":
        return RedisTarget(path=unquote(parsed.path), db=db, username=username, password=password)
    if parsed.scheme == "redis+sentinel":
        netloc = parsed.netloc.rpartition("@")[2]
        sentinels = []
        for item in netloc.split(","):
            host, _, port = item.rpartition(":")
            sentinels.append((host or item, int(port) if host else 26379))
        parts = [p for p in parsed.path.split("/") if p]
        if not parts:
            raise ValueError(f"redis+sentinel URL {url!r} names no service: add /<service>")
        return RedisTarget(
            db=int(parts[1]) if len(parts) > 1 else db,
            username=username,
            password=password,
            sentinels=tuple(sentinels),
            service_name=unquote(parts[0]),
            sentinel_password=query.get("sentinel_password"),
        )
    if parsed.scheme not in ("redis", "rediss"):
        raise ValueError(f"unsupported Redis URL scheme in {url!r}")
    path_db = parsed.path.strip("/")
    return RedisTarget(
        host=parsed.hostname or "localhost",
        port=parsed.port or 6379,
        db=int(query["db"]) if "db" in query else int(path_db or 0),
        username=username,
        password=password,
        ssl=parsed.scheme == "rediss",
    )


def parse_target(value: str | Mapping[str, Any]) -> RedisTarget:
    """Parse a ``WS4REDIS_CONNECTION`` value (URL or dict) into a :class:`RedisTarget`."""
    if isinstance(value, str):
        return _parse_url(value)
    sentinels = tuple((str(h), int(p)) for h, p in value.get("sentinels") or ())
    return RedisTarget(
        host=str(value.get("host") or "localhost"),
        port=int(value.get("port") or 6379),
        path=value.get("unix_socket_path") or value.get("path"),
        db=int(value.get("db") or 0),
        username=value.get("username"),
        password=value.get("password"),
        ssl=bool(value.get("ssl", False)),
        sentinels=sentinels,
        service_name=value.get("service_name") or value.get("master_name"),
        sentinel_password=value.get("sentinel_password"),
    )


def _client_kwargs(target: RedisTarget) -> dict[str, Any]:
    kwargs: dict[str, Any] = {
        "db": target.db,
        "username": target.username,
        "password": target.password,
        "socket_timeout": COMMAND_TIMEOUT,
        "socket_connect_timeout": CONNECT_TIMEOUT,
        "protocol": 2,
    }
    return kwargs


def _sentinel_kwargs(target: RedisTarget) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"socket_timeout": CONNECT_TIMEOUT}
    if target.sentinel_password:
        kwargs["password"] = target.sentinel_password
    return kwargs


_async_clients: weakref.WeakKeyDictionary[
    asyncio.AbstractEventLoop, dict[RedisTarget, redis.asyncio.Redis]
] = weakref.WeakKeyDictionary()
_sync_clients: dict[RedisTarget, redis.Redis] = {}
_sync_lock = threading.Lock()


def async_client(target: RedisTarget) -> redis.asyncio.Redis:
    """Return the command client of ``target`` for the running event loop."""
    loop = asyncio.get_running_loop()
    clients = _async_clients.setdefault(loop, {})
    client = clients.get(target)
    if client is None:
        kwargs = _client_kwargs(target)
        if target.sentinels:
            sentinel = redis.asyncio.sentinel.Sentinel(
                list(target.sentinels), sentinel_kwargs=_sentinel_kwargs(target)
            )
            client = sentinel.master_for(
                target.service_name or "", max_connections=MAX_CONNECTIONS, **kwargs
            )
        else:
            if target.path:
                kwargs["path"] = target.path
                kwargs["connection_class"] = redis.asyncio.UnixDomainSocketConnection
            else:
                kwargs["host"] = target.host
                kwargs["port"] = target.port
                if target.ssl:
                    kwargs["connection_class"] = redis.asyncio.SSLConnection
            pool = redis.asyncio.BlockingConnectionPool(
                max_connections=MAX_CONNECTIONS, timeout=POOL_TIMEOUT, **kwargs
            )
            client = redis.asyncio.Redis(connection_pool=pool)
        clients[target] = client
    return client


def sync_client(target: RedisTarget) -> redis.Redis:
    """Return the (thread-safe) synchronous command client of ``target``."""
    client = _sync_clients.get(target)
    if client is not None:
        return client
    with _sync_lock:
        client = _sync_clients.get(target)
        if client is None:
            kwargs = _client_kwargs(target)
            if target.sentinels:
                sentinel = redis.sentinel.Sentinel(
                    list(target.sentinels), sentinel_kwargs=_sentinel_kwargs(target)
                )
                client = sentinel.master_for(
                    target.service_name or "", max_connections=MAX_CONNECTIONS, **kwargs
                )
            else:
                if target.path:
                    kwargs["unix_socket_path"] = target.path
                else:
                    kwargs["host"] = target.host
                    kwargs["port"] = target.port
                    kwargs["ssl"] = target.ssl
                client = redis.Redis(max_connections=MAX_CONNECTIONS, **kwargs)
            _sync_clients[target] = client
    return client


async def resolve_address(target: RedisTarget) -> tuple[str, int] | str:
    """Return ``(host, port)`` or a unix socket path of the current master."""
    if target.sentinels:
        sentinel = redis.asyncio.sentinel.Sentinel(
            list(target.sentinels), sentinel_kwargs=_sentinel_kwargs(target)
        )
        try:
            with redis_errors(target):
                host, port = await sentinel.discover_master(target.service_name or "")
        finally:
            for conn in sentinel.sentinels:
                await conn.aclose()
        return str(host), int(port)
    if target.path:
        return target.path
    return target.host, target.port


def ssl_context(target: RedisTarget) -> ssl_module.SSLContext | None:
    """Return the TLS context for ``rediss://`` targets (system trust store), else None."""
    return ssl_module.create_default_context() if target.ssl else None
