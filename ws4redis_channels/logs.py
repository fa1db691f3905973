"""How client values appear in log lines: escaped, shortened, and query values left out.

Paths, query strings, origins and cookies come from the client. Logged raw,
a ``%0A`` in a path forges a log line of its own, and query-string values
may hold tokens; so every value from a client goes through :func:`escaped`,
and a query string is described by its parameter names only (:func:`query_names`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote

__all__ = ["MAX_LOGGED", "describe_socket", "escaped", "query_names"]

#: Characters of one client value that are logged; the rest is replaced by "...".
MAX_LOGGED = 200

_NAMES_LOGGED = 20


def escaped(value: object, limit: int = MAX_LOGGED) -> str:
    """Return ``value`` as one printable line: control and non-ASCII characters escaped."""
    text = value.decode("latin-1") if isinstance(value, (bytes, bytearray)) else str(value)
    cut = len(text) > limit
    if cut:
        text = text[:limit]
    # Printable ASCII stays; the rest (newlines, escapes, bidi marks) and
    # backslashes themselves are written as Python escapes.
    out = "".join(
        c if " " <= c <= "~" and c != "\\" else c.encode("unicode_escape").decode("ascii")
        for c in text
    )
    return out + ("..." if cut else "")


def query_names(query_string: bytes | str) -> str:
    """Return the parameter names of a query string (escaped), never their values."""
    if isinstance(query_string, (bytes, bytearray)):
        query_string = bytes(query_string).decode("latin-1")
    if not query_string:
        return ""
    parts = query_string.split("&", _NAMES_LOGGED)
    names = [unquote(part.partition("=")[0]) for part in parts[:_NAMES_LOGGED]]
    more = len(parts) > _NAMES_LOGGED
    shown = "&".join(escaped(name, 40) for name in names if name)
    return shown + ("&..." if more else "")


def describe_socket(scope: Mapping[str, Any]) -> str:
    """Return ``<path>?<parameter names> from <client address>`` for a log line."""
    client = scope.get("client") or ("?", 0)
    host = client[0] if isinstance(client, (list, tuple)) and client else "?"
    names = query_names(scope.get("query_string", b""))
    path = escaped(scope.get("path", ""))
    return f"{path}{'?' + names if names else ''} from {escaped(host, 60)}"
