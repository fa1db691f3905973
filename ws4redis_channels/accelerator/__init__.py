"""The only module that touches daphne, autobahn, Twisted and channels internals, behind a probe.

ASGI hides the connection, but a push server gains from a few things daphne
has: writing ready-made frames past ASGI, knowing how many bytes wait unsent
for a socket (ASGI passes no back-pressure), close frames with a code and a
reason, a hook at shutdown, and a bound on the handshakes it takes on at
once. Each of these is an *acceleration*. The probe
checks once, per process, the versions (:data:`TESTED`) and every attribute
an acceleration relies on, switches each acceleration on or off as a whole,
and logs one line that says which are on and why one is off
(:func:`status` returns the same, for checks and status commands).

Never mute: every use of an internal is guarded. If one raises (a renamed
attribute in an untested release), that acceleration is switched off for the
process with one warning, and the socket at hand carries on through ASGI.
It also holds daphne's answer to a client's close frame until the frames
received before it are handled (:class:`CloseGate`), bounds unfinished
fragmented messages, and pauses reading from a client whose frames must wait.
Under another server nothing here applies and the app works through ASGI.
"""

from __future__ import annotations

from .daphne import (
    DaphneSocket,
    Send,
    attach,
    close_with_reason,
    daphne_protocol,
    going_away_all,
    on_server_shutdown,
    raw_send,
)
from .inbound import CloseGate, bound_fragmented_messages, pause_reading
from .listeners import accept_gate, at_server_start
from .probe import ACCELERATIONS, TESTED, disable, enabled, reset, status

__all__ = [
    "ACCELERATIONS",
    "TESTED",
    "CloseGate",
    "DaphneSocket",
    "Send",
    "accept_gate",
    "at_server_start",
    "attach",
    "bound_fragmented_messages",
    "close_with_reason",
    "daphne_protocol",
    "disable",
    "enabled",
    "going_away_all",
    "on_server_shutdown",
    "pause_reading",
    "raw_send",
    "reset",
    "status",
]
