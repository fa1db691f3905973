"""Websocket close codes and HTTP statuses the app answers with.

daphne lets an application close a websocket only with 1000 or 3000-4999, so
the app's own codes are 4000 plus the HTTP status they resemble. The docs'
table is checked against :data:`CLOSE_REASONS` by the test suite.
"""

from __future__ import annotations

import enum

__all__ = ["CLOSE_REASONS", "NO_RETRY", "CloseCode"]


class CloseCode(enum.IntEnum):
    """Close codes sent by ws4redis_channels (and the standard ones it relies on)."""

    NORMAL = 1000
    GOING_AWAY = 1001
    INVALID_PAYLOAD = 1007
    TOO_BIG_FOR_SERVER = 1009
    INTERNAL_ERROR = 1011
    BAD_REQUEST = 4400
    LOGIN_REQUIRED = 4401
    FORBIDDEN = 4403
    NOT_FOUND = 4404
    MESSAGE_TOO_BIG = 4413
    SESSION_REQUIRED = 4428
    RATE_LIMITED = 4429
    HANDSHAKE_FAILED = 4500
    REDIS_UNAVAILABLE = 4503
    TOO_SLOW = 4507


CLOSE_REASONS: dict[CloseCode, str] = {
    CloseCode.NORMAL: "normal closure",
    CloseCode.GOING_AWAY: "server shutting down",
    CloseCode.INVALID_PAYLOAD: "text frame is not valid UTF-8 (sent by the server itself)",
    CloseCode.TOO_BIG_FOR_SERVER: "frame larger than the server's limit (sent by daphne itself)",
    CloseCode.INTERNAL_ERROR: "unexpected server error",
    CloseCode.BAD_REQUEST: "invalid facility or query string in the URL",
    CloseCode.LOGIN_REQUIRED: "user or group flags need a logged-in user",
    CloseCode.FORBIDDEN: "this socket may not publish",
    CloseCode.NOT_FOUND: "no websocket endpoint at this path",
    CloseCode.MESSAGE_TOO_BIG: "message larger than WS4REDIS_MAX_MESSAGE_SIZE",
    CloseCode.SESSION_REQUIRED: "session flags need a saved session",
    CloseCode.RATE_LIMITED: "publishing more than the limits of WS4REDIS_PUBLISH_* allow",
    CloseCode.HANDSHAKE_FAILED: "unexpected server error during the handshake",
    CloseCode.REDIS_UNAVAILABLE: "Redis is unreachable; reconnect later",
    CloseCode.TOO_SLOW: "client reads too slowly; outbound buffer over WS4REDIS_MAX_BUFFER_SIZE",
}

# A client that gets one of these should not reconnect automatically: the same
# request would be refused again.
NO_RETRY = frozenset(
    {
        CloseCode.BAD_REQUEST,
        CloseCode.LOGIN_REQUIRED,
        CloseCode.FORBIDDEN,
        CloseCode.NOT_FOUND,
        CloseCode.MESSAGE_TOO_BIG,
        CloseCode.SESSION_REQUIRED,
    }
)
