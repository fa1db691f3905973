"""Settings, read lazily from ``django.conf.settings`` on every access.

Each property returns the validated value of one setting, or raises
:class:`~django.core.exceptions.ImproperlyConfigured` with a message that says
what to change. :mod:`ws4redis_channels.checks` turns those messages into
system check errors at start-up. Nothing is cached here, so
``override_settings`` works everywhere.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from django.conf import settings as django_settings
from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import import_string

from .names import Naming, validate_facility

__all__ = ["DEFAULTS", "Settings", "conf"]

DEFAULTS: dict[str, Any] = {
    "WEBSOCKET_URL": "/ws/",
    "WEBSOCKET_HOST": None,
    "WS4REDIS_CONNECTION": {"host": "localhost", "port": 6379, "db": 0, "password": None},
    "WS4REDIS_PREFIX": "",
    "WS4REDIS_NAMING": "classic",
    "WS4REDIS_EXPIRE": 3600,
    "WS4REDIS_HEARTBEAT": None,
    "WS4REDIS_ALLOWED_CHANNELS": None,
    "WS4REDIS_PUBLISH_POLICY": "strict",
    "WS4REDIS_OPEN_FACILITIES": (),
    "WS4REDIS_MAX_MESSAGE_SIZE": 64 * 1024,
    "WS4REDIS_PUBLISH_RATE": 20.0,
    "WS4REDIS_PUBLISH_BURST": 40,
    "WS4REDIS_PUBLISH_BYTES_RATE": 256 * 1024,
    "WS4REDIS_PUBLISH_BYTES_BURST": 1024 * 1024,
    "WS4REDIS_MAX_STORED_CHANNELS": 100,
    "WS4REDIS_MAX_BUFFER_SIZE": 1024 * 1024,
    "WS4REDIS_OUTAGE_TIMEOUT": 30.0,
    "WS4REDIS_CONNECT_TIMEOUT": 5.0,
    "WS4REDIS_CHANNEL_LAYER": "default",
    "WS4REDIS_ALLOWED_ORIGINS": None,
    "WS4REDIS_DIRECT_WRITES": True,
    "WS4REDIS_ACCELERATIONS_OFF": (),
    "WS4REDIS_SUBPROTOCOLS": None,
    "WS4REDIS_HISTORY_SIZE": 0,
    "WS4REDIS_HISTORY_TTL": 300,
    "WS4REDIS_METRICS": True,
    "WS4REDIS_STATUS_INTERVAL": 5.0,
    "WS4REDIS_CLUSTER_PLAIN_PUBLISH": False,
    "WS4REDIS_GC_THRESHOLD": 20000,
    "WS4REDIS_MAX_HANDSHAKES": 200,
    "WS4REDIS_LISTEN_BACKLOG": 4096,
}


def _get(name: str) -> Any:
    return getattr(django_settings, name, DEFAULTS[name])


def _number(name: str, *, integer: bool = False, positive: bool = False) -> Any:
    value: Any = _get(name)
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds):
        kind = "an int" if integer else "a number"
        raise ImproperlyConfigured(f"{name} must be {kind}, got {value!r}")
    if value < 0 or (positive and value == 0):
        bound = "positive" if positive else "non-negative"
        raise ImproperlyConfigured(f"{name} must be {bound}, got {value!r}")
    return value


class Settings:
    """Typed, validated access to the settings of ws4redis_channels."""

    @property
    def WEBSOCKET_URL(self) -> str:
        value = _get("WEBSOCKET_URL")
        if not isinstance(value, str) or not value.startswith("/") or not value.endswith("/"):
            raise ImproperlyConfigured(
                f"WEBSOCKET_URL must be a path that starts and ends with '/', got {value!r}"
            )
        return value

    @property
    def WEBSOCKET_HOST(self) -> str | None:
        value = _get("WEBSOCKET_HOST")
        if value is None:
            return None
        if not isinstance(value, str) or not value or any(c in value for c in "/ \t"):
            raise ImproperlyConfigured(
                f"WEBSOCKET_HOST must be a host name (with an optional port) or None, got {value!r}"
            )
        return value

    @property
    def WS4REDIS_CONNECTION(self) -> str | Mapping[str, Any]:
        value = _get("WS4REDIS_CONNECTION")
        if isinstance(value, str):
            schemes = (
                "redis://",
                "rediss://",
                "unix://",
                "redis+sentinel://",
                "redis+cluster://",
                "rediss+cluster://",
            )
            if not value.startswith(schemes):
                raise ImproperlyConfigured(
                    "WS4REDIS_CONNECTION must be a redis://, rediss://, unix://, "
                    f"redis+sentinel:// or redis+cluster:// URL, or a dict; got {value!r}"
                )
            return value
        if not isinstance(value, Mapping):
            raise ImproperlyConfigured(
                f"WS4REDIS_CONNECTION must be a URL or a dict, got {type(value).__name__}"
            )
        return value

    @property
    def WS4REDIS_PREFIX(self) -> str:
        value = _get("WS4REDIS_PREFIX")
        if value is None:
            return ""
        if not isinstance(value, str):
            raise ImproperlyConfigured(f"WS4REDIS_PREFIX must be a str or None, got {value!r}")
        if "{" in value or "}" in value:
            raise ImproperlyConfigured(
                f"WS4REDIS_PREFIX must not contain '{{' or '}}' (Redis Cluster hash tags), "
                f"got {value!r}"
            )
        return value

    @property
    def WS4REDIS_NAMING(self) -> Naming:
        value = _get("WS4REDIS_NAMING")
        try:
            return Naming(value)
        except ValueError:
            raise ImproperlyConfigured(
                f"WS4REDIS_NAMING must be 'classic' or 'typed', got {value!r}"
            ) from None

    @property
    def WS4REDIS_EXPIRE(self) -> int:
        return int(_number("WS4REDIS_EXPIRE", integer=True))

    @property
    def WS4REDIS_HISTORY_SIZE(self) -> int:
        return int(_number("WS4REDIS_HISTORY_SIZE", integer=True))

    @property
    def WS4REDIS_HISTORY_TTL(self) -> int:
        return int(_number("WS4REDIS_HISTORY_TTL", integer=True, positive=True))

    @property
    def WS4REDIS_HEARTBEAT(self) -> str | None:
        value = _get("WS4REDIS_HEARTBEAT")
        if value is not None and (not isinstance(value, str) or not value):
            raise ImproperlyConfigured(
                f"WS4REDIS_HEARTBEAT must be a non-empty str or None, got {value!r}"
            )
        return value

    @property
    def WS4REDIS_ALLOWED_CHANNELS(self) -> Callable[..., Any] | None:
        value = _get("WS4REDIS_ALLOWED_CHANNELS")
        if value is None:
            return None
        if isinstance(value, str):
            try:
                value = import_string(value)
            except ImportError as exc:
                raise ImproperlyConfigured(
                    f"WS4REDIS_ALLOWED_CHANNELS names {value!r}, which cannot be imported: {exc}"
                ) from exc
        if not callable(value):
            raise ImproperlyConfigured(
                f"WS4REDIS_ALLOWED_CHANNELS must be a callable or its dotted path, got {value!r}"
            )
        return value  # type: ignore[no-any-return]

    @property
    def WS4REDIS_PUBLISH_POLICY(self) -> str:
        value = _get("WS4REDIS_PUBLISH_POLICY")
        if value not in ("strict", "permissive"):
            raise ImproperlyConfigured(
                f"WS4REDIS_PUBLISH_POLICY must be 'strict' or 'permissive', got {value!r}"
            )
        return str(value)

    @property
    def WS4REDIS_OPEN_FACILITIES(self) -> frozenset[str]:
        value = _get("WS4REDIS_OPEN_FACILITIES")
        if isinstance(value, str) or not hasattr(value, "__iter__"):
            raise ImproperlyConfigured(
                f"WS4REDIS_OPEN_FACILITIES must be a list of facility names, got {value!r}"
            )
        facilities = frozenset(value)
        for facility in facilities:
            try:
                validate_facility(facility)
            except ValueError as exc:
                raise ImproperlyConfigured(f"WS4REDIS_OPEN_FACILITIES: {exc}") from None
        return facilities

    @property
    def WS4REDIS_MAX_MESSAGE_SIZE(self) -> int:
        return int(_number("WS4REDIS_MAX_MESSAGE_SIZE", integer=True, positive=True))

    @property
    def WS4REDIS_PUBLISH_RATE(self) -> float:
        return float(_number("WS4REDIS_PUBLISH_RATE"))

    @property
    def WS4REDIS_PUBLISH_BURST(self) -> int:
        return int(_number("WS4REDIS_PUBLISH_BURST", integer=True, positive=True))

    @property
    def WS4REDIS_PUBLISH_BYTES_RATE(self) -> float:
        return float(_number("WS4REDIS_PUBLISH_BYTES_RATE"))

    @property
    def WS4REDIS_PUBLISH_BYTES_BURST(self) -> int:
        return int(_number("WS4REDIS_PUBLISH_BYTES_BURST", integer=True, positive=True))

    @property
    def WS4REDIS_MAX_STORED_CHANNELS(self) -> int:
        return int(_number("WS4REDIS_MAX_STORED_CHANNELS", integer=True))

    @property
    def WS4REDIS_MAX_BUFFER_SIZE(self) -> int:
        return int(_number("WS4REDIS_MAX_BUFFER_SIZE", integer=True, positive=True))

    @property
    def WS4REDIS_OUTAGE_TIMEOUT(self) -> float:
        return float(_number("WS4REDIS_OUTAGE_TIMEOUT", positive=True))

    @property
    def WS4REDIS_CONNECT_TIMEOUT(self) -> float:
        return float(_number("WS4REDIS_CONNECT_TIMEOUT", positive=True))

    @property
    def WS4REDIS_CHANNEL_LAYER(self) -> str | None:
        value = _get("WS4REDIS_CHANNEL_LAYER")
        if value is not None and not isinstance(value, str):
            raise ImproperlyConfigured(
                f"WS4REDIS_CHANNEL_LAYER must be a channel layer alias or None, got {value!r}"
            )
        if value is not None and value not in getattr(django_settings, "CHANNEL_LAYERS", {}):
            # The default alias without CHANNEL_LAYERS simply disables the path.
            if hasattr(django_settings, "WS4REDIS_CHANNEL_LAYER"):
                raise ImproperlyConfigured(
                    f"WS4REDIS_CHANNEL_LAYER is {value!r}, which is not in CHANNEL_LAYERS"
                )
            return None
        return value

    @property
    def WS4REDIS_DIRECT_WRITES(self) -> bool:
        value = _get("WS4REDIS_DIRECT_WRITES")
        if not isinstance(value, bool):
            raise ImproperlyConfigured(
                f"WS4REDIS_DIRECT_WRITES must be True or False, got {value!r}"
            )
        return value

    @property
    def WS4REDIS_ACCELERATIONS_OFF(self) -> frozenset[str]:
        from .accelerator.probe import ACCELERATIONS

        value = _get("WS4REDIS_ACCELERATIONS_OFF")
        if isinstance(value, str) or not hasattr(value, "__iter__"):
            raise ImproperlyConfigured(
                f"WS4REDIS_ACCELERATIONS_OFF must be a list of acceleration names, got {value!r}"
            )
        names = frozenset(value)
        unknown = sorted(map(str, names - set(ACCELERATIONS)))
        if unknown:
            raise ImproperlyConfigured(
                f"WS4REDIS_ACCELERATIONS_OFF: unknown acceleration {', '.join(unknown)}; "
                f"known are {', '.join(ACCELERATIONS)}"
            )
        return names

    @property
    def WS4REDIS_METRICS(self) -> bool:
        value = _get("WS4REDIS_METRICS")
        if not isinstance(value, bool):
            raise ImproperlyConfigured(f"WS4REDIS_METRICS must be True or False, got {value!r}")
        return value

    @property
    def WS4REDIS_STATUS_INTERVAL(self) -> float:
        return float(_number("WS4REDIS_STATUS_INTERVAL"))

    @property
    def WS4REDIS_CLUSTER_PLAIN_PUBLISH(self) -> bool:
        value = _get("WS4REDIS_CLUSTER_PLAIN_PUBLISH")
        if not isinstance(value, bool):
            raise ImproperlyConfigured(
                f"WS4REDIS_CLUSTER_PLAIN_PUBLISH must be True or False, got {value!r}"
            )
        return value

    @property
    def WS4REDIS_GC_THRESHOLD(self) -> int | None:
        if _get("WS4REDIS_GC_THRESHOLD") is None:
            return None
        return int(_number("WS4REDIS_GC_THRESHOLD", integer=True))

    @property
    def WS4REDIS_MAX_HANDSHAKES(self) -> int:
        return int(_number("WS4REDIS_MAX_HANDSHAKES", integer=True))

    @property
    def WS4REDIS_LISTEN_BACKLOG(self) -> int:
        return int(_number("WS4REDIS_LISTEN_BACKLOG", integer=True))

    @property
    def WS4REDIS_ALLOWED_ORIGINS(self) -> list[str] | None:
        value = _get("WS4REDIS_ALLOWED_ORIGINS")
        if value is None:
            return None
        if isinstance(value, str) or not hasattr(value, "__iter__"):
            raise ImproperlyConfigured(
                f"WS4REDIS_ALLOWED_ORIGINS must be a list of origins or None, got {value!r}"
            )
        return list(value)

    @property
    def WS4REDIS_SUBPROTOCOLS(self) -> tuple[str, ...] | None:
        value = _get("WS4REDIS_SUBPROTOCOLS")
        if value is None:
            return None
        if isinstance(value, str) or not hasattr(value, "__iter__"):
            raise ImproperlyConfigured(
                f"WS4REDIS_SUBPROTOCOLS must be a list of subprotocol names or None, got {value!r}"
            )
        names = tuple(value)
        for name in names:
            if not isinstance(name, str) or not name or any(c in name for c in ' ,;"\t'):
                raise ImproperlyConfigured(
                    f"WS4REDIS_SUBPROTOCOLS: {name!r} is not a subprotocol name "
                    "(a non-empty token without spaces, commas or quotes)"
                )
        return names


conf = Settings()
