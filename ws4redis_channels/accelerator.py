"""The only module that touches daphne, autobahn, Twisted and channels internals, behind a probe.

ASGI hides the connection, but a push server gains from a few things daphne
has: writing ready-made frames past ASGI, knowing how many bytes wait unsent
for a socket (ASGI passes no back-pressure), close frames with a code and a
reason, and a hook at shutdown. Each of these is an *acceleration*. The probe
checks once, per process, the versions (:data:`TESTED`) and every attribute
an acceleration relies on, switches each acceleration on or off as a whole,
and logs one line that says which are on and why one is off
(:func:`status` returns the same, for checks and status commands).

Never mute: every use of an internal is guarded. If one raises (a renamed
attribute in an untested release), that acceleration is switched off for the
process with one warning, and the socket at hand carries on through ASGI.
It also holds daphne's answer to a client's close frame until the frames
received before it are handled (:class:`CloseGate`), bounds unfinished
fragmented messages, and pauses reading from a client whose frames must wait.
Under another server nothing here applies and the app works through ASGI.
"""

from __future__ import annotations

import asyncio
import functools
import importlib.metadata
import logging
import sys
import weakref
from collections.abc import Awaitable, Callable
from typing import Any

__all__ = [
    "ACCELERATIONS",
    "TESTED",
    "CloseGate",
    "DaphneSocket",
    "Send",
    "attach",
    "bound_fragmented_messages",
    "close_with_reason",
    "daphne_protocol",
    "enabled",
    "going_away_all",
    "on_server_shutdown",
    "pause_reading",
    "raw_send",
    "reset",
    "status",
]

logger = logging.getLogger(__name__)

Send = Callable[[dict[str, Any]], Awaitable[None]]

#: What each acceleration does.
ACCELERATIONS: dict[str, str] = {
    "session_unwrap": "skip channels' session wrapper around every websocket.send",
    "direct_writes": "write ready-made frames to plain TCP sockets, one send() per loop pass",
    "buffer_bound": "measure what Twisted holds for a socket (the slow-client bound under daphne)",
    "pong_bound": "count daphne's pongs against the same bound (ping floods)",
    "close_frames": "answer invalid frames with a close frame (1007, 1009), not a dropped TCP",
    "close_reasons": "send the close reason, which daphne drops",
    "handshake_release": "free the handshake's headers once a socket is open (~1.5 KB each)",
    "going_away": "close open sockets with 1001 at shutdown, before daphne drops them",
    "fragment_bound": "join the fragments of an unfinished message into one buffer",
    "pause_reading": "stop reading from a client whose frames must wait (intake)",
    "close_gate": "answer a client's close frame after the frames before it are handled",
}

#: The releases the internals were checked against: [lowest, first untested major).
TESTED: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {
    "daphne": ((4, 1), (5,)),
    "autobahn": ((22, 4), (27,)),
    "twisted": ((22, 10), (27,)),
    "channels": ((4, 2), (5,)),
}

# Attributes each acceleration reads on daphne's protocol and Twisted's transport.
_PROTOCOL_NEEDS: dict[str, tuple[str, ...]] = {
    "direct_writes": (
        "state",
        "STATE_OPEN",
        "send_state",
        "SEND_STATE_GROUND",
        "_perMessageCompress",
    ),
    "pong_bound": ("onPing", "sendPong"),
    "close_frames": ("failByDrop",),
    "close_reasons": ("sendClose", "state", "STATE_OPEN"),
    # http_response_data appears with the response: set below, not read.
    "handshake_release": ("http_headers", "http_request_data"),
    "going_away": ("sendCloseFrame", "state", "STATE_OPEN"),
    "fragment_bound": ("onMessageFrame", "failedByMe"),
    "close_gate": ("onCloseFrame", "application_queue", "state", "STATE_OPEN"),
}
_TRANSPORT_NEEDS: dict[str, tuple[str, ...]] = {
    "pause_reading": ("pauseProducing", "resumeProducing"),
    "direct_writes": (
        "socket",
        "disconnecting",
        "connected",
        "_tempDataLen",
        "dataBuffer",
        "offset",
    ),
    "buffer_bound": ("_tempDataLen", "dataBuffer", "offset"),
    "pong_bound": ("_tempDataLen", "dataBuffer", "offset"),
}

_off: dict[str, str] = {}  # acceleration -> why it is off
_probed = False  # versions and classes
_instances_probed = False  # attributes of the first daphne socket
_logged = False
_open: weakref.WeakSet[Any] = weakref.WeakSet()  # daphne protocols of sockets we serve


def _version(dist: str) -> tuple[str, tuple[int, ...]] | None:
    try:
        text = importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None
    parts: list[int] = []
    for piece in text.split("."):
        digits = "".join(c for c in piece if c.isdigit())
        if not digits:
            break
        parts.append(int(digits))
        if digits != piece:
            break
    return text, tuple(parts)


def _probe_versions() -> None:
    global _probed
    if _probed:
        return
    _probed = True
    for dist, (low, high) in TESTED.items():
        found = _version(dist)
        if found is None:
            why = f"{dist} is not installed"
        elif not low <= found[1] < high:
            low_s, high_s = ".".join(map(str, low)), ".".join(map(str, high))
            why = f"{dist} {found[0]} is outside the tested range >={low_s},<{high_s}"
        else:
            continue
        if dist == "channels":
            names = ["session_unwrap"]
        else:
            names = [n for n in ACCELERATIONS if n != "session_unwrap"]
        for name in names:
            _off.setdefault(name, why)
    try:
        from channels.sessions import InstanceSessionWrapper

        # real_send is set per instance: look for it in the code that sets it.
        if "real_send" not in InstanceSessionWrapper.__init__.__code__.co_names:
            _off.setdefault("session_unwrap", "channels' InstanceSessionWrapper has no real_send")
        elif not callable(getattr(InstanceSessionWrapper, "send", None)):
            _off.setdefault("session_unwrap", "channels' InstanceSessionWrapper has no send()")
    except Exception as exc:  # pragma: no cover - channels is a dependency
        _off.setdefault("session_unwrap", f"channels.sessions.InstanceSessionWrapper: {exc!r}")


def _probe_instance(protocol: Any) -> None:
    """Check, on the first daphne socket, every attribute the accelerations read."""
    global _instances_probed
    if _instances_probed:
        return
    _instances_probed = True
    transport = getattr(protocol, "transport", None)
    for name, attrs in _PROTOCOL_NEEDS.items():
        missing = [a for a in attrs if not hasattr(protocol, a)]
        if missing:
            _off.setdefault(name, f"daphne's protocol has no {', '.join(missing)}")
    for name, attrs in _TRANSPORT_NEEDS.items():
        if transport is None or getattr(transport, "TLS", False) or not hasattr(transport, "write"):
            continue  # TLS: decided per socket (see DaphneSocket), not for the process
        missing = [a for a in attrs if not hasattr(transport, a)]
        if missing:
            _off.setdefault(name, f"Twisted's transport has no {', '.join(missing)}")
    if "socket" not in _off.get("direct_writes", "") and transport is not None:
        sock = getattr(transport, "socket", None)
        if sock is not None and not callable(getattr(sock, "send", None)):
            _off.setdefault("direct_writes", "Twisted's transport.socket has no send()")
    _log_status()


def _log_status() -> None:
    global _logged
    if _logged:
        return
    _logged = True
    on = [n for n in ACCELERATIONS if n not in _off]
    if not _off:
        logger.info("ws4redis accelerations under daphne: all on (%s)", ", ".join(on))
        return
    logger.warning(
        "ws4redis accelerations under daphne: on: %s; off: %s",
        ", ".join(on) or "none",
        "; ".join(f"{n} ({why})" for n, why in _off.items()),
    )


def enabled(name: str) -> bool:
    """Return whether acceleration ``name`` is on (after the probe)."""
    _probe_versions()
    return name not in _off


def disable(name: str, exc: BaseException) -> None:
    """Switch ``name`` off for the process after an internal raised; warn once."""
    if name in _off:
        return
    _off[name] = f"{type(exc).__name__}: {exc}"
    logger.warning(
        "ws4redis acceleration %s is off from now on (%s: %s); sockets use ASGI instead",
        name,
        type(exc).__name__,
        exc,
    )


def status() -> dict[str, dict[str, Any]]:
    """Return, per acceleration, whether it is on, why not, and what it does.

    Before the first daphne socket only versions are checked (``probed`` False).
    """
    _probe_versions()
    return {
        name: {
            "on": name not in _off,
            "reason": _off.get(name, ""),
            "what": what,
            "probed": _instances_probed,
        }
        for name, what in ACCELERATIONS.items()
    }


def reset() -> None:
    """Forget the probe (tests)."""
    global _probed, _instances_probed, _logged
    _off.clear()
    _probed = _instances_probed = _logged = False


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


class DaphneSocket:
    """The daphne connection behind one socket's ASGI ``send``, used only where the probe
    allows; every method returns a value meaning "not done, use ASGI" instead of raising."""

    __slots__ = ("__weakref__", "_send", "direct", "measured", "protocol", "transport")

    protocol: Any
    transport: Any

    def __init__(self, protocol: Any) -> None:
        self.protocol = protocol
        transport = self.transport = getattr(protocol, "transport", None)
        plain = transport is not None and not getattr(transport, "TLS", False)
        if transport is not None and not plain:
            _warn_tls()
        self.measured = plain and enabled("buffer_bound")
        self.direct = plain and enabled("direct_writes")
        self._send: Callable[[bytes], int] | None = None
        if self.direct:
            try:
                self._send = self.transport.socket.send
            except Exception as exc:
                disable("direct_writes", exc)
                self.direct = False

    # -- direct writes

    def write(self, frame: bytes) -> bool:
        """Write ``frame`` past ASGI; False if this socket cannot now (then use ASGI)."""
        if not self.direct:
            return False
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

    def queued(self) -> int:
        """Return the bytes Twisted holds for the socket that the kernel has not taken (0 if
        not measured)."""
        if not self.measured:
            return 0
        try:
            t = self.transport
            return len(t.dataBuffer) - t.offset + t._tempDataLen  # type: ignore[no-any-return]
        except Exception as exc:
            disable("buffer_bound", exc)
            self.measured = False
            return 0

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
        if not (self.measured and enabled("pong_bound")):
            return
        try:
            answer = self.protocol.onPing

            def on_ping(payload: bytes) -> None:
                answer(payload)
                check()

            self.protocol.onPing = on_ping
        except Exception as exc:
            disable("pong_bound", exc)

    def opened(self) -> None:
        """The socket is open: remember it for shutdown; drop what the handshake kept."""
        _open.add(self.protocol)
        if not enabled("handshake_release"):
            return
        protocol = self.protocol
        try:
            if protocol.state != protocol.STATE_OPEN:
                return
            headers = protocol.http_headers
            if isinstance(headers, dict):
                headers.clear()  # also referenced by daphne's ConnectionRequest
            protocol.http_request_data = None
            protocol.http_response_data = None
        except Exception as exc:
            disable("handshake_release", exc)

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


_tls_warned = False


def _warn_tls() -> None:
    global _tls_warned
    if not _tls_warned:
        _tls_warned = True
        logger.warning(
            "daphne terminates TLS here: what Twisted holds for a TLS socket cannot be "
            "measured, so WS4REDIS_MAX_BUFFER_SIZE does not bound a client that stops "
            "reading, and frames go through ASGI; terminate TLS in a proxy in front of "
            "daphne (nginx, HAProxy) to keep both"
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
    _probe_instance(protocol)
    return DaphneSocket(protocol)


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
    if protocol is None or not enabled("fragment_bound"):
        return False
    if not callable(getattr(protocol, "onMessageFrame", None)):
        return False
    if not hasattr(protocol, "failedByMe"):
        disable("fragment_bound", AttributeError("daphne's protocol has no failedByMe"))
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
    if not enabled("pause_reading"):
        return None
    transport = getattr(protocol, "transport", None)
    pause = getattr(transport, "pauseProducing", None)
    resume = getattr(transport, "resumeProducing", None)
    if not callable(pause) or not callable(resume):
        return None
    pause()
    return resume  # type: ignore[no-any-return]


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
        if protocol is None or not enabled("close_gate") or "onCloseFrame" in vars(protocol):
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
