"""The garbage collector's first threshold in a websocket process.

CPython's cyclic garbage collector runs its youngest generation every 700
new container objects, and every tenth of those runs the next one; every
tenth of *those* may become a full collection, which walks every object the
process holds. A websocket handshake allocates a few thousand objects. When
thousands of browsers reconnect at once (a deploy, a restart, an outage),
the full collections come every few hundred handshakes, each one longer as
the sockets accumulate; daphne drops the handshakes that wait longer than
its ``--websocket_connect_timeout`` meanwhile (5 s), after their work began,
and their clients come back and add to the line. In the benchmark's storm,
5,000 sockets needed 91 to 114 s to be back with the default threshold and
5.3 s with 20,000 (``docs/benchmarks.rst``).

:func:`apply` raises the first threshold to ``WS4REDIS_GC_THRESHOLD`` when
the first socket of the process connects, unless the process already uses a
higher one; it never lowers it and leaves the other two thresholds alone,
so cyclic garbage is still collected, in fewer, larger passes. ``None``
leaves the collector as it is.
"""

from __future__ import annotations

import gc
import logging

__all__ = ["apply"]

logger = logging.getLogger(__name__)


def apply(threshold: int | None) -> bool:
    """Raise the collector's first threshold to ``threshold``; True if it changed."""
    if not threshold:
        return False
    first, *others = gc.get_threshold()
    if first == 0 or first >= threshold:
        # 0: the process turned automatic collection off; higher: its own choice.
        return False
    gc.set_threshold(threshold, *others)
    logger.info(
        "Raised the garbage collector's first threshold from %d to %d for the "
        "websocket handshakes (WS4REDIS_GC_THRESHOLD)",
        first,
        threshold,
    )
    return True
