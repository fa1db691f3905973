"""The bridge of a process on a Redis Cluster: one sharded subscriber per primary.

Sharded pub/sub delivers a message only on the shard that owns its
channel's slot. :class:`ClusterBridge` therefore keeps one shard bridge
(:class:`~ws4redis_channels.shard.ShardBridge`: ``SSUBSCRIBE``, one
connection) per primary that owns channels the process's sockets need,
and routes each channel to the bridge of its slot's primary. It offers the
public API of a bridge, so the consumer does not know the difference.

The slot map comes from ``CLUSTER SLOTS``. It is refreshed when a shard
bridge loses its connection (a crashed primary: its replica takes over) and
when Redis tells a subscriber that a channel left its node (``sunsubscribe``
after a slot migration, or ``-MOVED`` for an ``SSUBSCRIBE``). Channels whose
slot has a new primary move to that primary's bridge with their sockets, as
after a reconnect: the stored message is caught up unless it is the last one
the sockets got, so nothing arrives twice.

All sockets of one channel always live on one shard bridge; a socket whose
channels span shards joins each of those bridges.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any

from . import store
from .channel_state import Sink
from .connection import RedisTarget, async_client, ssl_context
from .exceptions import RedisError, RedisUnavailable
from .health import RedisHealth
from .metrics import recorder
from .positions import Position
from .resp import Parser, ReplyError, Value, encode_command
from .shard import PlainListener, ShardBridge
from .slots import Node, SlotMap

__all__ = ["ClusterBridge", "fetch_slot_map"]

logger = logging.getLogger(__name__)

REFRESH_TIMEOUT = 2.0
REFRESH_FIRST = 0.1
REFRESH_MAX = 1.0


async def _ask_slots(target: RedisTarget, node: Node, timeout: float) -> Value:
    """Return ``node``'s ``CLUSTER SLOTS`` reply (one short-lived connection)."""
    host, port = node
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection(host, port, ssl=ssl_context(target)), timeout
    )
    try:
        commands = []
        if target.password:
            if target.username:
                commands.append(encode_command("AUTH", target.username, target.password))
            else:
                commands.append(encode_command("AUTH", target.password))
        commands.append(encode_command("CLUSTER", "SLOTS"))
        writer.write(b"".join(commands))
        parser = Parser()
        values: list[Value] = []
        while len(values) < len(commands):
            data = await asyncio.wait_for(reader.read(65536), timeout)
            if not data:
                raise ConnectionError(f"{host}:{port} closed the connection")
            values.extend(parser.feed(data))
        for value in values:
            if isinstance(value, ReplyError):
                raise value
        return values[-1]
    finally:
        writer.close()


async def fetch_slot_map(
    target: RedisTarget, nodes: Iterable[Node], timeout: float = REFRESH_TIMEOUT
) -> tuple[SlotMap, list[Node]]:
    """Ask ``nodes`` in turn for the slot map; return the first complete one and every node
    it names (primaries and replicas), to ask next time.

    Raises :class:`RedisUnavailable` if no node answers with a complete map.
    """
    errors = []
    partial: tuple[SlotMap, list[Node]] | None = None
    for node in nodes:
        try:
            reply = await _ask_slots(target, node, timeout)
        except (OSError, asyncio.TimeoutError, ReplyError, ValueError) as exc:
            errors.append(f"{node[0]}:{node[1]}: {exc!r}")
            continue
        if not isinstance(reply, list):
            errors.append(f"{node[0]}:{node[1]}: unexpected reply {reply!r}")
            continue
        slots = SlotMap.from_cluster_slots(reply, default_host=node[0])
        known = []
        for entry in reply:
            for item in entry[2:]:  # type: ignore[index]
                host = item[0].decode() if item[0] else node[0]  # type: ignore[index, union-attr]
                known.append((node[0] if host == "?" else host, int(item[1])))  # type: ignore[index, arg-type]
        if slots.complete:
            return slots, known
        partial = partial or (slots, known)
        errors.append(f"{node[0]}:{node[1]}: not every slot is served")
    if partial is not None:
        # Some slots have no primary (a failover in progress): route what we can.
        return partial
    raise RedisUnavailable(f"no cluster node gave the slot map: {'; '.join(errors)}")


class ClusterBridge:
    """The bridge of one process on a Redis Cluster: a shard bridge per primary."""

    def __init__(
        self,
        target: RedisTarget,
        *,
        connect_timeout: float = 5.0,
        outage_timeout: float = 30.0,
        plain_publish: bool = False,
        history_ttl: int = 300,
    ) -> None:
        self.target = target
        self.history_ttl = history_ttl
        # Also listen for plain PUBLISH (classic pub/sub) on one node.
        self.plain_publish = plain_publish
        self._plain: PlainListener | None = None
        self.connect_timeout = connect_timeout
        self.outage_timeout = outage_timeout
        self.relay: Any = None
        # The status report (runtime.py); the health of the shards is ``health``.
        self.heartbeat: Any = None
        self._idle_health = RedisHealth(target.describe(), recorder())
        self._loop = asyncio.get_running_loop()
        self._on_watch: Callable[[str, bool], None] | None = None
        self._shards: dict[Node, ShardBridge] = {}
        # The node whose bridge holds each channel (all of its sockets).
        self._home: dict[bytes, Node] = {}
        self._slots = SlotMap()
        self._nodes: list[Node] = list(target.startup_nodes)
        self._refreshing: asyncio.Task[SlotMap] | None = None
        self._relocating: asyncio.Task[None] | None = None
        self._closed = False

    # -- the public API of a bridge -------------------------------------------

    @property
    def connected(self) -> bool:
        return bool(self._shards) and all(b.connected for b in self._shards.values())

    @property
    def health(self) -> RedisHealth:
        """The health of a shard in trouble, if one is, else of any shard."""
        shards = list(self._shards.values())
        for bridge in shards:
            if bridge.health.trouble is not None:
                return bridge.health
        return shards[0].health if shards else self._idle_health

    def set_watcher(self, on_watch: Callable[[str, bool], None] | None) -> None:
        """Call ``on_watch(channel, on)`` when a channel gains its first or loses its last
        local socket."""
        self._on_watch = on_watch
        for bridge in self._shards.values():
            bridge.set_watcher(on_watch)

    def subscriptions(self) -> list[str]:
        return sorted({ch for b in self._bridges() for ch in b.subscriptions()})

    def members(self) -> list[Sink]:
        return list(dict.fromkeys(s for b in self._bridges() for s in b.members()))

    def shard_count(self) -> int:
        """Return how many shard bridges (subscriber connections) the process holds."""
        return len(self._shards)

    def local_sinks(self, channel: str) -> int:
        bridge = self._bridge_of(channel.encode())
        return bridge.local_sinks(channel) if bridge is not None else 0

    async def join(
        self,
        sink: Sink,
        channels: Sequence[str],
        *,
        labels: Mapping[str, str] | None = None,
        since: Mapping[str, Position] | None = None,
    ) -> None:
        """Join ``sink`` to ``channels`` on the bridges of their primaries (see Bridge.join)."""
        if not self._slots.ranges:
            try:
                await asyncio.wait_for(self._refresh(), self.connect_timeout)
            except (asyncio.TimeoutError, RedisUnavailable) as exc:
                raise RedisUnavailable(f"Redis {self.target.describe()}: {exc!r}") from exc
        groups = self._group(channels)
        joins = [
            bridge.join(
                sink,
                names,
                labels=None if labels is None else {n: labels[n] for n in names},
                since=None if since is None else {n: since[n] for n in names if n in since},
            )
            for bridge, names in groups
        ]
        if self.plain_publish and labels is None:
            # Plain PUBLISH messages have no position: sockets with positions
            # get sharded messages only.
            joins.append(self._join_plain(sink, channels))
        results = await asyncio.gather(*joins, return_exceptions=True)
        failure = next((r for r in results[: len(groups)] if isinstance(r, BaseException)), None)
        if failure is None:
            try:
                await self._follow_moves(sink, groups)
            except (asyncio.TimeoutError, RedisError) as exc:
                failure = RedisUnavailable(f"Redis {self.target.describe()}: {exc!r}")
        if failure is not None:
            names = list(dict.fromkeys(channels))
            for bridge in self._bridges():
                bridge.leave(sink, names)
            self._forget_homes(names)
            raise failure

    async def _follow_moves(self, sink: Sink, groups: list[tuple[ShardBridge, list[str]]]) -> None:
        """Wait for the channels that moved to another shard while ``sink`` joined: it is
        accepted once it receives their live traffic there too."""
        waits = []
        for bridge, names in groups:
            for name in names:
                key = name.encode()
                home = self._bridge_of(key)
                if home is not None and home is not bridge:
                    waits.append(home.adopted(sink, key))
        if waits:
            await asyncio.wait_for(asyncio.gather(*waits), self.connect_timeout)

    async def _join_plain(self, sink: Sink, channels: Sequence[str]) -> None:
        # Best effort: the sharded subscriptions are what the guarantees rest on.
        try:
            await self._plain_listener().join(sink, list(dict.fromkeys(channels)))
        except RedisError as exc:
            logger.warning("Listening for plain PUBLISH failed (%s); sharded delivery goes on", exc)

    def leave(self, sink: Sink, channels: Iterable[str]) -> None:
        names = list(channels)
        by_bridge: dict[ShardBridge, list[str]] = {}
        for name in names:
            bridge = self._bridge_of(name.encode())
            if bridge is not None:
                by_bridge.setdefault(bridge, []).append(name)
        for bridge, group in by_bridge.items():
            bridge.leave(sink, group)
        if self._plain is not None:
            self._plain.leave(sink, names)
        for bridge in self._shards.values():
            if bridge not in by_bridge:
                bridge.leave(sink, ())  # membership without channels
        self._forget_homes(names)

    async def publish(
        self,
        sink: Sink | None,
        channels: Sequence[str],
        payload: bytes,
        expire: int,
        *,
        echo: bool = True,
    ) -> int:
        """Publish (and store) ``payload`` with SPUBLISH; see Bridge.publish."""
        groups: dict[ShardBridge | None, list[str]] = {}
        for name in channels:
            groups.setdefault(self._bridge_of(name.encode()), []).append(name)
        counts: list[Awaitable[int]] = []
        for bridge, names in groups.items():
            if bridge is None:
                # No local socket on these channels: no echo to suppress.
                client = async_client(self.target)
                counts.append(store.apublish(client, names, payload, expire))
            else:
                counts.append(bridge.publish(sink, names, payload, expire, echo=echo))
        return sum(await asyncio.gather(*counts))

    def deliver_local(self, channel: str, message: dict[str, Any]) -> None:
        bridge = self._bridge_of(channel.encode())
        if bridge is not None:
            bridge.deliver_local(channel, message)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for task in (self._refreshing, self._relocating):
            if task is not None:
                task.cancel()
        shards = list(self._bridges())
        self._shards.clear()
        self._plain = None
        self._home.clear()
        await asyncio.gather(*(b.close() for b in shards), return_exceptions=True)

    # -- routing ----------------------------------------------------------------

    def _bridges(self) -> list[ShardBridge]:
        bridges = list(self._shards.values())
        if self._plain is not None:
            bridges.append(self._plain)
        return bridges

    def _plain_listener(self, avoid: Node | None = None) -> PlainListener:
        if self._plain is None:
            nodes = [n for n in self._slots.primaries() if n != avoid] or self._nodes
            self._plain = PlainListener(
                self.target,
                nodes[0],
                connect_timeout=self.connect_timeout,
                outage_timeout=self.outage_timeout,
                history_ttl=self.history_ttl,
                on_moved=self._moved,
                on_down=self._down,
            )
            self._plain.set_watcher(None)
        return self._plain

    def _bridge_of(self, key: bytes) -> ShardBridge | None:
        node = self._home.get(key)
        return self._shards.get(node) if node is not None else None

    def _group(self, channels: Sequence[str]) -> list[tuple[ShardBridge, list[str]]]:
        groups: dict[Node, list[str]] = {}
        homes: dict[bytes, Node] = {}
        for name in dict.fromkeys(channels):
            key = name.encode()
            node = self._home.get(key) or self._slots.node_for(key)
            if node is None:
                raise RedisUnavailable(
                    f"no primary serves the slot of {name!r} in {self.target.describe()}"
                )
            homes[key] = node
            groups.setdefault(node, []).append(name)
        self._home.update(homes)
        return [(self._shard(node), names) for node, names in groups.items()]

    def _forget_homes(self, channels: Iterable[str]) -> None:
        for name in channels:
            key = name.encode()
            bridge = self._bridge_of(key)
            if bridge is None or not bridge.holds(key):
                self._home.pop(key, None)

    def _shard(self, node: Node) -> ShardBridge:
        bridge = self._shards.get(node)
        if bridge is None:
            bridge = ShardBridge(
                self.target,
                node,
                connect_timeout=self.connect_timeout,
                outage_timeout=self.outage_timeout,
                history_ttl=self.history_ttl,
                on_moved=self._moved,
                on_down=self._down,
            )
            bridge.set_watcher(self._on_watch)
            self._shards[node] = bridge
        return bridge

    # -- following the cluster ---------------------------------------------------

    async def _refresh(self) -> SlotMap:
        """Fetch the slot map (one fetch at a time, shared by every caller)."""
        task = self._refreshing
        if task is None or task.done():
            task = self._refreshing = self._loop.create_task(self._fetch())
        return await asyncio.shield(task)

    async def _fetch(self) -> SlotMap:
        # The primaries we know first (most likely alive), then everything else.
        nodes = list(dict.fromkeys([*self._slots.primaries(), *self._nodes]))
        slots, known = await fetch_slot_map(self.target, nodes)
        self._slots = slots
        self._nodes = list(dict.fromkeys([*slots.primaries(), *known, *self._nodes]))
        return slots

    def _moved(self, bridge: ShardBridge, keys: list[bytes]) -> None:
        """A shard bridge was told that ``keys`` left its node: find their new primary."""
        logger.info("Redis moved %d channels away from %s; following them", len(keys), bridge.node)
        self._start_relocating()

    def _down(self, bridge: ShardBridge) -> None:
        """A shard bridge lost its connection: its primary may have been replaced."""
        self._start_relocating()

    def _start_relocating(self) -> None:
        if self._closed:
            return
        if self._relocating is None or self._relocating.done():
            self._relocating = self._loop.create_task(self._relocate_until_settled())

    async def _relocate_until_settled(self) -> None:
        """Refresh the slot map and move channels until every channel's bridge is its
        primary's and connected (or the bridge gives up after the outage bound)."""
        delay = REFRESH_FIRST
        while not self._closed:
            try:
                slots = await self._refresh()
            except (RedisUnavailable, OSError, asyncio.TimeoutError) as exc:
                logger.debug("Refreshing the slot map failed: %r", exc)
            else:
                self._relocate(slots)
                if self._settled(slots):
                    return
            await asyncio.sleep(random.uniform(delay / 2, delay))
            delay = min(delay * 2, REFRESH_MAX)

    def _settled(self, slots: SlotMap) -> bool:
        if self._plain is not None and not self._plain.connected:
            return False
        for node, bridge in self._shards.items():
            if not bridge.connected and bridge.channel_keys():
                return False
            for key in bridge.channel_keys():
                if slots.node_for(key) != node:
                    return False
        return True

    def _relocate(self, slots: SlotMap) -> None:
        for node, bridge in list(self._shards.items()):
            for key in bridge.channel_keys():
                owner = slots.node_for(key)
                if owner is None or owner == node:
                    continue
                state, positioned = bridge.detach(key)
                self._home[key] = owner
                if state is not None:
                    self._shard(owner).adopt(state, positioned)
        primaries = set(slots.primaries())
        plain = self._plain
        if plain is not None and not plain.connected and plain.node not in primaries:
            # Its node is gone: listen on another one.
            self._plain = None
            replacement = self._plain_listener(avoid=plain.node)
            for key in plain.channel_keys():
                state, positioned = plain.detach(key)
                if state is not None:
                    replacement.adopt(state, positioned)
            self._close_later(plain)
        for node, bridge in list(self._shards.items()):
            if not bridge.channel_keys() and node not in primaries:
                # A replaced primary: stop reconnecting to it.
                del self._shards[node]
                self._close_later(bridge)

    def _close_later(self, bridge: ShardBridge) -> None:
        task = self._loop.create_task(bridge.close())
        task.add_done_callback(lambda t: t.cancelled() or t.exception())
