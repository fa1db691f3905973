"""The bound on handshakes in progress, and the listen queue that holds the rest (``accept_bound``).

daphne rejects (HTTP 403) a websocket handshake that its application has not
accepted ``--websocket_connect_timeout`` after the request came in (5 s by
default), after the work on it was done. When more browsers reconnect at
once than a process serves in that time (a deploy, a restart, an outage), a
server that takes every connection on at once makes each handshake wait for
all the others: none finishes in time, every client comes back, and the line
never gets shorter. In the benchmark's storm, 5,000 sockets on one process of
a slow machine were all back only after 120 s.

So while :data:`WS4REDIS_MAX_HANDSHAKES <ws4redis_channels.conf>` handshakes
of the process are in progress, :class:`AcceptGate` takes daphne's listening
ports off the reactor (``IReactorFDSet.removeReader``, a public Twisted API):
the connections that arrive meanwhile wait in the kernel's listen queue,
which is not daphne's clock, and are accepted once half of the handshakes are
done. A handshake then waits for at most the bound's others, the process works
at full speed, and nothing it does is thrown away. The listen queue is the
waiting room, so at daphne's start the queue of each TCP port shorter than
``WS4REDIS_LISTEN_BACKLOG`` is lengthened (``listen()`` again on the
listening socket: Twisted's default is 50).

Never deaf: a port is paused only while handshakes are in progress, and if
none of them ends for :data:`STUCK` seconds (a count that went wrong), the
ports are given back and the acceleration is off for the process.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections.abc import Callable
from typing import Any

from .options import share_factory_options
from .probe import disable, enabled

__all__ = ["STUCK", "AcceptGate", "accept_gate", "at_server_start"]

logger = logging.getLogger("ws4redis_channels.accelerator")

#: Seconds without a handshake ending, while paused, before the ports are given back
#: for good (plus twice ``WS4REDIS_CONNECT_TIMEOUT``, the longest a handshake waits on Redis).
STUCK = 30.0
#: Seconds between the log lines that say the ports were paused.
LOG_EVERY = 10.0

# What the gate uses of Twisted's listening port besides the reactor's public API.
_PORT_NEEDS = ("socket", "backlog", "numberAccepts", "connected")


def _reactor() -> Any:
    return sys.modules.get("twisted.internet.reactor")


def _port_class() -> type | None:
    module = sys.modules.get("twisted.internet.tcp")
    return getattr(module, "Port", None)


def _somaxconn() -> int | None:
    try:
        with open("/proc/sys/net/core/somaxconn") as f:
            return int(f.read())
    except (OSError, ValueError):
        return None


class AcceptGate:
    """Counts the handshakes in progress; keeps daphne from accepting while they are many."""

    def __init__(self) -> None:
        self._clear()

    def _clear(self) -> None:
        self.in_progress = 0
        self.paused = False
        self.pauses = 0  # since the process started (metrics)
        self._ports: dict[int, Any] = {}
        self._resume_at = 0
        self._last_end = 0.0
        self._logged_at = float("-inf")
        self._peak = 0

    # -- the ports -------------------------------------------------------------

    def adopt(self, port: Any) -> None:
        """Know ``port`` (Twisted's listening port); lengthen its listen queue if it is short."""
        if id(port) in self._ports:
            return
        missing = [a for a in _PORT_NEEDS if not hasattr(port, a)]
        if missing:
            raise AttributeError(f"Twisted's listening port has no {', '.join(missing)}")
        self._ports[id(port)] = port
        _share_options(port)
        from ..conf import conf

        want, have = conf.WS4REDIS_LISTEN_BACKLOG, port.backlog
        if want and isinstance(have, int) and have < want:
            port.socket.listen(want)
            port.backlog = want
            cap = _somaxconn()
            logger.info(
                "Listen queue of %s: %d connections instead of %d (WS4REDIS_LISTEN_BACKLOG)%s",
                _where(port),
                want,
                have,
                f"; the kernel caps it at net.core.somaxconn = {cap}"
                if cap is not None and cap < want
                else "",
            )

    def adopt_all(self) -> int:
        """Adopt every TCP port the reactor reads from (daphne's endpoints); return how many."""
        reactor, cls = _reactor(), _port_class()
        if reactor is None or cls is None or not enabled("accept_bound"):
            return 0
        try:
            ports = [r for r in reactor.getReaders() if isinstance(r, cls)]
            for port in ports:
                self.adopt(port)
        except Exception as exc:
            self._fail(exc)
            return 0
        return len(ports)

    def _learn(self, protocol: Any) -> None:
        # The server a connection came from: Twisted's TCP connection keeps its port.
        # Under TLS the transport is Twisted's wrapper, which forwards the attribute.
        port = getattr(getattr(protocol, "transport", None), "server", None)
        cls = _port_class()
        if port is not None and cls is not None and isinstance(port, cls):
            self.adopt(port)

    # -- the count -------------------------------------------------------------

    def started(self, protocol: Any) -> None:
        """A handshake began; ``protocol`` is daphne's (None under another server)."""
        self.in_progress += 1
        if protocol is None or self.paused or not enabled("accept_bound"):
            return
        try:
            if not self._ports:
                self._learn(protocol)
            from ..conf import conf

            bound = conf.WS4REDIS_MAX_HANDSHAKES
            if bound and self.in_progress >= bound:
                self._pause(bound)
        except Exception as exc:
            self._fail(exc)

    def ended(self) -> None:
        """A handshake ended (accepted, refused, or its socket gone)."""
        self.in_progress -= 1
        if self.paused:
            self._last_end = time.monotonic()
            if self.in_progress <= self._resume_at:
                try:
                    self._resume()
                except Exception as exc:
                    self._fail(exc)

    # -- pausing ---------------------------------------------------------------

    def _pause(self, bound: int) -> None:
        reactor = _reactor()
        if reactor is None or not self._ports:
            return
        for port in self._ports.values():
            if port.connected:
                reactor.removeReader(port)
                # Twisted grows its accepts per wake-up by 20 while they come in
                # full: at most the bound's worth when accepting again.
                port.numberAccepts = max(1, min(port.numberAccepts, bound))
        self.paused = True
        self.pauses += 1
        from ..metrics import recorder

        recorder().accept_paused()
        self._resume_at = bound // 2
        self._peak = max(self._peak, self.in_progress)
        now = self._last_end = time.monotonic()
        if now - self._logged_at >= LOG_EVERY:
            self._logged_at = now
            logger.info(
                "%d websocket handshakes in progress: not accepting connections until %d "
                "are left (WS4REDIS_MAX_HANDSHAKES = %d; %d pauses so far); the others "
                "wait in the listen queue",
                self.in_progress,
                self._resume_at,
                bound,
                self.pauses,
            )
        self._watch()

    def _resume(self) -> None:
        self.paused = False
        reactor = _reactor()
        if reactor is None:
            return
        for port in self._ports.values():
            # A port daphne stopped listening on (shutdown) stays stopped.
            if port.connected and not getattr(port, "disconnecting", False):
                reactor.addReader(port)

    def _watch(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        loop.call_later(1.0, self._check_stuck)

    def _check_stuck(self) -> None:
        if not self.paused:
            return
        from ..conf import conf

        stuck = STUCK + 2 * conf.WS4REDIS_CONNECT_TIMEOUT
        if time.monotonic() - self._last_end < stuck:
            self._watch()
            return
        self._fail(
            RuntimeError(
                f"no handshake ended in {stuck:.0f} s while {self.in_progress} were in progress"
            )
        )

    def _fail(self, exc: BaseException) -> None:
        disable("accept_bound", exc)
        if self.paused:
            try:
                self._resume()
            except Exception:
                logger.exception("Accepting connections again failed")

    def reset(self) -> None:
        """Forget the ports and the count (tests)."""
        if self.paused:
            try:
                self._resume()
            except Exception:
                pass
        self._clear()


def _share_options(port: Any) -> None:
    # daphne's HTTP factory leads to its websocket factory: the sockets of a storm
    # that arrive before the first one opens get the shared options too.
    if not enabled("handshake_release"):
        return
    server = getattr(getattr(port, "factory", None), "server", None)
    factory = getattr(server, "ws_factory", None)
    module = sys.modules.get("daphne.ws_protocol")
    cls = getattr(module, "WebSocketProtocol", None)
    if factory is None or cls is None or getattr(factory, "protocol", None) is not cls:
        return  # not daphne's, or already switched
    try:
        share_factory_options(factory)
    except Exception as exc:
        disable("handshake_release", exc)


def _where(port: Any) -> str:
    try:
        host = port.getHost()
        return f"{host.host}:{host.port}"
    except Exception:
        return repr(port)


#: The process's gate.
accept_gate = AcceptGate()


def at_server_start(
    also: Callable[[], None] | None = None,
    later: tuple[float, Callable[[], None]] | None = None,
) -> bool:
    """Under daphne, once its reactor runs and before the first connection: adopt its
    listening ports (their listen queues lengthened, the websocket factory's options
    shared), then call ``also``; ``later`` is (seconds, callable) to call after that.
    Return False when no Twisted reactor is imported (another server): nothing is
    registered then.
    """
    reactor = _reactor()
    if reactor is None or not hasattr(reactor, "addSystemEventTrigger"):
        return False

    def started() -> None:
        accept_gate.adopt_all()
        if also is not None:
            also()
        if later is not None:
            reactor.callLater(*later)

    if getattr(reactor, "running", False):
        started()
    else:
        reactor.addSystemEventTrigger("after", "startup", started)
    return True
