"""Relay from the Channels layer: ``group_send`` reaches the same sockets as Redis.

Django code that already uses channel layers can push with::

    await channel_layer.group_send(
        names.group_for("_broadcast_:foobar"),
        {"type": "ws4redis.message", "text": "Hello"},   # or "bytes": b"..."
    )

The process joins the Channels group of a Redis channel once, while it has
local sockets on that channel (not once per socket), and hands each event to
the bridge's local fan-out. Each process therefore receives a ``group_send``
once and each socket gets it once. Membership is renewed well within the
layer's ``group_expiry`` so long-lived sockets never silently fall out.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from typing import Any

from .accelerator.queues import shrink_layer_queues
from .names import group_for
from .subscriber import Backoff

__all__ = ["EVENT_TYPE", "LayerRelay"]

logger = logging.getLogger(__name__)

EVENT_TYPE = "ws4redis.message"
DEFAULT_GROUP_EXPIRY = 86400
RETRY_FIRST = 0.5
RETRY_MAX = 10.0
#: Relays joining their groups at once. channels_redis' core layer takes a
#: pooled connection per ``group_add``; a reconnect storm of a thousand new
#: user channels would otherwise empty the pool (``MaxConnectionsError``) and
#: send every relay into its retry pause.
JOINING_AT_ONCE = 16


class LayerRelay:
    """Keeps one layer channel per watched Redis channel and relays its events."""

    def __init__(self, layer: Any, deliver: Callable[[str, dict[str, Any]], None]) -> None:
        self.layer = layer
        self._deliver = deliver
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._ready: dict[str, asyncio.Future[None]] = {}
        self._members: dict[str, str] = {}  # Redis channel -> layer channel name
        expiry = getattr(layer, "group_expiry", DEFAULT_GROUP_EXPIRY) or DEFAULT_GROUP_EXPIRY
        self._refresh_every = max(float(expiry) / 3, 1.0)
        self._refresher: asyncio.Task[None] | None = None
        self._joining: asyncio.Semaphore | None = None

    def watch(self, channel: str, on: bool) -> None:
        """Start (``on``) or stop relaying events for ``channel``."""
        loop = asyncio.get_running_loop()
        if on:
            if channel in self._tasks:
                return
            self._ready[channel] = loop.create_future()
            self._tasks[channel] = loop.create_task(self._relay(channel))
            if self._refresher is None or self._refresher.done():
                self._refresher = loop.create_task(self._refresh())
        else:
            task = self._tasks.pop(channel, None)
            self._ready.pop(channel, None)
            if task is not None:
                task.cancel()

    def is_ready(self, channels: Iterable[str]) -> bool:
        """Whether the process is already a member of the groups of ``channels``."""
        ready = self._ready
        return all(c not in ready or ready[c].done() for c in channels)

    async def ready(self, channels: Iterable[str]) -> None:
        """Wait until the process is a member of the groups of ``channels``."""
        futures = [self._ready[c] for c in channels if c in self._ready]
        if futures:
            await asyncio.gather(*(asyncio.shield(f) for f in futures))

    async def _relay(self, channel: str) -> None:
        group = group_for(channel)
        backoff = Backoff(RETRY_FIRST, RETRY_MAX)
        if self._joining is None:
            self._joining = asyncio.Semaphore(JOINING_AT_ONCE)
        while True:
            name = None
            try:
                async with self._joining:
                    name = await self.layer.new_channel("ws4redis.")
                    shrink_layer_queues(self.layer, name)
                    await self.layer.group_add(group, name)
                self._members[channel] = name
                ready = self._ready.get(channel)
                if ready is not None and not ready.done():
                    ready.set_result(None)
                backoff.reset()
                while True:
                    self._relay_event(channel, await self.layer.receive(name))
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # e.g. Redis restarted under the layer: join again after a pause.
                logger.warning("Channel layer relay for %r failed (%r); retrying", channel, exc)
            finally:
                self._members.pop(channel, None)
                if name is not None:
                    try:
                        await self.layer.group_discard(group, name)
                    except Exception as exc:  # the layer may be gone at shutdown
                        logger.debug("group_discard(%r) failed: %r", group, exc)
            await backoff.sleep()

    def _relay_event(self, channel: str, event: dict[str, Any]) -> None:
        if event.get("type") != EVENT_TYPE:
            logger.warning("Ignoring channel layer event of type %r", event.get("type"))
            return
        text, data = event.get("text"), event.get("bytes")
        if isinstance(text, str):
            self._deliver(channel, {"type": "websocket.send", "text": text})
        elif isinstance(data, (bytes, bytearray)):
            self._deliver(channel, {"type": "websocket.send", "bytes": bytes(data)})
        else:
            logger.warning("Ignoring %s event without text or bytes", EVENT_TYPE)

    async def _refresh(self) -> None:
        while self._tasks:
            await asyncio.sleep(self._refresh_every)
            for channel, name in list(self._members.items()):
                try:
                    await self.layer.group_add(group_for(channel), name)
                except Exception as exc:
                    logger.warning("Renewing group membership of %r failed: %r", channel, exc)

    async def close(self) -> None:
        """Stop every relay and leave every group."""
        tasks = list(self._tasks.values())
        if self._refresher is not None:
            tasks.append(self._refresher)
        self._tasks.clear()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
