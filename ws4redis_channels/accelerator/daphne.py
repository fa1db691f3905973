"""daphne's connection behind a socket's ASGI ``send``: fast writes, the bound, close frames,
and 1001 at shutdown, each used only where the probe allows and never raising."""

from __future__ import annotations

import asyncio
import functools
import logging
import sys
import weakref
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from .options import share_protocol_options
from .probe import _probe_versions, disable, enabled, plain_tcp, probe_instance
from .queues import shrink_queues

__all__ = [
    "DaphneSocket",
    "Send",
    "attach",
    "close_with_reason",
    "daphne_protocol",
    "going_away_all",
    "on_server_shutdown",
    "raw_send",
]

if TYPE_CHECKING:
    from ..frames import Batch

logger = logging.getLogger("ws4redis_channels.accelerator")

Send = Callable[[dict[str, Any]], Awaitable[None]]

_open: weakref.WeakSet[Any] = weakref.WeakSet()  # daphne protocols of sockets we serve

#: What autobahn keeps of the handshake and reads only while processing it.
_HANDSHAKE_ONLY = (
    "_wskey",
    "http_status_line",
    "http_request_uri",
    "http_request_host",
    "http_request_path",
    "websocket_origin",
)


# -- channels ---------------------------------------------------------------------


def raw_send(send: Send) -> Send:
    """Skip wrappers that pass ``websocket.send`` messages through unchanged.

    Channels' session middleware wraps ``send`` to save sessions on HTTP
    responses; for websocket messages it only adds a call per message.
    """
    if not enabled("session_unwrap"):
        return send
    try:
        from channels.sessions import InstanceSessionWrapper

        while True:
            owner = getattr(send, "__self__", None)
            if (
                isinstance(owner, InstanceSessionWrapper)
                and getattr(send, "__name__", "") == "send"
            ):
                send = owner.real_send
                continue
            return send
    except Exception as exc:
        disable("session_unwrap", exc)
        return send


# -- daphne, autobahn, Twisted -------------------------------------------------------


def daphne_protocol(send: Send) -> Any:
    """Return daphne's websocket protocol object behind ``send`` (unwrapped), or None."""
    if not isinstance(send, functools.partial) or not send.args:
        return None
    module = sys.modules.get("daphne.ws_protocol")
    cls = getattr(module, "WebSocketProtocol", None)
    protocol = send.args[0]
    return protocol if cls is not None and isinstance(protocol, cls) else None


class _Pressure:
    """Twisted's producer signal for one socket: paused while its write buffer is full.

    Registered with the connection (``registerProducer(..., streaming=True)``,
    public Twisted and autobahn API, TLS included). Twisted calls
    :meth:`pauseProducing` once it holds more than its ``bufferSize`` for the
    socket and :meth:`resumeProducing` once it has written everything; what is
    sent in between waits, so it is counted (:meth:`DaphneSocket.sent`).
    """

    __slots__ = ("full", "paused", "since")

    def __init__(self, full: int) -> None:
        self.full = full  # what Twisted holds when it pauses us
        self.paused = False
        self.since = 0  # bytes sent since the pause

    def pauseProducing(self) -> None:
        # Twisted's TCP transport calls this on every write while its buffer is full.
        if not self.paused:
            self.paused = True
            self.since = 0

    def resumeProducing(self) -> None:
        self.paused = False
        self.since = 0

    def stopProducing(self) -> None:
        self.paused = False
        self.since = 0


class DaphneSocket:
    """The daphne connection behind one socket's ASGI ``send``, used only where the probe
    allows; every method returns a value meaning "not done, use ASGI" instead of raising.

    Frames leave either past autobahn, written to the TCP socket (``direct``,
    plain TCP only), or as autobahn's prepared messages (``prepared``, public
    API, TLS too). What waits for the client is read from Twisted's write
    buffer (``measured``, plain TCP only) or, where that cannot be had,
    counted from Twisted's producer signal (public API, TLS too).
    """

    __slots__ = (
        "__weakref__",
        "_answer_ping",
        "_check",
        "_pressure",
        "_send",
        "direct",
        "measured",
        "prepared",
        "protocol",
        "transport",
    )

    protocol: Any
    transport: Any

    def __init__(self, protocol: Any) -> None:
        self.protocol = protocol
        transport = self.transport = getattr(protocol, "transport", None)
        plain = plain_tcp(transport)
        self.direct = plain and enabled("direct_writes")
        self.measured = False
        self._send: Callable[[bytes], int] | None = None
        self._pressure: _Pressure | None = None
        self._answer_ping: Callable[[bytes], None] | None = None
        self._check: Callable[[], None] | None = None
        if self.direct and not getattr(transport, "connected", True):
            # The client left during its handshake (a reconnect storm's give-ups):
            # Twisted already dropped the socket, which says nothing of the others.
            self.direct = False
        if self.direct:
            try:
                self._send = self.transport.socket.send
            except Exception as exc:
                disable("direct_writes", exc)
                self.direct = False
        self.prepared = not self.direct and transport is not None and enabled("prepared_writes")
        if transport is not None:
            # What Twisted holds, read exactly, where it can be; else the public
            # signal, which only says "full" and "empty" (see queued()).
            self.measured = plain and enabled("buffer_bound")
            if not self.measured:
                self._register_pressure()
                if self._pressure is None:
                    _warn_unbounded()

    @property
    def fast(self) -> bool:
        """Whether frames go past daphne's ASGI ``send`` (directly or as prepared messages)."""
        return self.direct or self.prepared

    def use_asgi(self) -> None:
        """Send this socket's frames through ASGI from now on."""
        self.direct = self.prepared = False

    def _register_pressure(self) -> None:
        if not enabled("producer_bound"):
            return
        try:
            full = getattr(self.transport, "bufferSize", 0)
            pressure = _Pressure(full if isinstance(full, int) else 0)
            # autobahn's public methods. Twisted's HTTP channel, which daphne upgraded
            # the connection from, stays registered and does nothing any more: a
            # transport takes one producer. autobahn unregisters ours when it drops
            # the connection.
            self.protocol.unregisterProducer()
            self.protocol.registerProducer(pressure, True)
        except Exception as exc:
            disable("producer_bound", exc)
            return
        self._pressure = pressure

    # -- writes past ASGI

    def write(self, batches: list[Batch]) -> bool:
        """Write the frames of ``batches`` past ASGI; False if this socket cannot now (then
        use ASGI)."""
        if self.direct:
            # A lone batch (the common case) is written as the bytes every other
            # socket of the fan-out gets too: nothing is joined per socket.
            data = batches[0].data if len(batches) == 1 else b"".join([b.data for b in batches])
            if not self._write_direct(data):
                return False
            pressure = self._pressure
            if pressure is not None and pressure.paused:
                pressure.since += len(data)
            return True
        if self.prepared:
            return self._write_prepared(batches)
        return False

    def _write_direct(self, frame: bytes) -> bool:
        try:
            protocol = self.protocol
            if (
                protocol.state != protocol.STATE_OPEN
                or protocol.send_state != protocol.SEND_STATE_GROUND
                or protocol._perMessageCompress is not None
            ):
                return False
            transport = self.transport
            if transport.disconnecting or not transport.connected:
                return False
            if transport._tempDataLen or len(transport.dataBuffer) > transport.offset:
                transport.write(frame)  # behind what waits, in order
                return True
        except Exception as exc:
            disable("direct_writes", exc)
            self.direct = False
            return False
        try:
            sent = self._send(frame)  # type: ignore[misc]
        except BlockingIOError:
            sent = 0
        except OSError:
            return False  # let Twisted find out and close the connection
        if sent < len(frame):
            transport.write(frame[sent:])
        return True

    def _write_prepared(self, batches: list[Batch]) -> bool:
        protocol = self.protocol
        try:
            if protocol.state != protocol.STATE_OPEN:
                return False
            factory = protocol.factory
            send = protocol.sendPreparedMessage
            pressure = self._pressure
            for batch in batches:
                for message in batch.messages:
                    prepared = message.prepared
                    if prepared is None:
                        text = message.get("text")
                        if text is not None:
                            payload, binary = text.encode("utf-8"), False
                        else:
                            payload, binary = bytes(message.get("bytes") or b""), True
                        prepared = message.prepared = factory.prepareMessage(payload, binary)
                    send(prepared)
                    if pressure is not None and pressure.paused:
                        pressure.since += len(message.get("text") or message.get("bytes") or "")
        except Exception as exc:
            disable("prepared_writes", exc)
            self.prepared = False
            return False
        return True

    # -- what waits for the client

    def queued(self) -> int:
        """Return the bytes Twisted holds for the socket that the kernel has not taken (0 if
        not known).

        Under the producer signal it is an upper estimate: Twisted's buffer size
        plus everything sent since it said the buffer was full, as it does not
        say how much drained meanwhile. A client that keeps up with a stream
        only at the limit of its link, so that the buffer never empties, can
        reach the bound too.
        """
        if not self.measured:
            pressure = self._pressure
            if pressure is None or not pressure.paused:
                return 0
            return pressure.full + pressure.since
        try:
            t = self.transport
            return len(t.dataBuffer) - t.offset + t._tempDataLen  # type: ignore[no-any-return]
        except Exception as exc:
            disable("buffer_bound", exc)
            self.measured = False
            self._register_pressure()
            return 0

    def sent(self, size: int) -> int:
        """Note that ``size`` bytes were handed to daphne for the socket; return
        :meth:`queued`."""
        pressure = self._pressure
        if pressure is not None and pressure.paused:
            pressure.since += size
        return self.queued()

    # -- protocol details

    def prefer_close_frames(self) -> None:
        """Make autobahn answer protocol errors (invalid UTF-8, oversize frames) with a close
        frame carrying the code (1007, 1009) instead of dropping the TCP connection."""
        if enabled("close_frames"):
            try:
                self.protocol.failByDrop = False
            except Exception as exc:
                disable("close_frames", exc)

    def count_pongs(self, check: Callable[[], None]) -> None:
        """Call ``check`` after each pong daphne queues, so pongs count against the bound."""
        if not ((self.measured or self._pressure is not None) and enabled("pong_bound")):
            return
        try:
            self._answer_ping = self.protocol.onPing
            self._check = check
            # A bound method: a closure would cost a function and its cells per socket.
            self.protocol.onPing = self._on_ping
        except Exception as exc:
            disable("pong_bound", exc)

    def _on_ping(self, payload: bytes) -> None:
        self._answer_ping(payload)  # type: ignore[misc]
        self.sent(len(payload) + 2)
        self._check()  # type: ignore[misc]

    def opened(self) -> None:
        """The socket is open: remember it for shutdown; drop what the handshake kept."""
        protocol = self.protocol
        _open.add(protocol)
        if getattr(protocol, "state", None) != getattr(protocol, "STATE_OPEN", object()):
            return
        if enabled("handshake_release"):
            try:
                headers = protocol.http_headers
                if isinstance(headers, dict):
                    headers.clear()  # also referenced by daphne's ConnectionRequest
                protocol.http_request_data = None
                protocol.http_response_data = None
                state = vars(protocol)
                for name in _HANDSHAKE_ONLY:
                    if name in state:
                        state[name] = None
                share_protocol_options(protocol)
            except Exception as exc:
                disable("handshake_release", exc)
        if enabled("upgrade_release"):
            self._release_upgrade()
        shrink_queues(protocol)

    def _release_upgrade(self) -> None:
        """Unregister Twisted's HTTP channel, which daphne upgraded the connection from, from
        the TCP transport, the last thing that kept it, its request and their buffers.

        The channel does nothing for a websocket: it only answers the transport's
        pause and resume (a full write buffer), and while its upgrade request is
        in progress, as it stays, it passes them on to nobody. Under the producer
        signal (TLS) the channel was replaced already (``_register_pressure``).
        """
        try:
            transport = self.transport
            http = sys.modules.get("twisted.web.http")
            channel = getattr(http, "HTTPChannel", None)
            producer = getattr(transport, "producer", None)  # TLS: the wrapper has none
            if channel is not None and isinstance(producer, channel):
                transport.unregisterProducer()
        except Exception as exc:
            disable("upgrade_release", exc)

    def close(self, code: int, reason: str) -> bool:
        """Send a close frame with ``code`` and ``reason`` (daphne's ASGI close drops the
        reason); False if not done (then close through ASGI)."""
        if not enabled("close_reasons"):
            return False
        protocol = self.protocol
        try:
            if protocol.state != protocol.STATE_OPEN:
                return False
            protocol.sendClose(code=code, reason=reason)
        except Exception as exc:
            disable("close_reasons", exc)
            return False
        return True

    def going_away(self) -> bool:
        """Send a 1001 close frame if the socket is open; False if it could not be done."""
        return _going_away(self.protocol)


_unbounded_warned = False


def _warn_unbounded() -> None:
    global _unbounded_warned
    if not _unbounded_warned:
        _unbounded_warned = True
        logger.warning(
            "ws4redis cannot tell how many bytes wait for this daphne socket (neither "
            "buffer_bound nor producer_bound is on, see the accelerations line), so "
            "WS4REDIS_MAX_BUFFER_SIZE does not bound a client that stops reading"
        )


def _going_away(protocol: Any) -> bool:
    if not enabled("going_away"):
        return False
    try:
        if protocol.state == protocol.STATE_OPEN:
            protocol.sendCloseFrame(code=1001, reasonUtf8=b"server shutting down", isReply=False)
    except Exception as exc:
        disable("going_away", exc)
        return False
    return True


def attach(send: Send) -> DaphneSocket | None:
    """Return the daphne connection behind ``send`` (unwrapped), or None (another server)."""
    protocol = daphne_protocol(send)
    if protocol is None:
        return None
    _probe_versions()
    probe_instance(protocol)
    return DaphneSocket(protocol)


def close_with_reason(send: Send, code: int, reason: str) -> bool:
    """Close the daphne socket behind ``send`` with ``code`` and ``reason``; False if the
    caller must close through ASGI (another server, or the socket is not open)."""
    sock = attach(raw_send(send))
    return sock is not None and sock.close(code, reason)


def going_away_all() -> int:
    """Send 1001 on every open daphne socket this process served; return how many.

    daphne cancels the application instances before any shutdown trigger of
    the app runs, so this works from the sockets themselves, not from the
    consumers (which are gone by then).
    """
    closed = 0
    for protocol in list(_open):
        is_open = getattr(protocol, "state", None) == getattr(protocol, "STATE_OPEN", object())
        if is_open and _going_away(protocol):
            closed += 1
    return closed


def on_server_shutdown(callback: Callable[[], Awaitable[None]]) -> bool:
    """At daphne's shutdown (SIGTERM, SIGINT): send 1001 on every open socket, then run
    ``callback``. Returns False when no running Twisted reactor is found (another server).
    """
    reactor = sys.modules.get("twisted.internet.reactor")
    if reactor is None or not getattr(reactor, "running", False):
        return False
    from twisted.internet import defer

    def before_shutdown() -> Any:
        try:
            count = going_away_all()
        except Exception:
            logger.exception("Closing websockets with 1001 failed")
            count = 0
        logger.info("Closed %d websockets with 1001", count)
        return defer.Deferred.fromFuture(asyncio.ensure_future(callback()))

    reactor.addSystemEventTrigger("before", "shutdown", before_shutdown)
    return True
