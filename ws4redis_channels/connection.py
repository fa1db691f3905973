"""How to reach Redis: a :class:`~ws4redis_channels.target.RedisTarget` turned into clients.

Where Redis is (``WS4REDIS_CONNECTION``, URL or dict) is parsed by
:mod:`ws4redis_channels.target`; :class:`RedisTarget` and :func:`parse_target`
are also importable from here.

A cluster target's command clients are redis-py ``RedisCluster`` instances
(they route each command to the primary of its key's slot and follow
``MOVED``); they are returned with the static type of a plain client because
the commands the app uses have the same signatures. Use :func:`is_cluster`
where the two differ (multi-key commands, pipelines, pub/sub).

With Sentinel, a :class:`~ws4redis_channels.sentinel.SentinelWatcher` makes
every client of this module follow a failover at once (:func:`follow_master`);
see also :mod:`ws4redis_channels.fence`.

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
from collections.abc import Callable, Iterator
from typing import Any, cast

import redis
import redis.asyncio
import redis.asyncio.cluster
import redis.asyncio.retry
import redis.asyncio.sentinel
import redis.cluster
import redis.retry
import redis.sentinel
from redis.backoff import NoBackoff

from .exceptions import RedisCommandError, RedisTimeout, RedisUnavailable, WS4RedisError
from .sentinel import Master, SentinelWatcher, discover_master, watcher
from .target import RedisTarget, parse_target

__all__ = [
    "RedisTarget",
    "async_client",
    "current_watcher",
    "follow_master",
    "is_cluster",
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
    asyncio.AbstractEventLoop, dict[Any, redis.asyncio.Redis]
] = weakref.WeakKeyDictionary()
# Keyed by process too: a forked child needs its own watcher and its listeners.
_sync_clients: dict[tuple[RedisTarget, int], redis.Redis] = {}
_sync_lock = threading.Lock()


def is_cluster(client: Any) -> bool:
    """Whether ``client`` (from :func:`sync_client`/:func:`async_client`) is a cluster client."""
    return isinstance(client, (redis.cluster.RedisCluster, redis.asyncio.cluster.RedisCluster))


def _cluster_kwargs(target: RedisTarget, *, asynchronous: bool = False) -> dict[str, Any]:
    # ``retry`` becomes the cluster client's own (no second run of a
    # publication after a lost connection); redirections are followed anyway.
    kwargs = _client_kwargs(target, asynchronous=asynchronous)
    del kwargs["db"]
    kwargs["ssl"] = target.ssl
    kwargs["max_connections"] = MAX_CONNECTIONS
    return kwargs


def _reseed(
    manager: Any, seeds: tuple[tuple[str, int], ...], node: Callable[[str, int], Any]
) -> None:
    """Put the configured nodes back into ``manager``'s startup nodes, after any it has.

    redis-py before 7.2 drops a node from its startup nodes on every connection
    error or timeout, and asks only those for the cluster's layout. A failover
    under load, or every node down for a moment, can empty them: from then on
    each command fails with "Redis Cluster cannot be connected" and the client
    never connects again (redis/redis-py#3284). The nodes of the setting stay
    in, last, so there is always a node to ask.
    """
    startup = getattr(manager, "startup_nodes", None)
    if not isinstance(startup, dict):  # another layout: tests/test_cluster.py says so
        return
    for host, port in seeds:
        name = f"{host}:{port}"
        if name not in startup:
            startup[name] = node(host, port)


class _AsyncCluster(redis.asyncio.cluster.RedisCluster):
    """redis-py's asyncio cluster client; it keeps the configured nodes to ask (:func:`_reseed`)."""

    def __init__(self, target: RedisTarget, **kwargs: Any) -> None:
        self.seeds = target.startup_nodes
        nodes = [redis.asyncio.cluster.ClusterNode(h, p) for h, p in self.seeds]
        super().__init__(startup_nodes=nodes, **kwargs)

    async def initialize(self, *args: Any, **kwargs: Any) -> _AsyncCluster:
        if self._initialize:
            node_kwargs = self.nodes_manager.connection_kwargs
            _reseed(
                self.nodes_manager,
                self.seeds,
                lambda h, p: redis.asyncio.cluster.ClusterNode(h, p, **node_kwargs),
            )
        await super().initialize(*args, **kwargs)
        return self


def _sync_cluster(target: RedisTarget, **kwargs: Any) -> redis.cluster.RedisCluster:
    """redis-py's cluster client; it keeps the configured nodes to ask (:func:`_reseed`)."""
    nodes = [redis.cluster.ClusterNode(h, p) for h, p in target.startup_nodes]
    client = redis.cluster.RedisCluster(startup_nodes=nodes, **kwargs)
    manager = client.nodes_manager
    layout = manager.initialize  # called again by redis-py after a connection error

    def initialize(*args: Any, **kw: Any) -> Any:
        _reseed(manager, target.startup_nodes, redis.cluster.ClusterNode)
        return layout(*args, **kw)

    manager.initialize = initialize  # type: ignore[method-assign]
    return client


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
        # (redis-py 5.1+ keeps the address on a proxy object; older, on the pool.)
        getattr(pool, "proxy", pool).master_address = master.address
        pool.disconnect()

    return listener


_disconnecting: set[asyncio.Task[None]] = set()


def _disconnect_soon(client: redis.asyncio.Redis, master: Master) -> None:
    pool: Any = client.connection_pool
    pool.master_address = master.address
    task = asyncio.get_running_loop().create_task(pool.disconnect())
    _disconnecting.add(task)
    task.add_done_callback(_disconnecting.discard)


def async_client(target: RedisTarget, *, patient: bool = False) -> redis.asyncio.Redis:
    """Return the command client of ``target`` for the running event loop.

    A ``patient`` client has no socket timeouts of its own: its caller bounds
    the wait with :func:`ws4redis_channels.patience.wait_for`, which a busy
    event loop (a reconnect storm) cannot trip.
    """
    loop = asyncio.get_running_loop()
    clients = _async_clients.setdefault(loop, {})
    key: Any = (target, "patient") if patient else target
    client = clients.get(key)
    if client is None:
        kwargs = _client_kwargs(target, asynchronous=True)
        if patient:
            kwargs["socket_timeout"] = kwargs["socket_connect_timeout"] = None
        if target.cluster:
            cluster = _AsyncCluster(target, **_cluster_kwargs(target, asynchronous=True))
            client = cast(redis.asyncio.Redis, cluster)
        elif target.sentinels:
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
        clients[key] = client
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
            if target.cluster:
                client = cast(redis.Redis, _sync_cluster(target, **_cluster_kwargs(target)))
            elif target.sentinels:
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
