"""The only module that touches daphne, autobahn, Twisted and channels internals.

What can be learnt about the server behind an ASGI ``send``, and used when it is daphne.

ASGI hides the connection, but two things matter for a push server and
daphne offers them: how many bytes wait unsent for a socket (ASGI passes no
back-pressure, so a client that stops reading would grow the server's memory
without bound) and whether a protocol error is answered with a close frame;
and one thing daphne does too early: it answers a client's close frame before
the frames received just before it are handled (:class:`CloseGate`).
Everything here is optional: under another server the functions return None
or do nothing, and the app still works.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable
from typing import Any

__all__ = [
    "CloseGate",
    "DirectWriter",
    "bound_fragmented_messages",
    "daphne_protocol",
    "on_server_shutdown",
    "pause_reading",
    "prefer_close_frames",
    "queued_bytes",
    "raw_send",
    "release_handshake_data",
    "send_going_away",
    "share_protocol_options",
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


def bound_fragmented_messages(protocol: Any) -> bool:
    """Keep a fragmented message being received in one buffer instead of one object per frame.

    autobahn keeps every fragment of an unfinished message as a bytes object
    of its own (about 40 bytes each), so a client sending 1-byte continuation
    frames of a message it never finishes costs ~5 MiB of memory per MB sent,
    up to ~40 MiB per socket under daphne's 1 MiB message limit. Joined into
    one ``bytearray`` as they arrive, fragments cost what their payload is, at
    most ``--websocket-max-message-size`` per socket. Returns False when the
    protocol is not the autobahn one this was written for.
    """
    if protocol is None or not callable(getattr(protocol, "onMessageFrame", None)):
        return False
    if not hasattr(protocol, "failedByMe"):
        return False

    def on_message_frame(payload: list[bytes]) -> None:
        if protocol.failedByMe:
            return
        data = getattr(protocol, "message_data", None)
        if data is None:  # pragma: no cover - autobahn sets it at the message's start
            return
        if not data:
            data.append(bytearray())
        buffer = data[-1]
        for chunk in payload:
            buffer += chunk

    protocol.onMessageFrame = on_message_frame
    return True


def pause_reading(protocol: Any) -> Callable[[], None] | None:
    """Stop reading from the client of a daphne protocol; return the function that resumes.

    ASGI cannot tell a server to stop reading, and daphne queues every frame
    for the application without bound; a socket whose frames must wait is
    paused at the TCP level instead, so the client's own buffers fill up.
    Returns None (nothing paused) when there is no Twisted transport.
    """
    transport = getattr(protocol, "transport", None)
    pause = getattr(transport, "pauseProducing", None)
    resume = getattr(transport, "resumeProducing", None)
    if not callable(pause) or not callable(resume):
        return None
    pause()
    return resume  # type: ignore[no-any-return]


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
    share_protocol_options(protocol)


def share_protocol_options(protocol: Any) -> bool:
    """Once per daphne websocket factory: later sockets read its options from their class.

    autobahn copies every one of its ~40 options from the factory into each
    new protocol's ``__dict__`` (unless the class has them) and formats that
    list for a debug line: a quarter of a handshake's time in daphne's own
    code and most of the protocol's dict. A subclass that carries the
    factory's options as class attributes gives every later socket the same
    values without either. Returns True when the factory was switched now.
    """
    factory = getattr(protocol, "factory", None)
    cls = type(protocol)
    names = getattr(cls, "CONFIG_ATTRS", None)
    if factory is None or getattr(factory, "_ws4redis_shared", False):
        return False
    factory._ws4redis_shared = True  # decided once, whatever the outcome
    if getattr(factory, "protocol", None) is not cls or not names:
        return False
    try:
        import autobahn.websocket.protocol as autobahn_protocol
        from txaio.tx import _no_op  # what a disabled log level is
    except ImportError:
        return False
    if not hasattr(autobahn_protocol, "pformat") or not all(hasattr(factory, n) for n in names):
        return False
    options = {name: getattr(factory, name) for name in names}
    for name, value in options.items():
        if inspect.isfunction(value):
            # e.g. perMessageCompressionAccept: as a class attribute it must not bind.
            options[name] = staticmethod(value)
    made = cls._connectionMade

    def _connectionMade(self: Any) -> None:
        # The same as autobahn's, minus formatting a debug line that is not logged.
        if getattr(self.log, "debug", None) is not _no_op:
            made(self)
            return
        saved = getattr(autobahn_protocol, "pformat")  # noqa: B009 (not exported)
        setattr(autobahn_protocol, "pformat", _unformatted)  # noqa: B010
        try:
            made(self)
        finally:
            setattr(autobahn_protocol, "pformat", saved)  # noqa: B010

    shared = type(cls.__name__, (cls,), {**options, "_connectionMade": _connectionMade})
    shared.__module__ = cls.__module__
    factory.protocol = shared
    return True


def _unformatted(value: Any) -> str:
    return ""


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


class CloseGate:
    """Holds daphne's answer to a client's close frame until the frames before it are handled.

    autobahn answers a close frame at once, in the reactor, while the frames
    received just before it may still wait in the application's queue or be
    in the middle of their publication: the client's ``close()`` would return
    before its last message is on Redis. The consumer marks the handling of
    each frame (:meth:`enter`, :meth:`leave`); a close frame that arrives
    while one is handled or queued is answered when the last one is done, or
    after ``limit`` seconds at the latest. :meth:`uninstall` answers a held
    close and restores the protocol (no reference cycle outlives the socket).
    """

    __slots__ = ("_busy", "_held", "_limit", "_protocol", "_timer")

    def __init__(self, protocol: Any, limit: float) -> None:
        self._protocol = protocol
        self._limit = limit
        self._busy = 0
        self._held: tuple[Any, Any] | None = None
        self._timer: Any = None
        # An instance attribute: autobahn calls self.onCloseFrame(code, reason).
        protocol.onCloseFrame = self._on_close_frame

    @classmethod
    def install(cls, send: Send, limit: float = 10.0) -> CloseGate | None:
        """Gate the daphne connection behind ``send``; None under another server."""
        protocol = daphne_protocol(raw_send(send))
        if protocol is None or "onCloseFrame" in vars(protocol):
            return None
        queue = getattr(protocol, "application_queue", None)
        if not callable(getattr(type(protocol), "onCloseFrame", None)) or not hasattr(
            queue, "empty"
        ):
            return None
        return cls(protocol, limit)

    def _pending(self) -> bool:
        return bool(self._busy) or not self._protocol.application_queue.empty()

    def _on_close_frame(self, code: Any, reason: Any) -> Any:
        protocol = self._protocol
        if self._held is None and protocol.state == protocol.STATE_OPEN and self._pending():
            import asyncio

            self._held = (code, reason)
            self._timer = asyncio.get_running_loop().call_later(self._limit, self.release)
            return None
        return type(protocol).onCloseFrame(protocol, code, reason)

    def enter(self) -> None:
        """A received frame is being handled."""
        self._busy += 1

    def leave(self) -> None:
        """A received frame has been handled; answer a held close if nothing else waits."""
        self._busy -= 1
        if self._held is not None and not self._pending():
            self.release()

    def release(self) -> None:
        """Answer a held close frame now (autobahn then drops the TCP connection)."""
        held, self._held = self._held, None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if held is not None:
            protocol = self._protocol
            type(protocol).onCloseFrame(protocol, *held)

    def uninstall(self) -> None:
        """Answer a held close and give the protocol its own close frame handling back."""
        self.release()
        vars(self._protocol).pop("onCloseFrame", None)
