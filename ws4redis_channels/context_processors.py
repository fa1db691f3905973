"""Template context for pages that open websockets, as django-websocket-redis provided it.

Add ``"ws4redis_channels.context_processors.default"`` to the
``context_processors`` of ``TEMPLATES``; templates then get:

``WEBSOCKET_URI``
    ``ws://`` (or ``wss://`` when ``request.is_secure()``), ``WEBSOCKET_HOST``
    or else the request's host, and ``WEBSOCKET_URL``, e.g.
    ``ws://example.com/ws/``: append the facility and the flags.
``WS4REDIS_HEARTBEAT``
    ``WS4REDIS_HEARTBEAT`` as a JavaScript literal (a quoted string, or
    ``null`` when the setting is ``None``), safe to place in a ``<script>``::

        var ws = WS4Redis({
            uri: "{{ WEBSOCKET_URI }}foobar?subscribe-broadcast",
            heartbeat_msg: {{ WS4REDIS_HEARTBEAT }}
        });
"""

from __future__ import annotations

import json

from django.http import HttpRequest
from django.utils.safestring import SafeString, mark_safe

from .conf import conf

__all__ = ["default", "heartbeat_literal", "websocket_uri"]

# Characters that could end a <script> element or an HTML attribute, written
# as JavaScript escapes (json.dumps already escapes non-ASCII, U+2028 included).
_SCRIPT_ESCAPES = {
    ord("<"): "\\u003C",
    ord(">"): "\\u003E",
    ord("&"): "\\u0026",
    ord("'"): "\\u0027",
}


def websocket_uri(request: HttpRequest) -> str:
    """Return the websocket URL prefix for ``request``: scheme, host and ``WEBSOCKET_URL``."""
    scheme = "wss" if request.is_secure() else "ws"
    return f"{scheme}://{conf.WEBSOCKET_HOST or request.get_host()}{conf.WEBSOCKET_URL}"


def heartbeat_literal() -> SafeString:
    """Return ``WS4REDIS_HEARTBEAT`` as a JavaScript string literal, or ``null``."""
    return mark_safe(json.dumps(conf.WS4REDIS_HEARTBEAT).translate(_SCRIPT_ESCAPES))


def default(request: HttpRequest) -> dict[str, str]:
    """Give templates ``WEBSOCKET_URI`` and ``WS4REDIS_HEARTBEAT``."""
    return {"WEBSOCKET_URI": websocket_uri(request), "WS4REDIS_HEARTBEAT": heartbeat_literal()}
