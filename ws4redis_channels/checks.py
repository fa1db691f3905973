"""System checks for the settings of ws4redis_channels (ids ``ws4redis_channels.E001``...)."""

from __future__ import annotations

from typing import Any

from django.core import checks
from django.core.exceptions import ImproperlyConfigured

from .conf import conf
from .target import parse_target

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
    "WS4REDIS_PUBLISH_BYTES_RATE": "E019",
    "WS4REDIS_PUBLISH_BYTES_BURST": "E020",
    "WS4REDIS_MAX_STORED_CHANNELS": "E021",
    "WS4REDIS_HISTORY_SIZE": "E023",
    "WS4REDIS_HISTORY_TTL": "E024",
    # E025-E029 were kept for settings of the same release (ids are never reused).
    "WS4REDIS_SUBPROTOCOLS": "E030",
    "WEBSOCKET_HOST": "E031",
    "WS4REDIS_ACCELERATIONS_OFF": "E032",
    "WS4REDIS_MAX_HANDSHAKES": "E033",
    "WS4REDIS_LISTEN_BACKLOG": "E034",
    # Settings of the operations tools; the project around the app is checked
    # in project_checks.py (E1xx/W1xx).
    "WS4REDIS_METRICS": "E050",
    "WS4REDIS_STATUS_INTERVAL": "E051",
    # Redis Cluster settings: E060 onwards.
    "WS4REDIS_CLUSTER_PLAIN_PUBLISH": "E060",
}

# Checks of several settings together.
BYTES_BURST_BELOW_MESSAGE_SIZE = "ws4redis_channels.E022"


#: The tag of every check here: ``manage.py check --tag ws4redis_channels``.
TAG = "ws4redis_channels"
ACCELERATION_UNTESTED = "ws4redis_channels.W040"


@checks.register(TAG)
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
        burst, size = conf.WS4REDIS_PUBLISH_BYTES_BURST, conf.WS4REDIS_MAX_MESSAGE_SIZE
        limited = conf.WS4REDIS_PUBLISH_BYTES_RATE > 0
    except ImproperlyConfigured:
        limited = False
    if limited and burst < size:
        messages.append(
            checks.Error(
                f"WS4REDIS_PUBLISH_BYTES_BURST ({burst}) is smaller than "
                f"WS4REDIS_MAX_MESSAGE_SIZE ({size}): frames between the two sizes could "
                "never be published",
                hint="Make WS4REDIS_PUBLISH_BYTES_BURST at least WS4REDIS_MAX_MESSAGE_SIZE.",
                id=BYTES_BURST_BELOW_MESSAGE_SIZE,
            )
        )
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


@checks.register(TAG, checks.Tags.compatibility)
def check_accelerations(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """Warn when a daphne/autobahn/Twisted/channels release is outside the tested range:
    the accelerations that rely on it are off (the app works through plain ASGI)."""
    from .accelerator import status

    off = {
        name: entry["reason"]
        for name, entry in status().items()
        if not entry["on"] and "outside the tested range" in entry["reason"]
    }
    if not off:
        return []
    reasons = sorted(set(off.values()))
    return [
        checks.Warning(
            f"{'; '.join(reasons)}: accelerations off: {', '.join(off)}",
            hint="Install a release in the range ws4redis_channels declares "
            "(pyproject.toml), or accept plain ASGI speed; nothing else changes.",
            id=ACCELERATION_UNTESTED,
        )
    ]


@checks.register(TAG, deploy=True)
def check_naming_in_redis(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """With ``check --deploy``: warn when Redis holds names of another naming or prefix.

    It scans at most 1,000 keys and the subscribed channels (see
    ``manage.py ws4redis_naming``); an unreachable Redis is not reported here.
    """
    from .connection import sync_client
    from .naming_detection import inspect

    try:
        naming, prefix = conf.WS4REDIS_NAMING, conf.WS4REDIS_PREFIX
        findings = inspect(sync_client(parse_target(conf.WS4REDIS_CONNECTION)), limit=1000)
    except Exception:  # wrong settings are E00x above; no Redis here is not a deploy error
        return []
    verdict = findings.verdict()
    if verdict is None or findings.matches(naming, prefix):
        return []
    found_naming, found_prefix = verdict
    return [
        checks.Warning(
            f"Redis holds channel names of the {found_naming.value!r} naming with prefix "
            f"{found_prefix!r}, but WS4REDIS_NAMING is {naming.value!r} and WS4REDIS_PREFIX "
            f"is {prefix!r}: sockets would not hear those publishers",
            hint=f'Set WS4REDIS_NAMING = "{found_naming.value}" and WS4REDIS_PREFIX = '
            f'"{found_prefix}" (python manage.py ws4redis_naming shows what was found).',
            id="ws4redis_channels.W030",
        )
    ]


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
