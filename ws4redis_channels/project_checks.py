"""System checks for the project around the app: templates, apps, sessions, settings, Redis.

The settings' own values are checked in :mod:`ws4redis_channels.checks`; the
checks here catch what new users got wrong in the rest of the project
(ids ``E1xx``/``W1xx``, stable, only appended to). The Redis check runs under
``manage.py check --deploy`` only: it needs the network.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterator, Mapping
from importlib import util as importlib_util
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core import checks

__all__ = [
    "CONNECTION_KEYS",
    "check_context_processor",
    "check_daphne_installed",
    "check_redis_reachable",
    "check_session_engine",
    "check_unknown_settings",
]

TAG = "ws4redis_channels"
CONTEXT_PROCESSORS = (
    "ws4redis_channels.context_processors.default",
    "ws4redis.context_processors.default",  # the old path, kept working
)
# The variables the context processor provides, as templates use them.
_TEMPLATE_USE = re.compile(rb"\{\{\s*(WEBSOCKET_URI|WS4REDIS_HEARTBEAT)\b")
_MAX_TEMPLATE_FILES = 5000
_MAX_TEMPLATE_BYTES = 1024 * 1024

# Every key connection.parse_target reads from a WS4REDIS_CONNECTION dict.
CONNECTION_KEYS = frozenset(
    {
        "host",
        "port",
        "db",
        "password",
        "username",
        "unix_socket_path",
        "path",
        "ssl",
        "sentinels",
        "service_name",
        "master_name",
        "sentinel_password",
        "cluster",
    }
)

# django-websocket-redis settings (after "WS4REDIS_") that have no meaning here.
_LEGACY_SETTINGS = {
    "SUBSCRIBER": "a custom subscriber: use the flags and WS4REDIS_ALLOWED_CHANNELS",
    "PROCESS_REQUEST": "use Django's auth and session middleware (already applied)",
}


def _template_files(engine: Any) -> Iterator[Path]:
    """Yield the files of a Django template engine's directories (its own and apps')."""
    from django.template.utils import get_app_template_dirs

    dirs = [Path(d) for d in getattr(engine, "dirs", [])]
    if getattr(engine, "app_dirs", False):
        dirs += [Path(d) for d in get_app_template_dirs("templates")]
    count = 0
    for directory in dirs:
        if not directory.is_dir():
            continue
        for path in directory.rglob("*"):
            if path.is_file():
                count += 1
                if count > _MAX_TEMPLATE_FILES:
                    return
                yield path


def _uses_context(path: Path) -> bool:
    try:
        if path.stat().st_size > _MAX_TEMPLATE_BYTES:
            return False
        return _TEMPLATE_USE.search(path.read_bytes()) is not None
    except OSError:
        return False


@checks.register(checks.Tags.templates, TAG)
def check_context_processor(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """E101: templates use ``WEBSOCKET_URI``/``WS4REDIS_HEARTBEAT`` without the context
    processor (the page then renders ``heartbeat_msg: ,``, a JavaScript syntax error)."""
    from django.template import engines
    from django.template.backends.django import DjangoTemplates

    messages: list[checks.CheckMessage] = []
    for backend in engines.all():
        if not isinstance(backend, DjangoTemplates):
            continue
        engine = backend.engine
        if any(name in engine.context_processors for name in CONTEXT_PROCESSORS):
            continue
        user = next((p for p in _template_files(engine) if _uses_context(p)), None)
        if user is None:
            continue
        messages.append(
            checks.Error(
                f"The template {user} uses WEBSOCKET_URI or WS4REDIS_HEARTBEAT, but the "
                f"TEMPLATES engine {backend.name!r} lacks their context processor: the page "
                "renders them empty (a JavaScript syntax error in the client's options)",
                hint=f'Add "{CONTEXT_PROCESSORS[0]}" to TEMPLATES[...]["OPTIONS"]'
                '["context_processors"].',
                id="ws4redis_channels.E101",
            )
        )
    return messages


def _provides_runserver(app: str) -> bool:
    try:
        spec = importlib_util.find_spec(app)
    except (ImportError, ValueError):
        return False
    if spec is None or not spec.submodule_search_locations:
        return False
    return any(
        (Path(location) / "management" / "commands" / "runserver.py").exists()
        for location in spec.submodule_search_locations
    )


@checks.register(checks.Tags.compatibility, TAG)
def check_daphne_installed(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """W102/W103: ``daphne`` missing from ``INSTALLED_APPS``, or after an app whose
    ``runserver`` then wins: ``runserver`` serves pages and every websocket gets 404."""
    apps = [str(app) for app in settings.INSTALLED_APPS]
    names = [app.split(".apps.")[0] for app in apps]
    if "daphne" not in names:
        return [
            checks.Warning(
                "'daphne' is not in INSTALLED_APPS: `manage.py runserver` serves your pages "
                "with Django's WSGI server, and every websocket gets 404",
                hint="Put 'daphne' first in INSTALLED_APPS (or serve with "
                "`daphne yourproject.asgi:application`).",
                id="ws4redis_channels.W102",
            )
        ]
    position = names.index("daphne")
    earlier = [app for app in names[:position] if _provides_runserver(app)]
    if earlier:
        return [
            checks.Warning(
                f"'daphne' comes after {', '.join(repr(a) for a in earlier)} in INSTALLED_APPS, "
                "whose runserver command wins: `manage.py runserver` serves pages over WSGI "
                "and every websocket gets 404",
                hint="Put 'daphne' first in INSTALLED_APPS.",
                id="ws4redis_channels.W103",
            )
        ]
    return []


@checks.register(checks.Tags.security, TAG)
def check_session_engine(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """W104: signed-cookie sessions cannot be confirmed by a session store."""
    engine = getattr(settings, "SESSION_ENGINE", "")
    if engine != "django.contrib.sessions.backends.signed_cookies":
        return []
    return [
        checks.Warning(
            "SESSION_ENGINE is signed cookies: a session cannot be confirmed by a store, so "
            "sockets asking for subscribe-session or publish-session are refused with 4428",
            hint="Use a server-side session engine (db, cache, cached_db) if pages use the "
            "session flags.",
            id="ws4redis_channels.W104",
        )
    ]


def _did_you_mean(name: str, known: list[str]) -> str:
    match = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    return f"; did you mean {match[0]}?" if match else ""


@checks.register(TAG)
def check_unknown_settings(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """W101/W105: ``WS4REDIS_*`` settings and ``WS4REDIS_CONNECTION`` keys that nothing
    reads (typos), with the nearest known name."""
    from .conf import DEFAULTS

    known = sorted(DEFAULTS)
    messages: list[checks.CheckMessage] = []
    for name in sorted(dir(settings)):
        if not (name.startswith("WS4REDIS_") or name.startswith("WEBSOCKET")):
            continue
        if name in DEFAULTS:
            continue
        legacy = _LEGACY_SETTINGS.get(name.removeprefix("WS4REDIS_"))
        if legacy:
            text = (
                f"{name} is a django-websocket-redis setting that ws4redis_channels ignores "
                f"({legacy})"
            )
        else:
            text = f"{name} is not a setting of ws4redis_channels{_did_you_mean(name, known)}"
        messages.append(
            checks.Warning(
                text,
                hint="Remove it, or fix its name; docs/reference/settings lists every setting.",
                id="ws4redis_channels.W101",
            )
        )
    connection = getattr(settings, "WS4REDIS_CONNECTION", None)
    if isinstance(connection, Mapping):
        keys = sorted(CONNECTION_KEYS)
        for key in connection:
            if key in CONNECTION_KEYS:
                continue
            messages.append(
                checks.Warning(
                    f"WS4REDIS_CONNECTION has the key {key!r}, which is not used"
                    f"{_did_you_mean(str(key), keys)}",
                    hint=f"Known keys: {', '.join(keys)}.",
                    id="ws4redis_channels.W105",
                )
            )
    return messages


@checks.register("redis", TAG, deploy=True)
def check_redis_reachable(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """E102 (``check --deploy``): Redis cannot be reached with ``WS4REDIS_CONNECTION``."""
    from django.core.exceptions import ImproperlyConfigured

    from .conf import conf
    from .connection import parse_target, sync_client
    from .diagnostics import explain_redis_error, redis_errors

    try:
        target = parse_target(conf.WS4REDIS_CONNECTION)
    except (ImproperlyConfigured, ValueError, TypeError):
        return []  # E002 says what is wrong with the setting
    try:
        sync_client(target).ping()
    except redis_errors() as exc:
        return [
            checks.Error(
                explain_redis_error(exc, target.describe()),
                hint="Every websocket handshake is refused with 4503 until Redis answers.",
                id="ws4redis_channels.E102",
            )
        ]
    return []
