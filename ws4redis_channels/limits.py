"""Publish limits per identity: frames, bytes and stored channels, across connections.

A client that reconnects, or opens many sockets, is still one publisher: the
limits are kept per *identity* (the user, else the session, else the client
address, see :func:`identity_key`) in one table per process, not per socket.
Each identity has two token buckets (frames and bytes) that refill at a steady
rate up to a burst, and the set of channels it stored a message on within the
storage window. A new identity starts with full buckets; one that comes back
finds them as it left them (refilled only by the time that passed), so a
reconnect loop gets no fresh burst.

The table is bounded (:data:`MAX_IDENTITIES`); when it is full, the identity
unused for the longest time is forgotten, which can only give *it* a fresh
burst. Nothing here does I/O: the limits hold per process, so ``N`` processes
that one identity reaches allow it ``N`` times the rates.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "MAX_IDENTITIES",
    "IdentityLimits",
    "PublishLimits",
    "identity_key",
    "process_limits",
]

#: Identities remembered per process (about 200 bytes each, plus their stored channels).
MAX_IDENTITIES = 50_000


@dataclass(frozen=True)
class PublishLimits:
    """The limits of one publish: rates per second (0: unlimited), bursts, storage bound."""

    frame_rate: float
    frame_burst: int
    byte_rate: float
    byte_burst: int
    max_stored_channels: int = 0  # 0: unlimited
    store_window: float = 0.0  # seconds a stored message is kept (WS4REDIS_EXPIRE)


def identity_key(user: str | None, session: str | None, client: object) -> str:
    """Return the key publishing is limited by: the user, else the session, else the address.

    ``client`` is the ASGI scope's ``client`` (host, port), which the server
    fills in from ``X-Forwarded-For`` only when told to trust it (daphne's
    ``--proxy-headers``, uvicorn's ``--proxy-headers``/``--forwarded-allow-ips``).
    The port is left out: every connection from one address is one client.
    """
    if user is not None:
        return f"user:{user}"
    if session is not None:
        return f"session:{session}"
    host = None
    if isinstance(client, (list, tuple)) and client:
        host = client[0]
    return f"address:{host if host else 'unknown'}"


class _Entry:
    __slots__ = ("byte_tokens", "frame_tokens", "stamp", "stored")

    def __init__(self, limits: PublishLimits, now: float) -> None:
        self.frame_tokens = float(limits.frame_burst)
        self.byte_tokens = float(limits.byte_burst)
        self.stamp = now
        # channel -> when its stored message expires (at the latest)
        self.stored: dict[str, float] = {}


class IdentityLimits:
    """The buckets of every publishing identity of a process (see the module docstring)."""

    def __init__(self, max_identities: int = MAX_IDENTITIES) -> None:
        self.max_identities = max_identities
        self._entries: collections.OrderedDict[str, _Entry] = collections.OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        self._entries.clear()

    def check(
        self,
        identity: str,
        size: int,
        limits: PublishLimits,
        stored_channels: Sequence[str] = (),
        now: float | None = None,
    ) -> str | None:
        """Take one frame of ``size`` bytes from ``identity``'s buckets.

        Returns None if the frame may be published (and counts it), else what
        was exceeded, in words (and counts nothing). ``stored_channels`` are
        the channels the frame will be stored on.
        """
        if now is None:
            now = time.monotonic()
        entry = self._entry(identity, limits, now)
        elapsed = max(0.0, now - entry.stamp)
        entry.stamp = now
        frames, data = entry.frame_tokens, entry.byte_tokens
        if limits.frame_rate > 0:
            frames = min(float(limits.frame_burst), frames + elapsed * limits.frame_rate)
        if limits.byte_rate > 0:
            data = min(float(limits.byte_burst), data + elapsed * limits.byte_rate)
        entry.frame_tokens, entry.byte_tokens = frames, data
        if limits.frame_rate > 0 and frames < 1.0:
            return (
                f"more than {limits.frame_burst} frames at over {limits.frame_rate:g} frames/s "
                f"from {identity}"
            )
        if limits.byte_rate > 0 and data < size:
            return (
                f"more than {limits.byte_burst} bytes at over {limits.byte_rate:g} bytes/s "
                f"from {identity} (this frame: {size} bytes)"
            )
        refused = self._store(entry, stored_channels, limits, now)
        if refused is not None:
            return f"{refused} from {identity}"
        if limits.frame_rate > 0:
            entry.frame_tokens = frames - 1.0
        if limits.byte_rate > 0:
            entry.byte_tokens = data - size
        return None

    def _entry(self, identity: str, limits: PublishLimits, now: float) -> _Entry:
        entries = self._entries
        entry = entries.get(identity)
        if entry is None:
            entry = entries[identity] = _Entry(limits, now)
            while len(entries) > self.max_identities:
                entries.popitem(last=False)
        else:
            entries.move_to_end(identity)
        return entry

    @staticmethod
    def _store(
        entry: _Entry, channels: Sequence[str], limits: PublishLimits, now: float
    ) -> str | None:
        bound = limits.max_stored_channels
        if not channels or limits.store_window <= 0 or bound <= 0:
            return None
        stored = entry.stored
        new = [channel for channel in channels if channel not in stored]
        if new and len(stored) + len(new) > bound:
            for channel in [c for c, expiry in stored.items() if expiry <= now]:
                del stored[channel]  # its stored message has expired by now
            if len(stored) + len(new) > bound:
                return (
                    f"stored messages on {len(stored)} channels within "
                    f"{limits.store_window:g} s; {len(new)} more would exceed {bound}"
                )
        expiry = now + limits.store_window
        for channel in channels:
            stored[channel] = expiry
        return None


_process_limits = IdentityLimits()


def process_limits() -> IdentityLimits:
    """Return the identity table of this process."""
    return _process_limits
