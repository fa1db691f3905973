"""Which websocket subprotocol a handshake selects (setting ``WS4REDIS_SUBPROTOCOLS``).

A browser that offers subprotocols (``new WebSocket(url, ["chat"])``) fails
the connection (code 1006) unless the server's ``101`` names one of them.
django-websocket-redis echoed what the client offered; the default here
selects the client's first offer, and a configured list selects the client's
most preferred offer that is in the list.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["offered_subprotocols", "select_subprotocol"]


def offered_subprotocols(scope: Mapping[str, Any]) -> list[str]:
    """Return the subprotocols the client offered, in its order of preference."""
    offered = scope.get("subprotocols") or ()
    return [str(name) for name in offered if name]


def select_subprotocol(offered: Iterable[str], supported: Iterable[str] | None) -> str | None:
    """Return the subprotocol to name in the ``101``, or None to name none.

    ``supported`` None selects the first offer; otherwise the first offer
    that is in ``supported`` (None if there is none).
    """
    offers = list(offered)
    if not offers:
        return None
    if supported is None:
        return offers[0]
    allowed = set(supported)
    return next((name for name in offers if name in allowed), None)
