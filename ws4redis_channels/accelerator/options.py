"""Sharing autobahn's per-socket options: the handshake and idle cost of daphne's sockets.

Part of the accelerator: it touches autobahn's and daphne's internals, once
per websocket factory, and leaves a factory it does not recognise alone.
"""

from __future__ import annotations

import inspect
from typing import Any

__all__ = ["share_factory_options", "share_protocol_options"]


def share_protocol_options(protocol: Any) -> bool:
    """:func:`share_factory_options` for the factory of ``protocol``, a daphne socket."""
    factory = getattr(protocol, "factory", None)
    if factory is None or getattr(factory, "protocol", None) is not type(protocol):
        if factory is not None:
            factory._ws4redis_shared = True  # a protocol class of someone else's
        return False
    return share_factory_options(factory)


def share_factory_options(factory: Any) -> bool:
    """Once per daphne websocket factory: later sockets read its options from their class.

    autobahn copies every one of its ~40 options from the factory into each
    new protocol's ``__dict__`` (unless the class has them) and formats that
    list for a debug line: a quarter of a handshake's time in daphne's own
    code and most of the protocol's dict. A subclass that carries the
    factory's options as class attributes gives every later socket the same
    values without either. Done at daphne's start (its listening ports lead to
    the factory: :mod:`.listeners`), else when the first socket opens. Returns
    True when the factory was switched now.
    """
    if getattr(factory, "_ws4redis_shared", False):
        return False
    cls: Any = getattr(factory, "protocol", None)
    names = getattr(cls, "CONFIG_ATTRS", None)
    factory._ws4redis_shared = True  # decided once, whatever the outcome
    if not isinstance(cls, type) or not names:
        return False
    try:
        import autobahn.websocket.protocol as autobahn_protocol
        from txaio.tx import _no_op  # what a disabled log level is
    except ImportError:
        return False
    if not hasattr(autobahn_protocol, "pformat") or not all(hasattr(factory, n) for n in names):
        return False
    options = {name: getattr(factory, name) for name in names}
    for name, value in options.items():
        if inspect.isfunction(value):
            # e.g. perMessageCompressionAccept: as a class attribute it must not bind.
            options[name] = staticmethod(value)
    made = getattr(cls, "_connectionMade")  # noqa: B009 (not typed)

    def _connectionMade(self: Any) -> None:
        # The same as autobahn's, minus formatting a debug line that is not logged.
        if getattr(self.log, "debug", None) is not _no_op:
            made(self)
            return
        saved = getattr(autobahn_protocol, "pformat")  # noqa: B009 (not exported)
        setattr(autobahn_protocol, "pformat", _unformatted)  # noqa: B010
        try:
            made(self)
        finally:
            setattr(autobahn_protocol, "pformat", saved)  # noqa: B010

    shared = type(cls.__name__, (cls,), {**options, "_connectionMade": _connectionMade})
    shared.__module__ = cls.__module__
    factory.protocol = shared
    return True


def _unformatted(value: Any) -> str:
    return ""
