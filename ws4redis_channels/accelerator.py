"""The only module that touches daphne, autobahn, Twisted and channels internals.

What can be learnt about the server behind an ASGI ``send``, and used when it is daphne.

ASGI hides the connection, but two things matter for a push server and
daphne offers them: how many bytes wait unsent for a socket (ASGI passes no
back-pressure, so a client that stops reading would grow the server's memory
without bound) and whether a protocol error is answered with a close frame.
Everything here is optional: under another server the functions return None
or do nothing, and the app still works.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any

__all__ = [
    "DirectWriter",
    "daphne_protocol",
    "on_server_shutdown",
    "prefer_close_frames",
    "queued_bytes",
    "raw_send",
    "release_handshake_data",
    "send_going_away",
]

Send = Callable[[dict[str, Any]], Awaitable[None]]


def raw_send(send: Send) -> Send:
    """Skip wrappers that pass ``websocket.send`` messages through unchanged.

    Channels' session middleware wraps ``send`` to save sessions on HTTP
    responses; for websocket messages it only adds a call per message.
    """
    from channels.sessions import InstanceSessionWrapper

    while True:
        owner = getattr(send, "__self__", None)
        if isinstance(owner, InstanceSessionWrapper) and getattr(send, "__name__", "") == "send":
            send = owner.real_send
            continue
        return send


def daphne_protocol(send: Send) -> Any:
    """Return daphne's websocket protocol object behind ``send`` (unwrapped), or None."""
    if not isinstance(send, functools.partial) or not send.args:
        return None
    try:
        from daphne.ws_protocol import WebSocketProtocol
    except ImportError:  # pragma: no cover - daphne is a dependency
        return None
    protocol = send.args[0]
    return protocol if isinstance(protocol, WebSocketProtocol) else None


def twisted_transport(protocol: Any) -> Any:
    """Return the plain TCP transport of a daphne protocol, or None (e.g. TLS)."""
    transport = getattr(protocol, "transport", None)
    if transport is None or not hasattr(transport, "_tempDataLen"):
        return None
    return transport


class DirectWriter:
    """Writes ready-made frames straight to the socket of a daphne connection.

    Through ASGI, every message costs daphne a trip through autobahn's framing
    and Twisted's writer registration (two ``epoll_ctl`` calls and a callback
    per socket, on top of the ``send``); this is most of a fan-out's time. When
    nothing is queued for the socket, one ``send`` does it; otherwise the frame
    goes behind what is queued in Twisted, so the order of frames is kept.
    Returns False (use ASGI instead) whenever the connection is not a plain,
    open, uncompressed TCP websocket between messages.
    """

    __slots__ = ("_protocol", "_send", "_transport")

    def __init__(self, protocol: Any, transport: Any) -> None:
        self._protocol = protocol
        self._transport = transport
        self._send = transport.socket.send

    @classmethod
    def for_protocol(cls, protocol: Any) -> DirectWriter | None:
        transport = twisted_transport(protocol)
        if transport is None or getattr(transport, "TLS", False):
            return None
        if not hasattr(transport, "socket") or not hasattr(protocol, "send_state"):
            return None
        return cls(protocol, transport)

    def write(self, frame: bytes) -> bool:
        protocol = self._protocol
        if (
            protocol.state != protocol.STATE_OPEN
            or protocol.send_state != protocol.SEND_STATE_GROUND
            or protocol._perMessageCompress is not None
        ):
            return False
        transport = self._transport
        if transport.disconnecting or not transport.connected:
            return False
        if transport._tempDataLen or len(transport.dataBuffer) > transport.offset:
            transport.write(frame)  # behind what waits, in order
            return True
        try:
            sent = self._send(frame)
        except BlockingIOError:
            sent = 0
        except OSError:
            return False  # let Twisted find out and close the connection
        if sent < len(frame):
            transport.write(frame[sent:])
        return True


def queued_bytes(transport: Any) -> int:
    """Return the bytes Twisted holds for ``transport`` that the kernel has not taken yet."""
    return len(transport.dataBuffer) - transport.offset + transport._tempDataLen  # type: ignore[no-any-return]


def prefer_close_frames(protocol: Any) -> None:
    """Make autobahn answer protocol errors (invalid UTF-8, oversize frames) with a close
    frame carrying the code (1007, 1009) instead of dropping the TCP connection."""
    if protocol is not None and hasattr(protocol, "failByDrop"):
        protocol.failByDrop = False


def release_handshake_data(protocol: Any) -> None:
    """Drop what autobahn keeps of the opening handshake once the socket is open.

    The parsed request headers and the raw request and response are only read
    while the handshake runs; an idle socket keeps them for its whole life
    (about 1.5 KB each).
    """
    if getattr(protocol, "state", None) != getattr(protocol, "STATE_OPEN", object()):
        return
    headers = getattr(protocol, "http_headers", None)
    if isinstance(headers, dict):
        headers.clear()  # also referenced by daphne's ConnectionRequest
    for name in ("http_request_data", "http_response_data"):
        if hasattr(protocol, name):
            setattr(protocol, name, None)


def send_going_away(protocol: Any) -> None:
    """Send a 1001 close frame on a daphne protocol that is still open."""
    if getattr(protocol, "state", None) == getattr(protocol, "STATE_OPEN", object()):
        protocol.sendCloseFrame(code=1001, reasonUtf8=b"server shutting down", isReply=False)


def on_server_shutdown(callback: Callable[[], Awaitable[None]]) -> bool:
    """Run ``callback`` when daphne's Twisted reactor shuts down (SIGTERM, SIGINT).

    Returns False when no running Twisted reactor is found (another server).
    """
    import asyncio
    import sys

    reactor = sys.modules.get("twisted.internet.reactor")
    if reactor is None or not getattr(reactor, "running", False):
        return False
    from twisted.internet import defer

    def before_shutdown() -> Any:
        return defer.Deferred.fromFuture(asyncio.ensure_future(callback()))

    reactor.addSystemEventTrigger("before", "shutdown", before_shutdown)
    return True
