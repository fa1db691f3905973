"""The websocket consumer: handshake, flags, replay, publishing, and close codes.

A socket at ``<WEBSOCKET_URL><facility>?<flags>`` is checked (facility,
identity, permissions), accepted, then joined to the process's bridge, which
delivers the stored message of each subscribed channel and then live
traffic. Frames the client sends are published on the channels of its
publish flags. Every refusal closes with a code from :mod:`ws4redis_channels.codes`
and logs a line that says why.

The consumer holds no naming logic (that is :mod:`ws4redis_channels.names`)
and no channel layer of its own: the bridge serves all sockets of the process.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from channels.exceptions import StopConsumer
from channels.generic.websocket import AsyncWebsocketConsumer
from django.core.exceptions import ImproperlyConfigured, PermissionDenied

from .access import (
    PUBLISH_FLAGS,
    SUBSCRIBE_FLAGS,
    Identity,
    WebsocketRequest,
    allowed_flags,
    parse_flags,
    resolve_identity,
)
from .bridge import Bridge
from .codes import CLOSE_REASONS, CloseCode
from .conf import conf
from .exceptions import InvalidName, RedisError, RedisUnavailable
from .names import Audience, Target, channel_for, validate_facility
from .outlet import Outlet
from .runtime import current_bridge, current_relay

__all__ = ["NoRouteConsumer", "WebsocketConsumer"]

logger = logging.getLogger(__name__)

# The key of the facility in the URL route (see routing.py).
FACILITY_KWARG = "facility"


class _Refusal(Exception):
    def __init__(self, code: CloseCode, detail: str) -> None:
        super().__init__(detail)
        self.code = code


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
        self._bridge: Bridge | None = None
        self._outlet: Outlet | None = None
        self._closing = False
        self._close_task: asyncio.Future[None] | None = None
        self._tokens = 0.0
        self._token_time = 0.0

    # -- handshake ----------------------------------------------------------

    async def websocket_connect(self, message: dict[str, Any]) -> None:
        try:
            await self._handshake()
        except PermissionDenied as exc:
            logger.warning("Refused websocket %s with 403: %s", self._where(), exc or "denied")
            await self.close()  # before accept: daphne answers 403
            return
        except ImproperlyConfigured as exc:
            logger.error("Refused websocket %s with 403: %s", self._where(), exc)
            await self.close()
            return
        except _Refusal as refusal:
            await self._refuse(refusal.code, str(refusal))
            return
        except RedisUnavailable as exc:
            await self._refuse(CloseCode.REDIS_UNAVAILABLE, str(exc))
            return

    async def _handshake(self) -> None:
        scope = self.scope
        raw_facility = scope.get("url_route", {}).get("kwargs", {}).get(FACILITY_KWARG, "")
        try:
            self.facility = validate_facility(raw_facility)
        except InvalidName as exc:
            self.facility = ""
            raise _Refusal(CloseCode.BAD_REQUEST, str(exc)) from None
        requested = parse_flags(scope.get("query_string", b""))
        audiences = {SUBSCRIBE_FLAGS.get(f) or PUBLISH_FLAGS.get(f) for f in requested}
        identity = await resolve_identity(
            scope,
            session=Audience.SESSION in audiences,
            groups=Audience.GROUP in audiences,
        )
        self._check_identity(requested, identity)
        flags = await allowed_flags(WebsocketRequest(scope, self.facility), requested)
        denied = [f for f in requested if f not in flags]
        if denied:
            logger.warning(
                "Websocket %s: flags not permitted: %s", self._where(), ", ".join(denied)
            )
        self.echo = "echo" in flags
        self.subscribe_channels = self._channels(flags, SUBSCRIBE_FLAGS, identity)
        self.publish_channels = self._channels(flags, PUBLISH_FLAGS, identity)

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
        await self._bridge.join(self._outlet, self.subscribe_channels)
        if self.subscribe_channels:
            relay = current_relay()
            if relay is not None:
                try:
                    await asyncio.wait_for(
                        relay.ready(self.subscribe_channels), conf.WS4REDIS_CONNECT_TIMEOUT
                    )
                except Exception as exc:
                    # Redis delivery works; only group_send would miss this socket.
                    logger.warning("Channel layer relay not ready for %s: %r", self._where(), exc)
        await self.accept()
        self._outlet.release()
        self._tokens = float(conf.WS4REDIS_PUBLISH_BURST)
        self._token_time = time.monotonic()

    def _check_identity(self, flags: list[str], identity: Identity) -> None:
        for flag in flags:
            audience = SUBSCRIBE_FLAGS.get(flag) or PUBLISH_FLAGS.get(flag)
            if audience in (Audience.USER, Audience.GROUP) and identity.user is None:
                raise _Refusal(CloseCode.LOGIN_REQUIRED, f"{flag} needs a logged-in user")
            if audience is Audience.SESSION and identity.session is None:
                raise _Refusal(CloseCode.SESSION_REQUIRED, f"{flag} needs a saved session")

    def _channels(
        self, flags: list[str], table: dict[str, Audience], identity: Identity
    ) -> list[str]:
        targets: list[Target] = []
        for flag in flags:
            audience = table.get(flag)
            if audience is Audience.BROADCAST:
                targets.append(Target(audience, self.facility))
            elif audience is Audience.USER:
                targets.append(Target(audience, self.facility, identity.user))
            elif audience is Audience.SESSION:
                targets.append(Target(audience, self.facility, identity.session))
            elif audience is Audience.GROUP:
                targets.extend(Target(audience, self.facility, g) for g in identity.groups)
        prefix, naming = conf.WS4REDIS_PREFIX, conf.WS4REDIS_NAMING
        channels: dict[str, None] = {}
        for target in targets:
            try:
                channels[channel_for(target, prefix=prefix, naming=naming)] = None
            except InvalidName as exc:
                # e.g. a user named "_broadcast_": never alias another audience.
                code = (
                    CloseCode.LOGIN_REQUIRED
                    if target.audience is Audience.USER
                    else CloseCode.BAD_REQUEST
                )
                raise _Refusal(
                    code, f"cannot name a {target.audience.value} channel: {exc}"
                ) from None
        return list(channels)

    async def _refuse(self, code: CloseCode, detail: str) -> None:
        logger.warning("Closing websocket %s with %d: %s", self._where(), code, detail)
        if self._closing:
            return
        self._closing = True
        await self.accept()
        await self.close(code=int(code), reason=CLOSE_REASONS[code][:120])

    def _where(self) -> str:
        client = self.scope.get("client") or ("?", 0)
        query = self.scope.get("query_string", b"").decode("latin-1")
        path = self.scope.get("path", "")
        return f"{path}{'?' + query if query else ''} from {client[0]}"

    # -- receiving ----------------------------------------------------------

    async def websocket_receive(self, message: dict[str, Any]) -> None:
        if self._closing or self._bridge is None:
            return
        text = message.get("text")
        if text is not None:
            heartbeat = conf.WS4REDIS_HEARTBEAT
            if heartbeat is not None and text == heartbeat:
                await self.base_send({"type": "websocket.send", "text": heartbeat})
                return
            payload = text.encode("utf-8")
        else:
            payload = message.get("bytes") or b""
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
        if not self._take_token():
            await self._close_with(
                CloseCode.RATE_LIMITED,
                f"more than {conf.WS4REDIS_PUBLISH_BURST} frames at over "
                f"{conf.WS4REDIS_PUBLISH_RATE}/s",
            )
            return
        try:
            await self._bridge.publish(
                self._outlet,
                self.publish_channels,
                payload,
                conf.WS4REDIS_EXPIRE,
                echo=self.echo,
            )
        except (RedisError, OSError, asyncio.TimeoutError) as exc:
            await self._close_with(CloseCode.REDIS_UNAVAILABLE, f"publishing failed: {exc!r}")

    def _take_token(self) -> bool:
        rate = conf.WS4REDIS_PUBLISH_RATE
        if rate <= 0:
            return True
        now = time.monotonic()
        burst = float(conf.WS4REDIS_PUBLISH_BURST)
        self._tokens = min(burst, self._tokens + (now - self._token_time) * rate)
        self._token_time = now
        if self._tokens < 1.0:
            return False
        self._tokens -= 1.0
        return True

    # -- closing ------------------------------------------------------------

    async def _close_with(self, code: CloseCode, detail: str) -> None:
        if self._closing:
            return
        logger.warning("Closing websocket %s with %d: %s", self._where(), code, detail)
        self._closing = True
        self._leave()
        await self.close(code=int(code), reason=CLOSE_REASONS[code][:120])

    def cleanup(self) -> None:
        self._leave()

    def _leave(self) -> None:
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


class NoRouteConsumer(_LeanConsumer):
    """Answers a websocket at a path outside ``WEBSOCKET_URL`` with 4404."""

    async def websocket_connect(self, message: dict[str, Any]) -> None:
        client = self.scope.get("client") or ("?", 0)
        logger.warning(
            "Closing websocket %s from %s with 4404: no websocket endpoint at this path",
            self.scope.get("path", ""),
            client[0],
        )
        await self.accept()
        await self.close(code=int(CloseCode.NOT_FOUND), reason=CLOSE_REASONS[CloseCode.NOT_FOUND])

    async def websocket_disconnect(self, message: dict[str, Any]) -> None:
        raise StopConsumer()
