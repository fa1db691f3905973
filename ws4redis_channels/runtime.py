"""The per-process runtime: the bridge (and channel layer relay) of the running event loop.

Both are created on first use from the settings of that moment (daphne has
no ASGI lifespan to start them earlier) and torn down by :func:`shutdown`.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from typing import Any, cast

from channels.layers import get_channel_layer

from . import accelerator
from .accelerator import on_server_shutdown
from .bridge import Bridge
from .conf import DEFAULTS, conf
from .connection import async_client, follow_master, parse_target
from .metrics import recorder
from .registry import Heartbeat
from .relay import LayerRelay
from .router import ClusterBridge
from .sentinel import Master

__all__ = ["current_bridge", "current_relay", "shutdown"]

logger = logging.getLogger(__name__)


def _new_bridge() -> Bridge:
    relay: LayerRelay | None = None
    alias = conf.WS4REDIS_CHANNEL_LAYER
    layer = get_channel_layer(alias) if alias else None
    target = parse_target(conf.WS4REDIS_CONNECTION)
    if target.cluster:
        # A bridge per shard primary behind the same API (see router.py).
        bridge = cast(
            Bridge,
            ClusterBridge(
                target,
                connect_timeout=conf.WS4REDIS_CONNECT_TIMEOUT,
                outage_timeout=conf.WS4REDIS_OUTAGE_TIMEOUT,
                plain_publish=conf.WS4REDIS_CLUSTER_PLAIN_PUBLISH,
                history_ttl=conf.WS4REDIS_HISTORY_TTL,
            ),
        )
    else:
        bridge = Bridge(
            target,
            connect_timeout=conf.WS4REDIS_CONNECT_TIMEOUT,
            outage_timeout=conf.WS4REDIS_OUTAGE_TIMEOUT,
            history_ttl=conf.WS4REDIS_HISTORY_TTL,
        )
        _follow_master(bridge)
    if layer is not None:
        relay = LayerRelay(layer, bridge.deliver_local)
        bridge.set_watcher(relay.watch)
        bridge.relay = relay
    # Every few seconds: the status report to Redis, and the metrics' sums.
    interval = conf.WS4REDIS_STATUS_INTERVAL
    bridge_ref = weakref.ref(bridge)  # the heartbeat must not keep the bridge alive
    bridge.heartbeat = Heartbeat(
        async_client(bridge.target),
        conf.WS4REDIS_PREFIX,
        lambda: status_of(bridge_ref()),
        interval=interval if interval > 0 else DEFAULTS["WS4REDIS_STATUS_INTERVAL"],
        on_tick=lambda: _tick(bridge_ref()),
        report=interval > 0,
    )
    bridge.heartbeat.start()
    on_server_shutdown(lambda: _going_away(bridge))
    return bridge


def accelerations() -> dict[str, bool]:
    """Return which accelerations are on in this process (name -> on)."""
    status = getattr(accelerator, "status", None)
    if not callable(status):
        return {}
    try:
        return {name: bool(state.get("on")) for name, state in status().items()}
    except Exception:
        logger.debug("Reading the accelerations' status failed", exc_info=True)
        return {}


def status_of(bridge: Bridge | None) -> dict[str, Any]:
    """Return what the status report says about ``bridge`` (see registry.ProcessReport)."""
    if bridge is None:
        return {}
    health = bridge.health
    return {
        "sockets": len(bridge.members()),
        "subscriptions": len(bridge.subscriptions()),
        "accelerations": accelerations(),
        "redis_connected": bridge.connected,
        "connected_since": health.connected_since,
        "down_since": health.down_since,
        "redis_trouble": health.trouble,
        "reconnects": health.reconnects,
        "output_buffer_drops": health.output_buffer_drops,
    }


def _tick(bridge: Bridge | None) -> None:
    if bridge is None:
        return
    bridge.health.tick()
    metrics = recorder()
    metrics.accelerations(accelerations())
    metrics.flush()


def _follow_master(bridge: Bridge) -> None:
    """With Sentinel, move the bridge to a new master as soon as Sentinel names it."""
    loop = asyncio.get_running_loop()
    bridge_ref = weakref.ref(bridge)

    def moved(master: Master) -> None:
        target = bridge_ref()
        if target is None or loop.is_closed():
            stop()
            return
        try:
            loop.call_soon_threadsafe(target.follow_master, master.address)
        except RuntimeError:  # the loop closed meanwhile
            stop()

    stop = follow_master(bridge.target, moved)


async def _going_away(bridge: Bridge) -> None:
    """At server shutdown: close every socket with 1001, then the bridge."""
    members = bridge.members()
    for sink in members:
        try:
            sink.going_away()
        except Exception:
            logger.exception("Closing a socket at shutdown failed")
    metrics = recorder()
    metrics.closed(1001, len(members))
    await _close(bridge)
    metrics.process_exits()
    logger.info("Closed %d websockets with 1001 and the Redis bridge", len(members))


def current_bridge() -> Bridge:
    """Return the bridge of the running event loop, creating it on first use."""
    return Bridge.current(_new_bridge)


def current_relay() -> LayerRelay | None:
    """Return the channel layer relay of the running loop's bridge, if there is one."""
    bridge = Bridge.existing()
    relay = bridge.relay if bridge is not None else None
    return relay if isinstance(relay, LayerRelay) else None


async def _close(bridge: Bridge) -> None:
    relay = bridge.relay
    bridge.relay = None
    heartbeat, bridge.heartbeat = bridge.heartbeat, None
    if isinstance(relay, LayerRelay):
        await relay.close()
    if isinstance(heartbeat, Heartbeat):
        await heartbeat.stop()
    await bridge.close()


async def shutdown() -> None:
    """Close the bridge and relay of the running event loop."""
    bridge = Bridge.existing()
    if bridge is None:
        return
    await _close(bridge)
    logger.debug("ws4redis bridge of loop %r closed", asyncio.get_running_loop())
