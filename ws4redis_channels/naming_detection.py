"""Tell from the names in a Redis which channel naming (and prefix) a deployment uses.

A project moving from django-websocket-redis must set ``WS4REDIS_NAMING``
and ``WS4REDIS_PREFIX`` to what its publishers (other services, scripts,
the old version still running) use. Those names are visible in Redis: the
stored messages are keys named after their channels, and the channels that
sockets listen on are listed by ``PUBSUB CHANNELS``. :func:`classify` reads one
name; :func:`inspect` scans a Redis (``SCAN``, bounded) and :class:`Findings`
says what it found. Only names with an unmistakable mark count:
``broadcast:<f>``, ``user:<u>:<f>``, ``group:<g>:<f>``, ``session:<key>:<f>``
(typed, django-websocket-redis 0.3 to 0.6) and ``_broadcast_:<f>``,
``_group_:<g>:<f>`` (classic, 0.2.x and the original usage document). Classic
user and session names (``john:foobar``) look like any other key and are
not counted.
"""

from __future__ import annotations

import collections
import re
from dataclasses import dataclass, field
from typing import Any

from .names import BROADCAST_MARK, GROUP_MARK, Naming

__all__ = ["Findings", "Mark", "classify", "inspect"]

_SESSION_KEY_RE = re.compile(r"[a-z0-9]{32}")
_EXAMPLES = 3


@dataclass(frozen=True)
class Mark:
    """What one Redis name says: its naming, its prefix, the audience it stands for."""

    naming: Naming
    prefix: str
    audience: str


def classify(name: str) -> Mark | None:
    """Return the :class:`Mark` of a ws4redis channel or key name, or None if it is not one."""
    parts = name.split(":")
    if len(parts) < 2 or not parts[-1]:
        return None
    # The facility is the last segment; the mark sits one or two segments before it.
    last = len(parts) - 1
    head2 = parts[last - 1]
    prefix2 = ":".join(parts[: last - 1])
    if head2 == "broadcast":
        return Mark(Naming.TYPED, prefix2, "broadcast")
    if head2 == BROADCAST_MARK:
        return Mark(Naming.CLASSIC, prefix2, "broadcast")
    if len(parts) >= 3 and parts[last - 1]:
        head3 = parts[last - 2]
        prefix3 = ":".join(parts[: last - 2])
        identity = parts[last - 1]
        if head3 == GROUP_MARK:
            return Mark(Naming.CLASSIC, prefix3, "group")
        if head3 in ("user", "group"):
            return Mark(Naming.TYPED, prefix3, head3)
        if head3 == "session" and _SESSION_KEY_RE.fullmatch(identity):
            return Mark(Naming.TYPED, prefix3, "session")
    return None


@dataclass
class Findings:
    """What a scan of one Redis found: counts per (naming, prefix) and a few examples."""

    keys_scanned: int = 0
    channels_seen: int = 0
    complete: bool = True
    counts: collections.Counter[tuple[Naming, str]] = field(default_factory=collections.Counter)
    examples: dict[tuple[Naming, str], list[str]] = field(default_factory=dict)

    def add(self, name: str) -> None:
        mark = classify(name)
        if mark is None:
            return
        key = (mark.naming, mark.prefix)
        self.counts[key] += 1
        examples = self.examples.setdefault(key, [])
        if len(examples) < _EXAMPLES and name not in examples:
            examples.append(name)

    def namings(self) -> set[Naming]:
        """The namings found, whatever their prefix."""
        return {naming for naming, _ in self.counts}

    def prefixes(self, naming: Naming) -> list[str]:
        """The prefixes seen with ``naming``, the most frequent first."""
        found = [(n, p) for (naming_, p), n in self.counts.items() if naming_ is naming]
        return [p for _, p in sorted(found, key=lambda item: (-item[0], item[1]))]

    def verdict(self) -> tuple[Naming, str] | None:
        """The (naming, prefix) seen most, or None when nothing ws4redis-like was found."""
        if not self.counts:
            return None
        return max(self.counts.items(), key=lambda item: (item[1], item[0][1] == ""))[0]

    def matches(self, naming: Naming, prefix: str) -> bool:
        """Whether every name found follows ``naming`` with ``prefix`` (True if none was found)."""
        return all(key == (naming, prefix) for key in self.counts)


def _decode(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def inspect(client: Any, *, limit: int = 100_000, batch: int = 1000) -> Findings:
    """Scan up to ``limit`` keys of ``client`` (a redis-py client) and its subscribed channels."""
    findings = Findings()
    cursor: Any = 0
    while True:
        cursor, keys = client.scan(cursor=cursor, count=min(batch, limit))
        for key in keys:
            findings.keys_scanned += 1
            findings.add(_decode(key))
        if int(cursor) == 0:
            break
        if findings.keys_scanned >= limit:
            findings.complete = False
            break
    for channel in client.pubsub_channels():
        findings.channels_seen += 1
        findings.add(_decode(channel))
    return findings
