"""Redis Cluster's key space: which slot a channel hashes to, and which primary owns it.

Sharded pub/sub (``SSUBSCRIBE``/``SPUBLISH``) delivers a message only on the
shard that owns the channel's slot, so a subscriber must talk to the right
primary. :func:`key_slot` is Redis's own CRC16 hashing, hash tags included
(``{_broadcast_:foo}:history`` hashes like ``_broadcast_:foo``);
:class:`SlotMap` turns a ``CLUSTER SLOTS`` reply into a lookup table.

Pure functions and data, no I/O: the connections live elsewhere.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["SLOTS", "Node", "SlotMap", "key_slot"]

SLOTS = 16384

Node = tuple[str, int]


def _crc16_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
        table.append(crc & 0xFFFF)
    return table


_TABLE = _crc16_table()


def _crc16(data: bytes) -> int:
    # CRC16-XMODEM, as in the Redis Cluster specification.
    crc = 0
    table = _TABLE
    for byte in data:
        crc = ((crc << 8) & 0xFF00) ^ table[((crc >> 8) ^ byte) & 0xFF]
    return crc


def key_slot(key: bytes | str) -> int:
    """Return the cluster slot (0-16383) of ``key``, honouring ``{hash tags}``."""
    if isinstance(key, str):
        key = key.encode("utf-8")
    start = key.find(b"{")
    if start >= 0:
        end = key.find(b"}", start + 1)
        if end > start + 1:
            key = key[start + 1 : end]
    return _crc16(key) % SLOTS


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


@dataclass(frozen=True)
class SlotMap:
    """Which primary serves each slot, from a ``CLUSTER SLOTS`` reply."""

    # Sorted, non-overlapping (first slot, last slot, primary) ranges.
    ranges: tuple[tuple[int, int, Node], ...] = ()
    _starts: tuple[int, ...] = field(default=(), repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_starts", tuple(start for start, _, _ in self.ranges))

    @classmethod
    def from_ranges(cls, ranges: Iterable[tuple[int, int, Node]]) -> SlotMap:
        return cls(tuple(sorted(ranges)))

    @classmethod
    def from_cluster_slots(cls, reply: Sequence[Any], *, default_host: str = "") -> SlotMap:
        """Parse ``CLUSTER SLOTS``: ``[[first, last, [ip, port, id, ...], replicas...], ...]``.

        An empty or ``?`` ip (a node that does not know its own address)
        means the host the reply came from, ``default_host``.
        """
        ranges = []
        for entry in reply:
            first, last, primary = int(entry[0]), int(entry[1]), entry[2]
            host = _text(primary[0]) if primary[0] else ""
            if host in ("", "?"):
                host = default_host
            ranges.append((first, last, (host, int(primary[1]))))
        return cls.from_ranges(ranges)

    def node_for_slot(self, slot: int) -> Node | None:
        """Return the primary of ``slot``, or None if no node serves it."""
        index = bisect.bisect_right(self._starts, slot) - 1
        if index < 0:
            return None
        first, last, node = self.ranges[index]
        return node if first <= slot <= last else None

    def node_for(self, key: bytes | str) -> Node | None:
        """Return the primary that owns ``key``'s slot, or None if no node serves it."""
        return self.node_for_slot(key_slot(key))

    def primaries(self) -> list[Node]:
        """Return every primary that serves at least one slot."""
        return list(dict.fromkeys(node for _, _, node in self.ranges))

    @property
    def complete(self) -> bool:
        """Whether every one of the 16384 slots is served."""
        expected = 0
        for first, last, _ in self.ranges:
            if first != expected:
                return False
            expected = last + 1
        return expected == SLOTS
