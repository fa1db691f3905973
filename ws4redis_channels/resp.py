"""A small RESP2 encoder and incremental parser for the subscriber connection.

The subscriber (:mod:`ws4redis_channels.subscriber`) reads one long-lived
pub/sub connection. Parsing it in a plain :class:`asyncio.Protocol` lets the
bridge see every frame in the order Redis wrote it (subscription
confirmations, messages, PING replies), which is what ordered replay and
reconnection need, and costs a few microseconds per message.

With the ``hiredis`` extra installed, :func:`new_parser` returns its C reader
(the same values, several times faster on bursts); the pure-Python
:class:`Parser` is the fallback, and a property test keeps the two equal.
"""

from __future__ import annotations

from typing import Any, Union

from .exceptions import RedisCommandError

__all__ = ["HiredisParser", "Parser", "ReplyError", "encode_command", "new_parser"]

Value = Union[bytes, int, list["Value"], "ReplyError", None]


class ReplyError(RedisCommandError):
    """An error reply (``-ERR ...``) from Redis, read on the pub/sub connection."""


def encode_command(*args: str | bytes | int) -> bytes:
    """Encode one command as a RESP array of bulk strings."""
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        if isinstance(arg, str):
            data = arg.encode("utf-8")
        elif isinstance(arg, int):
            data = b"%d" % arg
        else:
            data = arg
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


class _Incomplete(Exception):
    pass


class Parser:
    """Turns bytes from the socket into complete RESP2 values."""

    __slots__ = ("_buffer", "_pos")

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._pos = 0

    def feed(self, data: bytes) -> list[Value]:
        """Add ``data`` and return every value that is now complete."""
        buffer = self._buffer
        buffer += data
        values: list[Value] = []
        pos = self._pos
        end = len(buffer)
        try:
            while pos < end:
                value, pos = self._parse(buffer, pos)
                values.append(value)
        except _Incomplete:
            pass
        # Drop what has been consumed; keep a partial value for the next read.
        if pos:
            del buffer[:pos]
        self._pos = 0
        return values

    def _parse(self, buffer: bytearray, pos: int) -> tuple[Value, int]:
        eol = buffer.find(b"\r\n", pos)
        if eol < 0:
            raise _Incomplete
        kind = buffer[pos]
        if kind == 0x24:  # '$' bulk string
            length = int(buffer[pos + 1 : eol])
            if length < 0:
                return None, eol + 2
            start = eol + 2
            stop = start + length
            if stop + 2 > len(buffer):
                raise _Incomplete
            return bytes(buffer[start:stop]), stop + 2
        if kind == 0x2A:  # '*' array
            count = int(buffer[pos + 1 : eol])
            if count < 0:
                return None, eol + 2
            items: list[Value] = []
            pos = eol + 2
            for _ in range(count):
                item, pos = self._parse(buffer, pos)
                items.append(item)
            return items, pos
        if kind == 0x2B:  # '+' simple string
            return bytes(buffer[pos + 1 : eol]), eol + 2
        if kind == 0x3A:  # ':' integer
            return int(buffer[pos + 1 : eol]), eol + 2
        if kind == 0x2D:  # '-' error
            return ReplyError(buffer[pos + 1 : eol].decode("utf-8", "replace")), eol + 2
        raise ValueError(f"unexpected RESP type byte {kind!r} from Redis")


class HiredisParser:
    """:class:`Parser`'s interface over ``hiredis.Reader`` (the ``hiredis`` extra)."""

    __slots__ = ("_error", "_reader")

    def __init__(self) -> None:
        import hiredis

        self._reader: Any = hiredis.Reader(replyError=ReplyError)
        self._error: type[Exception] = hiredis.ProtocolError

    def feed(self, data: bytes) -> list[Value]:
        """Add ``data`` and return every value that is now complete."""
        reader = self._reader
        try:
            reader.feed(data)
            values: list[Value] = []
            while (value := reader.gets()) is not False:
                values.append(value)
        except self._error as exc:
            raise ValueError(f"unreadable data from Redis: {exc}") from exc
        return values


def new_parser() -> Parser | HiredisParser:
    """Return hiredis's reader if it is installed, else the pure-Python parser."""
    try:
        return HiredisParser()
    except ImportError:
        return Parser()
