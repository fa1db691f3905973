"""Where Redis is and how to reach it: ``WS4REDIS_CONNECTION`` turned into clients.

``WS4REDIS_CONNECTION`` is either the dict django-websocket-redis used
(``host``, ``port``, ``db``, ``password``, ``unix_socket_path``; plus
``username``, ``ssl``, ``sentinels``, ``service_name``, ``sentinel_password``)
or a URL: ``redis://``, ``rediss://``, ``unix://``,
``redis+sentinel://[:password@]host:port[,host:port...]/service[/db]`` or, for a
Redis Cluster, ``redis+cluster://[:password@]host:port[,host:port...]/``
(``rediss+cluster://`` with TLS; the dict form: ``{"cluster": True,
"startup_nodes": [("host", port), ...]}`` or ``host``/``port`` of one node).

A cluster target's command clients are redis-py ``RedisCluster`` instances
(they route each command to the primary of its key's slot and follow
``MOVED``); they are returned with the static type of a plain client because
the commands the app uses have the same signatures. Use :func:`is_cluster`
where the two differ (multi-key commands, pipelines, pub/sub).

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
from typing import Any, cast
from urllib.parse import parse_qs, unquote, urlparse

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


@dataclass(frozen=True)
class RedisTarget:
    """A parsed ``WS4REDIS_CONNECTION``: one server, a Sentinel-monitored service, or a cluster."""

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
    # Redis Cluster: the nodes to discover the cluster from (any live one will do).
    cluster: bool = False
    startup_nodes: tuple[tuple[str, int], ...] = ()

    # Replicas that must confirm a publication (None: 1 with Sentinel, else 0).
    wait_replicas: int | None = None
    wait_timeout: float = 1.0

    def node(self, host: str, port: int) -> RedisTarget:
        """Return the target of one node of this cluster (same credentials and TLS)."""
        return RedisTarget(
            host=host, port=port, username=self.username, password=self.password, ssl=self.ssl
        )

    @property
    def replicas(self) -> int:
        """How many replicas must confirm each publication before it counts as published."""
        if self.wait_replicas is not None:
            return self.wait_replicas
        return 1 if self.sentinels else 0

    def describe(self) -> str:
        """Return where this target points, without credentials, for log lines."""
        if self.cluster:
            hosts = ",".join(f"{h}:{p}" for h, p in self.startup_nodes)
            return f"cluster {hosts}"
        if self.sentinels:
            hosts = ",".join(f"{h}:{p}" for h, p in self.sentinels)
            return f"sentinel {hosts} service {self.service_name!r}"
        if self.path:
            return f"unix:{self.path}"
        return f"{'rediss' if self.ssl else 'redis'}://{self.host}:{self.port}/{self.db}"


def _host_port(item: str, default_port: int) -> tuple[str, int]:
    item = item.strip()
    if item.startswith("["):  # [ipv6]:port
        host, _, rest = item[1:].partition("]")
        return host, int(rest.lstrip(":") or default_port)
    host, sep, port = item.rpartition(":")
    if not sep:
        return item, default_port
    return host, int(port)


def _cluster_nodes(value: Any) -> tuple[tuple[str, int], ...]:
    if isinstance(value, str):
        raise ValueError(
            f"WS4REDIS_CONNECTION: 'startup_nodes' must be a list such as "
            f"[('host', 7000), 'host:7001'], got the string {value!r}"
        )
    nodes = []
    for item in value or ():
        if isinstance(item, str):
            nodes.append(_host_port(item, 6379))
        elif isinstance(item, Mapping):
            nodes.append((str(item.get("host") or "localhost"), int(item.get("port") or 6379)))
        else:
            host, port = item
            nodes.append((str(host), int(port)))
    return tuple(nodes)


def _check_cluster_db(db: int, where: str) -> None:
    if db != 0:
        raise ValueError(
            f"{where} selects database {db}, but a Redis Cluster has only database 0: "
            "remove the database number (use WS4REDIS_PREFIX to separate applications)"
        )


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
    if parsed.scheme in ("redis+cluster", "rediss+cluster"):
        netloc = parsed.netloc.rpartition("@")[2]
        nodes = tuple(_host_port(item, 6379) for item in netloc.split(",") if item.strip())
        if not nodes:
            raise ValueError(f"redis+cluster URL {url!r} names no node: add host:port")
        path_db = parsed.path.strip("/")
        _check_cluster_db(int(query["db"]) if "db" in query else int(path_db or 0), repr(url))
        if "wait_replicas" in query:
            raise ValueError(
                f"{url!r}: wait_replicas is not supported on a Redis Cluster (WAIT cannot "
                "follow each channel to its shard); remove it"
            )
        return RedisTarget(
            host=nodes[0][0],
            port=nodes[0][1],
            username=username,
            password=password,
            ssl=parsed.scheme == "rediss+cluster",
            cluster=True,
            startup_nodes=nodes,
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
    if value.get("cluster"):
        if sentinels:
            raise ValueError(
                "WS4REDIS_CONNECTION names both sentinels and a cluster: Redis Cluster "
                "fails over by itself, remove 'sentinels'"
            )
        if value.get("unix_socket_path") or value.get("path"):
            raise ValueError(
                "WS4REDIS_CONNECTION: a cluster is reached over TCP; replace "
                "'unix_socket_path' with 'startup_nodes' or 'host'/'port'"
            )
        _check_cluster_db(int(value.get("db") or 0), "WS4REDIS_CONNECTION")
        if value.get("wait_replicas"):
            raise ValueError(
                "WS4REDIS_CONNECTION: wait_replicas is not supported on a Redis Cluster "
                "(WAIT cannot follow each channel to its shard); remove it"
            )
        nodes = _cluster_nodes(value.get("startup_nodes"))
        if not nodes:
            nodes = ((str(value.get("host") or "localhost"), int(value.get("port") or 6379)),)
        return RedisTarget(
            host=nodes[0][0],
            port=nodes[0][1],
            username=value.get("username"),
            password=value.get("password"),
            ssl=bool(value.get("ssl", False)),
            cluster=True,
            startup_nodes=nodes,
        )
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


def async_client(target: RedisTarget) -> redis.asyncio.Redis:
    """Return the command client of ``target`` for the running event loop."""
    loop = asyncio.get_running_loop()
    clients = _async_clients.setdefault(loop, {})
    client = clients.get(target)
    if client is None:
        kwargs = _client_kwargs(target, asynchronous=True)
        if target.cluster:
            cluster = redis.asyncio.cluster.RedisCluster(
                startup_nodes=[
                    redis.asyncio.cluster.ClusterNode(h, p) for h, p in target.startup_nodes
                ],
                **_cluster_kwargs(target, asynchronous=True),
            )
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
            if target.cluster:
                cluster = redis.cluster.RedisCluster(
                    startup_nodes=[
                        redis.cluster.ClusterNode(h, p) for h, p in target.startup_nodes
                    ],
                    **_cluster_kwargs(target),
                )
                client = cast(redis.Redis, cluster)
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
