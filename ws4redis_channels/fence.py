"""What a publication needs to count as published: replicas that confirm it, and a
master that did not move while it ran.

Redis replicates asynchronously, and after ``SENTINEL FAILOVER`` the old
master takes writes for seconds that its demotion then discards. A
:class:`Fence` is taken before a publication starts; the store appends its
``WAIT`` to the publication's pipeline (same round trip, same connection)
and lets it check the replies, so a publisher never reports success for a
write a failover discards: it gets
:class:`~ws4redis_channels.exceptions.NotReplicated` instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .connection import RedisTarget, current_watcher
from .exceptions import NotReplicated
from .sentinel import SentinelWatcher

__all__ = ["Fence", "fence"]


@dataclass(frozen=True)
class Fence:
    """What a publication needs to count as published: replicas that confirm it, and a
    master that did not move while it ran.

    Taken before the publication starts; :meth:`add_to` appends ``WAIT`` to
    the publication's pipeline (same round trip, same connection) and
    :meth:`check` raises ``NotReplicated`` unless both held.
    """

    replicas: int
    timeout: float
    watcher: SentinelWatcher | None = None
    generation: int = 0

    def holds(self) -> bool:
        """True if Sentinel did not move the master since the fence was taken."""
        return self.watcher is None or self.watcher.generation == self.generation

    def add_to(self, pipe: Any) -> None:
        """Append ``WAIT`` to a pipeline that holds the publication, if replicas must confirm."""
        if self.replicas:
            pipe.execute_command("WAIT", self.replicas, max(int(self.timeout * 1000), 1))

    def check(self, replies: list[Any]) -> list[Any]:
        """Return the publication's replies without ``WAIT``'s; raise if the fence broke."""
        if self.replicas:
            replies, acks = replies[:-1], replies[-1]
            # A demoted master (now a replica) answers WAIT with an error.
            confirmed = acks if isinstance(acks, Exception) else int(acks)
            if isinstance(confirmed, Exception) or confirmed < self.replicas:
                raise NotReplicated(
                    f"{confirmed} of {self.replicas} replica(s) confirmed the publication "
                    f"within {self.timeout}s: it may have reached some sockets, and a "
                    "failover may discard it"
                )
        if not self.holds():
            raise NotReplicated(
                "Sentinel moved the master while this publication ran: it may have reached "
                "some sockets, and the old master may discard it"
            )
        return replies


def fence(target: RedisTarget) -> Fence | None:
    """Return the fence of a publication to ``target``, to take before it starts.

    None when there is nothing to check (no Sentinel, no replicas to wait for).

    With Sentinel, the replicas to wait for are capped by the healthy replicas
    Sentinel sees: after a failover the new master has none until the old one
    rejoins, and it must still take writes (no replica, no promotion that
    could discard them).
    """
    if not target.sentinels:
        return Fence(target.replicas, target.wait_timeout) if target.replicas else None
    found = current_watcher(target)
    generation = found.generation
    master = found.master
    replicas = target.replicas if master is None else min(target.replicas, master.replicas)
    return Fence(replicas, target.wait_timeout, found, generation)
