"""The probe: which accelerations are on, decided once per process, and why one is off."""

from __future__ import annotations

import importlib.metadata
import logging
from typing import Any

__all__ = [
    "ACCELERATIONS",
    "TESTED",
    "disable",
    "enabled",
    "plain_tcp",
    "probe_instance",
    "reset",
    "status",
]

logger = logging.getLogger("ws4redis_channels.accelerator")

#: What each acceleration does.
ACCELERATIONS: dict[str, str] = {
    "session_unwrap": "skip channels' session wrapper around every websocket.send",
    "direct_writes": "write ready-made frames to plain TCP sockets, one send() per loop pass",
    "prepared_writes": "send autobahn's prepared messages where direct writes cannot (TLS)",
    "buffer_bound": "measure what Twisted holds for a plain TCP socket (the slow-client bound)",
    "producer_bound": "the slow-client bound from Twisted's pause/resume signal (TLS too)",
    "pong_bound": "count daphne's pongs against the same bound (ping floods)",
    "close_frames": "answer invalid frames with a close frame (1007, 1009), not a dropped TCP",
    "close_reasons": "send the close reason, which daphne drops",
    "handshake_release": "free the handshake's headers once a socket is open (~1.5 KB each)",
    "upgrade_release": "free Twisted's HTTP channel and request a socket was upgraded from (~4 KB)",
    "small_queues": "keep daphne's and autobahn's per-socket queues in lists, not deques (~3.5 KB)",
    "layer_queues": "keep channels-redis's queue per relayed channel in lists, not deques (~3 KB)",
    "accept_bound": "stop accepting while WS4REDIS_MAX_HANDSHAKES handshakes are in progress; "
    "a listen queue of WS4REDIS_LISTEN_BACKLOG",
    "going_away": "close open sockets with 1001 at shutdown, before daphne drops them",
    "fragment_bound": "join the fragments of an unfinished message into one buffer",
    "pause_reading": "stop reading from a client whose frames must wait (intake)",
    "close_gate": "answer a client's close frame after the frames before it are handled",
}

#: The releases the internals were checked against: [lowest, first untested major).
TESTED: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {
    "daphne": ((4, 2, 2), (5,)),
    "autobahn": ((22, 4), (27,)),
    "twisted": ((22, 10), (27,)),
    "channels": ((4, 2), (5,)),
    "channels-redis": ((4, 2), (5,)),
}

#: The accelerations that rely on a distribution's internals, where not all of them do.
_RELYING: dict[str, tuple[str, ...]] = {
    "channels": ("session_unwrap",),
    "channels-redis": ("layer_queues",),
}

# Attributes each acceleration reads on daphne's protocol and Twisted's transport.
_PROTOCOL_NEEDS: dict[str, tuple[str, ...]] = {
    "direct_writes": (
        "state",
        "STATE_OPEN",
        "send_state",
        "SEND_STATE_GROUND",
        "_perMessageCompress",
    ),
    "prepared_writes": ("sendPreparedMessage", "factory", "state", "STATE_OPEN"),
    "producer_bound": ("registerProducer", "unregisterProducer"),
    "pong_bound": ("onPing", "sendPong"),
    "close_frames": ("failByDrop",),
    "close_reasons": ("sendClose", "state", "STATE_OPEN"),
    # http_response_data appears with the response: set below, not read.
    "handshake_release": ("http_headers", "http_request_data"),
    "small_queues": ("application_queue", "send_queue"),
    "going_away": ("sendCloseFrame", "state", "STATE_OPEN"),
    "fragment_bound": ("onMessageFrame", "failedByMe"),
    "close_gate": ("onCloseFrame", "application_queue", "state", "STATE_OPEN"),
}
_TRANSPORT_NEEDS: dict[str, tuple[str, ...]] = {
    "pause_reading": ("pauseProducing", "resumeProducing"),
    "direct_writes": (
        "socket",
        "disconnecting",
        "connected",
        "_tempDataLen",
        "dataBuffer",
        "offset",
    ),
    "buffer_bound": ("_tempDataLen", "dataBuffer", "offset"),
    "upgrade_release": ("producer", "unregisterProducer"),
}


def _switched_off() -> frozenset[str]:
    """The setting WS4REDIS_ACCELERATIONS_OFF (diagnostics, the benchmark); a wrong value
    is the system check's to report, not the probe's."""
    try:
        from ..conf import conf

        return conf.WS4REDIS_ACCELERATIONS_OFF
    except Exception:
        return frozenset()


_off: dict[str, str] = {}  # acceleration -> why it is off
_probed = False  # versions and classes
_instances_probed = False  # attributes of the first daphne socket
_logged = False


def _version(dist: str) -> tuple[str, tuple[int, ...]] | None:
    try:
        text = importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None
    parts: list[int] = []
    for piece in text.split("."):
        digits = "".join(c for c in piece if c.isdigit())
        if not digits:
            break
        parts.append(int(digits))
        if digits != piece:
            break
    return text, tuple(parts)


def _probe_versions() -> None:
    global _probed
    if _probed:
        return
    _probed = True
    for name in sorted(_switched_off()):
        _off.setdefault(name, "switched off by WS4REDIS_ACCELERATIONS_OFF")
    for dist, (low, high) in TESTED.items():
        found = _version(dist)
        if found is None:
            why = f"{dist} is not installed"
        elif not low <= found[1] < high:
            low_s, high_s = ".".join(map(str, low)), ".".join(map(str, high))
            why = f"{dist} {found[0]} is outside the tested range >={low_s},<{high_s}"
        else:
            continue
        special = {n for relying in _RELYING.values() for n in relying}
        names = _RELYING.get(dist) or [n for n in ACCELERATIONS if n not in special]
        for name in names:
            _off.setdefault(name, why)
    try:
        from channels.sessions import InstanceSessionWrapper

        # real_send is set per instance: look for it in the code that sets it.
        if "real_send" not in InstanceSessionWrapper.__init__.__code__.co_names:
            _off.setdefault("session_unwrap", "channels' InstanceSessionWrapper has no real_send")
        elif not callable(getattr(InstanceSessionWrapper, "send", None)):
            _off.setdefault("session_unwrap", "channels' InstanceSessionWrapper has no send()")
    except Exception as exc:  # pragma: no cover - channels is a dependency
        _off.setdefault("session_unwrap", f"channels.sessions.InstanceSessionWrapper: {exc!r}")


def probe_instance(protocol: Any) -> None:
    """Check, on the first daphne socket, every attribute the accelerations read."""
    global _instances_probed
    if _instances_probed:
        return
    transport = getattr(protocol, "transport", None)
    if transport is not None and not getattr(transport, "connected", True):
        # Closed during its handshake (a reconnect storm's give-ups): Twisted
        # already dropped its socket. Probe the next socket instead.
        return
    _instances_probed = True
    for name, attrs in _PROTOCOL_NEEDS.items():
        missing = [a for a in attrs if not hasattr(protocol, a)]
        if missing:
            _off.setdefault(name, f"daphne's protocol has no {', '.join(missing)}")
    factory = getattr(protocol, "factory", None)
    if not callable(getattr(factory, "prepareMessage", None)):
        _off.setdefault("prepared_writes", "daphne's websocket factory has no prepareMessage()")
    for name, attrs in _TRANSPORT_NEEDS.items():
        if not plain_tcp(transport):
            continue  # TLS: decided per socket (see DaphneSocket), not for the process
        missing = [a for a in attrs if not hasattr(transport, a)]
        if missing:
            _off.setdefault(name, f"Twisted's transport has no {', '.join(missing)}")
    if "socket" not in _off.get("direct_writes", "") and transport is not None:
        sock = getattr(transport, "socket", None)
        if sock is not None and not callable(getattr(sock, "send", None)):
            _off.setdefault("direct_writes", "Twisted's transport.socket has no send()")
    if "small_queues" not in _off:
        from .queues import self_test

        failure = self_test()
        if failure is not None:
            _off.setdefault("small_queues", f"asyncio.Queue self-test: {failure}")
    _log_status()


def plain_tcp(transport: Any) -> bool:
    """Return whether ``transport`` is Twisted's own TCP (or Unix) connection, without TLS.

    Under daphne's ``ssl:`` endpoint the protocol's transport is Twisted's TLS
    wrapper, which forwards unknown attributes (``socket``, ``TLS``, the write
    buffer) to the TCP connection below it: reading them there would write
    cleartext past the encryption. Only a file descriptor transport is plain.
    """
    if transport is None or getattr(transport, "TLS", False):
        return False
    try:
        from twisted.internet.abstract import FileDescriptor
    except ImportError:  # pragma: no cover - daphne depends on Twisted
        return False
    return isinstance(transport, FileDescriptor) and hasattr(transport, "write")


def _log_status() -> None:
    global _logged
    if _logged:
        return
    _logged = True
    on = [n for n in ACCELERATIONS if n not in _off]
    if not _off:
        logger.info("ws4redis accelerations under daphne: all on (%s)", ", ".join(on))
        return
    logger.warning(
        "ws4redis accelerations under daphne: on: %s; off: %s",
        ", ".join(on) or "none",
        "; ".join(f"{n} ({why})" for n, why in _off.items()),
    )


def enabled(name: str) -> bool:
    """Return whether acceleration ``name`` is on (after the probe)."""
    _probe_versions()
    return name not in _off


def disable(name: str, exc: BaseException) -> None:
    """Switch ``name`` off for the process after an internal raised; warn once."""
    if name in _off:
        return
    _off[name] = f"{type(exc).__name__}: {exc}"
    logger.warning(
        "ws4redis acceleration %s is off from now on (%s: %s); sockets use ASGI instead",
        name,
        type(exc).__name__,
        exc,
    )


def status() -> dict[str, dict[str, Any]]:
    """Return, per acceleration, whether it is on, why not, and what it does.

    Before the first daphne socket only versions are checked (``probed`` False).
    """
    _probe_versions()
    return {
        name: {
            "on": name not in _off,
            "reason": _off.get(name, ""),
            "what": what,
            "probed": _instances_probed,
        }
        for name, what in ACCELERATIONS.items()
    }


def reset() -> None:
    """Forget the probe (tests)."""
    global _probed, _instances_probed, _logged
    from . import listeners, queues

    _off.clear()
    _probed = _instances_probed = _logged = False
    queues.reset()
    listeners.accept_gate.reset()
