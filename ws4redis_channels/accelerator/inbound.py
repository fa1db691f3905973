"""What comes in from daphne's clients: fragments bounded, reading paused, a close frame held
until the frames before it are handled."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .daphne import Send, daphne_protocol, raw_send
from .probe import disable, enabled

__all__ = ["CloseGate", "bound_fragmented_messages", "pause_reading"]


def _join_fragments(self: Any, payload: list[bytes]) -> None:
    # autobahn's onMessageFrame, with the message kept as one bytearray.
    if self.failedByMe:
        return
    data = self.message_data
    if not data:
        data.append(bytearray())
    buffer = data[-1]
    for chunk in payload:
        buffer += chunk


def bound_fragmented_messages(protocol: Any) -> bool:
    """Keep a fragmented message being received in one buffer instead of one object per frame.

    autobahn keeps every fragment of an unfinished message as a bytes object
    of its own (about 40 bytes each), so a client sending 1-byte continuation
    frames of a message it never finishes costs ~5 MiB of memory per MB sent,
    up to ~40 MiB per socket under daphne's 1 MiB message limit. Joined into
    one ``bytearray`` as they arrive (``onMessageEnd`` joins the list into
    bytes as before), fragments cost what their payload is, at most
    ``--websocket-max-message-size`` per socket. The class of daphne's
    protocol is changed once, so a socket costs nothing more. Returns False
    (and changes nothing) unless the class uses autobahn's own
    ``onMessageFrame``, the one this was written for.
    """
    if protocol is None or not enabled("fragment_bound"):
        return False
    cls = type(protocol)
    # Also through a subclass made later (the shared-options class, options.py).
    if getattr(cls, "onMessageFrame", None) is _join_fragments:
        return True
    try:
        from autobahn.websocket.protocol import WebSocketProtocol
    except ImportError as exc:  # pragma: no cover - daphne depends on autobahn
        disable("fragment_bound", exc)
        return False
    if getattr(cls, "onMessageFrame", None) is not WebSocketProtocol.onMessageFrame:
        disable("fragment_bound", TypeError(f"{cls.__name__} overrides onMessageFrame"))
        return False
    if not hasattr(protocol, "failedByMe"):
        disable("fragment_bound", AttributeError("daphne's protocol has no failedByMe"))
        return False
    cls.onMessageFrame = _join_fragments
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
