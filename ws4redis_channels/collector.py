"""The garbage collector during a surge of handshakes.

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

While at least :data:`SURGE` handshakes of the process are in progress,
:data:`surge` raises the collector's first threshold to
``WS4REDIS_GC_THRESHOLD``, unless the process already uses a higher one or
has turned automatic collection off; when no more than :data:`CALM` are left
it puts the process's own threshold back. The other two thresholds stay, so
cyclic garbage is still collected, in fewer and larger passes, and between
surges the collector runs as the process set it: a threshold kept high for
good let a process grow by a third over 10,000 connect cycles.
"""

from __future__ import annotations

import gc
import logging

__all__ = ["CALM", "SETTLE_AFTER", "SURGE", "surge"]

logger = logging.getLogger(__name__)

#: Handshakes in progress at once that make a surge.
SURGE = 50
#: Handshakes still in progress when a surge is over.
CALM = 5
#: Seconds after daphne's start when the surge it starts in ends, if no storm came.
SETTLE_AFTER = 60.0


class Surge:
    """Counts the handshakes in progress; raises the threshold while they are many."""

    def __init__(self) -> None:
        self.handshakes = 0
        self.surging = False
        self.peak = 0
        self._saved: tuple[int, ...] | None = None
        self._raised = 0

    def started(self) -> None:
        self.handshakes += 1
        if self.surging:
            self.peak = max(self.peak, self.handshakes)
        elif self.handshakes >= SURGE:
            self.surging, self.peak = True, self.handshakes
            self._raise(f"{self.handshakes} websocket handshakes in progress")

    def prime(self) -> None:
        """At the server's start, before its first connection: surge until the first calm.

        A restart is when every browser of the process comes back at once, and
        daphne builds thousands of connections before the first handshake
        reaches the app: with Python's threshold, full collections came every
        few hundred of them while the first hundred handshakes waited.
        """
        if not self.surging:
            self.surging, self.peak = True, self.handshakes
            self._raise("daphne starts: a restart is when every browser comes back")

    def settle(self) -> None:
        """A while after the start: end the surge :meth:`prime` began if no storm came
        (a process that serves no websocket keeps Python's threshold)."""
        if self.surging and self.handshakes <= CALM:
            self.surging = False
            self._restore()

    def ended(self) -> None:
        self.handshakes -= 1
        if self.surging and self.handshakes <= CALM:
            self.surging = False
            self._restore()

    def _raise(self, why: str) -> None:
        from .conf import conf

        threshold = conf.WS4REDIS_GC_THRESHOLD
        current = gc.get_threshold()
        # 0: the process turned automatic collection off; higher: its own choice.
        if not threshold or current[0] == 0 or current[0] >= threshold:
            return
        self._saved, self._raised = current, threshold
        gc.set_threshold(threshold, *current[1:])
        logger.info(
            "%s: the garbage collector's first threshold is %d instead of %d until "
            "they are done (WS4REDIS_GC_THRESHOLD)",
            why,
            threshold,
            current[0],
        )

    def _restore(self) -> None:
        saved, self._saved = self._saved, None
        if saved is None:
            return
        if gc.get_threshold()[0] == self._raised:  # unless someone changed it meanwhile
            gc.set_threshold(*saved)
        logger.info(
            "The surge of websocket handshakes is over (at most %d at once): "
            "the garbage collector's first threshold is %d again",
            self.peak,
            gc.get_threshold()[0],
        )


#: The process's count of handshakes in progress.
surge = Surge()
