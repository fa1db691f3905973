"""Write the small intersphinx inventories the docs link to Django, Channels and redis-py with.

The docs build offline (and with ``-W``): instead of fetching each project's
``objects.inv``, ``docs/conf.py`` reads these files, which hold only the
objects our pages refer to. Run ``python docs/_inventories/build.py`` after
adding an entry below; set ``WS4REDIS_DOCS_ONLINE=1`` to build against the
projects' full inventories instead.
"""

from __future__ import annotations

import zlib
from pathlib import Path

HERE = Path(__file__).resolve().parent

# name, domain:role, uri (relative to the project's base URL; "$" = the name)
ENTRIES: dict[str, tuple[str, str, list[tuple[str, str, str, str]]]] = {
    "django": (
        "Django",
        "5.2",
        [
            ("django.test.override_settings", "py:function", "topics/testing/tools/#$", "-"),
            (
                "django.core.exceptions.ImproperlyConfigured",
                "py:exception",
                "ref/exceptions/#$",
                "-",
            ),
            ("django.core.exceptions.PermissionDenied", "py:exception", "ref/exceptions/#$", "-"),
            ("django.http.HttpRequest", "py:class", "ref/request-response/#$", "-"),
            ("django.http.HttpResponse", "py:class", "ref/request-response/#$", "-"),
            ("ALLOWED_HOSTS", "std:setting", "ref/settings/#std-setting-$", "-"),
            ("INSTALLED_APPS", "std:setting", "ref/settings/#std-setting-$", "-"),
            ("SECRET_KEY", "std:setting", "ref/settings/#std-setting-$", "-"),
            ("SESSION_ENGINE", "std:setting", "ref/settings/#std-setting-$", "-"),
            ("TEMPLATES", "std:setting", "ref/settings/#std-setting-$", "-"),
            ("DEBUG", "std:setting", "ref/settings/#std-setting-$", "-"),
            ("topics/checks", "std:doc", "topics/checks/", "System check framework"),
        ],
    ),
    "channels": (
        "Channels",
        "4.3",
        [
            ("topics/channel_layers", "std:doc", "topics/channel_layers.html", "Channel Layers"),
            ("deploying", "std:doc", "deploying.html", "Deploying"),
            ("installation", "std:doc", "installation.html", "Installation"),
        ],
    ),
    "redis": (
        "redis-py",
        "8.1",
        [
            ("redis.Redis", "py:class", "connections.html#$", "-"),
            ("redis.exceptions.RedisError", "py:exception", "exceptions.html#$", "-"),
            ("connections", "std:doc", "connections.html", "Connecting to Redis"),
        ],
    ),
}


def write(name: str) -> Path:
    project, version, entries = ENTRIES[name]
    header = (
        "# Sphinx inventory version 2\n"
        f"# Project: {project}\n# Version: {version}\n"
        "# The remainder of this file is compressed using zlib.\n"
    ).encode()
    lines = "".join(f"{obj} {role} -1 {uri} {shown}\n" for obj, role, uri, shown in entries)
    path = HERE / f"{name}.inv"
    path.write_bytes(header + zlib.compress(lines.encode()))
    return path


if __name__ == "__main__":
    for key in ENTRIES:
        print(write(key))
