"""Where Redis is and how to reach it: ``WS4REDIS_CONNECTION`` turned into clients.

``WS4REDIS_CONNECTION`` is either the dict django-websocket-redis used
(``host``, ``port``, ``db``, ``password``, ``unix_socket_path``; plus
``username``, ``ssl``, ``sentinels``, ``service_name``, ``sentinel_password``)
or a URL: ``redis://``, ``rediss://``, ``unix://`` or
``redis+sentinel://[:password@]host:port[,host:port...]/service[/db]``.

``wait_replicas`` and ``wait_timeout`` (URL query or dict keys) say how many
replicas must confirm each publication (Redis ``WAIT``) before it counts as
published: 1 by default with Sentinel, 0 otherwise. With Sentinel, a
:class:`~ws4redis_channels.sentinel.SentinelWatcher` makes every client of
this module follow a failover at once (:func:`follow_master`); see also
:mod:`ws4redis_channels.fence`.

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
import os
import ssl as ssl_module
import threading
import weakref
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, unquote, urlparse

import redis
import redis.asyncio
import redis.asyncio.retry
import redis.asyncio.sentinel
import redis.retry
import redis.sentinel
from redis.backoff import NoBackoff

from .exceptions import RedisCommandError, RedisTimeout, RedisUnavailable, WS4RedisError
from .sentinel import Master, SentinelWatcher, discover_master, watcher

__all__ = [
    "RedisTarget",
    "async_client",
    "current_watcher",
    "follow_master",
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
    # Replicas that must confirm a publication (None: 1 with Sentinel, else 0).
    wait_replicas: int | None = None
    wait_timeout: float = 1.0

    @property
    def replicas(self) -> int:
        """How many replicas must confirm each publication before it counts as published."""
        if self.wait_replicas is not None:
            return self.wait_replicas
        return 1 if self.sentinels else 0

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
    waits = _waits(query)
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
            **waits,
        )
    if parsed.scheme not in ("redis", "rediss", "unix"):
        raise ValueError(f"unsupported Redis URL scheme in {url!r}")
    # redis-py's own parsing: percent-decoding, the db in the path or the query.
    options = redis.connection.parse_url(url)
    return RedisTarget(
        host=options.get("host") or "localhost",
        port=int(options.get("port") or 6379),
        path=options.get("path"),
        db=int(options.get("db") or 0),
        username=options.get("username") or None,
        password=options.get("password") or None,
        ssl=parsed.scheme == "rediss",
        **waits,
    )


def _waits(options: Mapping[str, Any]) -> dict[str, Any]:
    """Read ``wait_replicas`` and ``wait_timeout`` from a URL query or a dict."""
    waits: dict[str, Any] = {}
    replicas = options.get("wait_replicas")
    if replicas is not None:
        try:
            waits["wait_replicas"] = int(replicas)
        except (TypeError, ValueError):
            waits["wait_replicas"] = -1
        if isinstance(replicas, bool) or waits["wait_replicas"] < 0:
            raise ValueError(f"wait_replicas must be a non-negative int, got {replicas!r}")
    timeout = options.get("wait_timeout")
    if timeout is not None:
        try:
            waits["wait_timeout"] = float(timeout)
        except (TypeError, ValueError):
            waits["wait_timeout"] = 0.0
        if isinstance(timeout, bool) or not waits["wait_timeout"] > 0:
            raise ValueError(f"wait_timeout must be a positive number of seconds, got {timeout!r}")
    return waits


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
        **_waits(value),
    )


def _client_kwargs(target: RedisTarget, *, asynchronous: bool = False) -> dict[str, Any]:
    # No retries: redis-py would run a publication again after a lost
    # connection or a timeout, and the first run may have happened (a
    # failover drops connections mid-command): delivered twice.
    retry_class = redis.asyncio.retry.Retry if asynchronous else redis.retry.Retry
    kwargs: dict[str, Any] = {
        "db": target.db,
        "username": target.username,
        "password": target.password,
        "socket_timeout": COMMAND_TIMEOUT,
        "socket_connect_timeout": CONNECT_TIMEOUT,
        "protocol": 2,
        "retry": retry_class(NoBackoff(), 0),
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
# Keyed by process too: a forked child needs its own watcher and its listeners.
_sync_clients: dict[tuple[RedisTarget, int], redis.Redis] = {}
_sync_lock = threading.Lock()


def current_watcher(target: RedisTarget) -> SentinelWatcher:
    """Return this process's watcher of the Sentinel-monitored ``target`` (started on first use)."""
    return watcher(target.sentinels, target.service_name or "", password=target.sentinel_password)


class _FollowingSentinel(redis.sentinel.Sentinel):
    """redis-py's Sentinel client, told where the master is by the process's watcher.

    redis-py alone takes the first Sentinel's answer, which can still be the
    old master for a moment after a failover.
    """

    def __init__(self, target: RedisTarget) -> None:
        super().__init__(list(target.sentinels), sentinel_kwargs=_sentinel_kwargs(target))
        self.target = target
        self.watcher = current_watcher(target)

    def discover_master(self, service_name: str) -> tuple[str, int]:
        found = current_watcher(self.target)  # this process's, also after a fork
        master = found.master or found.wait_known(CONNECT_TIMEOUT)
        if master is not None:
            return master.address
        return super().discover_master(service_name)  # type: ignore[no-any-return]


class _AsyncFollowingSentinel(redis.asyncio.sentinel.Sentinel):
    """The asyncio twin of :class:`_FollowingSentinel`."""

    def __init__(self, target: RedisTarget) -> None:
        super().__init__(list(target.sentinels), sentinel_kwargs=_sentinel_kwargs(target))
        self.target = target
        self.watcher = current_watcher(target)

    async def discover_master(self, service_name: str) -> tuple[str, int]:
        master = current_watcher(self.target).master
        if master is None:
            master = await _discover(self.target)
        return master.address


async def _discover(target: RedisTarget) -> Master:
    return await discover_master(
        target.sentinels, target.service_name or "", password=target.sentinel_password
    )


def _drop_async_connections(
    loop_ref: weakref.ref[asyncio.AbstractEventLoop], client_ref: weakref.ref[redis.asyncio.Redis]
) -> Any:
    def listener(master: Master) -> None:
        loop, client = loop_ref(), client_ref()
        if loop is None or client is None or loop.is_closed():
            return
        try:
            loop.call_soon_threadsafe(_disconnect_soon, client, master)
        except RuntimeError:  # the loop closed meanwhile
            pass

    return listener


def _drop_sync_connections(pool: Any) -> Any:
    def listener(master: Master) -> None:
        # A connection to the old master that is given back is closed, not reused.
        pool.proxy.master_address = master.address
        pool.disconnect()

    return listener


_disconnecting: set[asyncio.Task[None]] = set()


def _disconnect_soon(client: redis.asyncio.Redis, master: Master) -> None:
    pool: Any = client.connection_pool
    pool.master_address = master.address
    task = asyncio.get_running_loop().create_task(pool.disconnect())
    _disconnecting.add(task)
    task.add_done_callback(_disconnecting.discard)


def async_client(target: RedisTarget) -> redis.asyncio.Redis:
    """Return the command client of ``target`` for the running event loop."""
    loop = asyncio.get_running_loop()
    clients = _async_clients.setdefault(loop, {})
    client = clients.get(target)
    if client is None:
        kwargs = _client_kwargs(target, asynchronous=True)
        if target.sentinels:
            sentinel = _AsyncFollowingSentinel(target)
            client = sentinel.master_for(
                target.service_name or "", max_connections=MAX_CONNECTIONS, **kwargs
            )
            # In use or idle, no connection to the old master survives a switch.
            sentinel.watcher.add_listener(
                _drop_async_connections(weakref.ref(loop), weakref.ref(client))
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
    key = (target, os.getpid())
    client = _sync_clients.get(key)
    if client is not None:
        return client
    with _sync_lock:
        client = _sync_clients.get(key)
        if client is None:
            kwargs = _client_kwargs(target)
            if target.sentinels:
                sentinel = _FollowingSentinel(target)
                client = sentinel.master_for(
                    target.service_name or "", max_connections=MAX_CONNECTIONS, **kwargs
                )
                sentinel.watcher.add_listener(_drop_sync_connections(client.connection_pool))
            else:
                if target.path:
                    kwargs["unix_socket_path"] = target.path
                else:
                    kwargs["host"] = target.host
                    kwargs["port"] = target.port
                    kwargs["ssl"] = target.ssl
                client = redis.Redis(max_connections=MAX_CONNECTIONS, **kwargs)
            _sync_clients[key] = client
    return client


async def resolve_address(target: RedisTarget) -> tuple[str, int] | str:
    """Return ``(host, port)`` or a unix socket path of the current master."""
    if target.sentinels:
        master = current_watcher(target).master or await _discover(target)
        return master.address
    if target.path:
        return target.path
    return target.host, target.port


def follow_master(target: RedisTarget, listener: Callable[[Master], None]) -> Callable[[], None]:
    """Call ``listener(master)`` from the watcher's thread when Sentinel moves the master.

    Returns the function that stops it; for targets without Sentinel, a no-op.
    """
    if not target.sentinels:
        return lambda: None
    return current_watcher(target).add_listener(listener)


def ssl_context(target: RedisTarget) -> ssl_module.SSLContext | None:
    """Return the TLS context for ``rediss://`` targets (system trust store), else None."""
    return ssl_module.create_default_context() if target.ssl else None
