"""What one fan-out sends: ASGI ``websocket.send`` messages and, when needed, their frames.

A message read from Redis becomes one :class:`Outbound` shared by every
socket of the fan-out, and a run of messages one :class:`Batch`. Sockets
that go through ASGI only read the message; sockets on the fast path (see
:mod:`ws4redis_channels.accelerator`) need the websocket frame, which is
encoded once, on first use, for all of them.
"""

from __future__ import annotations

import struct
from typing import Any

__all__ = ["Batch", "Outbound", "encode_frame", "make_message"]


def encode_frame(message: dict[str, Any]) -> bytes:
    """Return the server-to-client websocket frame of an ASGI ``websocket.send`` message.

    Server frames are not masked, so one encoding serves every socket.
    """
    text = message.get("text")
    payload: bytes
    if text is not None:
        opcode, payload = 0x81, text.encode("utf-8")
    else:
        opcode, payload = 0x82, bytes(message.get("bytes") or b"")
    length = len(payload)
    if length < 126:
        header = struct.pack("!BB", opcode, length)
    elif length < 65536:
        header = struct.pack("!BBH", opcode, 126, length)
    else:
        header = struct.pack("!BBQ", opcode, 127, length)
    return header + payload


class Outbound(dict):  # type: ignore[type-arg]
    """An ASGI ``websocket.send`` message shared by every socket of one fan-out.

    Its websocket frame is encoded on first use and then shared too, and so is
    the server's own form of it (``prepared``: autobahn's prepared message,
    made by the accelerator).
    """

    __slots__ = ("_frame", "prepared")

    def __init__(self, message: dict[str, Any]) -> None:
        super().__init__(message)
        self._frame: bytes | None = None
        self.prepared: Any = None

    @property
    def frame(self) -> bytes:
        frame = self._frame
        if frame is None:
            frame = self._frame = encode_frame(self)
        return frame


class Batch:
    """The messages of one fan-out, in order, shared by every socket that gets them.

    Their frames, joined, are computed once for all of those sockets.
    """

    __slots__ = ("_data", "messages")

    def __init__(self, messages: list[Outbound]) -> None:
        self.messages = messages
        self._data: bytes | None = None

    @property
    def data(self) -> bytes:
        data = self._data
        if data is None:
            messages = self.messages
            if len(messages) == 1:
                data = messages[0].frame
            else:
                data = b"".join([message.frame for message in messages])
            self._data = data
        return data


def make_message(payload: bytes) -> Outbound:
    """Return the ASGI message for a payload: text if it is UTF-8, else bytes."""
    try:
        return Outbound({"type": "websocket.send", "text": payload.decode("utf-8")})
    except UnicodeDecodeError:
        return Outbound({"type": "websocket.send", "bytes": payload})
