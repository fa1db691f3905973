"""Positions: what identifies a message in its channel's history, and how clients see it.

A position is ``<epoch>:<offset>``. The offset counts the messages published
through the app on one channel; the epoch names the history they belong to.
A new epoch starts when a channel's history is created (first publish, or
after Redis lost it: restart without persistence, expiry) and when a
promoted replica first writes to a channel the old master wrote, so a
history lost by a restart or failover is detected rather than misread.
Epochs are milliseconds since 1970 and never go down on a channel, so
positions are ordered across epochs too: ``(epoch, offset)``.

The wire format for sockets that opt in with the ``positions`` flag (sockets
without it get the raw payloads, byte for byte):

* every message is one frame ``m <label> <position>\\n<payload>``, text if the
  payload is UTF-8, else binary; ``<position>`` is ``-`` for a message that
  was published with a bare ``PUBLISH``;
* after each (re)join, before any message, one text frame of lines
  ``p <label> <position> <status>``, one per subscribed channel, where
  ``<status>`` is ``recovered`` (everything after the presented position
  follows), ``lost`` (it cannot: reload your state) or ``new`` (no position
  was presented);
* a client resumes with ``since=<label>:<position>`` in the query, once per
  channel.

``<label>`` names the channel for the socket: ``broadcast``, ``user``,
``session`` or ``group:<name>`` (the group name percent-encoded).

Nothing here does I/O.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from typing import NamedTuple
from urllib.parse import quote, unquote

from .names import Audience, Target, companion_key

__all__ = [
    "FLAG",
    "SINCE",
    "Position",
    "Status",
    "channel_label",
    "history_key",
    "ids_key",
    "message_frame",
    "parse_since",
    "position_channel",
    "position_key",
    "state_frame",
    "wants_positions",
]

#: The query flag that opts a socket in.
FLAG = "positions"
#: The query parameter that presents a position: ``since=<label>:<epoch>:<offset>``.
SINCE = "since"
MAX_SINCE = 64  # one per channel; a socket has a handful


class Position(NamedTuple):
    """The place of a message in its channel's history; ordered across epochs."""

    epoch: int
    offset: int

    def __str__(self) -> str:
        return f"{self.epoch}:{self.offset}"

    @classmethod
    def parse(cls, text: str | bytes) -> Position:
        """Return the position written as ``<epoch>:<offset>``; raise ValueError if it is not."""
        if isinstance(text, bytes):
            text = text.decode("ascii")
        epoch, sep, offset = text.partition(":")
        if not sep or not epoch.isdigit() or not offset.isdigit():
            raise ValueError(f"a position is <epoch>:<offset>, got {text!r}")
        return cls(int(epoch), int(offset))


class Status(str, enum.Enum):
    """What a socket learns about each channel after it (re)joins."""

    RECOVERED = "recovered"
    LOST = "lost"
    NEW = "new"


def position_key(channel: str) -> str:
    """The hash of a channel's epoch, offset and stored-message version."""
    return companion_key(channel, "pos")


def history_key(channel: str) -> str:
    """The stream of a channel's last messages, with their offsets as ids."""
    return companion_key(channel, "hist")


def ids_key(channel: str) -> str:
    """The sorted set of recent message ids (idempotent publishing), scored by offset."""
    return companion_key(channel, "ids")


def position_channel(channel: str) -> str:
    """The pub/sub channel on which each message's position precedes the message."""
    return companion_key(channel, "pos")


def channel_label(target: Target) -> str:
    """Return how a socket names one of its channels in frames and ``since``."""
    if target.audience is Audience.GROUP:
        return f"group:{quote(target.identity or '', safe='')}"
    return str(target.audience.value)


def wants_positions(query_string: bytes | str) -> bool:
    """Return True if the query string has the ``positions`` flag."""
    if isinstance(query_string, bytes):
        query_string = query_string.decode("latin-1")
    return any(unquote(part.partition("=")[0]) == FLAG for part in query_string.split("&"))


def parse_since(query_string: bytes | str) -> dict[str, Position]:
    """Return the positions presented with ``since=<label>:<epoch>:<offset>``, by label.

    Raises ValueError with what is wrong for a malformed value.
    """
    if isinstance(query_string, bytes):
        query_string = query_string.decode("latin-1")
    result: dict[str, Position] = {}
    for part in query_string.split("&"):
        name, _, value = part.partition("=")
        if unquote(name) != SINCE:
            continue
        if len(result) >= MAX_SINCE:
            raise ValueError(f"more than {MAX_SINCE} since= positions")
        text = unquote(value.replace("+", " "))
        label, sep, rest = text.rpartition(":")
        label, sep2, epoch = label.rpartition(":")
        if not sep or not sep2 or not label:
            raise ValueError(f"since must be <label>:<epoch>:<offset>, got {text!r}")
        result[label] = Position.parse(f"{epoch}:{rest}")
    return result


def message_frame(label: str, position: Position | None, payload: bytes) -> bytes:
    """Return the payload of a message for a socket with positions."""
    where = str(position) if position is not None else "-"
    return f"m {label} {where}\n".encode("ascii") + payload


def state_frame(entries: Sequence[tuple[str, Position | None, Status]]) -> str:
    """Return the frame that tells a socket where each of its channels stands."""
    return "\n".join(
        f"p {label} {position if position is not None else '-'} {status.value}"
        for label, position, status in entries
    )
