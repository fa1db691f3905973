"""One shard of a Redis Cluster: a bridge that subscribes with ``SSUBSCRIBE`` on one primary.

A :class:`ShardBridge` is a :class:`~ws4redis_channels.bridge.Bridge` whose
subscriber connection goes to one primary and uses sharded pub/sub. It
subscribes the channels of one slot per ``SSUBSCRIBE`` (Redis refuses more),
and tells its owner, the router, when Redis says that channels are no
longer served here: an unrequested ``sunsubscribe`` (their slot moved to
another node) or ``-MOVED`` in answer to an ``SSUBSCRIBE``. The router then
moves those channels, with their sockets, to the bridge of their new primary
(:meth:`ShardBridge.detach`, :meth:`ShardBridge.adopt`).

Everything else (joins with ordered replay, fan-out, echo suppression,
reconnects with catch-up, the 4503 bound) is the bridge's own, per shard: an
outage of one primary closes only the sockets of its channels.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable

from .bridge import Bridge
from .channel_state import ChannelState, Sink
from .positions import Position
from .replay import Joiner
from .resp import ReplyError, encode_command
from .slots import Node, key_slot
from .store import Replay
from .subscriber import Subscriber
from .target import RedisTarget

__all__ = ["PlainListener", "ShardBridge"]

logger = logging.getLogger(__name__)

# Answers of a cluster node to an SSUBSCRIBE for a slot it does not serve.
_REDIRECTS = ("MOVED ", "ASK ")
_REFUSALS = ("CLUSTERDOWN", "TRYAGAIN", "CROSSSLOT")


class ShardBridge(Bridge):
    """The bridge of one primary of a Redis Cluster (see router.py)."""

    _SUBSCRIBE = "SSUBSCRIBE"
    _UNSUBSCRIBE = "SUNSUBSCRIBE"
    _MESSAGE = b"smessage"
    _SUBSCRIBED = b"ssubscribe"
    _UNSUBSCRIBED = b"sunsubscribe"

    def __init__(
        self,
        target: RedisTarget,
        node: Node,
        *,
        on_moved: Callable[[ShardBridge, list[bytes]], None],
        on_down: Callable[[ShardBridge], None],
        connect_timeout: float = 5.0,
        outage_timeout: float = 30.0,
        history_ttl: int = 300,
    ) -> None:
        self.node = node
        # Sockets taken over from another shard, until they get live traffic here.
        self._adoptions: dict[tuple[bytes, Sink], asyncio.Future[None]] = {}
        self._on_moved = on_moved
        self._on_shard_down = on_down
        # ``target`` (the cluster) serves commands: MGET and publishing go
        # through the cluster client, which routes by slot.
        super().__init__(
            target,
            connect_timeout=connect_timeout,
            outage_timeout=outage_timeout,
            history_ttl=history_ttl,
        )
        # Logs and the status report name the primary, not the whole cluster.
        self.health.where = self.subscriber.target.describe()

    def _make_subscriber(self) -> Subscriber:
        return Subscriber(
            self.target.node(*self.node),
            on_values=self._on_values,
            on_up=self._on_up,
            on_down=self._on_down,
            connect_timeout=self.connect_timeout,
            on_error=self._refused,
        )

    # -- subscribing ------------------------------------------------------------

    def _subscribe(self, channels: list[ChannelState]) -> None:
        # SSUBSCRIBE takes the channels of one slot at a time; a channel and
        # its positions channel ({<channel>}:pos) share one.
        by_slot: dict[int, list[ChannelState]] = {}
        for ch in channels:
            by_slot.setdefault(key_slot(ch.key), []).append(ch)
        for group in by_slot.values():
            for ch in group:
                ch.requested = True
                ch.pending_subs += 1
            keys = [key for ch in group for key in (ch.key, ch.companion)]
            self.subscriber.write(encode_command(self._SUBSCRIBE, *keys))

    def _unsubscribed(self, key: bytes) -> None:
        ch = self._channels.get(key)
        if ch is None or not ch.requested or ch.pending_subs:
            return  # the answer to our own SUNSUBSCRIBE (or a positions channel)
        # We did not ask: the node no longer serves the channel's slot.
        ch.requested = False
        self._on_moved(self, [key])

    def _refused(self, error: ReplyError) -> bool:
        """Handle an error that answers an SSUBSCRIBE; False for any other error."""
        text = str(error)
        if text.startswith(_REDIRECTS):
            slot = int(text.split()[1])
            moved = []
            for ch in self._channels.values():
                if ch.pending_subs and key_slot(ch.key) == slot:
                    ch.pending_subs -= 1
                    ch.requested = False
                    moved.append(ch.key)
            if moved:
                self._on_moved(self, moved)
            return True
        if text.startswith(_REFUSALS):
            # Which subscription failed is unknown: start over on a new connection.
            logger.warning("Redis refused a sharded subscription (%s); reconnecting", text)
            self.subscriber.abort()
            return True
        return False

    def _on_down(self, reason: str) -> None:
        super()._on_down(reason)
        if not self._closed:
            self._on_shard_down(self)

    # -- moving channels between shards -----------------------------------------

    def holds(self, key: bytes) -> bool:
        """Whether a local socket needs ``key`` here (joined or joining)."""
        ch = self._channels.get(key)
        return ch is not None and ch.wanted

    def channel_keys(self) -> list[bytes]:
        """Return every channel a local socket needs here."""
        return [key for key, ch in self._channels.items() if ch.wanted]

    def detach(self, key: bytes) -> tuple[ChannelState | None, set[Sink]]:
        """Give up ``key`` with its sockets: return its state and which sockets get positions."""
        ch = self._channels.pop(key, None)
        if ch is None:
            return None, set()
        if self._companions.get(ch.companion) is ch:
            del self._companions[ch.companion]
        sinks = list(dict.fromkeys([*ch.sinks, *ch.psinks, *ch.joining]))
        if ch.requested:
            self.subscriber.write(encode_command(self._UNSUBSCRIBE, key, ch.companion))
        ch.requested = False
        for waiter in ch.waiters:
            if not waiter.done():
                waiter.set_result(None)
        ch.waiters.clear()
        positioned = {sink for sink in sinks if sink in self._positioned}
        # A socket with no channel left here is no longer this shard's to close.
        for sink in sinks:
            if not any(
                c.sinks.get(sink) or c.psinks.get(sink) or sink in c.joining
                for c in self._channels.values()
            ):
                self._members.pop(sink, None)
                self._positioned.discard(sink)
        return ch, positioned

    def adopt(self, old: ChannelState, positioned: set[Sink]) -> None:
        """Take over a channel and its sockets from another shard, as after a reconnect:
        they get what they missed (the stored message, or history from their
        position), then live traffic."""
        sinks = list(dict.fromkeys([*old.sinks, *old.psinks, *old.joining]))
        if not sinks:
            return
        key = old.key
        ch = self._channels.get(key)
        if ch is None:
            ch = self._channels[key] = ChannelState(key)
            self._companions[ch.companion] = ch
            ch.label, ch.last, ch.position = old.label, old.last, old.position
        for sink in sinks:
            ch.had.setdefault(sink, old.had_by(sink))
            ch.joining.setdefault(sink, [])
            self._members[sink] = None
            if sink in positioned:
                self._positioned.add(sink)
        if not self.subscriber.connected:
            # Once connected, everything wanted is subscribed and caught up.
            self._ever_connected = True
            return
        if not ch.requested:
            self._subscribe([ch])
        for sink in sinks:
            had = ch.had.get(sink, (None, None))[0]
            since = {key: had} if sink in positioned and had is not None else None
            self._rejoin(sink, [key], since)

    def _rejoining(self, sink: Sink, keys: list[bytes], future: asyncio.Future[None]) -> None:
        # The cluster client may still know the old topology right after a failover:
        # the catch-up is tried again (catchup.py); a socket waits for its adoption.
        for key in keys:
            self._adoptions[key, sink] = future
        future.add_done_callback(functools.partial(self._adoption_done, sink, keys))

    def _adoption_done(self, sink: Sink, keys: list[bytes], future: asyncio.Future[None]) -> None:
        for key in keys:
            if self._adoptions.get((key, sink)) is future:
                del self._adoptions[key, sink]

    async def adopted(self, sink: Sink, key: bytes) -> None:
        """Wait until ``sink``, taken over from another shard, gets ``key``'s live traffic."""
        future = self._adoptions.get((key, sink))
        if future is not None:
            await asyncio.shield(future)


class _LiveJoiner(Joiner):
    """Joins that read nothing: the sockets' shard bridges deliver what is stored."""

    async def _read(
        self, wanted: list[tuple[bytes, Position | None]]
    ) -> dict[tuple[bytes, Position | None], Replay]:
        return {pair: Replay(None, None, Position(0, 0), "new", []) for pair in wanted}


class PlainListener(ShardBridge):
    """Classic ``SUBSCRIBE`` on one node, for messages sent with a plain ``PUBLISH``.

    A cluster forwards every ``PUBLISH`` to every node, so one connection to
    any node hears them all. It is live-only (the shard bridges replay the
    stored messages) and never closes sockets: losing it costs only the plain
    ``PUBLISH`` messages until the router moves it to another node.
    """

    _SUBSCRIBE = "SUBSCRIBE"
    _UNSUBSCRIBE = "UNSUBSCRIBE"
    _MESSAGE = b"message"
    _SUBSCRIBED = b"subscribe"
    _UNSUBSCRIBED = b"unsubscribe"
    _joiner_class = _LiveJoiner

    def _subscribe(self, channels: list[ChannelState]) -> None:
        Bridge._subscribe(self, channels)  # any channels in one SUBSCRIBE

    def _unsubscribed(self, key: bytes) -> None:
        pass  # classic subscriptions do not move with slots

    def _give_up(self) -> None:
        pass  # the sockets' shard bridges decide about 4503
