"""The websocket consumer: handshake, flags, replay, publishing, and close codes.

A socket at ``<WEBSOCKET_URL><facility>?<flags>`` is checked (facility,
identity, permissions), accepted, then joined to the process's bridge, which
delivers the stored message of each subscribed channel and then live
traffic. Frames the client sends are published on the channels of its
publish flags. Every refusal closes with a code from :mod:`ws4redis_channels.codes`
and logs a line that says why.

The checks of the handshake are in :mod:`ws4redis_channels.admission`. The
consumer holds no naming logic (that is :mod:`ws4redis_channels.names`)
and no channel layer of its own: the bridge serves all sockets of the process.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from channels.exceptions import StopConsumer
from channels.generic.websocket import AsyncWebsocketConsumer
from django.core.exceptions import ImproperlyConfigured, PermissionDenied, SuspiciousOperation

from . import patience
from .accelerator import (
    CloseGate,
    accept_gate,
    bound_fragmented_messages,
    close_with_reason,
    daphne_protocol,
    pause_reading,
    raw_send,
)
from .access import (
    PUBLISH_FLAGS,
    SUBSCRIBE_FLAGS,
    WebsocketRequest,
    allowed_flags,
    parse_flags,
    resolve_identity,
)
from .admission import (
    Refusal,
    channels_for,
    check_identity,
    check_request,
    presented_positions,
)
from .bridge import Bridge
from .codes import CLOSE_REASONS, CloseCode
from .collector import surge
from .conf import conf
from .exceptions import InvalidName, RedisError
from .frames import Batch, make_message
from .intake import current_intake
from .limits import PublishLimits, identity_key, process_limits
from .logs import describe_socket, escaped
from .metrics import recorder
from .names import Audience, validate_facility
from .outlet import Outlet
from .runtime import current_bridge, current_relay
from .subprotocols import offered_subprotocols, select_subprotocol

__all__ = ["NoRouteConsumer", "WebsocketConsumer"]

logger = logging.getLogger(__name__)

# The key of the facility in the URL route (see routing.py).
FACILITY_KWARG = "facility"


def _subprotocol(scope: dict[str, Any]) -> str | None:
    """The subprotocol to name in the 101: browsers fail a socket that offered some and got none."""
    offered = offered_subprotocols(scope)
    chosen = select_subprotocol(offered, conf.WS4REDIS_SUBPROTOCOLS)
    if offered and chosen is None:
        logger.warning(
            "Websocket %s offered subprotocols %s, none in WS4REDIS_SUBPROTOCOLS",
            describe_socket(scope),
            ", ".join(escaped(name, 60) for name in offered[:5]),
        )
    return chosen


class _LeanConsumer(AsyncWebsocketConsumer):  # type: ignore[misc]
    """An ``AsyncWebsocketConsumer`` without a channel layer of its own.

    The process's bridge relays channel layer events (see relay.py), so a
    socket needs no layer channel. With a single source of events, a plain
    loop replaces channels' ``await_many_dispatch``, which keeps a task per
    socket and makes a new one for every frame. ``dispatch`` skips the
    thread hop that closes old database connections before each handler:
    only the handshake touches the database, through
    ``database_sync_to_async``, which does that itself.
    """

    channel_layer = None
    groups: list[str] = []  # class-level: no empty list per socket

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        self.scope = scope
        self.base_send = send
        try:
            while True:
                await self.dispatch(await receive())
        except StopConsumer:
            pass
        finally:
            # Also when the server cancels the consumer (a stuck handshake,
            # shutdown): nothing of the socket may stay registered.
            self.cleanup()

    def cleanup(self) -> None:
        """Release what the socket holds; called once the consumer ends, however it ends."""

    async def close(self, code: int | bool | None = None, reason: str | None = None) -> None:
        # daphne drops the reason of an ASGI close: send the close frame ourselves.
        if type(code) is int and reason and close_with_reason(self.base_send, code, reason):
            return
        await super().close(code=code, reason=reason)

    async def dispatch(self, message: dict[str, Any]) -> None:
        handler = getattr(self, message["type"].replace(".", "_"), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        await handler(message)


class WebsocketConsumer(_LeanConsumer):
    """Serves ``<WEBSOCKET_URL><facility>?subscribe-...&publish-...&echo``."""

    facility: str = ""
    subscribe_channels: list[str]
    publish_channels: list[str]
    echo: bool = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.subscribe_channels = []
        self.publish_channels = []
        self._labels: dict[str, str] = {}
        self._bridge: Bridge | None = None
        self._outlet: Outlet | None = None
        self._closing = False
        self._close_task: asyncio.Future[None] | None = None
        self._close_gate: CloseGate | None = None
        self._accepted = False
        # Whom the publish limits count this socket's frames against (limits.py).
        self._publisher = ""
        self._protocol: Any = None  # daphne's, when there is one (accelerator.py)
        self._open = False  # counted in the open sockets gauge

    # -- handshake ----------------------------------------------------------

    async def websocket_connect(self, message: dict[str, Any]) -> None:
        surge.started()
        accept_gate.started(daphne_protocol(raw_send(self.base_send)))
        try:
            await self._handshake()
        except PermissionDenied as exc:
            logger.warning(
                "Refused websocket %s with 403: %s", self._where(), escaped(exc or "denied", 500)
            )
            recorder().handshake(403)
            await self.close()  # before accept: daphne answers 403
            return
        except ImproperlyConfigured as exc:
            logger.error("Refused websocket %s with 403: %s", self._where(), escaped(exc, 500))
            recorder().handshake(403)
            await self.close()
            return
        except Refusal as refusal:
            await self._refuse(refusal.code, str(refusal))
            return
        except RedisError as exc:  # RedisUnavailable, RedisTimeout, RedisCommandError
            await self._refuse(CloseCode.REDIS_UNAVAILABLE, str(exc))
            return
        except SuspiciousOperation as exc:
            # e.g. Django's TooManyFieldsSent while reading the query string.
            await self._refuse(CloseCode.BAD_REQUEST, f"{type(exc).__name__}: {exc}")
            return
        except Exception as exc:
            # A bug or a broken dependency: a documented refusal, never HTTP 500.
            logger.error(
                "Handshake of websocket %s failed: %s",
                self._where(),
                escaped(repr(exc), 500),
                exc_info=True,
            )
            await self._refuse(CloseCode.HANDSHAKE_FAILED, f"{type(exc).__name__}", log=False)
            return
        finally:
            surge.ended()
            accept_gate.ended()

    async def _handshake(self) -> None:
        scope = self.scope
        check_request(scope)
        raw_facility = scope.get("url_route", {}).get("kwargs", {}).get(FACILITY_KWARG, "")
        try:
            self.facility = validate_facility(raw_facility)
        except InvalidName as exc:
            self.facility = ""
            raise Refusal(CloseCode.BAD_REQUEST, str(exc)) from None
        requested = parse_flags(scope.get("query_string", b""))
        audiences = {SUBSCRIBE_FLAGS.get(f) or PUBLISH_FLAGS.get(f) for f in requested}
        identity = await resolve_identity(
            scope,
            session=Audience.SESSION in audiences,
            groups=Audience.GROUP in audiences,
        )
        check_identity(requested, identity)
        flags = await allowed_flags(WebsocketRequest(scope, self.facility), requested)
        denied = [f for f in requested if f not in flags]
        if denied:
            logger.warning(
                "Websocket %s: flags not permitted: %s", self._where(), ", ".join(denied)
            )
        self.echo = "echo" in flags
        self.subscribe_channels = channels_for(
            self.facility, flags, SUBSCRIBE_FLAGS, identity, self._labels
        )
        self.publish_channels = channels_for(
            self.facility, flags, PUBLISH_FLAGS, identity, self._labels
        )
        if self.publish_channels:
            session = identity.session
            if identity.user is None and session is None:
                # An anonymous publisher with a saved session is limited by it.
                session = (await resolve_identity(scope, session=True)).session
            self._publisher = identity_key(identity.user, session, scope.get("client"))
        labels, since = presented_positions(
            scope.get("query_string", b""), self.subscribe_channels, self._labels
        )

        # Subscribe before accepting: once the client sees the socket open,
        # everything published from then on reaches it. The outlet holds the
        # replayed and live messages until the accept has gone out.
        self._outlet = Outlet(
            self.base_send,
            max_buffer=conf.WS4REDIS_MAX_BUFFER_SIZE,
            on_overflow=self._too_slow,
            on_redis_lost=self._redis_lost,
            direct_writes=conf.WS4REDIS_DIRECT_WRITES,
        )
        self._bridge = current_bridge()
        await self._bridge.join(self._outlet, self.subscribe_channels, labels=labels, since=since)
        if self.subscribe_channels:
            relay = current_relay()
            # Once the process is in the channels' groups, nothing to wait for.
            if relay is not None and not relay.is_ready(self.subscribe_channels):
                try:
                    # Patient: a reconnect storm's busy loop is not a slow layer.
                    await patience.wait_for(
                        relay.ready(self.subscribe_channels), conf.WS4REDIS_CONNECT_TIMEOUT
                    )
                except Exception as exc:
                    # Redis delivery works; only group_send would miss this socket.
                    logger.warning("Channel layer relay not ready for %s: %r", self._where(), exc)
        await self.accept(_subprotocol(self.scope))
        self._accepted = True
        self._outlet.release()
        metrics = recorder()
        metrics.handshake(None)
        metrics.socket_opened()
        self._open = True
        # Frames sent before the client's close are published before it is answered.
        self._close_gate = CloseGate.install(self.base_send)
        # A message in 1-byte fragments must not cost 40 bytes of memory per byte.
        self._protocol = daphne_protocol(raw_send(self.base_send))
        bound_fragmented_messages(self._protocol)

    async def _refuse(self, code: CloseCode, detail: str, *, log: bool = True) -> None:
        if log:
            logger.warning(
                "Closing websocket %s with %d: %s", self._where(), code, escaped(detail, 500)
            )
        if self._closing:
            return
        self._closing = True
        recorder().handshake(int(code))
        self._leave()
        if not self._accepted:
            self._accepted = True
            await self.accept(_subprotocol(self.scope))
        await self.close(code=int(code), reason=CLOSE_REASONS[code][:120])

    def _where(self) -> str:
        # Escaped, and query-string values left out: they may hold tokens.
        return describe_socket(self.scope)

    # -- receiving ----------------------------------------------------------

    async def websocket_receive(self, message: dict[str, Any]) -> None:
        if self._closing or self._bridge is None:
            return
        text = message.get("text")
        if text is not None:
            heartbeat = conf.WS4REDIS_HEARTBEAT
            if heartbeat is not None and text == heartbeat:
                await self._answer_heartbeat(heartbeat)
                return
            payload = text.encode("utf-8")
        else:
            payload = message.get("bytes") or b""
        if not payload:
            return  # an empty frame (a keep-alive of some clients) reaches no socket
        if len(payload) > conf.WS4REDIS_MAX_MESSAGE_SIZE:
            await self._close_with(
                CloseCode.MESSAGE_TOO_BIG,
                f"frame of {len(payload)} bytes exceeds {conf.WS4REDIS_MAX_MESSAGE_SIZE}",
            )
            return
        if not self.publish_channels:
            await self._close_with(
                CloseCode.FORBIDDEN, "frame received, but no publish flag is permitted"
            )
            return
        expire = conf.WS4REDIS_EXPIRE
        refused = process_limits().check(
            self._publisher,
            len(payload),
            _publish_limits(expire),
            self.publish_channels,
        )
        if refused is not None:
            await self._close_with(CloseCode.RATE_LIMITED, refused)
            return
        # Never publish faster than the process reads its subscriber (intake.py).
        intake = current_intake()
        cost = len(payload) * len(self.publish_channels)
        if not intake.try_admit(cost):
            resume = pause_reading(self._protocol)
            try:
                await intake.admit(cost)
            finally:
                if resume is not None:
                    resume()
            if self._closing:
                return
        try:
            await self._bridge.publish(
                self._outlet,
                self.publish_channels,
                payload,
                expire,
                echo=self.echo,
            )
            recorder().published(len(self.publish_channels), "socket")
        except (RedisError, OSError, asyncio.TimeoutError) as exc:
            await self._close_with(CloseCode.REDIS_UNAVAILABLE, f"publishing failed: {exc!r}")

    async def _answer_heartbeat(self, heartbeat: str) -> None:
        # Through the outlet: the reply counts against the outbound bound (a
        # flood from a client that never reads ends with 4507), and like any
        # frame against the rate limit.
        # A socket that may not publish has no identity key: it is limited on its own.
        who = self._publisher or f"socket:{id(self)}"
        refused = process_limits().check(who, len(heartbeat), _publish_limits(0))
        if refused is not None:
            await self._close_with(CloseCode.RATE_LIMITED, f"heartbeats: {refused}")
            return
        if self._outlet is not None:
            try:
                self._outlet.deliver(Batch([make_message(heartbeat.encode("utf-8"))]))
            except Exception as exc:
                # The client closed right after its heartbeat: nothing is wrong.
                logger.debug("Heartbeat reply to %s not sent: %r", self._where(), exc)

    # -- closing ------------------------------------------------------------

    async def _close_with(self, code: CloseCode, detail: str) -> None:
        if self._closing:
            return
        logger.warning(
            "Closing websocket %s with %d: %s", self._where(), code, escaped(detail, 500)
        )
        self._closing = True
        self._leave()
        recorder().closed(int(code))
        await self.close(code=int(code), reason=CLOSE_REASONS[code][:120])

    async def dispatch(self, message: dict[str, Any]) -> None:
        gate = self._close_gate
        if gate is None or message["type"] != "websocket.receive":
            return await super().dispatch(message)
        gate.enter()
        try:
            await super().dispatch(message)
        finally:
            gate.leave()

    def cleanup(self) -> None:
        self._leave()
        if self._close_gate is not None:
            self._close_gate.uninstall()
            self._close_gate = None

    def _leave(self) -> None:
        if self._open:
            self._open = False
            recorder().socket_closed()
        if self._bridge is not None and self._outlet is not None:
            self._bridge.leave(self._outlet, self.subscribe_channels)
            self._outlet.stop()

    def _too_slow(self) -> None:
        # Called from the bridge's fan-out: stop delivering at once, close soon.
        self._leave()
        self._close_task = asyncio.ensure_future(
            self._close_with(CloseCode.TOO_SLOW, "client does not read; outbound buffer is full")
        )

    def _redis_lost(self) -> None:
        self._leave()
        self._close_task = asyncio.ensure_future(
            self._close_with(CloseCode.REDIS_UNAVAILABLE, "Redis unreachable for too long")
        )

    async def websocket_disconnect(self, message: dict[str, Any]) -> None:
        self._closing = True
        self._leave()
        if self._outlet is not None:
            await self._outlet.aclose()
        raise StopConsumer()


def _publish_limits(expire: int) -> PublishLimits:
    return PublishLimits(
        frame_rate=conf.WS4REDIS_PUBLISH_RATE,
        frame_burst=conf.WS4REDIS_PUBLISH_BURST,
        byte_rate=conf.WS4REDIS_PUBLISH_BYTES_RATE,
        byte_burst=conf.WS4REDIS_PUBLISH_BYTES_BURST,
        max_stored_channels=conf.WS4REDIS_MAX_STORED_CHANNELS,
        # Every publication leaves the channel's position (and its stored
        # message, its history) in Redis for the longer of the two.
        store_window=float(max(expire, conf.WS4REDIS_HISTORY_TTL)),
    )


class NoRouteConsumer(_LeanConsumer):
    """Answers a websocket at a path outside ``WEBSOCKET_URL`` with 4404."""

    async def websocket_connect(self, message: dict[str, Any]) -> None:
        logger.warning(
            "Closing websocket %s with 4404: no websocket endpoint at this path",
            describe_socket(self.scope),
        )
        recorder().handshake(int(CloseCode.NOT_FOUND))
        await self.accept(_subprotocol(self.scope))
        await self.close(code=int(CloseCode.NOT_FOUND), reason=CLOSE_REASONS[CloseCode.NOT_FOUND])

    async def websocket_disconnect(self, message: dict[str, Any]) -> None:
        raise StopConsumer()
