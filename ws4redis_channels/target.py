"""Where Redis is: a ``WS4REDIS_CONNECTION`` value parsed into a :class:`RedisTarget`.

``WS4REDIS_CONNECTION`` is either the dict django-websocket-redis used
(``host``, ``port``, ``db``, ``password``, ``unix_socket_path``; plus
``username``, ``ssl``, ``sentinels``, ``service_name``, ``sentinel_password``)
or a URL: ``redis://``, ``rediss://``, ``unix://``,
``redis+sentinel://[:password@]host:port[,host:port...]/service[/db]`` or, for a
Redis Cluster, ``redis+cluster://[:password@]host:port[,host:port...]/``
(``rediss+cluster://`` with TLS; the dict form: ``{"cluster": True,
"startup_nodes": [("host", port), ...]}`` or ``host``/``port`` of one node).

``wait_replicas`` and ``wait_timeout`` (URL query or dict keys) say how many
replicas must confirm each publication (Redis ``WAIT``) before it counts as
published: 1 by default with Sentinel, 0 otherwise (see
:mod:`ws4redis_channels.fence`).

Parsing only, no I/O: :mod:`ws4redis_channels.connection` makes the clients.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, unquote, urlparse

import redis.connection

__all__ = ["RedisTarget", "parse_target"]


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
