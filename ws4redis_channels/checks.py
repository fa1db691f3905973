"""System checks for the settings of ws4redis_channels (ids ``ws4redis_channels.E001``...)."""

from __future__ import annotations

from typing import Any

from django.core import checks
from django.core.exceptions import ImproperlyConfigured

from .conf import conf
from .connection import parse_target

__all__ = ["check_settings"]

# Stable ids: never renumber, only append.
SETTING_IDS = {
    "WEBSOCKET_URL": "E001",
    "WS4REDIS_CONNECTION": "E002",
    "WS4REDIS_PREFIX": "E003",
    "WS4REDIS_NAMING": "E004",
    "WS4REDIS_EXPIRE": "E005",
    "WS4REDIS_HEARTBEAT": "E006",
    "WS4REDIS_ALLOWED_CHANNELS": "E007",
    "WS4REDIS_PUBLISH_POLICY": "E008",
    "WS4REDIS_OPEN_FACILITIES": "E009",
    "WS4REDIS_MAX_MESSAGE_SIZE": "E010",
    "WS4REDIS_PUBLISH_RATE": "E011",
    "WS4REDIS_PUBLISH_BURST": "E012",
    "WS4REDIS_MAX_BUFFER_SIZE": "E013",
    "WS4REDIS_OUTAGE_TIMEOUT": "E014",
    "WS4REDIS_CONNECT_TIMEOUT": "E015",
    "WS4REDIS_CHANNEL_LAYER": "E016",
    "WS4REDIS_ALLOWED_ORIGINS": "E017",
    "WS4REDIS_DIRECT_WRITES": "E018",
    # Redis Cluster settings: E060 onwards.
    "WS4REDIS_CLUSTER_PLAIN_PUBLISH": "E060",
}


@checks.register()
def check_settings(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """Report every setting of ws4redis_channels that has a wrong value."""
    messages: list[checks.CheckMessage] = []
    for name, number in SETTING_IDS.items():
        try:
            value = getattr(conf, name)
            if name == "WS4REDIS_CONNECTION":
                parse_target(value)
        except (ImproperlyConfigured, ValueError, TypeError) as exc:
            messages.append(checks.Error(str(exc), id=f"ws4redis_channels.{number}"))
    messages.extend(_check_cluster())
    try:
        permissive = conf.WS4REDIS_PUBLISH_POLICY == "permissive"
    except ImproperlyConfigured:
        permissive = False
    if permissive:
        messages.append(
            checks.Warning(
                "WS4REDIS_PUBLISH_POLICY is 'permissive': any visitor, anonymous ones too, "
                "may publish to every client of any facility",
                hint="Use the default 'strict' policy and WS4REDIS_OPEN_FACILITIES "
                "or WS4REDIS_ALLOWED_CHANNELS to allow publishing where it is meant.",
                id="ws4redis_channels.W001",
            )
        )
    return messages


def _check_cluster() -> list[checks.CheckMessage]:
    try:
        cluster = parse_target(conf.WS4REDIS_CONNECTION).cluster
        plain = conf.WS4REDIS_CLUSTER_PLAIN_PUBLISH
    except (ImproperlyConfigured, ValueError, TypeError):
        return []  # reported above
    if plain and not cluster:
        return [
            checks.Warning(
                "WS4REDIS_CLUSTER_PLAIN_PUBLISH is True, but WS4REDIS_CONNECTION is not a "
                "Redis Cluster: it has no effect (a single Redis always delivers PUBLISH)",
                hint="Remove the setting, or name the cluster with redis+cluster://host:port/.",
                id="ws4redis_channels.W060",
            )
        ]
    return []
